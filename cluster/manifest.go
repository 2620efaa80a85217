package cluster

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"sort"

	istionet "istio.io/client-go/pkg/apis/networking/v1"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	gwv1 "sigs.k8s.io/gateway-api/apis/v1"

	"github.com/sbx-dev/sbx/cluster/spec"
)

// ManifestBaseline is a baseline read from a YAML (or JSON) stream of
// manifests, as `kubectl get -o yaml` or a CD repository holds them. It lets
// `sbx render` show the exact objects without a cluster.
type ManifestBaseline struct {
	workloads map[string]map[string]string // kind/ns/name → pod labels
	rollouts  map[string]map[string]any
	services  map[string][]*corev1.Service
	vss       map[string][]*istionet.VirtualService
	objects   []runtime.Object
	// meshExportTo is defaultVirtualServiceExportTo of an Istio mesh
	// ConfigMap in the manifests (meshKnown when there is one).
	meshExportTo  []string
	meshKnown     bool
	gatewayRoutes []GatewayRoute
	httpRoutes    []*gwv1.HTTPRoute
	grpcRoutes    []*gwv1.GRPCRoute
	// GatewayAPI says the cluster the manifests describe serves Gateway
	// API routes (render --mesh gateway-api, or HTTPRoutes among them).
	GatewayAPI bool
}

type manifestHeader struct {
	APIVersion string `json:"apiVersion"`
	Kind       string `json:"kind"`
	Metadata   struct {
		Name      string `json:"name"`
		Namespace string `json:"namespace"`
	} `json:"metadata"`
	Items []json.RawMessage `json:"items"`
}

// ParseManifests reads a manifest stream. Objects without a namespace are
// placed in defaultNamespace. Kinds sbx does not need are skipped.
func ParseManifests(r io.Reader, defaultNamespace string) (*ManifestBaseline, error) {
	return ParseManifestFiles([]NamedReader{namedReader{Reader: r, name: "manifests"}}, defaultNamespace)
}

// NamedReader is a manifest source with a name for error messages (an
// *os.File is one).
type NamedReader interface {
	io.Reader
	Name() string
}

type namedReader struct {
	io.Reader
	name string
}

func (n namedReader) Name() string { return n.name }

// ParseManifestFiles reads several manifest streams into one baseline.
func ParseManifestFiles[R NamedReader](files []R, defaultNamespace string) (*ManifestBaseline, error) {
	m := &ManifestBaseline{
		workloads: map[string]map[string]string{},
		rollouts:  map[string]map[string]any{},
		services:  map[string][]*corev1.Service{},
		vss:       map[string][]*istionet.VirtualService{},
	}
	for _, f := range files {
		dec := utilyaml.NewYAMLOrJSONDecoder(f, 4096)
		for doc := 1; ; doc++ {
			var raw json.RawMessage
			if err := dec.Decode(&raw); err != nil {
				if errors.Is(err, io.EOF) {
					break
				}
				return nil, fmt.Errorf("%s: document %d: %w", f.Name(), doc, err)
			}
			if len(bytes.TrimSpace(raw)) == 0 || string(raw) == "null" {
				continue
			}
			if err := m.add(raw, defaultNamespace); err != nil {
				return nil, fmt.Errorf("%s: document %d: %w", f.Name(), doc, err)
			}
		}
	}
	for _, svcs := range m.services {
		sort.Slice(svcs, func(a, b int) bool { return svcs[a].Name < svcs[b].Name })
	}
	for _, vss := range m.vss {
		sort.Slice(vss, func(a, b int) bool { return vss[a].Name < vss[b].Name })
	}
	return m, nil
}

func (m *ManifestBaseline) add(raw json.RawMessage, defaultNS string) error {
	var h manifestHeader
	if err := json.Unmarshal(raw, &h); err != nil {
		return err
	}
	ns := h.Metadata.Namespace
	if ns == "" {
		ns = defaultNS
	}
	key := func(kind string) string { return kind + "/" + ns + "/" + h.Metadata.Name }
	switch {
	case h.Kind == "List" || (len(h.Items) > 0 && h.Kind != ""):
		for _, it := range h.Items {
			if err := m.add(it, defaultNS); err != nil {
				return err
			}
		}
	case h.APIVersion == "apps/v1" && h.Kind == "Deployment":
		var d appsv1.Deployment
		if err := json.Unmarshal(raw, &d); err != nil {
			return fmt.Errorf("Deployment %s: %w", h.Metadata.Name, err)
		}
		d.Namespace = ns
		m.workloads[key(spec.KindDeployment)] = d.Spec.Template.Labels
		m.objects = append(m.objects, &d)
	case h.APIVersion == "apps/v1" && h.Kind == "StatefulSet":
		var s appsv1.StatefulSet
		if err := json.Unmarshal(raw, &s); err != nil {
			return fmt.Errorf("StatefulSet %s: %w", h.Metadata.Name, err)
		}
		s.Namespace = ns
		m.workloads[key(spec.KindStatefulSet)] = s.Spec.Template.Labels
		m.objects = append(m.objects, &s)
	case h.APIVersion == RolloutGVR.GroupVersion().String() && h.Kind == "Rollout":
		var obj map[string]any
		if err := json.Unmarshal(raw, &obj); err != nil {
			return fmt.Errorf("Rollout %s: %w", h.Metadata.Name, err)
		}
		m.rollouts[key(spec.KindRollout)] = obj
		u := &unstructured.Unstructured{Object: obj}
		u.SetNamespace(ns)
		m.objects = append(m.objects, u)
	case h.APIVersion == "v1" && h.Kind == "Service":
		var s corev1.Service
		if err := json.Unmarshal(raw, &s); err != nil {
			return fmt.Errorf("Service %s: %w", h.Metadata.Name, err)
		}
		s.Namespace = ns
		m.services[ns] = append(m.services[ns], &s)
		m.objects = append(m.objects, &s)
	case (h.APIVersion == "networking.istio.io/v1" || h.APIVersion == "networking.istio.io/v1beta1" ||
		h.APIVersion == "networking.istio.io/v1alpha3") && h.Kind == "VirtualService":
		var vs istionet.VirtualService
		if err := json.Unmarshal(raw, &vs); err != nil {
			return fmt.Errorf("VirtualService %s: %w", h.Metadata.Name, err)
		}
		vs.Namespace = ns
		vs.APIVersion = "networking.istio.io/v1"
		m.vss[ns] = append(m.vss[ns], &vs)
		m.objects = append(m.objects, &vs)
	case h.APIVersion == "v1" && h.Kind == "ConfigMap" && ns == "istio-system" && h.Metadata.Name == "istio":
		var cm corev1.ConfigMap
		if err := json.Unmarshal(raw, &cm); err != nil {
			return fmt.Errorf("ConfigMap %s: %w", h.Metadata.Name, err)
		}
		e, err := parseMeshExportTo(cm.Data["mesh"])
		if err != nil {
			return fmt.Errorf("ConfigMap istio-system/istio: key mesh is not a YAML mesh config: %w", err)
		}
		m.meshExportTo, m.meshKnown = e, true
		cm.Namespace = ns
		m.objects = append(m.objects, &cm)
	case h.APIVersion == HTTPRouteGVR.GroupVersion().String() && (h.Kind == "HTTPRoute" || h.Kind == "GRPCRoute"):
		var obj map[string]any
		if err := json.Unmarshal(raw, &obj); err != nil {
			return fmt.Errorf("%s %s: %w", h.Kind, h.Metadata.Name, err)
		}
		u := &unstructured.Unstructured{Object: obj}
		u.SetNamespace(ns)
		m.gatewayRoutes = append(m.gatewayRoutes, serviceParents(h.Kind, u)...)
		if h.Kind == "HTTPRoute" {
			hr, err := httpRoutesFrom([]unstructured.Unstructured{*u})
			if err != nil {
				return err
			}
			m.httpRoutes = append(m.httpRoutes, hr...)
		} else {
			gr, err := grpcRoutesFrom([]unstructured.Unstructured{*u})
			if err != nil {
				return err
			}
			m.grpcRoutes = append(m.grpcRoutes, gr...)
		}
	}
	return nil
}

// Objects returns copies of the objects sbx read from the manifests, in
// file order, e.g. to seed a fake or simulated cluster.
func (m *ManifestBaseline) Objects() []runtime.Object {
	out := make([]runtime.Object, len(m.objects))
	for i, o := range m.objects {
		out[i] = o.DeepCopyObject()
	}
	return out
}

// PodLabels implements Baseline.
func (m *ManifestBaseline) PodLabels(ctx context.Context, w spec.Workload) (map[string]string, error) {
	if w.Kind == spec.KindRollout {
		obj, ok := m.rollouts[w.Kind+"/"+w.Namespace+"/"+w.Name]
		if !ok {
			return nil, m.notFound(w)
		}
		return rolloutPodLabels(ctx, obj, w, func(name string) (map[string]string, error) {
			return m.PodLabels(ctx, spec.Workload{Kind: spec.KindDeployment, Namespace: w.Namespace, Name: name})
		})
	}
	l, ok := m.workloads[w.Kind+"/"+w.Namespace+"/"+w.Name]
	if !ok {
		return nil, m.notFound(w)
	}
	return l, nil
}

func (m *ManifestBaseline) notFound(w spec.Workload) error {
	return fmt.Errorf("%s %s/%s is not in the baseline manifests: add it (kubectl get %s %s -n %s -o yaml) or check spec.local[].from",
		w.Kind, w.Namespace, w.Name, w.Kind, w.Name, w.Namespace)
}

// Services implements Baseline.
func (m *ManifestBaseline) Services(_ context.Context, namespace string) ([]*corev1.Service, error) {
	out := make([]*corev1.Service, len(m.services[namespace]))
	for i, s := range m.services[namespace] {
		out[i] = s.DeepCopy()
	}
	return out, nil
}

// Routing implements Baseline: every VirtualService of the manifests,
// the default exportTo of an Istio mesh ConfigMap (istio-system/istio)
// among them, and Gateway API routes attached to Services.
func (m *ManifestBaseline) Routing(_ context.Context, _ []string) (*Routing, error) {
	r := &Routing{DefaultExportTo: m.meshExportTo}
	if !m.meshKnown {
		r.ExportToUnknown = "the baseline manifests hold no Istio mesh config (ConfigMap istio-system/istio)"
	}
	var nss []string
	for ns := range m.vss {
		nss = append(nss, ns)
	}
	sort.Strings(nss)
	for _, ns := range nss {
		for _, v := range m.vss[ns] {
			r.VirtualServices = append(r.VirtualServices, v.DeepCopy())
		}
	}
	r.GatewayRoutes = append(r.GatewayRoutes, m.gatewayRoutes...)
	for _, h := range m.httpRoutes {
		r.HTTPRoutes = append(r.HTTPRoutes, h.DeepCopy())
	}
	for _, g := range m.grpcRoutes {
		r.GRPCRoutes = append(r.GRPCRoutes, g.DeepCopy())
	}
	r.GRPCServed = m.GatewayAPI || len(m.grpcRoutes) > 0
	// Manifests describe an Istio mesh unless they say otherwise.
	r.IstioServed = true
	r.GatewayAPIServed = m.GatewayAPI || len(m.httpRoutes) > 0
	return r, nil
}

// Package istio is a test harness that uses Istio's own control-plane code
// (istio.io/istio/pilot) as the judge of how a sidecar routes a request.
//
// A World (Kubernetes Services + Istio VirtualServices + a bit of mesh
// config) is loaded into Istio's fake discovery server, the route
// configuration Istio would send to a client sidecar is generated, and the
// request is then matched against it the way Envoy matches routes. The only
// part of the pipeline that is ours is the Envoy matching step (match.go), and
// it fails the test on any matcher feature it does not implement instead of
// guessing.
//
// The package deliberately imports nothing from github.com/sbx-dev/sbx: it
// is a neutral referee for claims made by that code.
package istio

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strings"

	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	istionet "istio.io/client-go/pkg/apis/networking/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	k8syaml "k8s.io/apimachinery/pkg/util/yaml"
	gwv1 "sigs.k8s.io/gateway-api/apis/v1"
	sigsjson "sigs.k8s.io/json"
	"sigs.k8s.io/yaml"
)

// World is the cluster state the judge evaluates: Kubernetes objects and
// Istio VirtualServices and Gateways, Gateway API routes, plus the one mesh-config knob the scenarios need.
type World struct {
	// Namespaces are optional; Istio's service registry does not need them.
	Namespaces []*corev1.Namespace
	// Services are converted by Istio's real Kubernetes service registry
	// (cluster domain cluster.local); give them ClusterIPs.
	Services []*corev1.Service
	// VirtualServices keep their ObjectMeta.CreationTimestamp: Istio orders
	// VirtualServices for the same host by creation time, then name, then
	// namespace, so scenarios that rely on precedence must set it. (A zero
	// timestamp becomes "now" when Istio's in-memory store takes the object,
	// so unset timestamps make the list order decide.)
	VirtualServices []*istionet.VirtualService
	// Gateways are Istio Gateway objects (networking.istio.io), selecting
	// router proxies by label; see (*Judge).CallGateway.
	Gateways []*istionet.Gateway
	// HTTPRoutes are Gateway API routes (gateway.networking.k8s.io/v1), as
	// the API server stores them (AdmitHTTPRoute: the standard CRD's
	// defaults applied). Istio's kube gateway controller converts them; a
	// route with a Service as parentRef (GAMMA) routes the sidecars'
	// requests to that Service. Like VirtualServices they keep their
	// CreationTimestamp, which orders routes for the same parent.
	HTTPRoutes []*gwv1.HTTPRoute
	// GRPCRoutes are Gateway API GRPCRoutes (gateway.networking.k8s.io/v1),
	// stored as AdmitGRPCRoute does. Istio converts them like HTTPRoutes
	// and merges both kinds of routes of one parent into one list
	// (pilot/pkg/config/kube/gateway/controller.go, mergeHTTPRoutes of the
	// HTTP and gRPC base VirtualServices).
	GRPCRoutes []*gwv1.GRPCRoute
	// DefaultVirtualServiceExportTo is MeshConfig.defaultVirtualServiceExportTo.
	// nil keeps Istio's default (every VirtualService is public, "*").
	DefaultVirtualServiceExportTo []string
}

// ParseWorld builds a World from a multi-document YAML string holding
// v1 Services and Namespaces, networking.istio.io VirtualServices and
// Gateways (v1, v1beta1 and v1alpha3 are the same schema and are all read as
// v1) and gateway.networking.k8s.io/v1 HTTPRoutes and GRPCRoutes
// (defaulted and validated as the API server does with the standard CRDs).
//
// Parsing is strict (unknown fields are errors) because scenario tables are
// hand-written YAML and a misspelt field would silently change the scenario.
func ParseWorld(docs string) (World, error) {
	var w World
	r := k8syaml.NewYAMLReader(bufio.NewReader(strings.NewReader(docs)))
	for i := 0; ; i++ {
		doc, err := r.Read()
		if errors.Is(err, io.EOF) {
			return w, nil
		}
		if err != nil {
			return World{}, fmt.Errorf("document %d: %w", i, err)
		}
		js, err := yaml.YAMLToJSON(doc)
		if err != nil {
			return World{}, fmt.Errorf("document %d: %w", i, err)
		}
		if s := string(bytes.TrimSpace(js)); s == "null" || s == "" {
			continue // empty document or only comments
		}
		var tm metav1.TypeMeta
		if err := json.Unmarshal(js, &tm); err != nil {
			return World{}, fmt.Errorf("document %d: %w", i, err)
		}
		if err := w.add(tm, js); err != nil {
			return World{}, fmt.Errorf("document %d (%s %s): %w", i, tm.APIVersion, tm.Kind, err)
		}
	}
}

func (w *World) add(tm metav1.TypeMeta, js []byte) error {
	switch {
	case tm.APIVersion == "v1" && tm.Kind == "Service":
		svc := &corev1.Service{}
		if err := strictJSON(js, svc); err != nil {
			return err
		}
		if svc.Namespace == "" {
			return errors.New("metadata.namespace is required")
		}
		w.Services = append(w.Services, svc)
	case tm.APIVersion == "v1" && tm.Kind == "Namespace":
		ns := &corev1.Namespace{}
		if err := strictJSON(js, ns); err != nil {
			return err
		}
		w.Namespaces = append(w.Namespaces, ns)
	case tm.Kind == "VirtualService" && (tm.APIVersion == "networking.istio.io/v1" ||
		tm.APIVersion == "networking.istio.io/v1beta1" || tm.APIVersion == "networking.istio.io/v1alpha3"):
		vs, err := parseVirtualService(js)
		if err != nil {
			return err
		}
		w.VirtualServices = append(w.VirtualServices, vs)
	case tm.APIVersion == "gateway.networking.k8s.io/v1" && tm.Kind == "HTTPRoute":
		r, err := parseHTTPRoute(js)
		if err != nil {
			return err
		}
		w.HTTPRoutes = append(w.HTTPRoutes, r)
	case tm.APIVersion == "gateway.networking.k8s.io/v1" && tm.Kind == "GRPCRoute":
		r, err := parseGRPCRoute(js)
		if err != nil {
			return err
		}
		w.GRPCRoutes = append(w.GRPCRoutes, r)
	case tm.Kind == "Gateway" && isNetworkingVersion(tm.APIVersion):
		gw, err := parseGateway(js)
		if err != nil {
			return err
		}
		w.Gateways = append(w.Gateways, gw)
	default:
		return errors.New("unsupported kind")
	}
	return nil
}

// strictJSON decodes the way the Kubernetes API server does: field names are
// case-sensitive, unknown and duplicate fields are errors.
func strictJSON(js []byte, v any) error {
	strict, err := sigsjson.UnmarshalStrict(js, v)
	if err != nil {
		return err
	}
	return errors.Join(strict...)
}

// parseNetworking reads an Istio networking object: metadata with
// Kubernetes' strict JSON and the spec with protojson into spec, both
// rejecting unknown fields (Istio's generated UnmarshalJSON for the spec
// would silently drop them).
func parseNetworking(js []byte, spec proto.Message) (metav1.ObjectMeta, error) {
	var raw struct {
		APIVersion string            `json:"apiVersion"`
		Kind       string            `json:"kind"`
		Metadata   metav1.ObjectMeta `json:"metadata"`
		Spec       json.RawMessage   `json:"spec"`
	}
	if err := strictJSON(js, &raw); err != nil {
		return metav1.ObjectMeta{}, err
	}
	if raw.Metadata.Namespace == "" {
		return metav1.ObjectMeta{}, errors.New("metadata.namespace is required")
	}
	if len(raw.Spec) > 0 {
		if err := protojson.Unmarshal(raw.Spec, spec); err != nil {
			return metav1.ObjectMeta{}, fmt.Errorf("spec: %w", err)
		}
	}
	return raw.Metadata, nil
}

func parseVirtualService(js []byte) (*istionet.VirtualService, error) {
	vs := &istionet.VirtualService{TypeMeta: metav1.TypeMeta{APIVersion: "networking.istio.io/v1", Kind: "VirtualService"}}
	meta, err := parseNetworking(js, &vs.Spec)
	vs.ObjectMeta = meta
	return vs, err
}

// isNetworkingVersion reports whether apiVersion is one of the
// networking.istio.io versions that share the v1 schema.
func isNetworkingVersion(apiVersion string) bool {
	switch apiVersion {
	case "networking.istio.io/v1", "networking.istio.io/v1beta1", "networking.istio.io/v1alpha3":
		return true
	}
	return false
}

func parseGateway(js []byte) (*istionet.Gateway, error) {
	gw := &istionet.Gateway{TypeMeta: metav1.TypeMeta{APIVersion: "networking.istio.io/v1", Kind: "Gateway"}}
	meta, err := parseNetworking(js, &gw.Spec)
	gw.ObjectMeta = meta
	return gw, err
}

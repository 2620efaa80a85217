package istio

import (
	"fmt"
	"maps"
	"net/http"
	"os"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	route "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	"github.com/hashicorp/go-multierror"
	istionet "istio.io/client-go/pkg/apis/networking/v1"
	"istio.io/istio/pilot/pkg/config/kube/crdclient"
	"istio.io/istio/pilot/pkg/model"
	"istio.io/istio/pilot/pkg/networking/core"
	"istio.io/istio/pilot/test/xds"
	"istio.io/istio/pkg/config"
	"istio.io/istio/pkg/config/constants"
	"istio.io/istio/pkg/config/host"
	"istio.io/istio/pkg/config/mesh"
	"istio.io/istio/pkg/config/schema/collections"
	"istio.io/istio/pkg/config/schema/gvk"
	"istio.io/istio/pkg/config/schema/gvr"
	"istio.io/istio/pkg/kube/kclient/clienttest"
	istiolog "istio.io/istio/pkg/log"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	gwv1 "sigs.k8s.io/gateway-api/apis/v1"
	"sigs.k8s.io/gateway-api/pkg/consts"
)

const (
	domainSuffix = "cluster.local"
	// istioVersion is the version the client sidecars claim to run: the
	// version of the vendored istio.io/istio source (its VERSION file).
	istioVersion = "1.31.0"
	// clientIP belongs to no Service or pod, so the client has no inbound
	// service targets; it only matters that it is set.
	clientIP = "10.244.0.10"
)

// Judge answers routing questions for one World. Build one per World with
// NewJudge; it is cheap (well under a second) once the package is compiled.
type Judge struct {
	t      *testing.T
	srv    *xds.FakeDiscoveryServer
	push   *model.PushContext
	mu     *sync.Mutex
	routes map[string]map[string]*route.RouteConfiguration // client key -> route config name -> config
	merged map[string]*model.MergedGateway                 // gateway client key -> its merged gateway
}

// Client is the sidecar the request leaves from.
type Client struct {
	Namespace string
	Labels    map[string]string
}

// Request is a plain-text HTTP request sent through the client sidecar.
type Request struct {
	// Host is the :authority / Host header; it may carry ":port".
	Host string
	// Port is the destination service port. Istio's outbound HTTP listener
	// for a port uses the route configuration named after it ("8083").
	Port int
	// Path is the :path as Envoy's router sees it (after Envoy's path
	// normalisation, which the judge does not model), query included.
	// Defaults to "/".
	Path string
	// Method defaults to GET.
	Method string
	// Headers are ordinary request headers; Host and pseudo headers are
	// derived from the fields above and must not be repeated here.
	Headers http.Header
}

// Outcome is what the sidecar does with the request.
type Outcome struct {
	// Matched is false when Envoy would answer 404 NR: no virtual host, or
	// no route of the selected virtual host matches.
	Matched bool
	// VirtualHost is the selected virtual host (set even if no route matched).
	VirtualHost string
	// Route is the Envoy route name: "default" for Istio's default route,
	// otherwise the VirtualService http route name (may be empty; for
	// delegated routes Istio names them "<root route>-<delegate route>").
	Route string
	// VirtualService is "namespace/name" of the VirtualService the route was
	// generated from (the root for delegated routes), "" for default routes.
	VirtualService string
	// Kind is "route", "redirect" or "direct_response".
	Kind string
	// Cluster is the destination cluster, or for weighted clusters
	// "name:weight,name:weight" sorted by name; "" for redirects and direct
	// responses.
	Cluster string
	// Behaviour is canonical JSON (sorted keys) of everything about the
	// chosen route that shapes what the request experiences other than the
	// destination: the route action minus the cluster specifier, header
	// mutations, typed_per_filter_config, redirect/direct response, plus the
	// non-routing settings of the virtual host and route configuration. It
	// leaves out cosmetic fields (route name, match, decorator, metadata,
	// stat_prefix). Equal Cluster and Behaviour mean "treated the same".
	Behaviour string
}

func (o Outcome) String() string {
	if !o.Matched {
		return fmt.Sprintf("404 (virtual host %q)", o.VirtualHost)
	}
	return fmt.Sprintf("%s via vhost %q route %q (vs %q) -> %q; behaviour %s",
		o.Kind, o.VirtualHost, o.Route, o.VirtualService, o.Cluster, o.Behaviour)
}

var quietOnce sync.Once

// quietIstio turns Istio's logging off (it logs every informer sync at info
// level). Set SBX_ISTIO_LOG=debug|info|warn|error to see it again.
func quietIstio() {
	quietOnce.Do(func() {
		level := istiolog.NoneLevel
		switch os.Getenv("SBX_ISTIO_LOG") {
		case "debug":
			level = istiolog.DebugLevel
		case "info":
			level = istiolog.InfoLevel
		case "warn":
			level = istiolog.WarnLevel
		case "error":
			level = istiolog.ErrorLevel
		}
		for _, s := range istiolog.Scopes() {
			s.SetOutputLevel(level)
		}
	})
}

// NewJudge starts Istio's fake discovery server on w. Services go in as
// Kubernetes objects so that Istio's Kubernetes registry converts them;
// VirtualServices and Gateways go in as config.Config converted by Istio's
// own CRD client translation (which carries CreationTimestamp and sets the
// cluster domain that short-host resolution depends on). HTTPRoutes and
// GRPCRoutes go in as Kubernetes objects too, as in Istio's own sidecar
// simulation tests: the fake server's Gateway API controller (on by
// default, PILOT_ENABLE_GATEWAY_API) reads them from the fake client and
// converts them into VirtualServices with Gateway API semantics.
func NewJudge(t *testing.T, w World) *Judge {
	t.Helper()
	quietIstio()

	var objs []runtime.Object
	for _, ns := range w.Namespaces {
		objs = append(objs, ns.DeepCopy())
	}
	for _, svc := range w.Services {
		objs = append(objs, svc.DeepCopy())
	}
	for _, r := range w.HTTPRoutes {
		r = r.DeepCopy()
		r.APIVersion, r.Kind = gwv1.GroupVersion.String(), "HTTPRoute"
		objs = append(objs, r)
	}
	for _, r := range w.GRPCRoutes {
		r = r.DeepCopy()
		r.APIVersion, r.Kind = gwv1.GroupVersion.String(), "GRPCRoute"
		objs = append(objs, r)
	}
	var cfgs []config.Config
	roots := 0
	for _, vs := range w.VirtualServices {
		cfgs = append(cfgs, crdclient.TranslateObject(vs.DeepCopy(), gvk.VirtualService, domainSuffix))
		if len(vs.Spec.Hosts) > 0 {
			roots++
		}
	}
	for _, gw := range w.Gateways {
		cfgs = append(cfgs, crdclient.TranslateObject(gw.DeepCopy(), gvk.Gateway, domainSuffix))
	}
	m := mesh.DefaultMeshConfig()
	if w.DefaultVirtualServiceExportTo != nil {
		m.DefaultVirtualServiceExportTo = slices.Clone(w.DefaultVirtualServiceExportTo)
	}

	srv := xds.NewFakeDiscoveryServer(t, xds.FakeOptions{
		KubernetesObjects: objs,
		Configs:           cfgs,
		MeshConfig:        m,
	})
	// The fake server installs the GRPCRoute CRD without the bundle-version
	// annotation a real install carries, and istiod ignores a GRPCRoute CRD
	// without one (pkg/kube/kclient/crdwatcher.go minimumVersionFilter;
	// pkg/config/schema/gatewayapi/minimumversions.go): annotate it as the
	// gateway-api release this module builds with does (as Istio's own
	// conversion tests do, pilot/pkg/config/kube/gateway conversion_test.go
	// setupClientCRDs), and the controller's delayed GRPCRoute informer
	// starts.
	clienttest.MakeCRDWithAnnotations(t, srv.KubeClient(), gvr.GRPCRoute, map[string]string{
		consts.BundleVersionAnnotation: consts.BundleVersion,
	})

	// Sanity: everything we put in must have arrived, or every answer is moot.
	for _, svc := range w.Services {
		h := host.Name(svc.Name + "." + svc.Namespace + ".svc." + domainSuffix)
		if srv.Env().ServiceDiscovery.GetService(h) == nil {
			t.Fatalf("istio judge: Service %s not in Istio's registry", h)
		}
	}
	generated := gatewayAPIVirtualServices(t, srv, w)
	// The merged view follows the gateway controller's output
	// asynchronously: wait for it (CI once read it a moment too early:
	// 0 held, 1 generated).
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(10 * time.Millisecond) {
		got := len(srv.Env().VirtualServiceController.MergedVirtualServices())
		if got == roots+generated {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("istio judge: Istio holds %d root VirtualServices, world has %d and Istio's gateway controller made %d of Gateway API routes",
				got, roots, generated)
		}
	}
	if got := len(srv.Env().List(gvk.Gateway, metav1.NamespaceAll)); got != len(w.Gateways) {
		t.Fatalf("istio judge: Istio holds %d Gateways, world has %d", got, len(w.Gateways))
	}

	// Build our own PushContext synchronously (as Istio's ConfigGenTest does)
	// instead of relying on the server's asynchronous debounced pushes.
	push := model.NewPushContext()
	push.InitContext(srv.Env(), nil, nil)

	return &Judge{t: t, srv: srv, push: push, mu: &sync.Mutex{}, routes: map[string]map[string]*route.RouteConfiguration{},
		merged: map[string]*model.MergedGateway{}}
}

// gatewayAPIVirtualServices waits for Istio's kube gateway controller to
// have converted the world's HTTPRoutes and GRPCRoutes (its outputs are
// computed asynchronously) and checks that every route with a Service
// parent reached the sidecars' configuration: each appears among the
// parents of the VirtualServices the controller generates (it merges routes
// with the same parent into one, HTTPRoutes and GRPCRoutes alike). It
// returns how many it generated.
func gatewayAPIVirtualServices(t *testing.T, srv *xds.FakeDiscoveryServer, w World) int {
	t.Helper()
	gwc := srv.Env().GatewayAPIController
	if gwc == nil {
		if len(w.HTTPRoutes)+len(w.GRPCRoutes) > 0 {
			t.Fatalf("istio judge: the fake discovery server has no Gateway API controller (PILOT_ENABLE_GATEWAY_API off?)")
		}
		return 0
	}
	want := map[string]bool{}
	for _, r := range w.HTTPRoutes {
		if ServiceParent(r.Spec.ParentRefs) && len(r.Spec.Rules) > 0 {
			want["HTTPRoute/"+r.Name+"."+r.Namespace] = true
		}
	}
	for _, r := range w.GRPCRoutes {
		if ServiceParent(r.Spec.ParentRefs) && len(r.Spec.Rules) > 0 {
			want["GRPCRoute/"+r.Name+"."+r.Namespace] = true
		}
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		vss := gwc.List(gvk.VirtualService, metav1.NamespaceAll)
		seen := map[string]bool{}
		for _, v := range vss {
			for _, p := range strings.Split(v.Annotations[constants.InternalParentNames], ",") {
				seen[p] = true
			}
		}
		var missing []string
		for p := range want {
			if !seen[p] {
				missing = append(missing, p)
			}
		}
		if gwc.HasSynced() && len(missing) == 0 {
			return len(vss)
		}
		if time.Now().After(deadline) {
			t.Fatalf("istio judge: Istio's gateway controller (synced: %v) generated no mesh routes of %v", gwc.HasSynced(), missing)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// WithT returns the judge reporting failures to t (use inside t.Run).
func (j *Judge) WithT(t *testing.T) *Judge {
	c := *j
	c.t = t
	return &c
}

// proxy builds the client sidecar the way pilot tests do
// (ConfigGenTest.SetupProxy), against the judge's PushContext.
func (j *Judge) proxy(c Client) *model.Proxy {
	return j.newProxy(model.SidecarProxy, "client.", c.Namespace, c.Labels, clientIP)
}

// newProxy builds a proxy of type typ (a sidecar or a gateway's router)
// for a pod of namespace ns with labels and ip.
func (j *Judge) newProxy(typ model.NodeType, idPrefix, ns string, labels map[string]string, ip string) *model.Proxy {
	p := &model.Proxy{
		Type:            typ,
		ID:              idPrefix + ns,
		ConfigNamespace: ns,
		DNSDomain:       ns + ".svc." + domainSuffix,
		IPAddresses:     []string{ip},
		Labels:          maps.Clone(labels),
		Metadata: &model.NodeMetadata{
			Namespace:    ns,
			Labels:       maps.Clone(labels),
			IstioVersion: istioVersion,
		},
		IstioVersion: model.ParseIstioVersion(istioVersion),
	}
	p.SetSidecarScope(j.push)
	p.SetServiceTargets(j.srv.Env().ServiceDiscovery)
	p.SetGatewaysForProxy(j.push)
	p.DiscoverIPMode()
	return p
}

// RouteConfigs returns the outbound HTTP route configurations Istio
// generates for the client, keyed by name (the names its listeners use).
func (j *Judge) RouteConfigs(c Client) map[string]*route.RouteConfiguration {
	t := j.t
	t.Helper()
	if c.Namespace == "" {
		t.Fatalf("istio judge: client namespace is required")
	}
	return j.routeConfigs(clientKey(c.Namespace, c.Labels), func() *model.Proxy { return j.proxy(c) })
}

// clientKey identifies a client proxy (namespace and labels) in the cache.
func clientKey(namespace string, labels map[string]string) string {
	key := namespace
	for _, k := range slices.Sorted(maps.Keys(labels)) {
		key += "," + k + "=" + labels[k]
	}
	return key
}

// routeConfigs generates (once per key) the HTTP route configurations the
// proxy's listeners refer to, keyed by name.
func (j *Judge) routeConfigs(key string, proxy func() *model.Proxy) map[string]*route.RouteConfiguration {
	t := j.t
	t.Helper()
	j.mu.Lock()
	defer j.mu.Unlock()
	if rcs, ok := j.routes[key]; ok {
		return rcs
	}
	p := proxy()
	gen := j.srv.ConfigGen
	names := core.ExtractRoutesFromListeners(gen.BuildListeners(p, j.push))
	res, _ := gen.BuildHTTPRoutes(p, &model.PushRequest{Push: j.push}, names)
	rcs := map[string]*route.RouteConfiguration{}
	for _, r := range res {
		rc := &route.RouteConfiguration{}
		if err := r.Resource.UnmarshalTo(rc); err != nil {
			t.Fatalf("istio judge: route config %s: %v", r.Name, err)
		}
		rcs[rc.Name] = rc
	}
	j.routes[key] = rcs
	return rcs
}

// Call answers: which route does the request take, to which cluster, with
// which behaviour? Unsupported Envoy features fail the test.
func (j *Judge) Call(c Client, r Request) Outcome {
	t := j.t
	t.Helper()
	if r.Host == "" || r.Port == 0 {
		t.Fatalf("istio judge: request needs Host and Port: %+v", r)
	}
	if r.Path == "" {
		r.Path = "/"
	}
	if r.Method == "" {
		r.Method = "GET"
	}
	rcs := j.RouteConfigs(c)
	rc, ok := rcs[strconv.Itoa(r.Port)]
	if !ok {
		t.Fatalf("istio judge: client %+v has no HTTP route configuration %q (has %v): no HTTP listener on that port",
			c, strconv.Itoa(r.Port), slices.Sorted(maps.Keys(rcs)))
	}
	return routeIn(t, rc, r)
}

// routeIn selects the virtual host and the first matching route of rc for r
// (Path and Method already defaulted) and describes the outcome.
func routeIn(t *testing.T, rc *route.RouteConfiguration, r Request) Outcome {
	t.Helper()
	m := &matcher{t: t}
	req := m.request(r)
	vh := m.virtualHost(rc, r.Host)
	if vh == nil {
		return Outcome{}
	}
	for _, rt := range vh.Routes {
		if m.route(rt.Match, req) {
			return describe(t, rc, vh, rt)
		}
	}
	return Outcome{VirtualHost: vh.Name}
}

// ValidateVirtualService runs the validation Istio's admission webhook runs
// for a VirtualService (the schema's registered validator) and returns its
// warnings the way the webhook reports them.
func ValidateVirtualService(vs *istionet.VirtualService) (warnings []string, err error) {
	cfg := crdclient.TranslateObject(vs.DeepCopy(), gvk.VirtualService, domainSuffix)
	warn, err := collections.VirtualService.ValidateConfig(cfg)
	if warn != nil {
		if me, ok := warn.(*multierror.Error); ok {
			for _, e := range me.Errors {
				warnings = append(warnings, e.Error())
			}
		} else if warn.Error() != "" {
			warnings = []string{warn.Error()}
		}
	}
	return warnings, err
}

// vsName turns Istio's route metadata config path
// (/apis/networking.istio.io/v1/namespaces/NS/virtual-service/NAME) into NS/NAME.
func vsName(rt *route.Route) string {
	s := rt.GetMetadata().GetFilterMetadata()["istio"].GetFields()["config"].GetStringValue()
	parts := strings.Split(s, "/")
	if len(parts) < 3 || !strings.Contains(s, "/virtual-service/") {
		return ""
	}
	return parts[len(parts)-3] + "/" + parts[len(parts)-1]
}

// clusterOf renders the cluster specifier; weighted clusters sorted by name.
func clusterOf(t *testing.T, a *route.RouteAction) string {
	switch cs := a.GetClusterSpecifier().(type) {
	case *route.RouteAction_Cluster:
		return cs.Cluster
	case *route.RouteAction_WeightedClusters:
		var parts []string
		for _, c := range cs.WeightedClusters.GetClusters() {
			parts = append(parts, fmt.Sprintf("%s:%d", c.GetName(), c.GetWeight().GetValue()))
		}
		sort.Strings(parts)
		return strings.Join(parts, ",")
	default:
		t.Fatalf("istio judge: unsupported cluster specifier %T", cs)
		return ""
	}
}

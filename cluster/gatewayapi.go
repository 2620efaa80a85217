package cluster

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	gwv1 "sigs.k8s.io/gateway-api/apis/v1"

	"github.com/sbx-dev/sbx/cluster/gatewayroute"
	"github.com/sbx-dev/sbx/cluster/istiovs"
	"github.com/sbx-dev/sbx/cluster/meshmode"
	"github.com/sbx-dev/sbx/cluster/meshreport"
)

// Mesh modes (package meshmode): how sbx routes keyed requests.
const (
	MeshAuto       = meshmode.Auto
	MeshIstio      = meshmode.Istio
	MeshGatewayAPI = meshmode.GatewayAPI
)

// ValidateMesh checks a mesh mode.
func ValidateMesh(m string) error { return meshmode.Validate(m) }

// BackendChoice is how sbx routes one Service's keyed requests, and why.
type BackendChoice struct {
	Namespace string `json:"namespace"`
	Service   string `json:"service"`
	// Backend is MeshIstio or MeshGatewayAPI.
	Backend string `json:"backend"`
	Why     string `json:"why"`
}

func (b BackendChoice) String() string {
	return fmt.Sprintf("Service %s/%s: %s", b.Namespace, b.Service, b.Summary())
}

// Summary says how and why, without the Service.
func (b BackendChoice) Summary() string {
	kind := "Istio VirtualServices"
	if b.Backend == MeshGatewayAPI {
		kind = "sbx's own Gateway API HTTPRoute"
	}
	return fmt.Sprintf("keyed requests routed with %s (%s)", kind, b.Why)
}

// chooseBackend decides how to route Service s. mode auto picks Gateway
// API when CD routes s with an HTTPRoute or GRPCRoute or the mesh is
// Linkerd, VirtualServices when CD routes it with one, and for a Service
// with neither Gateway API where its CRDs are installed, else
// VirtualServices. One host never gets both kinds: a Service CD routes
// one way is refused the other way.
func chooseBackend(mode string, s istiovs.Service, r *Routing, domain string) (BackendChoice, error) {
	c := BackendChoice{Namespace: s.Namespace, Service: s.Name}
	var gw []string
	for _, g := range r.GatewayRoutes {
		if g.ServiceNamespace == s.Namespace && g.Service == s.Name && !g.Own {
			gw = append(gw, g.Kind+" "+g.Namespace+"/"+g.Name)
		}
	}
	vs := cdVirtualServices(s, r, domain)
	noIstio := &RoutesRefusedError{Err: fmt.Errorf("the cluster serves no Istio VirtualServices (networking.istio.io/v1) to route Service %s/%s with: install Istio (1.22 or later), or route with Gateway API (mesh: gateway-api, with its CRDs installed)", s.Namespace, s.Name)}
	switch mode {
	case MeshIstio:
		if !r.IstioServed {
			return c, noIstio
		}
		c.Backend, c.Why = MeshIstio, "mesh: istio"
		return c, nil
	case MeshGatewayAPI:
		switch {
		case !r.GatewayAPIServed:
			return c, &RoutesRefusedError{Err: fmt.Errorf("mesh: gateway-api, but the cluster serves no HTTPRoutes (gateway.networking.k8s.io/v1): install the Gateway API CRDs, or use mesh: istio")}
		case len(vs) > 0:
			return c, &RoutesRefusedError{Err: fmt.Errorf("Service %s/%s is routed by VirtualService %s; with mesh: gateway-api sbx would add an HTTPRoute for the same host and the mesh would apply one kind or the other: use mesh: auto or istio for it", s.Namespace, s.Name, vs[0])}
		}
		c.Backend, c.Why = MeshGatewayAPI, "mesh: gateway-api"
		return c, nil
	}
	switch {
	case len(gw) > 0:
		c.Backend, c.Why = MeshGatewayAPI, "CD routes it with "+strings.Join(gw, ", ")
	case len(vs) > 0:
		c.Backend, c.Why = MeshIstio, "CD routes it with VirtualService "+strings.Join(vs, ", ")
	case r.Linkerd && r.GatewayAPIServed:
		c.Backend, c.Why = MeshGatewayAPI, "the mesh is Linkerd, which routes with Gateway API only"
	case r.Linkerd:
		return c, &RoutesRefusedError{Err: fmt.Errorf("the mesh is Linkerd, which routes only with Gateway API HTTPRoutes, and the cluster serves none (gateway.networking.k8s.io/v1): install the Gateway API CRDs")}
	case r.GatewayAPIServed && r.IstioServed:
		c.Backend, c.Why = MeshGatewayAPI, "no route for it yet, and Istio serves Gateway API HTTPRoutes here"
	case !r.IstioServed:
		return c, noIstio
	default:
		c.Backend, c.Why = MeshIstio, "no route for it yet, and no Gateway API HTTPRoutes are served"
	}
	return c, nil
}

// cdVirtualServices are the VirtualServices not sbx's own whose hosts name
// s (exactly or by a wildcard).
func cdVirtualServices(s istiovs.Service, r *Routing, domain string) []string {
	m := toMesh(r, domain)
	fqdn := m.FQDN(s.Name, s.Namespace)
	var out []string
	for _, v := range r.VirtualServices {
		if v.Labels[LabelManagedBy] == ManagedByValue {
			continue
		}
		for _, h := range v.Spec.Hosts {
			h = m.ResolveHost(h, v.Namespace)
			if h == fqdn || (strings.HasPrefix(h, "*") && strings.HasSuffix(fqdn, h[1:])) {
				out = append(out, v.Namespace+"/"+v.Name)
				break
			}
		}
	}
	return out
}

// gwObject is one of sbx's Gateway API routes as it is written.
type gwObject struct {
	Kind  string // HTTPRoute or GRPCRoute
	GVR   schema.GroupVersionResource
	Obj   runtime.Object
	Meta  *metav1.ObjectMeta
	Rules int
}

func (o gwObject) key() string { return o.Kind + " " + o.Meta.Namespace + "/" + o.Meta.Name }

// planGatewayRoutes plans sbx's HTTPRoutes (and GRPCRoutes, next to CD's)
// for the Services routed with Gateway API: one per Service port (more
// only past the CRD's limits), labelled like every sbx object and owned
// by the Lease of its namespace.
func planGatewayRoutes(sb istiovs.Sandbox, svcs []istiovs.Service, r *Routing, sandbox string,
	owners map[string]metav1.OwnerReference) ([]gwObject, []meshreport.PortReport, []string, error) {

	var objs []gwObject
	var report []meshreport.PortReport
	var warnings []string
	own := func(meta *metav1.ObjectMeta) {
		meta.Labels = map[string]string{
			LabelManagedBy: ManagedByValue, LabelSandbox: sandbox, LabelRoutingKey: sb.Key, LabelComponent: "routes",
		}
		if o, ok := owners[meta.Namespace]; ok {
			o.Controller = nil
			meta.OwnerReferences = []metav1.OwnerReference{o}
		}
	}
	for _, s := range svcs {
		ports := make([]int32, 0, len(s.Mapped))
		for p := range s.Mapped {
			ports = append(ports, p)
		}
		slices.Sort(ports)
		for _, port := range ports {
			m := s.Mapped[port]
			p, err := gatewayroute.MakePlan(gatewayroute.Input{
				Service: gatewayroute.Service{Namespace: s.Namespace, Name: s.Name, Ports: s.Ports},
				Port:    port, SandboxService: m.SandboxService, SandboxNamespace: sb.Home,
				Key: sb.Key, Regex: sb.Regex, Routes: r.HTTPRoutes, GRPCRoutes: r.GRPCRoutes,
				IsOwn: func(o metav1.Object) bool { return o.GetLabels()[LabelManagedBy] == ManagedByValue },
			})
			if err != nil {
				return nil, nil, nil, &RoutesRefusedError{Err: err}
			}
			warnings = append(warnings, p.Warnings...)
			var mine []gwObject
			for _, h := range p.Routes {
				own(&h.ObjectMeta)
				mine = append(mine, gwObject{Kind: "HTTPRoute", GVR: HTTPRouteGVR, Obj: h, Meta: &h.ObjectMeta, Rules: len(h.Spec.Rules)})
			}
			for _, g := range p.GRPCRoutes {
				own(&g.ObjectMeta)
				mine = append(mine, gwObject{Kind: "GRPCRoute", GVR: GRPCRouteGVR, Obj: g, Meta: &g.ObjectMeta, Rules: len(g.Spec.Rules)})
			}
			var chain []string
			for _, o := range mine {
				chain = append(chain, o.key()+" (sbx)")
			}
			for _, cd := range p.Mirrors {
				chain = append(chain, cd+" (CD)")
			}
			view := meshreport.ViewReport{Chain: chain, Applies: "Gateway API routes of Service " + s.Namespace + "/" + s.Name, Keyed: meshreport.KeyedSandbox}
			if why := notAccepted(r, mine); why != "" {
				view.Keyed, view.Reason = meshreport.KeyedBaseline, why
			}
			report = append(report, meshreport.PortReport{Namespace: s.Namespace, Service: s.Name, Port: port, Workload: m.Workload,
				Views: []meshreport.ViewReport{view}})
			objs = append(objs, mine...)
		}
	}
	return objs, report, warnings, nil
}

// notAccepted says why the mesh refuses one of sbx's routes as it is in
// the cluster (status.parents[].conditions Accepted or ResolvedRefs
// False), "" when it does not (or has not said yet).
func notAccepted(r *Routing, planned []gwObject) string {
	status := map[string][]gwv1.RouteParentStatus{}
	for _, h := range r.HTTPRoutes {
		status["HTTPRoute "+h.Namespace+"/"+h.Name] = h.Status.Parents
	}
	for _, g := range r.GRPCRoutes {
		status["GRPCRoute "+g.Namespace+"/"+g.Name] = g.Status.Parents
	}
	for _, p := range planned {
		for _, ps := range status[p.key()] {
			for _, c := range ps.Conditions {
				if (c.Type == string(gwv1.RouteConditionAccepted) || c.Type == string(gwv1.RouteConditionResolvedRefs)) && c.Status == metav1.ConditionFalse {
					return fmt.Sprintf("the mesh (%s) does not accept %s: %s %s: %s", ps.ControllerName, p.key(), c.Type, c.Reason, c.Message)
				}
			}
		}
	}
	return ""
}

// writeGatewayRoutes makes sbx's HTTPRoutes and GRPCRoutes of the sandbox
// (label sandbox) in the namespaces be exactly desired: created, updated,
// and the rest of the sandbox's deleted (earlier keys, ports no longer
// mapped, Services now routed with VirtualServices). grpc says whether
// GRPCRoutes are served (to look for stale ones).
func writeGatewayRoutes(ctx context.Context, c Clients, sandbox string, namespaces []string, desired []gwObject, grpc bool, st *RouteStatus, progress func(Event)) error {
	if c.Dynamic == nil {
		if len(desired) > 0 {
			return errors.New("no dynamic client for Gateway API routes (a bug in the caller)")
		}
		return nil
	}
	want := map[string]bool{}
	for _, d := range desired {
		want[d.key()] = true
		ri := c.Dynamic.Resource(d.GVR).Namespace(d.Meta.Namespace)
		obj, err := runtime.DefaultUnstructuredConverter.ToUnstructured(d.Obj)
		if err != nil {
			return fmt.Errorf("%s: %w", d.key(), err)
		}
		u := &unstructured.Unstructured{Object: obj}
		unstructured.RemoveNestedField(u.Object, "status")
		unstructured.RemoveNestedField(u.Object, "metadata", "creationTimestamp")
		cur, err := ri.Get(ctx, d.Meta.Name, metav1.GetOptions{})
		action := ActionCreated
		switch {
		case apierrors.IsNotFound(err):
			_, err = ri.Create(ctx, u, metav1.CreateOptions{FieldValidation: "Strict"})
		case err != nil:
		case equalSpec(cur, u) && equalMeta(cur, u):
			action = ActionUnchanged
		default:
			action = ActionUpdated
			u.SetResourceVersion(cur.GetResourceVersion())
			_, err = ri.Update(ctx, u, metav1.UpdateOptions{FieldValidation: "Strict"})
		}
		if apierrors.IsConflict(err) || apierrors.IsAlreadyExists(err) {
			return errRouteConflict
		}
		if err != nil {
			return fmt.Errorf("%s %s: %w", strings.TrimSuffix(string(action), "d"), d.key(), err)
		}
		id := d.Meta.Namespace + "/" + d.Meta.Name
		if action != ActionUnchanged && !slices.Contains(st.Changed, id) {
			st.Changed = append(st.Changed, id)
		}
		progress(Event{Action: action, Kind: d.Kind, Namespace: d.Meta.Namespace, Name: d.Meta.Name, Message: fmt.Sprintf("%d rule(s)", d.Rules)})
	}
	sel := labels.Set{LabelManagedBy: ManagedByValue, LabelSandbox: sandbox, LabelComponent: "routes"}.String()
	kinds := []struct {
		kind string
		gvr  schema.GroupVersionResource
	}{{"HTTPRoute", HTTPRouteGVR}}
	if grpc {
		kinds = append(kinds, struct {
			kind string
			gvr  schema.GroupVersionResource
		}{"GRPCRoute", GRPCRouteGVR})
	}
	for _, k := range kinds {
		for _, ns := range namespaces {
			list, err := c.Dynamic.Resource(k.gvr).Namespace(ns).List(ctx, metav1.ListOptions{LabelSelector: sel})
			if apierrors.IsNotFound(err) || apierrors.IsMethodNotSupported(err) {
				continue // not served here
			}
			if err != nil {
				return fmt.Errorf("list sbx's %ss of sandbox %s in %s: %w", k.kind, sandbox, ns, err)
			}
			for _, u := range list.Items {
				if want[k.kind+" "+u.GetNamespace()+"/"+u.GetName()] {
					continue
				}
				err := c.Dynamic.Resource(k.gvr).Namespace(u.GetNamespace()).Delete(ctx, u.GetName(), metav1.DeleteOptions{})
				if err != nil && !apierrors.IsNotFound(err) {
					return fmt.Errorf("delete %s %s/%s: %w", k.kind, u.GetNamespace(), u.GetName(), err)
				}
				st.Changed = append(st.Changed, u.GetNamespace()+"/"+u.GetName())
				progress(Event{Action: ActionDeleted, Kind: k.kind, Namespace: u.GetNamespace(), Name: u.GetName(), Message: "no longer needed"})
			}
		}
	}
	return nil
}

func equalSpec(a, b *unstructured.Unstructured) bool {
	as, _, _ := unstructured.NestedFieldNoCopy(a.Object, "spec")
	bs, _, _ := unstructured.NestedFieldNoCopy(b.Object, "spec")
	return equalJSON(as, bs)
}

// equalJSON compares two decoded JSON values by their encoding (maps
// encode with sorted keys; numbers the same whichever Go type holds them).
func equalJSON(a, b any) bool {
	ja, err1 := json.Marshal(a)
	jb, err2 := json.Marshal(b)
	return err1 == nil && err2 == nil && bytes.Equal(ja, jb)
}

// equalMeta compares what sbx sets on its routes besides the spec: labels
// and owners.
func equalMeta(a, b *unstructured.Unstructured) bool {
	return equalJSON(a.GetLabels(), b.GetLabels()) && equalJSON(a.GetOwnerReferences(), b.GetOwnerReferences())
}

// grpcRoutesFrom is httpRoutesFrom for GRPCRoutes.
func grpcRoutesFrom(items []unstructured.Unstructured) ([]*gwv1.GRPCRoute, error) {
	out := make([]*gwv1.GRPCRoute, 0, len(items))
	for i := range items {
		var g gwv1.GRPCRoute
		if err := runtime.DefaultUnstructuredConverter.FromUnstructured(items[i].Object, &g); err != nil {
			return nil, fmt.Errorf("read GRPCRoute %s/%s: %w", items[i].GetNamespace(), items[i].GetName(), err)
		}
		out = append(out, &g)
	}
	return out, nil
}

// httpRoutesFrom converts listed routes to the typed API, skipping none:
// an object that does not convert is an error naming it.
func httpRoutesFrom(items []unstructured.Unstructured) ([]*gwv1.HTTPRoute, error) {
	out := make([]*gwv1.HTTPRoute, 0, len(items))
	for i := range items {
		var h gwv1.HTTPRoute
		if err := runtime.DefaultUnstructuredConverter.FromUnstructured(items[i].Object, &h); err != nil {
			return nil, fmt.Errorf("read HTTPRoute %s/%s: %w", items[i].GetNamespace(), items[i].GetName(), err)
		}
		out = append(out, &h)
	}
	return out, nil
}

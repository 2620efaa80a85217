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
	for _, g := range r.GatewayRoutes {
		if g.Kind == "GRPCRoute" && g.ServiceNamespace == s.Namespace && g.Service == s.Name && !g.Own {
			// Its rules match gRPC services and methods, which an HTTPRoute
			// copy cannot mirror; Istio would apply one kind or the other.
			return c, &RoutesRefusedError{Err: fmt.Errorf("Service %s/%s is routed by GRPCRoute %s/%s; sbx writes HTTPRoutes only so far, and an HTTPRoute next to a GRPCRoute of the same Service would not mirror its rules: leave %s out of the sandbox",
				s.Namespace, s.Name, g.Namespace, g.Name, s.Name)}
		}
	}
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

// planGatewayRoutes plans sbx's HTTPRoutes for the Services routed with
// Gateway API: one per Service port (more only past the CRD's limits),
// labelled like every sbx object and owned by the Lease of its namespace.
func planGatewayRoutes(sb istiovs.Sandbox, svcs []istiovs.Service, r *Routing, sandbox string,
	owners map[string]metav1.OwnerReference) ([]*gwv1.HTTPRoute, []meshreport.PortReport, []string, error) {

	var routes []*gwv1.HTTPRoute
	var report []meshreport.PortReport
	var warnings []string
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
				Key: sb.Key, Regex: sb.Regex, Routes: r.HTTPRoutes,
				IsOwn: func(h *gwv1.HTTPRoute) bool { return h.Labels[LabelManagedBy] == ManagedByValue },
			})
			if err != nil {
				return nil, nil, nil, &RoutesRefusedError{Err: err}
			}
			warnings = append(warnings, p.Warnings...)
			var names []string
			for _, h := range p.Routes {
				h.Labels = map[string]string{
					LabelManagedBy: ManagedByValue, LabelSandbox: sandbox, LabelRoutingKey: sb.Key, LabelComponent: "routes",
				}
				if o, ok := owners[h.Namespace]; ok {
					o.Controller = nil
					h.OwnerReferences = []metav1.OwnerReference{o}
				}
				routes = append(routes, h)
				names = append(names, "HTTPRoute "+h.Namespace+"/"+h.Name+" (sbx)")
			}
			chain := names
			for _, cd := range p.Mirrors {
				chain = append(chain, "HTTPRoute "+cd+" (CD)")
			}
			view := meshreport.ViewReport{Chain: chain, Applies: "Gateway API routes of Service " + s.Namespace + "/" + s.Name, Keyed: meshreport.KeyedSandbox}
			if why := notAccepted(r, p.Routes); why != "" {
				view.Keyed, view.Reason = meshreport.KeyedBaseline, why
			}
			report = append(report, meshreport.PortReport{Namespace: s.Namespace, Service: s.Name, Port: port, Workload: m.Workload,
				Views: []meshreport.ViewReport{view}})
		}
	}
	return routes, report, warnings, nil
}

// notAccepted says why the mesh refuses one of sbx's HTTPRoutes as it is
// in the cluster (status.parents[].conditions Accepted or ResolvedRefs
// False), "" when it does not (or has not said yet).
func notAccepted(r *Routing, planned []*gwv1.HTTPRoute) string {
	for _, p := range planned {
		for _, h := range r.HTTPRoutes {
			if h.Namespace != p.Namespace || h.Name != p.Name {
				continue
			}
			for _, ps := range h.Status.Parents {
				for _, c := range ps.Conditions {
					if (c.Type == string(gwv1.RouteConditionAccepted) || c.Type == string(gwv1.RouteConditionResolvedRefs)) && c.Status == metav1.ConditionFalse {
						return fmt.Sprintf("the mesh (%s) does not accept HTTPRoute %s/%s: %s %s: %s", ps.ControllerName, h.Namespace, h.Name, c.Type, c.Reason, c.Message)
					}
				}
			}
		}
	}
	return ""
}

// writeHTTPRoutes makes sbx's HTTPRoutes of the sandbox (label sandbox)
// in the namespaces be exactly desired: created, updated, and the rest of
// the sandbox's deleted (earlier keys, ports no longer mapped, Services
// now routed with VirtualServices).
func writeHTTPRoutes(ctx context.Context, c Clients, sandbox string, namespaces []string, desired []*gwv1.HTTPRoute, st *RouteStatus, progress func(Event)) error {
	if c.Dynamic == nil {
		if len(desired) > 0 {
			return errors.New("no dynamic client for HTTPRoutes (a bug in the caller)")
		}
		return nil
	}
	ri := c.Dynamic.Resource(HTTPRouteGVR)
	want := map[string]bool{}
	for _, h := range desired {
		want[h.Namespace+"/"+h.Name] = true
		obj, err := runtime.DefaultUnstructuredConverter.ToUnstructured(h)
		if err != nil {
			return fmt.Errorf("HTTPRoute %s/%s: %w", h.Namespace, h.Name, err)
		}
		u := &unstructured.Unstructured{Object: obj}
		unstructured.RemoveNestedField(u.Object, "status")
		unstructured.RemoveNestedField(u.Object, "metadata", "creationTimestamp")
		cur, err := ri.Namespace(h.Namespace).Get(ctx, h.Name, metav1.GetOptions{})
		action := ActionCreated
		switch {
		case apierrors.IsNotFound(err):
			_, err = ri.Namespace(h.Namespace).Create(ctx, u, metav1.CreateOptions{FieldValidation: "Strict"})
		case err != nil:
		case equalSpec(cur, u) && equalLabels(cur, u):
			action = ActionUnchanged
		default:
			action = ActionUpdated
			u.SetResourceVersion(cur.GetResourceVersion())
			_, err = ri.Namespace(h.Namespace).Update(ctx, u, metav1.UpdateOptions{FieldValidation: "Strict"})
		}
		if apierrors.IsConflict(err) || apierrors.IsAlreadyExists(err) {
			return errRouteConflict
		}
		if err != nil {
			return fmt.Errorf("%s HTTPRoute %s/%s: %w", strings.TrimSuffix(string(action), "d"), h.Namespace, h.Name, err)
		}
		if action != ActionUnchanged && !slices.Contains(st.Changed, h.Namespace+"/"+h.Name) {
			st.Changed = append(st.Changed, h.Namespace+"/"+h.Name)
		}
		progress(Event{Action: action, Kind: "HTTPRoute", Namespace: h.Namespace, Name: h.Name, Message: fmt.Sprintf("%d rule(s)", len(h.Spec.Rules))})
	}
	sel := labels.Set{LabelManagedBy: ManagedByValue, LabelSandbox: sandbox, LabelComponent: "routes"}.String()
	for _, ns := range namespaces {
		list, err := ri.Namespace(ns).List(ctx, metav1.ListOptions{LabelSelector: sel})
		if apierrors.IsNotFound(err) || apierrors.IsMethodNotSupported(err) {
			continue // no Gateway API here
		}
		if err != nil {
			return fmt.Errorf("list sbx's HTTPRoutes of sandbox %s in %s: %w", sandbox, ns, err)
		}
		for _, u := range list.Items {
			if want[u.GetNamespace()+"/"+u.GetName()] {
				continue
			}
			err := ri.Namespace(u.GetNamespace()).Delete(ctx, u.GetName(), metav1.DeleteOptions{})
			if err != nil && !apierrors.IsNotFound(err) {
				return fmt.Errorf("delete HTTPRoute %s/%s: %w", u.GetNamespace(), u.GetName(), err)
			}
			st.Changed = append(st.Changed, u.GetNamespace()+"/"+u.GetName())
			progress(Event{Action: ActionDeleted, Kind: "HTTPRoute", Namespace: u.GetNamespace(), Name: u.GetName(), Message: "no longer needed"})
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

func equalLabels(a, b *unstructured.Unstructured) bool {
	return equalJSON(a.GetLabels(), b.GetLabels()) && equalJSON(a.GetOwnerReferences(), b.GetOwnerReferences())
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

package cluster

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	istionet "istio.io/client-go/pkg/apis/networking/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/discovery"
	"k8s.io/utils/ptr"
	gwv1 "sigs.k8s.io/gateway-api/apis/v1"
	"sigs.k8s.io/yaml"

	"github.com/sbx-dev/sbx/cluster/istiovs"
	"github.com/sbx-dev/sbx/cluster/meshreport"
	"github.com/sbx-dev/sbx/cluster/routingkey"
	"github.com/sbx-dev/sbx/cluster/spec"
)

// Routing is everything the mesh's routing of a Service depends on
// besides the Services themselves.
type Routing struct {
	// VirtualServices in every namespace sbx could read.
	VirtualServices []*istionet.VirtualService
	// Partial is non-empty when only some namespaces could be read: it
	// says which permission is missing.
	Partial string
	// DefaultExportTo is the mesh's defaultVirtualServiceExportTo (nil:
	// Istio's default, "*"); ExportToUnknown says why it is not known ("":
	// it is).
	DefaultExportTo []string
	ExportToUnknown string
	// GatewayRoutes are the Gateway API routes with a Service as parent.
	GatewayRoutes []GatewayRoute
	// HTTPRoutes are every HTTPRoute (sbx's own too), for the Gateway API
	// backend's planner.
	HTTPRoutes []*gwv1.HTTPRoute
	GRPCRoutes []*gwv1.GRPCRoute
	// GRPCServed: the cluster serves GRPCRoutes.
	GRPCServed bool
	// GatewayAPIServed: the cluster serves HTTPRoutes; IstioServed: it
	// serves VirtualServices; Linkerd: Linkerd's APIs are served (its
	// mesh routes only with Gateway API).
	GatewayAPIServed, IstioServed, Linkerd bool
}

// GatewayRoute is an HTTPRoute or GRPCRoute attached to a Service (GAMMA).
type GatewayRoute struct {
	Kind             string
	Namespace, Name  string
	ServiceNamespace string
	Service          string
	// Own is true for sbx's own routes (labelled managed-by sbx).
	Own bool
}

// Gateway API route resources sbx reads.
var (
	HTTPRouteGVR = schema.GroupVersionResource{Group: "gateway.networking.k8s.io", Version: "v1", Resource: "httproutes"}
	GRPCRouteGVR = schema.GroupVersionResource{Group: "gateway.networking.k8s.io", Version: "v1", Resource: "grpcroutes"}
)

// Routing implements Baseline: VirtualServices of every namespace (of the
// given ones when the caller may not list cluster-wide, with a warning
// naming the permission), the mesh config's default exportTo when
// readable, and Gateway API routes attached to Services.
func (l LiveBaseline) Routing(ctx context.Context, namespaces []string) (*Routing, error) {
	r := &Routing{}
	vsl := l.C.Istio.NetworkingV1().VirtualServices(metav1.NamespaceAll)
	list, err := vsl.List(ctx, metav1.ListOptions{})
	r.IstioServed = err == nil || apierrors.IsForbidden(err)
	switch {
	case err == nil:
		r.VirtualServices = list.Items
	case apierrors.IsNotFound(err):
		// No Istio: only the Gateway API backend can route (Linkerd).
	case apierrors.IsForbidden(err):
		r.Partial = fmt.Sprintf("sbx may not list VirtualServices in all namespaces (list virtualservices.networking.istio.io at cluster scope), so it only sees those in %s: a VirtualService elsewhere that routes these Services would be missed; bind the ClusterRole sbx-route-reader from deploy/rbac.yaml",
			strings.Join(namespaces, ", "))
		for _, ns := range namespaces {
			nl, err := l.C.Istio.NetworkingV1().VirtualServices(ns).List(ctx, metav1.ListOptions{})
			if err != nil {
				return nil, fmt.Errorf("list VirtualServices in namespace %s: %w", ns, err)
			}
			r.VirtualServices = append(r.VirtualServices, nl.Items...)
		}
	default:
		return nil, fmt.Errorf("list VirtualServices in all namespaces: %w", err)
	}
	if r.IstioServed {
		r.DefaultExportTo, r.ExportToUnknown = l.meshExportTo(ctx)
	}
	r.Linkerd = ServesLinkerd(l.C.Kube.Discovery())
	if l.C.Dynamic != nil {
		for _, g := range []struct {
			gvr  schema.GroupVersionResource
			kind string
		}{{HTTPRouteGVR, "HTTPRoute"}, {GRPCRouteGVR, "GRPCRoute"}} {
			ul, err := l.C.Dynamic.Resource(g.gvr).Namespace(metav1.NamespaceAll).List(ctx, metav1.ListOptions{})
			if err != nil {
				if apierrors.IsForbidden(err) {
					// Installed but not readable: a Service they route
					// would be missed, and its VirtualService routes ignored.
					r.Partial = strings.TrimPrefix(r.Partial+"; "+fmt.Sprintf("sbx may not list %ss in all namespaces (list %s.%s at cluster scope): a Service a %s routes takes its traffic there and sbx's routes for it would not apply; bind the ClusterRole sbx-route-reader from deploy/rbac.yaml",
						g.kind, g.gvr.Resource, g.gvr.Group, g.kind), "; ")
					continue
				}
				if apierrors.IsNotFound(err) || apierrors.IsMethodNotSupported(err) {
					continue // not installed: VirtualServices are all there is
				}
				return nil, fmt.Errorf("list %ss in all namespaces: %w", g.kind, err)
			}
			for i := range ul.Items {
				r.GatewayRoutes = append(r.GatewayRoutes, serviceParents(g.kind, &ul.Items[i])...)
			}
			if g.gvr == HTTPRouteGVR {
				r.GatewayAPIServed = true
				if r.HTTPRoutes, err = httpRoutesFrom(ul.Items); err != nil {
					return nil, err
				}
			} else {
				r.GRPCServed = true
				if r.GRPCRoutes, err = grpcRoutesFrom(ul.Items); err != nil {
					return nil, err
				}
			}
		}
	}
	return r, nil
}

// ServesLinkerd reports whether the API server serves Linkerd's APIs (its
// control plane is installed): Linkerd routes by header only with Gateway
// API routes. Routing and sbx doctor both decide with it.
func ServesLinkerd(d discovery.ServerGroupsInterface) bool {
	groups, err := d.ServerGroups()
	if err != nil {
		return false
	}
	for _, g := range groups.Groups {
		if strings.HasSuffix(g.Name, "linkerd.io") {
			return true
		}
	}
	return false
}

// meshExportTo reads defaultVirtualServiceExportTo from Istio's mesh
// config (ConfigMap istio-system/istio, key mesh), or says why it cannot.
func (l LiveBaseline) meshExportTo(ctx context.Context) ([]string, string) {
	cm, err := l.C.Kube.CoreV1().ConfigMaps("istio-system").Get(ctx, "istio", metav1.GetOptions{})
	switch {
	case apierrors.IsForbidden(err):
		return nil, "sbx may not read Istio's mesh config (get configmap istio-system/istio; the ClusterRole sbx-route-reader in deploy/rbac.yaml allows it)"
	case apierrors.IsNotFound(err):
		return nil, "Istio's mesh config is not in ConfigMap istio-system/istio (a revisioned install keeps it elsewhere)"
	case err != nil:
		return nil, fmt.Sprintf("sbx could not read Istio's mesh config (ConfigMap istio-system/istio): %v", err)
	}
	e, err := parseMeshExportTo(cm.Data["mesh"])
	if err != nil {
		return nil, fmt.Sprintf("Istio's mesh config (ConfigMap istio-system/istio, key mesh) does not parse: %v", err)
	}
	return e, ""
}

func parseMeshExportTo(mesh string) ([]string, error) {
	var mc struct {
		DefaultVirtualServiceExportTo []string `json:"defaultVirtualServiceExportTo"`
	}
	if err := yaml.Unmarshal([]byte(mesh), &mc); err != nil {
		return nil, err
	}
	return mc.DefaultVirtualServiceExportTo, nil
}

// ParentsAny reports whether an HTTPRoute or GRPCRoute has a Service
// parent whose name is matched (the live route watch's filter).
func ParentsAny(u *unstructured.Unstructured, match func(service string) bool) bool {
	for _, p := range serviceParents("", u) {
		if match(p.Service) {
			return true
		}
	}
	return false
}

// serviceParents returns the Services an HTTPRoute or GRPCRoute names as
// parents (group "" or "core", kind Service).
func serviceParents(kind string, u *unstructured.Unstructured) []GatewayRoute {
	refs, _, _ := unstructured.NestedSlice(u.Object, "spec", "parentRefs")
	var out []GatewayRoute
	for _, ref := range refs {
		m, ok := ref.(map[string]any)
		if !ok {
			continue
		}
		group, _ := m["group"].(string)
		k, _ := m["kind"].(string)
		name, _ := m["name"].(string)
		ns, _ := m["namespace"].(string)
		if (group != "" && group != "core") || k != "Service" || name == "" {
			continue
		}
		if ns == "" {
			ns = u.GetNamespace()
		}
		out = append(out, GatewayRoute{Kind: kind, Namespace: u.GetNamespace(), Name: u.GetName(), ServiceNamespace: ns, Service: name,
			Own: u.GetLabels()[LabelManagedBy] == ManagedByValue})
	}
	return out
}

// RouteOptions identify the routes of one sandbox for Reconcile, Delete
// and the daemon's drift repair.
type RouteOptions struct {
	// BaggageKey, ClusterDomain and Mesh as in Options.
	BaggageKey    string
	ClusterDomain string
	Mesh          string
}

// RouteStatus is the outcome of a route reconcile.
type RouteStatus struct {
	// Report says, per mapped Service port and client namespace, what
	// keyed requests reach.
	Report []meshreport.PortReport `json:"report,omitempty"`
	// Warnings are what the user should know (routes that cannot work,
	// GitOps-synced VirtualServices).
	Warnings []string `json:"warnings,omitempty"`
	// Changed lists the VirtualServices and HTTPRoutes written
	// ("namespace/name").
	Changed []string `json:"changed,omitempty"`
	// Backends say how each mapped Service is routed, and why.
	Backends []BackendChoice `json:"backends,omitempty"`
}

// ErrRouteConflict is returned (wrapped) when VirtualServices kept
// changing under sbx's writes through every planning round: others (CD,
// other sandboxes) write them at the same time; trying again later works.
var ErrRouteConflict = errors.New("VirtualServices kept changing while sbx wrote its routes (others write them at the same time); sbx tries again")

// errRouteConflict asks reconcile to plan again against fresh objects.
var errRouteConflict = ErrRouteConflict

// maxRouteRounds bounds the plan-write rounds when others write the same
// VirtualServices at the same time (each round keeps what it wrote).
const maxRouteRounds = 40

// ReconcileRoutes makes the sandbox's mesh routes match the cluster as it
// is now: it resolves the workloads again, reads every VirtualService,
// plans, and writes what differs (each write conditional on the version it
// planned against; a conflict plans again). It is what Apply does for
// routes, and what the daemon runs when a VirtualService its routes
// depend on changes.
func ReconcileRoutes(ctx context.Context, c Clients, sb *spec.Sandbox, key string, o RouteOptions, progress func(Event)) (*RouteStatus, error) {
	if progress == nil {
		progress = func(Event) {}
	}
	rsb, nss, warns, err := routeInput(ctx, c, sb, key, o)
	if err != nil {
		return nil, err
	}
	st, err := reconcile(ctx, c, rsb, nss, sb.Name, o.Mesh, o.ClusterDomain, progress)
	if st != nil {
		st.Warnings = append(warns, st.Warnings...)
	}
	return st, err
}

// PreviewRoutes plans the sandbox's mesh routes against the cluster as it
// is now and writes nothing: what sbx connect would get (sbx doctor). The
// sandbox need not exist; key is any valid routing key.
func PreviewRoutes(ctx context.Context, c Clients, sb *spec.Sandbox, key string, o RouteOptions) (*RouteStatus, error) {
	rsb, nss, warns, err := routeInput(ctx, c, sb, key, o)
	if err != nil {
		return nil, err
	}
	routing, err := LiveBaseline{C: c}.Routing(ctx, routingNamespaces(nss, rsb))
	if err != nil {
		return nil, err
	}
	live := newLiveness(ctx, c)
	plan, err := planRoutes(rsb, routing, o.Mesh, o.ClusterDomain, live.alive, nil, sb.Name)
	if err != nil {
		return nil, err
	}
	return &RouteStatus{Report: plan.Report, Backends: plan.Choices, Warnings: append(append(warns, plan.Warnings...), live.warnings()...)}, nil
}

// routeInput resolves the sandbox's workloads and returns the routes to
// plan, its namespaces and what the user should know about them.
func routeInput(ctx context.Context, c Clients, sb *spec.Sandbox, key string, o RouteOptions) (istiovs.Sandbox, []string, []string, error) {
	workloads, err := Resolve(ctx, LiveBaseline{C: c}, sb)
	if err != nil {
		return istiovs.Sandbox{}, nil, nil, err
	}
	nss := sb.Namespaces()
	if len(nss) == 0 {
		return istiovs.Sandbox{}, nil, nil, errors.New("no local workloads (spec.local is empty)")
	}
	regex, err := BaggageRegex(cmpOr(o.BaggageKey, routingkey.DefaultBaggageKey), key)
	if err != nil {
		return istiovs.Sandbox{}, nil, nil, err
	}
	rsb, warns, err := sandboxRoutes(key, nss[0], regex, workloads)
	return rsb, nss, warns, err
}

// reconcile plans and writes until the plan is in place.
func reconcile(ctx context.Context, c Clients, rsb istiovs.Sandbox, nss []string, sandbox, mesh, domain string, progress func(Event)) (*RouteStatus, error) {
	live := newLiveness(ctx, c)
	st := &RouteStatus{}
	for round := 0; ; round++ {
		routing, err := LiveBaseline{C: c}.Routing(ctx, routingNamespaces(nss, rsb))
		if err != nil {
			return nil, err
		}
		owners := map[string]metav1.OwnerReference{}
		for _, s := range rsb.Services {
			if _, ok := owners[s.Namespace]; ok || rsb.Key == "" {
				continue
			}
			l, err := c.Kube.CoordinationV1().Leases(s.Namespace).Get(ctx, LeaseName(sandbox), metav1.GetOptions{})
			if err != nil {
				return nil, fmt.Errorf("read Lease %s/%s: %w", s.Namespace, LeaseName(sandbox), err)
			}
			owners[s.Namespace] = leaseOwner(l.Name, l.UID)
		}
		plan, err := planRoutes(rsb, routing, mesh, domain, live.alive, owners, sandbox)
		if err != nil {
			return nil, err
		}
		st.Report, st.Backends, st.Warnings = plan.Report, plan.Choices, append(plan.Warnings, live.warnings()...)
		if round == 0 {
			for _, b := range plan.Choices {
				progress(Event{Action: ActionRouting, Kind: "Service", Namespace: b.Namespace, Name: b.Service, Message: b.Summary()})
			}
		}
		err = writeRoutes(ctx, c, plan.VS, st, progress)
		if err == nil && sandbox != "" && (len(plan.Gateway) > 0 || routing.GatewayAPIServed) {
			err = writeGatewayRoutes(ctx, c, sandbox, routingNamespaces(nss, rsb), plan.Gateway, routing.GRPCServed, st, progress)
		}
		if errors.Is(err, errRouteConflict) && round < maxRouteRounds {
			continue
		}
		if err != nil {
			return st, err
		}
		for _, k := range plan.Unchanged {
			ns, name, _ := strings.Cut(k, "/")
			progress(Event{Action: ActionUnchanged, Kind: "VirtualService", Namespace: ns, Name: name, Message: "sandbox routes in place"})
		}
		return st, nil
	}
}

// routingNamespaces are the namespaces to read when sbx may not list
// VirtualServices cluster-wide: the sandbox's and its Services'.
func routingNamespaces(nss []string, rsb istiovs.Sandbox) []string {
	out := slices.Clone(nss)
	for _, s := range rsb.Services {
		out = addNamespaces(out, s.Namespace)
	}
	return out
}

// writeRoutes writes each target, conditional on the version planned
// against. A target that changed meanwhile is skipped and reported as
// errRouteConflict after the others are written, so the next round plans
// only what is left.
func writeRoutes(ctx context.Context, c Clients, targets []RouteTarget, st *RouteStatus, progress func(Event)) error {
	conflict := false
	for _, t := range targets {
		cl := c.Istio.NetworkingV1().VirtualServices(t.Namespace)
		var action Action
		var err error
		msg := fmt.Sprintf("%d sandbox route(s)", len(t.Routes))
		switch {
		case t.Delete:
			action, msg = ActionDeleted, "no sandbox routes left"
			err = cl.Delete(ctx, t.Name, metav1.DeleteOptions{Preconditions: &metav1.Preconditions{ResourceVersion: ptr.To(t.ResourceVersion)}})
			if apierrors.IsNotFound(err) {
				err = nil
			}
		case t.Create:
			action = ActionCreated
			_, err = cl.Create(ctx, t.Object, metav1.CreateOptions{})
		case t.Recreate:
			action, msg = ActionCreated, "recreated so that it is the newest VirtualService of its host"
			err = recreate(ctx, c, t)
		default:
			action = ActionUpdated
			obj := t.Object.DeepCopy()
			obj.ResourceVersion = t.ResourceVersion
			_, err = cl.Update(ctx, obj, metav1.UpdateOptions{})
		}
		if apierrors.IsConflict(err) || apierrors.IsAlreadyExists(err) || (apierrors.IsNotFound(err) && !t.Create) {
			conflict = true
			continue
		}
		if apierrors.IsForbidden(err) {
			// Not fatal: requests without the key are untouched either way;
			// keyed ones through this VirtualService reach the baseline.
			st.Warnings = append(st.Warnings, fmt.Sprintf("sbx may not %s VirtualService %s/%s, so keyed requests it routes reach the baseline: bind the Role sbx-developer (deploy/rbac.yaml) in namespace %s (%v)",
				strings.TrimSuffix(string(action), "d"), t.Namespace, t.Name, t.Namespace, err))
			continue
		}
		if err != nil {
			return fmt.Errorf("%s VirtualService %s/%s: %w", strings.TrimSuffix(string(action), "d"), t.Namespace, t.Name, err)
		}
		if !slices.Contains(st.Changed, t.Namespace+"/"+t.Name) {
			st.Changed = append(st.Changed, t.Namespace+"/"+t.Name)
		}
		progress(Event{Action: action, Kind: "VirtualService", Namespace: t.Namespace, Name: t.Name, Message: msg})
	}
	if conflict {
		return errRouteConflict
	}
	return nil
}

// recreate deletes sbx's own VirtualService and creates it again, so that
// Istio, which orders VirtualServices by creation time (seconds), puts it
// after a newer one. Deleting it first only loses keyed routing for a
// moment: everything it holds besides keyed routes is what Istio does
// without it.
func recreate(ctx context.Context, c Clients, t RouteTarget) error {
	cl := c.Istio.NetworkingV1().VirtualServices(t.Namespace)
	err := cl.Delete(ctx, t.Name, metav1.DeleteOptions{Preconditions: &metav1.Preconditions{ResourceVersion: ptr.To(t.ResourceVersion)}})
	if err != nil && !apierrors.IsNotFound(err) {
		return err
	}
	// Creation times have a resolution of one second: the new one must
	// not share the second of the VirtualService it must follow.
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-time.After(time.Until(time.Now().Truncate(time.Second).Add(time.Second))):
	}
	obj := t.Object.DeepCopy()
	obj.ResourceVersion = ""
	_, err = cl.Create(ctx, obj, metav1.CreateOptions{})
	return err
}

// liveness tells whether a routing key still has a sandbox: an sbx Lease
// with that key in the namespace of its sandbox Services. Answers are
// cached for one reconcile; an error reading says "alive", so sbx never
// removes routes it cannot prove dead.
type liveness struct {
	ctx   context.Context
	c     Clients
	cache map[string]bool
	// unknown are the sandboxes whose Leases could not be listed, by
	// namespace/key: their routes are kept, and the user is told.
	unknown map[string]error
}

func newLiveness(ctx context.Context, c Clients) *liveness {
	return &liveness{ctx: ctx, c: c, cache: map[string]bool{}, unknown: map[string]error{}}
}

// alive reports whether the sandbox with routing key key, anchored in
// namespace home, still has a Lease. When that cannot be known it counts
// as alive: removing a live sandbox's routes would break it.
func (l *liveness) alive(key, home string) bool {
	id := home + "/" + key
	if v, ok := l.cache[id]; ok {
		return v
	}
	sel := labels.Set{LabelManagedBy: ManagedByValue, LabelRoutingKey: key}.String()
	list, err := l.c.Kube.CoordinationV1().Leases(home).List(l.ctx, metav1.ListOptions{LabelSelector: sel})
	v := err != nil || len(list.Items) > 0
	if err != nil {
		l.unknown[id] = err
	}
	l.cache[id] = v
	return v
}

// warnings say whose routes were kept because their Leases could not be
// listed.
func (l *liveness) warnings() []string {
	var out []string
	for id, err := range l.unknown {
		home, key, _ := strings.Cut(id, "/")
		out = append(out, fmt.Sprintf("could not tell whether the sandbox with routing key %s (Leases in namespace %s) still exists (%v), so its routes are kept; `sbx gc` by someone who may list Leases there removes them if it is gone",
			key, home, err))
	}
	slices.Sort(out)
	return out
}

// removeRoutes removes the routes of keys from every VirtualService the
// caller can read, deletes sbx's own VirtualServices left without keyed
// routes, and also removes routes whose sandbox is gone (dead routes).
// keys empty only sweeps dead routes.
func removeRoutes(ctx context.Context, c Clients, sandbox string, keys, nss []string, domain string, progress func(Event)) (int, error) {
	sb := istiovs.Sandbox{}
	if len(keys) > 0 {
		sb.Key, sb.StaleKeys = keys[0], keys[1:]
	}
	st, err := reconcile(ctx, c, sb, nss, sandbox, "", domain, progress)
	if st == nil {
		return 0, err
	}
	return len(st.Changed), err
}

// Leftovers lists VirtualServices with dead routes and sbx's own
// VirtualServices without a live sandbox, changing nothing (what
// SweepRoutes, and `sbx gc`, removes).
func Leftovers(ctx context.Context, c Clients, namespaces []string, domain string) ([]meshreport.Leftover, error) {
	routing, err := LiveBaseline{C: c}.Routing(ctx, namespaces)
	if err != nil {
		return nil, err
	}
	live := newLiveness(ctx, c)
	plan, err := istiovs.MakePlan(toMesh(routing, domain), istiovs.Sandbox{}, planOptions(routing, live.alive))
	if err != nil {
		return nil, err
	}
	return plan.Leftovers(), nil
}

// SweepRoutes removes dead routes (of sandboxes whose Lease is gone) from
// every VirtualService the caller can read, and deletes sbx's own
// VirtualServices left without a live sandbox's route. namespaces are
// where to look when the caller may not list VirtualServices cluster-wide.
func SweepRoutes(ctx context.Context, c Clients, namespaces []string, domain string, progress func(Event)) ([]meshreport.Leftover, error) {
	if progress == nil {
		progress = func(Event) {}
	}
	before, err := Leftovers(ctx, c, namespaces, domain)
	if err != nil || len(before) == 0 {
		return nil, err
	}
	st, err := reconcile(ctx, c, istiovs.Sandbox{}, namespaces, "", "", domain, progress)
	var out []meshreport.Leftover
	if st != nil {
		for _, l := range before {
			if slices.Contains(st.Changed, l.Namespace+"/"+l.Name) {
				out = append(out, l)
			}
		}
	}
	return out, err
}

func cmpOr(a, b string) string {
	if a != "" {
		return a
	}
	return b
}

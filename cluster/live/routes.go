package live

import (
	"context"
	"strings"
	"sync"
	"time"

	istionet "istio.io/client-go/pkg/apis/networking/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/tools/cache"

	"github.com/sbx-dev/sbx/cluster"
	"github.com/sbx-dev/sbx/cluster/istiovs"
	"github.com/sbx-dev/sbx/cluster/meshreport"
	"github.com/sbx-dev/sbx/cluster/spec"
)

// Route watching: how quickly a change is answered, and how often routes
// are checked with no change seen (a watch can miss events while the API
// server restarts) unless Options.RouteResync says otherwise.
const (
	routeDebounce = 250 * time.Millisecond
	routeResync   = 30 * time.Second
)

// Leftovers lists the routes of sandboxes that are gone, in namespace ns
// ("" = all the user may list, else the context's namespace).
func (c *Cluster) Leftovers(ctx context.Context, ns string) ([]meshreport.Leftover, error) {
	out, err := cluster.Leftovers(ctx, c.clients, c.sweepNamespaces(ns), "")
	return out, explainAPIError(err, c.server, apiOp{verb: "list", resource: "virtualservices.networking.istio.io", namespace: ns})
}

// SweepRoutes removes the routes Leftovers lists and returns them.
func (c *Cluster) SweepRoutes(ctx context.Context, ns string) ([]meshreport.Leftover, error) {
	out, err := cluster.SweepRoutes(ctx, c.clients, c.sweepNamespaces(ns), "", nil)
	return out, explainAPIError(err, c.server, apiOp{namespace: ns})
}

// sweepNamespaces are where to look for dead routes when VirtualServices
// cannot be listed cluster-wide: the -n namespace, else the context's.
func (c *Cluster) sweepNamespaces(ns string) []string {
	if ns != "" {
		return []string{ns}
	}
	if c.namespace != "" {
		return []string{c.namespace}
	}
	return nil
}

// WatchRoutes keeps a connected sandbox's routes in place until ctx
// ends, reporting each check (its status, or why it failed): an informer
// on VirtualServices (of every namespace, or of the sandbox's when the
// user may not watch them all) wakes a reconcile of the sandbox's routes,
// which rewrites only what differs from the plan; a VirtualService sbx
// itself wrote wakes it too and finds nothing to do. A resync checks now
// and then regardless.
func (c *Cluster) WatchRoutes(ctx context.Context, sb *spec.Sandbox, ref cluster.Ref, o cluster.Options, report func(*cluster.RouteStatus, error)) {
	kick := make(chan struct{}, 1)
	poke := func() {
		select {
		case kick <- struct{}{}:
		default:
		}
	}
	// Only changes that can concern the sandbox's routes wake a check, so
	// that CD churn elsewhere in the cluster costs nothing: the names of
	// its Services are known after the first check.
	var relMu sync.Mutex
	var names map[string]bool
	known := func() map[string]bool {
		relMu.Lock()
		defer relMu.Unlock()
		return names
	}
	var wg sync.WaitGroup
	defer wg.Wait()
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	// inform runs an informer on list/watch that wakes a check when an
	// object, before or after a change, is relevant.
	inform := func(list func(context.Context, metav1.ListOptions) (runtime.Object, error),
		watchFn func(context.Context, metav1.ListOptions) (watch.Interface, error),
		obj runtime.Object, relevant func(any) bool) bool {
		inf := cache.NewSharedIndexInformer(listWatch{&cache.ListWatch{ListWithContextFunc: list, WatchFuncWithContext: watchFn}}, obj, 0, cache.Indexers{})
		pokeIf := func(objs ...any) {
			for _, o := range objs {
				if d, ok := o.(cache.DeletedFinalStateUnknown); ok {
					o = d.Obj
				}
				if relevant(o) {
					poke()
					return
				}
			}
		}
		if _, err := inf.AddEventHandler(cache.ResourceEventHandlerFuncs{
			AddFunc:    func(obj any) { pokeIf(obj) },
			UpdateFunc: func(old, obj any) { pokeIf(old, obj) },
			DeleteFunc: func(obj any) { pokeIf(obj) },
		}); err != nil {
			report(nil, err)
			return false
		}
		wg.Go(func() { inf.RunWithContext(ctx) })
		return true
	}
	for _, ns := range c.watchNamespaces(ctx, sb) {
		vsc := c.clients.Istio.NetworkingV1().VirtualServices(ns)
		if !inform(func(ctx context.Context, lo metav1.ListOptions) (runtime.Object, error) { return vsc.List(ctx, lo) },
			func(ctx context.Context, lo metav1.ListOptions) (watch.Interface, error) { return vsc.Watch(ctx, lo) },
			&istionet.VirtualService{}, func(o any) bool { return relevantVS(o, known(), ref.RoutingKey) }) {
			return
		}
	}
	// Gateway API routes: one that takes a Service of the sandbox over
	// makes sbx's VirtualService routes stop applying (the check then
	// says so), one removed lets them apply again, and sbx's own deleted
	// is put back.
	for _, gvr := range c.watchableGatewayRoutes(ctx) {
		ri := c.clients.Dynamic.Resource(gvr)
		if !inform(func(ctx context.Context, lo metav1.ListOptions) (runtime.Object, error) { return ri.List(ctx, lo) },
			func(ctx context.Context, lo metav1.ListOptions) (watch.Interface, error) { return ri.Watch(ctx, lo) },
			&unstructured.Unstructured{}, func(o any) bool {
				u, ok := o.(*unstructured.Unstructured)
				n := known()
				return !ok || n == nil || cluster.ParentsAny(u, func(svc string) bool { return n[strings.ToLower(svc)] })
			}) {
			return
		}
	}
	every := c.o.RouteResync
	if every <= 0 {
		every = routeResync
	}
	resync := time.NewTicker(every)
	defer resync.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-kick:
		case <-resync.C:
		}
		// Let a burst of events (a sync rewriting several objects, our
		// own writes) settle into one check.
		select {
		case <-ctx.Done():
			return
		case <-time.After(routeDebounce):
		}
		select {
		case <-kick:
		default:
		}
		st, err := cluster.ReconcileRoutes(ctx, c.clients, sb, ref.RoutingKey,
			cluster.RouteOptions{BaggageKey: o.BaggageKey, ClusterDomain: o.ClusterDomain, Mesh: o.Mesh}, nil)
		if ctx.Err() != nil {
			return
		}
		if st != nil {
			n := map[string]bool{}
			for _, p := range st.Report {
				n[strings.ToLower(p.Service)] = true
			}
			relMu.Lock()
			names = n
			relMu.Unlock()
		}
		report(st, explainAPIError(err, c.server, apiOp{}))
	}
}

// listWatch makes the informer list, then watch, instead of a streaming
// list: the Istio clientset's fake (which the simulated cluster serves)
// never sends the bookmark that ends one, and a plain list costs a real
// API server nothing for a few VirtualServices.
type listWatch struct{ *cache.ListWatch }

// IsWatchListSemanticsUnSupported implements the reflector's opt-out.
func (listWatch) IsWatchListSemanticsUnSupported() bool { return true }

// relevantVS reports whether a VirtualService event can concern the
// sandbox's routes: while the Services' names are unknown, every one;
// then those naming one of them (as a host or a destination, by its first
// label), wildcards, delegates (no hosts), sbx's own, and those holding
// the sandbox's routes.
func relevantVS(obj any, names map[string]bool, key string) bool {
	if d, ok := obj.(cache.DeletedFinalStateUnknown); ok {
		obj = d.Obj
	}
	v, ok := obj.(*istionet.VirtualService)
	if !ok || names == nil {
		return true
	}
	if v.Labels[cluster.LabelManagedBy] == cluster.ManagedByValue || len(v.Spec.Hosts) == 0 {
		return true
	}
	named := func(h string) bool {
		first, _, _ := strings.Cut(strings.ToLower(h), ".")
		return strings.HasPrefix(h, "*") || names[first]
	}
	for _, h := range v.Spec.Hosts {
		if named(h) {
			return true
		}
	}
	for _, r := range v.Spec.Http {
		if istiovs.RouteKey(r.GetName()) == key {
			return true
		}
		for _, d := range r.Route {
			if named(d.GetDestination().GetHost()) {
				return true
			}
		}
	}
	return false
}

// watchableGatewayRoutes are the Gateway API route kinds served and
// listable cluster-wide (the ClusterRole sbx-route-reader); the others
// are left to the periodic check.
func (c *Cluster) watchableGatewayRoutes(ctx context.Context) []schema.GroupVersionResource {
	if c.clients.Dynamic == nil {
		return nil
	}
	var out []schema.GroupVersionResource
	for _, gvr := range []schema.GroupVersionResource{cluster.HTTPRouteGVR, cluster.GRPCRouteGVR} {
		if _, err := c.clients.Dynamic.Resource(gvr).List(ctx, metav1.ListOptions{Limit: 1}); err == nil {
			out = append(out, gvr)
		}
	}
	return out
}

// watchNamespaces are where to watch VirtualServices: every namespace
// ("") when the user may list them all, else the sandbox's.
func (c *Cluster) watchNamespaces(ctx context.Context, sb *spec.Sandbox) []string {
	_, err := c.clients.Istio.NetworkingV1().VirtualServices(metav1.NamespaceAll).List(ctx, metav1.ListOptions{Limit: 1})
	if apierrors.IsForbidden(err) {
		return sb.Namespaces()
	}
	return []string{metav1.NamespaceAll}
}

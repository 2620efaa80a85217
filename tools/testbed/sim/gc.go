package sim

import (
	"context"
	"fmt"
	"log/slog"
	"sync"

	istioapiv1 "istio.io/client-go/pkg/apis/networking/v1"
	istioapiv1alpha3 "istio.io/client-go/pkg/apis/networking/v1alpha3"
	istioapiv1beta1 "istio.io/client-go/pkg/apis/networking/v1beta1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/tools/cache"
)

// garbageCollector plays the cluster's garbage collector with background
// propagation: when an object is deleted, the objects in its namespace
// whose ownerReferences name its uid are deleted too (and so on down).
type garbageCollector struct {
	log     *slog.Logger
	clients *Clients
	factory informers.SharedInformerFactory
	extra   []cache.SharedIndexInformer
	stop    chan struct{}
	work    chan owner
	wg      sync.WaitGroup
}

type owner struct {
	ns  string
	uid types.UID
}

// dependentKinds are the resources the simulated GC scans for dependents:
// list returns the objects of a namespace, del deletes one by name.
type dependentKind struct {
	name string
	list func(ctx context.Context, ns string) ([]metav1.Object, error)
	del  func(ctx context.Context, ns, name string) error
}

func newGarbageCollector(ctx context.Context, logger *slog.Logger, clients *Clients) (*garbageCollector, error) {
	g := &garbageCollector{
		log:     logger.With("component", "garbage-collector"),
		clients: clients,
		factory: informers.NewSharedInformerFactory(clients.Kube, 0),
		stop:    make(chan struct{}),
		work:    make(chan owner, 1024),
	}
	onDelete := cache.ResourceEventHandlerFuncs{DeleteFunc: func(obj any) {
		if t, ok := obj.(cache.DeletedFinalStateUnknown); ok {
			obj = t.Obj
		}
		m, err := meta.Accessor(obj)
		if err != nil || m.GetUID() == "" {
			return
		}
		select {
		case g.work <- owner{ns: m.GetNamespace(), uid: m.GetUID()}:
		case <-g.stop:
		}
	}}
	f := g.factory
	kube := []cache.SharedIndexInformer{
		f.Apps().V1().Deployments().Informer(),
		f.Apps().V1().ReplicaSets().Informer(),
		f.Core().V1().Services().Informer(),
		f.Core().V1().Secrets().Informer(),
		f.Core().V1().ConfigMaps().Informer(),
		f.Core().V1().Pods().Informer(),
		f.Core().V1().ServiceAccounts().Informer(),
		f.Coordination().V1().Leases().Informer(),
	}
	ist := clients.Istio
	g.extra = []cache.SharedIndexInformer{
		newInformer(&istioapiv1.VirtualService{},
			func(ctx context.Context, o metav1.ListOptions) (runtime.Object, error) {
				return ist.NetworkingV1().VirtualServices("").List(ctx, o)
			},
			func(ctx context.Context, o metav1.ListOptions) (watch.Interface, error) {
				return ist.NetworkingV1().VirtualServices("").Watch(ctx, o)
			}),
		newInformer(&istioapiv1beta1.VirtualService{},
			func(ctx context.Context, o metav1.ListOptions) (runtime.Object, error) {
				return ist.NetworkingV1beta1().VirtualServices("").List(ctx, o)
			},
			func(ctx context.Context, o metav1.ListOptions) (watch.Interface, error) {
				return ist.NetworkingV1beta1().VirtualServices("").Watch(ctx, o)
			}),
		newInformer(&istioapiv1alpha3.VirtualService{},
			func(ctx context.Context, o metav1.ListOptions) (runtime.Object, error) {
				return ist.NetworkingV1alpha3().VirtualServices("").List(ctx, o)
			},
			func(ctx context.Context, o metav1.ListOptions) (watch.Interface, error) {
				return ist.NetworkingV1alpha3().VirtualServices("").Watch(ctx, o)
			}),
	}
	for _, inf := range append(append([]cache.SharedIndexInformer(nil), kube...), g.extra...) {
		if _, err := inf.AddEventHandler(onDelete); err != nil {
			return nil, err
		}
	}
	f.Start(g.stop)
	for _, inf := range g.extra {
		g.wg.Add(1)
		go func() {
			defer g.wg.Done()
			inf.Run(g.stop)
		}()
	}
	if err := waitSynced(ctx, f, g.extra); err != nil {
		g.close()
		return nil, fmt.Errorf("garbage collector: %w", err)
	}
	g.wg.Add(1)
	go func() {
		defer g.wg.Done()
		for {
			select {
			case <-g.stop:
				return
			case o := <-g.work:
				g.collect(o)
			}
		}
	}()
	return g, nil
}

func (g *garbageCollector) close() {
	select {
	case <-g.stop:
		return
	default:
	}
	close(g.stop)
	g.wg.Wait()
	g.factory.Shutdown()
}

// collect deletes the dependents of one deleted owner.
func (g *garbageCollector) collect(o owner) {
	ctx := context.Background()
	for _, k := range g.kinds() {
		objs, err := k.list(ctx, o.ns)
		if err != nil {
			g.log.Warn("cannot list dependents", "kind", k.name, "namespace", o.ns, "error", err)
			continue
		}
		for _, obj := range objs {
			for _, ref := range obj.GetOwnerReferences() {
				if ref.UID != o.uid {
					continue
				}
				g.log.Debug("deleting dependent", "kind", k.name, "object", o.ns+"/"+obj.GetName(), "owner", ref.Kind+"/"+ref.Name)
				if err := k.del(ctx, o.ns, obj.GetName()); err != nil {
					g.log.Debug("cannot delete dependent", "kind", k.name, "object", obj.GetName(), "error", err)
				}
				break
			}
		}
	}
}

func listOf[T any, PT interface {
	*T
	metav1.Object
}](items []T, err error) ([]metav1.Object, error) {
	if err != nil {
		return nil, err
	}
	out := make([]metav1.Object, len(items))
	for i := range items {
		out[i] = PT(&items[i])
	}
	return out, nil
}

func listOfPtr[T metav1.Object](items []T, err error) ([]metav1.Object, error) {
	if err != nil {
		return nil, err
	}
	out := make([]metav1.Object, len(items))
	for i := range items {
		out[i] = items[i]
	}
	return out, nil
}

func (g *garbageCollector) kinds() []dependentKind {
	k := g.clients.Kube
	ist := g.clients.Istio
	lo := metav1.ListOptions{}
	do := metav1.DeleteOptions{}
	return []dependentKind{
		{"deployments", func(ctx context.Context, ns string) ([]metav1.Object, error) {
			l, err := k.AppsV1().Deployments(ns).List(ctx, lo)
			if err != nil {
				return nil, err
			}
			return listOf(l.Items, nil)
		}, func(ctx context.Context, ns, name string) error {
			return k.AppsV1().Deployments(ns).Delete(ctx, name, do)
		}},
		{"replicasets", func(ctx context.Context, ns string) ([]metav1.Object, error) {
			l, err := k.AppsV1().ReplicaSets(ns).List(ctx, lo)
			if err != nil {
				return nil, err
			}
			return listOf(l.Items, nil)
		}, func(ctx context.Context, ns, name string) error {
			return k.AppsV1().ReplicaSets(ns).Delete(ctx, name, do)
		}},
		{"services", func(ctx context.Context, ns string) ([]metav1.Object, error) {
			l, err := k.CoreV1().Services(ns).List(ctx, lo)
			if err != nil {
				return nil, err
			}
			return listOf(l.Items, nil)
		}, func(ctx context.Context, ns, name string) error { return k.CoreV1().Services(ns).Delete(ctx, name, do) }},
		{"secrets", func(ctx context.Context, ns string) ([]metav1.Object, error) {
			l, err := k.CoreV1().Secrets(ns).List(ctx, lo)
			if err != nil {
				return nil, err
			}
			return listOf(l.Items, nil)
		}, func(ctx context.Context, ns, name string) error { return k.CoreV1().Secrets(ns).Delete(ctx, name, do) }},
		{"configmaps", func(ctx context.Context, ns string) ([]metav1.Object, error) {
			l, err := k.CoreV1().ConfigMaps(ns).List(ctx, lo)
			if err != nil {
				return nil, err
			}
			return listOf(l.Items, nil)
		}, func(ctx context.Context, ns, name string) error {
			return k.CoreV1().ConfigMaps(ns).Delete(ctx, name, do)
		}},
		{"pods", func(ctx context.Context, ns string) ([]metav1.Object, error) {
			l, err := k.CoreV1().Pods(ns).List(ctx, lo)
			if err != nil {
				return nil, err
			}
			return listOf(l.Items, nil)
		}, func(ctx context.Context, ns, name string) error { return k.CoreV1().Pods(ns).Delete(ctx, name, do) }},
		{"serviceaccounts", func(ctx context.Context, ns string) ([]metav1.Object, error) {
			l, err := k.CoreV1().ServiceAccounts(ns).List(ctx, lo)
			if err != nil {
				return nil, err
			}
			return listOf(l.Items, nil)
		}, func(ctx context.Context, ns, name string) error {
			return k.CoreV1().ServiceAccounts(ns).Delete(ctx, name, do)
		}},
		{"leases", func(ctx context.Context, ns string) ([]metav1.Object, error) {
			l, err := k.CoordinationV1().Leases(ns).List(ctx, lo)
			if err != nil {
				return nil, err
			}
			return listOf(l.Items, nil)
		}, func(ctx context.Context, ns, name string) error {
			return k.CoordinationV1().Leases(ns).Delete(ctx, name, do)
		}},
		{"virtualservices.v1", func(ctx context.Context, ns string) ([]metav1.Object, error) {
			l, err := ist.NetworkingV1().VirtualServices(ns).List(ctx, lo)
			if err != nil {
				return nil, err
			}
			return listOfPtr(l.Items, nil)
		}, func(ctx context.Context, ns, name string) error {
			return ist.NetworkingV1().VirtualServices(ns).Delete(ctx, name, do)
		}},
		{"virtualservices.v1beta1", func(ctx context.Context, ns string) ([]metav1.Object, error) {
			l, err := ist.NetworkingV1beta1().VirtualServices(ns).List(ctx, lo)
			if err != nil {
				return nil, err
			}
			return listOfPtr(l.Items, nil)
		}, func(ctx context.Context, ns, name string) error {
			return ist.NetworkingV1beta1().VirtualServices(ns).Delete(ctx, name, do)
		}},
		{"virtualservices.v1alpha3", func(ctx context.Context, ns string) ([]metav1.Object, error) {
			l, err := ist.NetworkingV1alpha3().VirtualServices(ns).List(ctx, lo)
			if err != nil {
				return nil, err
			}
			return listOfPtr(l.Items, nil)
		}, func(ctx context.Context, ns, name string) error {
			return ist.NetworkingV1alpha3().VirtualServices(ns).Delete(ctx, name, do)
		}},
	}
}

// waitSynced waits until the informers of f, and the VirtualService
// informers vs (which run outside any factory), have listed what exists.
func waitSynced(ctx context.Context, f informers.SharedInformerFactory, vs []cache.SharedIndexInformer) error {
	for typ, ok := range f.WaitForCacheSync(ctx.Done()) {
		if !ok {
			return fmt.Errorf("%v informer did not sync: %w", typ, context.Cause(ctx))
		}
	}
	for _, inf := range vs {
		if !cache.WaitForCacheSync(ctx.Done(), inf.HasSynced) {
			return fmt.Errorf("VirtualService informer did not sync: %w", context.Cause(ctx))
		}
	}
	return nil
}

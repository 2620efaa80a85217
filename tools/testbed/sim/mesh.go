package sim

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/http/httputil"
	"net/netip"
	"strings"
	"sync"
	"time"

	networking "istio.io/api/networking/v1alpha3"
	istioapiv1 "istio.io/client-go/pkg/apis/networking/v1"
	istioapiv1alpha3 "istio.io/client-go/pkg/apis/networking/v1alpha3"
	istioapiv1beta1 "istio.io/client-go/pkg/apis/networking/v1beta1"
	istioclient "istio.io/client-go/pkg/clientset/versioned"
	istiov1 "istio.io/client-go/pkg/listers/networking/v1"
	istiov1alpha3 "istio.io/client-go/pkg/listers/networking/v1alpha3"
	istiov1beta1 "istio.io/client-go/pkg/listers/networking/v1beta1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	corelisters "k8s.io/client-go/listers/core/v1"
	"k8s.io/client-go/tools/cache"
)

// MeshOptions configures NewMesh.
type MeshOptions struct {
	Logger  *slog.Logger
	Network *Network
	Kube    kubernetes.Interface
	Istio   istioclient.Interface
	// DefaultExportTo is the mesh config's defaultVirtualServiceExportTo
	// (nil: "*", Istio's default).
	DefaultExportTo []string
	// Dynamic, when set, serves Gateway API HTTPRoutes, which the mesh
	// applies to Services that are their parents (mesh_gamma.go).
	Dynamic dynamic.Interface
}

// Mesh is the simulated service mesh: for every port of every Service it
// runs a router on loopback (reached through the Service's ClusterIP in the
// Network) that applies the VirtualServices found in the Istio API as an
// Istio sidecar applies them to outbound traffic, then forwards to a ready
// endpoint pod of the chosen Service.
//
// Which VirtualService applies is decided by package istiovs, Istio's
// selection as its control plane does it (proven against Istio's own code
// in testdata/istio): per client namespace and labels, exportTo buckets,
// age, exact hosts over wildcards, only dot-less short hosts expanded, a
// VirtualService without a route for the port or client skipped for the
// next one or the default route, delegates merged into their root.
//
// HTTP ports (appProtocol or port-name prefix http, http2, grpc, h2c; and
// ports without a declared protocol) are routed by the chosen routes:
// matches on uri, scheme, method, authority, headers, withoutHeaders,
// queryParams; route destinations with weights, redirect, directResponse,
// rewrite, header operations, timeout, and retries (with Istio's default
// policy since 1.24 when a route sets none: 2 retries on connect failures
// and refused streams, not on a 503, each on another endpoint when there
// is one). Fault injection, mirroring, CORS and DestinationRule subsets
// are not simulated. Other ports are forwarded as plain TCP to an
// endpoint.
type Mesh struct {
	log  *slog.Logger
	net  *Network
	stop chan struct{}
	// defaultExportTo is the mesh's defaultVirtualServiceExportTo.
	defaultExportTo []string
	kubeF           informers.SharedInformerFactory
	vsInf           []cache.SharedIndexInformer

	svcs corelisters.ServiceLister
	pods corelisters.PodLister
	vsV1 istiov1.VirtualServiceLister
	vsB1 istiov1beta1.VirtualServiceLister
	vsA3 istiov1alpha3.VirtualServiceLister
	// httpRoutes holds Gateway API HTTPRoutes (nil without them).
	httpRoutes, grpcRoutes cache.SharedIndexInformer
	re                     regexCache
	h1                     *http.Transport
	h2                     *http.Transport
	proxy                  *httputil.ReverseProxy

	mu      sync.Mutex
	routers map[string]map[int32]*portRouter // "ns/name" -> port -> router
	closed  bool
	wg      sync.WaitGroup
}

// portRouter is the listener of one Service port.
type portRouter struct {
	proto string // "http" or "tcp"
	ln    net.Listener
	srv   *http.Server // nil for tcp
	conns sync.Map     // tcp: net.Conn -> struct{}
	// stopHandlers cancels srv's requests in flight (its BaseContext).
	stopHandlers context.CancelFunc
}

// NewMesh starts the mesh: informers on Services, Pods and
// VirtualServices (v1, v1beta1, v1alpha3), and a router for every Service
// that exists now or appears later. It returns once the informers are
// synced and the routers of existing Services listen.
func NewMesh(ctx context.Context, opts MeshOptions) (*Mesh, error) {
	logger := opts.Logger
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	m := &Mesh{
		log:             logger.With("component", "mesh"),
		net:             opts.Network,
		defaultExportTo: opts.DefaultExportTo,
		stop:            make(chan struct{}),
		routers:         map[string]map[int32]*portRouter{},
	}
	dial := opts.Network.Resolver("").DialContext
	m.h1 = &http.Transport{DialContext: dial, MaxIdleConnsPerHost: 64, IdleConnTimeout: 30 * time.Second}
	m.h2 = &http.Transport{DialContext: dial, IdleConnTimeout: 30 * time.Second, Protocols: new(http.Protocols)}
	m.h2.Protocols.SetUnencryptedHTTP2(true)
	m.net.OnUnbind(func(netip.Addr, int32) {
		m.h1.CloseIdleConnections()
		m.h2.CloseIdleConnections()
	})
	m.proxy = &httputil.ReverseProxy{
		Rewrite:       m.rewrite,
		Transport:     retryTransport{base: transportSwitch{h1: m.h1, h2: m.h2}},
		FlushInterval: -1,
		ErrorHandler:  m.proxyError,
		ErrorLog:      slog.NewLogLogger(m.log.Handler(), slog.LevelDebug),
	}

	m.kubeF = informers.NewSharedInformerFactory(opts.Kube, 0)
	svcInf := m.kubeF.Core().V1().Services()
	m.svcs = svcInf.Lister()
	m.pods = m.kubeF.Core().V1().Pods().Lister()
	ist := opts.Istio
	v1Inf := newInformer(&istioapiv1.VirtualService{},
		func(ctx context.Context, o metav1.ListOptions) (runtime.Object, error) {
			return ist.NetworkingV1().VirtualServices("").List(ctx, o)
		},
		func(ctx context.Context, o metav1.ListOptions) (watch.Interface, error) {
			return ist.NetworkingV1().VirtualServices("").Watch(ctx, o)
		})
	b1Inf := newInformer(&istioapiv1beta1.VirtualService{},
		func(ctx context.Context, o metav1.ListOptions) (runtime.Object, error) {
			return ist.NetworkingV1beta1().VirtualServices("").List(ctx, o)
		},
		func(ctx context.Context, o metav1.ListOptions) (watch.Interface, error) {
			return ist.NetworkingV1beta1().VirtualServices("").Watch(ctx, o)
		})
	a3Inf := newInformer(&istioapiv1alpha3.VirtualService{},
		func(ctx context.Context, o metav1.ListOptions) (runtime.Object, error) {
			return ist.NetworkingV1alpha3().VirtualServices("").List(ctx, o)
		},
		func(ctx context.Context, o metav1.ListOptions) (watch.Interface, error) {
			return ist.NetworkingV1alpha3().VirtualServices("").Watch(ctx, o)
		})
	m.vsInf = []cache.SharedIndexInformer{v1Inf, b1Inf, a3Inf}
	if dyn := opts.Dynamic; dyn != nil {
		m.httpRoutes = newInformer(&unstructured.Unstructured{},
			func(ctx context.Context, o metav1.ListOptions) (runtime.Object, error) {
				return dyn.Resource(HTTPRouteGVR).Namespace("").List(ctx, o)
			},
			func(ctx context.Context, o metav1.ListOptions) (watch.Interface, error) {
				return dyn.Resource(HTTPRouteGVR).Namespace("").Watch(ctx, o)
			})
		m.grpcRoutes = newInformer(&unstructured.Unstructured{},
			func(ctx context.Context, o metav1.ListOptions) (runtime.Object, error) {
				return dyn.Resource(GRPCRouteGVR).Namespace("").List(ctx, o)
			},
			func(ctx context.Context, o metav1.ListOptions) (watch.Interface, error) {
				return dyn.Resource(GRPCRouteGVR).Namespace("").Watch(ctx, o)
			})
		m.vsInf = append(m.vsInf, m.httpRoutes, m.grpcRoutes)
	}
	m.vsV1 = istiov1.NewVirtualServiceLister(v1Inf.GetIndexer())
	m.vsB1 = istiov1beta1.NewVirtualServiceLister(b1Inf.GetIndexer())
	m.vsA3 = istiov1alpha3.NewVirtualServiceLister(a3Inf.GetIndexer())

	_, err := svcInf.Informer().AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc:    func(obj any) { m.reconcile(obj) },
		UpdateFunc: func(_, obj any) { m.reconcile(obj) },
		DeleteFunc: func(obj any) {
			if t, ok := obj.(cache.DeletedFinalStateUnknown); ok {
				obj = t.Obj
			}
			if svc, ok := obj.(*corev1.Service); ok {
				m.removeService(svc.Namespace, svc.Name)
			}
		},
	})
	if err != nil {
		return nil, fmt.Errorf("mesh: watch services: %w", err)
	}
	m.kubeF.Start(m.stop)
	for _, inf := range m.vsInf {
		m.wg.Add(1)
		go func() {
			defer m.wg.Done()
			inf.Run(m.stop)
		}()
	}
	if err := waitSynced(ctx, m.kubeF, m.vsInf); err != nil {
		m.Close()
		return nil, fmt.Errorf("mesh: %w", err)
	}
	// The informer delivers existing Services asynchronously; make sure
	// their routers exist before returning.
	svcs, err := m.svcs.List(labels.Everything())
	if err != nil {
		m.Close()
		return nil, fmt.Errorf("mesh: list services: %w", err)
	}
	for _, s := range svcs {
		m.reconcile(s)
	}
	return m, nil
}

// Close stops the informers and every router, and waits for them.
func (m *Mesh) Close() {
	m.mu.Lock()
	if m.closed {
		m.mu.Unlock()
		return
	}
	m.closed = true
	routers := m.routers
	m.routers = map[string]map[int32]*portRouter{}
	m.mu.Unlock()
	close(m.stop)
	for _, ports := range routers {
		for _, pr := range ports {
			pr.close()
		}
	}
	m.wg.Wait()
	m.kubeF.Shutdown()
	m.h1.CloseIdleConnections()
	m.h2.CloseIdleConnections()
}

// Addr returns the loopback address of the router of Service ns/name port,
// for clients outside the simulated network (a developer's curl).
func (m *Mesh) Addr(ns, name string, port int32) (string, bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	pr, ok := m.routers[ns+"/"+name][port]
	if !ok {
		return "", false
	}
	return pr.ln.Addr().String(), true
}

// reconcile makes the routers of a Service match its ports.
func (m *Mesh) reconcile(obj any) {
	svc, ok := obj.(*corev1.Service)
	if !ok {
		return
	}
	key := svc.Namespace + "/" + svc.Name
	if svc.Spec.Type == corev1.ServiceTypeExternalName || svc.Spec.ClusterIP == corev1.ClusterIPNone {
		m.removeService(svc.Namespace, svc.Name)
		return
	}
	if _, err := m.net.AllocateServiceIP(svc.Namespace, svc.Name); err != nil {
		m.log.Error("no ClusterIP for service", "service", key, "error", err)
		return
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.closed {
		return
	}
	ports := m.routers[key]
	if ports == nil {
		ports = map[int32]*portRouter{}
		m.routers[key] = ports
	}
	want := map[int32]bool{}
	for _, sp := range svc.Spec.Ports {
		if sp.Protocol != "" && sp.Protocol != corev1.ProtocolTCP {
			continue
		}
		want[sp.Port] = true
		proto := portProtocol(sp)
		if pr, ok := ports[sp.Port]; ok && pr.proto == proto {
			continue
		} else if ok {
			pr.close()
		}
		pr, err := m.startRouter(svc.Namespace, svc.Name, sp.Port, proto)
		if err != nil {
			m.log.Error("cannot start router", "service", key, "port", sp.Port, "error", err)
			continue
		}
		ports[sp.Port] = pr
		if err := m.net.SetServicePort(svc.Namespace, svc.Name, sp.Port, pr.ln.Addr().String()); err != nil {
			m.log.Error("cannot publish router", "service", key, "port", sp.Port, "error", err)
		}
	}
	for p, pr := range ports {
		if !want[p] {
			pr.close()
			delete(ports, p)
			_ = m.net.SetServicePort(svc.Namespace, svc.Name, p, "")
		}
	}
}

func (m *Mesh) removeService(ns, name string) {
	m.mu.Lock()
	ports := m.routers[ns+"/"+name]
	delete(m.routers, ns+"/"+name)
	m.mu.Unlock()
	m.net.RemoveService(ns, name)
	for _, pr := range ports {
		pr.close()
	}
}

// declaredProtocol is the protocol a Service port declares, as Istio reads
// it: its appProtocol, else the prefix of its name ("" when neither says).
func declaredProtocol(sp corev1.ServicePort) string {
	if sp.AppProtocol != nil {
		return strings.TrimPrefix(strings.ToLower(*sp.AppProtocol), "kubernetes.io/")
	}
	p, _, _ := strings.Cut(strings.ToLower(sp.Name), "-")
	return p
}

// portProtocol is the protocol Istio would pick for a Service port: TCP for
// the TCP-like protocols it declares, else HTTP (http, http2, grpc, grpc-web
// and h2c, and undeclared ports, which Istio would sniff; everything the
// simulation runs is HTTP).
func portProtocol(sp corev1.ServicePort) string {
	switch declaredProtocol(sp) {
	case "tcp", "tls", "https", "mongo", "mysql", "redis":
		return "tcp"
	}
	return "http"
}

// upstreamHTTP2 reports whether the destination port speaks HTTP/2
// without TLS.
func upstreamHTTP2(sp corev1.ServicePort) bool {
	switch declaredProtocol(sp) {
	case "http2", "grpc", "h2c":
		return true
	}
	return false
}

func (m *Mesh) startRouter(ns, name string, port int32, proto string) (*portRouter, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	pr := &portRouter{proto: proto, ln: ln}
	m.wg.Add(1)
	if proto == "tcp" {
		go func() {
			defer m.wg.Done()
			m.serveTCP(pr, ns, name, port)
		}()
		return pr, nil
	}
	hctx, stop := context.WithCancel(context.Background())
	pr.stopHandlers = stop
	pr.srv = &http.Server{
		Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			m.serveHTTP(w, r, ns, name, port)
		}),
		BaseContext:       func(net.Listener) context.Context { return hctx },
		ReadHeaderTimeout: 30 * time.Second,
		Protocols:         new(http.Protocols),
		ErrorLog:          slog.NewLogLogger(m.log.Handler(), slog.LevelDebug),
	}
	pr.srv.Protocols.SetHTTP1(true)
	pr.srv.Protocols.SetUnencryptedHTTP2(true)
	go func() {
		defer m.wg.Done()
		_ = pr.srv.Serve(ln)
	}()
	return pr, nil
}

func (pr *portRouter) close() {
	if pr.srv != nil {
		// Waits for proxied requests, so that Mesh.Close's
		// CloseIdleConnections comes after their connections are idle.
		_ = closeServer(pr.srv, pr.stopHandlers)
		return
	}
	_ = pr.ln.Close()
	pr.conns.Range(func(k, _ any) bool {
		_ = k.(net.Conn).Close()
		return true
	})
}

// virtualServices lists every VirtualService, of any API version, once.
func (m *Mesh) virtualServices() []*virtualService {
	seen := map[string]bool{}
	var out []*virtualService
	add := func(ns, name string, created time.Time, spec *networking.VirtualService) {
		k := ns + "/" + name
		if seen[k] {
			return
		}
		seen[k] = true
		out = append(out, &virtualService{Namespace: ns, Name: name, Created: created, Spec: spec})
	}
	if l, err := m.vsV1.List(labels.Everything()); err == nil {
		for _, v := range l {
			add(v.Namespace, v.Name, v.CreationTimestamp.Time, &v.Spec)
		}
	}
	if l, err := m.vsB1.List(labels.Everything()); err == nil {
		for _, v := range l {
			add(v.Namespace, v.Name, v.CreationTimestamp.Time, &v.Spec)
		}
	}
	if l, err := m.vsA3.List(labels.Everything()); err == nil {
		for _, v := range l {
			add(v.Namespace, v.Name, v.CreationTimestamp.Time, &v.Spec)
		}
	}
	return out
}

// fakeListWatch is a ListWatch that tells the reflector not to use
// streaming lists: the Istio fake clientset cannot send the bookmark that
// ends a streaming list, so an informer using one would never sync.
type fakeListWatch struct{ *cache.ListWatch }

// IsWatchListSemanticsUnSupported implements the reflector's opt-out.
func (fakeListWatch) IsWatchListSemanticsUnSupported() bool { return true }

func newInformer(obj runtime.Object,
	list func(context.Context, metav1.ListOptions) (runtime.Object, error),
	watchFn func(context.Context, metav1.ListOptions) (watch.Interface, error),
) cache.SharedIndexInformer {
	lw := fakeListWatch{&cache.ListWatch{ListWithContextFunc: list, WatchFuncWithContext: watchFn}}
	return cache.NewSharedIndexInformer(lw, obj, 0, cache.Indexers{cache.NamespaceIndex: cache.MetaNamespaceIndexFunc})
}

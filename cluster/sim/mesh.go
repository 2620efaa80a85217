package sim

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net"
	"net/http"
	"net/http/httputil"
	"net/netip"
	"slices"
	"strconv"
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
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/watch"
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
}

// Mesh is the simulated service mesh: for every port of every Service it
// runs a router on loopback (reached through the Service's ClusterIP in the
// Network) that applies the VirtualServices found in the Istio API as an
// Istio sidecar applies them to outbound traffic, then forwards to a ready
// endpoint pod of the chosen Service.
//
// HTTP ports (appProtocol or port-name prefix http, http2, grpc, h2c; and
// ports without a declared protocol) are routed by the VirtualService's
// http routes: matches on uri, scheme, method, authority, headers,
// withoutHeaders, queryParams, port, gateways, sourceLabels and
// sourceNamespace; route destinations with weights, redirect,
// directResponse, rewrite, header operations and timeout. Retries, fault
// injection, mirroring, CORS, delegate routes and DestinationRule subsets
// are not simulated. Other ports are forwarded as plain TCP to an endpoint.
type Mesh struct {
	log   *slog.Logger
	net   *Network
	stop  chan struct{}
	kubeF informers.SharedInformerFactory
	vsInf []cache.SharedIndexInformer

	svcs  corelisters.ServiceLister
	pods  corelisters.PodLister
	vsV1  istiov1.VirtualServiceLister
	vsB1  istiov1beta1.VirtualServiceLister
	vsA3  istiov1alpha3.VirtualServiceLister
	re    regexCache
	h1    *http.Transport
	h2    *http.Transport
	proxy *httputil.ReverseProxy

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
		log:     logger.With("component", "mesh"),
		net:     opts.Network,
		stop:    make(chan struct{}),
		routers: map[string]map[int32]*portRouter{},
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
		Transport:     transportSwitch{h1: m.h1, h2: m.h2},
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
	for typ, ok := range m.kubeF.WaitForCacheSync(ctx.Done()) {
		if !ok {
			m.Close()
			return nil, fmt.Errorf("mesh: %v informer did not sync: %w", typ, context.Cause(ctx))
		}
	}
	for _, inf := range m.vsInf {
		if !cache.WaitForCacheSync(ctx.Done(), inf.HasSynced) {
			m.Close()
			return nil, fmt.Errorf("mesh: VirtualService informer did not sync: %w", context.Cause(ctx))
		}
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

// portProtocol is the protocol Istio would pick for a Service port: its
// appProtocol, else the prefix of its name; undeclared ports are treated as
// HTTP (Istio would sniff them; everything the simulation runs is HTTP).
func portProtocol(sp corev1.ServicePort) string {
	p := ""
	if sp.AppProtocol != nil {
		p = strings.TrimPrefix(strings.ToLower(*sp.AppProtocol), "kubernetes.io/")
	} else {
		p, _, _ = strings.Cut(strings.ToLower(sp.Name), "-")
	}
	switch p {
	case "http", "http2", "grpc", "grpc-web", "h2c", "":
		return "http"
	case "tcp", "tls", "https", "mongo", "mysql", "redis":
		return "tcp"
	}
	return "http"
}

// upstreamHTTP2 reports whether the destination port speaks HTTP/2
// without TLS.
func upstreamHTTP2(sp corev1.ServicePort) bool {
	p := ""
	if sp.AppProtocol != nil {
		p = strings.TrimPrefix(strings.ToLower(*sp.AppProtocol), "kubernetes.io/")
	} else {
		p, _, _ = strings.Cut(strings.ToLower(sp.Name), "-")
	}
	return p == "http2" || p == "grpc" || p == "h2c"
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
	pr.srv = &http.Server{
		Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			m.serveHTTP(w, r, ns, name, port)
		}),
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
		_ = pr.srv.Close()
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

// target is where the proxy sends one request; it travels in the request
// context from serveHTTP to rewrite.
type target struct {
	addr    string // podIP:port
	http2   bool
	timeout time.Duration
}

type targetKey struct{}

// transportSwitch sends a request over HTTP/1.1 or h2c depending on the
// destination port's protocol.
type transportSwitch struct{ h1, h2 *http.Transport }

func (t transportSwitch) RoundTrip(r *http.Request) (*http.Response, error) {
	if tg, ok := r.Context().Value(targetKey{}).(target); ok && tg.http2 {
		return t.h2.RoundTrip(r)
	}
	return t.h1.RoundTrip(r)
}

func (m *Mesh) rewrite(pr *httputil.ProxyRequest) {
	tg, _ := pr.In.Context().Value(targetKey{}).(target)
	pr.Out.URL.Scheme = "http"
	pr.Out.URL.Host = tg.addr
}

func (m *Mesh) proxyError(w http.ResponseWriter, r *http.Request, err error) {
	if errors.Is(err, context.DeadlineExceeded) {
		http.Error(w, "upstream request timeout", http.StatusGatewayTimeout)
		return
	}
	if errors.Is(err, context.Canceled) {
		return // the client went away
	}
	m.log.Debug("upstream failed", "host", r.Host, "error", err)
	http.Error(w, "upstream connect error or disconnect/reset before headers. reset reason: connection failure, transport failure reason: "+err.Error(),
		http.StatusServiceUnavailable)
}

// serveHTTP routes one request that arrived at Service ns/name port.
func (m *Mesh) serveHTTP(w http.ResponseWriter, r *http.Request, ns, name string, port int32) {
	svc, err := m.svcs.Services(ns).Get(name)
	if err != nil {
		http.Error(w, "no healthy upstream", http.StatusServiceUnavailable)
		return
	}
	ri := requestInfo{req: r, port: port}
	clientNS := ns
	if src, ok := m.net.SourceOf(r.RemoteAddr); ok {
		ri.source = &src
		clientNS = src.Namespace
	}
	fqdn := m.net.ServiceFQDN(ns, name)
	vs := selectVirtualService(m.virtualServices(), fqdn, clientNS, m.net.Domain())
	if vs == nil {
		sp, ok := servicePort(svc, 0, port)
		if !ok {
			http.Error(w, "no healthy upstream", http.StatusServiceUnavailable)
			return
		}
		m.forward(w, r, svc, sp, 0)
		return
	}
	i, matched := m.re.selectRoute(vs.Spec, ri)
	if i < 0 {
		m.log.Debug("no route matched", "virtualService", vs.key(), "host", fqdn)
		http.Error(w, "route not found", http.StatusNotFound)
		return
	}
	route := vs.Spec.Http[i]
	m.log.Debug("route selected", "virtualService", vs.key(), "route", routeName(route, i), "host", fqdn)
	switch {
	case route.DirectResponse != nil:
		applyHeaderOps(w.Header(), route.GetHeaders().GetResponse())
		body := route.DirectResponse.GetBody()
		var b []byte
		if body != nil {
			if s := body.GetString_(); s != "" {
				b = []byte(s)
			} else {
				b = body.GetBytes()
			}
		}
		w.WriteHeader(int(route.DirectResponse.Status))
		_, _ = w.Write(b)
		return
	case route.Redirect != nil:
		m.redirect(w, r, route.Redirect, port)
		return
	case len(route.Route) == 0:
		http.Error(w, "route not found", http.StatusNotFound)
		return
	}
	dest := pickDestination(route.Route)
	dsvc, dsp, err := m.destination(dest.Destination, vs.Namespace, port)
	if err != nil {
		m.log.Debug("destination unavailable", "virtualService", vs.key(), "error", err)
		http.Error(w, "no healthy upstream", http.StatusServiceUnavailable)
		return
	}
	applyHeaderOps(r.Header, route.GetHeaders().GetRequest())
	applyHeaderOps(r.Header, dest.GetHeaders().GetRequest())
	if rw := route.Rewrite; rw != nil {
		if rw.Uri != "" {
			if p, ok := matched.GetUri().GetMatchType().(*networking.StringMatch_Prefix); ok && strings.HasPrefix(r.URL.Path, p.Prefix) {
				r.URL.Path = rw.Uri + strings.TrimPrefix(r.URL.Path, p.Prefix)
			} else {
				r.URL.Path = rw.Uri
			}
			r.URL.RawPath = ""
		}
		if rw.Authority != "" {
			r.Host = rw.Authority
		}
	}
	respOps := []*networking.Headers_HeaderOperations{route.GetHeaders().GetResponse(), dest.GetHeaders().GetResponse()}
	for _, ops := range respOps {
		applyHeaderOps(w.Header(), ops)
	}
	var timeout time.Duration
	if route.Timeout != nil {
		timeout = route.Timeout.AsDuration()
	}
	m.forward(w, r, dsvc, dsp, timeout)
}

func routeName(r *networking.HTTPRoute, i int) string {
	if r.Name != "" {
		return r.Name
	}
	return "#" + strconv.Itoa(i)
}

// pickDestination chooses among weighted destinations (a single
// destination gets everything whatever its weight).
func pickDestination(ds []*networking.HTTPRouteDestination) *networking.HTTPRouteDestination {
	if len(ds) == 1 {
		return ds[0]
	}
	total := 0
	for _, d := range ds {
		total += int(d.Weight)
	}
	if total <= 0 {
		return ds[0]
	}
	n := rand.IntN(total)
	for _, d := range ds {
		n -= int(d.Weight)
		if n < 0 {
			return d
		}
	}
	return ds[len(ds)-1]
}

// destination resolves a route destination (host written in a
// VirtualService of namespace vsNS) to a Service and port.
func (m *Mesh) destination(d *networking.Destination, vsNS string, inPort int32) (*corev1.Service, corev1.ServicePort, error) {
	host := resolveHost(d.GetHost(), vsNS, m.net.Domain())
	rest, ok := strings.CutSuffix(host, ".svc."+m.net.Domain())
	name, ns, ok2 := strings.Cut(rest, ".")
	if !ok || !ok2 || strings.Contains(ns, ".") {
		return nil, corev1.ServicePort{}, fmt.Errorf("destination host %q is not a Kubernetes Service of this cluster", d.GetHost())
	}
	svc, err := m.svcs.Services(ns).Get(name)
	if err != nil {
		if apierrors.IsNotFound(err) {
			return nil, corev1.ServicePort{}, fmt.Errorf("destination service %s/%s does not exist", ns, name)
		}
		return nil, corev1.ServicePort{}, err
	}
	if d.GetSubset() != "" {
		return nil, corev1.ServicePort{}, fmt.Errorf("destination subset %q: DestinationRule subsets are not simulated", d.GetSubset())
	}
	sp, ok := servicePort(svc, int32(d.GetPort().GetNumber()), inPort)
	if !ok {
		return nil, corev1.ServicePort{}, fmt.Errorf("destination service %s/%s has no port %d", ns, name, d.GetPort().GetNumber())
	}
	return svc, sp, nil
}

// servicePort picks the destination port: the explicit one, else the port
// the request came in on if the Service has it, else its only port.
func servicePort(svc *corev1.Service, explicit, inPort int32) (corev1.ServicePort, bool) {
	find := func(p int32) (corev1.ServicePort, bool) {
		for _, sp := range svc.Spec.Ports {
			if sp.Port == p {
				return sp, true
			}
		}
		return corev1.ServicePort{}, false
	}
	if explicit != 0 {
		return find(explicit)
	}
	if sp, ok := find(inPort); ok {
		return sp, true
	}
	if len(svc.Spec.Ports) == 1 {
		return svc.Spec.Ports[0], true
	}
	return corev1.ServicePort{}, false
}

// Endpoints returns the podIP:port addresses of the ready pods behind a
// Service port, sorted.
func (m *Mesh) Endpoints(svc *corev1.Service, sp corev1.ServicePort) []string {
	if len(svc.Spec.Selector) == 0 {
		return nil
	}
	pods, err := m.pods.Pods(svc.Namespace).List(labels.SelectorFromSet(svc.Spec.Selector))
	if err != nil {
		return nil
	}
	var out []string
	for _, p := range pods {
		if p.DeletionTimestamp != nil || p.Status.Phase != corev1.PodRunning || p.Status.PodIP == "" || !podReady(p) {
			continue
		}
		port, ok := targetPort(p, sp)
		if !ok {
			continue
		}
		out = append(out, net.JoinHostPort(p.Status.PodIP, strconv.Itoa(int(port))))
	}
	slices.Sort(out)
	return out
}

func podReady(p *corev1.Pod) bool {
	for _, c := range p.Status.Conditions {
		if c.Type == corev1.PodReady {
			return c.Status == corev1.ConditionTrue
		}
	}
	return false
}

// targetPort resolves a Service port's targetPort on one pod: a number, or
// the name of one of the pod's container ports.
func targetPort(p *corev1.Pod, sp corev1.ServicePort) (int32, bool) {
	tp := sp.TargetPort
	if tp.StrVal == "" {
		if tp.IntVal == 0 {
			return sp.Port, true
		}
		return tp.IntVal, true
	}
	for _, c := range p.Spec.Containers {
		for _, cp := range c.Ports {
			if cp.Name == tp.StrVal {
				return cp.ContainerPort, true
			}
		}
	}
	return 0, false
}

func (m *Mesh) forward(w http.ResponseWriter, r *http.Request, svc *corev1.Service, sp corev1.ServicePort, timeout time.Duration) {
	eps := m.Endpoints(svc, sp)
	if len(eps) == 0 {
		http.Error(w, "no healthy upstream", http.StatusServiceUnavailable)
		return
	}
	tg := target{addr: eps[rand.IntN(len(eps))], http2: upstreamHTTP2(sp), timeout: timeout}
	ctx := context.WithValue(r.Context(), targetKey{}, tg)
	if timeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, timeout)
		defer cancel()
	}
	m.proxy.ServeHTTP(w, r.WithContext(ctx))
}

func (m *Mesh) redirect(w http.ResponseWriter, r *http.Request, rd *networking.HTTPRedirect, port int32) {
	u := *r.URL
	u.Scheme = "http"
	if rd.Scheme != "" {
		u.Scheme = rd.Scheme
	}
	host := r.Host
	if rd.Authority != "" {
		host = rd.Authority
	}
	switch p := rd.RedirectPort.(type) {
	case *networking.HTTPRedirect_Port:
		h, _, err := net.SplitHostPort(host)
		if err != nil {
			h = host
		}
		host = net.JoinHostPort(h, strconv.Itoa(int(p.Port)))
	case *networking.HTTPRedirect_DerivePort:
		h, _, err := net.SplitHostPort(host)
		if err != nil {
			h = host
		}
		host = net.JoinHostPort(h, strconv.Itoa(int(port)))
	}
	u.Host = host
	if rd.Uri != "" {
		u.Path, u.RawPath = rd.Uri, ""
	}
	code := int(rd.RedirectCode)
	if code == 0 {
		code = http.StatusMovedPermanently
	}
	w.Header().Set("Location", u.String())
	w.WriteHeader(code)
}

func applyHeaderOps(h http.Header, ops *networking.Headers_HeaderOperations) {
	if ops == nil {
		return
	}
	for k, v := range ops.Set {
		h.Set(k, v)
	}
	for k, v := range ops.Add {
		h.Add(k, v)
	}
	for _, k := range ops.Remove {
		h.Del(k)
	}
}

// serveTCP forwards each connection of a TCP port to a ready endpoint.
func (m *Mesh) serveTCP(pr *portRouter, ns, name string, port int32) {
	var wg sync.WaitGroup
	defer wg.Wait()
	for {
		c, err := pr.ln.Accept()
		if err != nil {
			return
		}
		pr.conns.Store(c, struct{}{})
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer pr.conns.Delete(c)
			defer c.Close()
			svc, err := m.svcs.Services(ns).Get(name)
			if err != nil {
				return
			}
			sp, ok := servicePort(svc, port, port)
			if !ok {
				return
			}
			eps := m.Endpoints(svc, sp)
			if len(eps) == 0 {
				return
			}
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			up, err := m.net.Resolver("").DialContext(ctx, "tcp", eps[rand.IntN(len(eps))])
			cancel()
			if err != nil {
				m.log.Debug("tcp upstream failed", "service", ns+"/"+name, "error", err)
				return
			}
			pr.conns.Store(up, struct{}{})
			defer pr.conns.Delete(up)
			defer up.Close()
			pipeTCP(c, up)
		}()
	}
}

// pipeTCP copies both ways, propagating half-close, until both directions
// end.
func pipeTCP(a, b net.Conn) {
	var wg sync.WaitGroup
	cp := func(dst, src net.Conn) {
		defer wg.Done()
		_, _ = io.Copy(dst, src)
		if cw, ok := dst.(interface{ CloseWrite() error }); ok {
			_ = cw.CloseWrite()
		} else {
			_ = dst.Close()
		}
	}
	wg.Add(2)
	go cp(a, b)
	go cp(b, a)
	wg.Wait()
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

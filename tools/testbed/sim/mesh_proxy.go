package sim

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"net/http/httputil"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	networking "istio.io/api/networking/v1alpha3"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/labels"

	"github.com/sbx-dev/sbx/cluster/istiovs"
	"github.com/sbx-dev/sbx/cluster/podstate"
)

// target is where the proxy sends one request; it travels in the request
// context from serveHTTP to rewrite.
type target struct {
	eps    []string // ready endpoints, podIP:port
	first  int      // the endpoint of the first try
	http2  bool
	policy retryPolicy
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
	if len(tg.eps) > 0 {
		pr.Out.URL.Host = tg.eps[tg.first]
	}
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
	// A client outside the simulated pods (a developer's curl) counts as a
	// sidecar without labels in the Service's namespace.
	client := istiovs.Client{Namespace: ns}
	if src, ok := m.net.SourceOf(r.RemoteAddr); ok {
		ri.source = &src
		client = istiovs.Client{Namespace: src.Namespace, Labels: src.Labels}
	}
	fqdn := m.net.ServiceFQDN(ns, name)
	mesh := m.istioMesh()
	link, route, matched, found := m.re.routeFor(mesh, fqdn, port, client, ri)
	if link == nil {
		sp, ok := servicePort(svc, 0, port)
		if !ok {
			http.Error(w, "no healthy upstream", http.StatusServiceUnavailable)
			return
		}
		m.forward(w, r, svc, sp, 0, nil)
		return
	}
	vs := link.VS
	if !found {
		m.log.Debug("no route matched", "virtualService", vs.Key(), "host", fqdn)
		http.Error(w, "route not found", http.StatusNotFound)
		return
	}
	m.log.Debug("route selected", "virtualService", vs.Key(), "route", route.GetName(), "host", fqdn)
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
	dsvc, dsp, err := m.destination(mesh, dest.Destination, vs.Namespace, port)
	if err != nil {
		m.log.Debug("destination unavailable", "virtualService", vs.Key(), "error", err)
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
	m.forward(w, r, dsvc, dsp, timeout, route.Retries)
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
func (m *Mesh) destination(mesh *istiovs.Mesh, d *networking.Destination, vsNS string, inPort int32) (*corev1.Service, corev1.ServicePort, error) {
	host := mesh.ResolveHost(d.GetHost(), vsNS)
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
		// The mesh dials the pod IP, so beyond the shared readiness rule
		// an endpoint needs an address (the kubelet may not have set it yet).
		if !podstate.Ready(p) || p.Status.PodIP == "" {
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

// forward proxies to a ready endpoint of the Service port, with the route's
// timeout (overall) and retry policy.
func (m *Mesh) forward(w http.ResponseWriter, r *http.Request, svc *corev1.Service, sp corev1.ServicePort,
	timeout time.Duration, retries *networking.HTTPRetry) {
	eps := m.Endpoints(svc, sp)
	if len(eps) == 0 {
		http.Error(w, "no healthy upstream", http.StatusServiceUnavailable)
		return
	}
	tg := target{eps: eps, first: rand.IntN(len(eps)), http2: upstreamHTTP2(sp), policy: newRetryPolicy(retries)}
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

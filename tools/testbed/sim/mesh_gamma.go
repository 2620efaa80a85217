package sim

import (
	"cmp"
	"slices"
	"strconv"
	"strings"
	"time"

	"google.golang.org/protobuf/types/known/durationpb"
	networking "istio.io/api/networking/v1alpha3"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	gwv1 "sigs.k8s.io/gateway-api/apis/v1"

	"github.com/sbx-dev/sbx/cluster"
	"github.com/sbx-dev/sbx/cluster/istiovs"
)

// Gateway API routes with a Service as parent (the GAMMA mesh profile), as
// Istio's control plane turns them into sidecar routes
// (pilot/pkg/config/kube/gateway: route_collections.go, conversion.go):
// every rule × match of an HTTPRoute becomes one route; the routes of all
// HTTPRoutes with the same parent Service, namespace and port form (with or
// without parentRef port) merge into one VirtualService for the Service's
// host, oldest route first, then sorted by the Gateway API's precedence
// (exact path, longest prefix, regex; method; most headers; most query
// parameters), a parentRef port adding a port match. Such VirtualServices
// are public, and a sidecar puts those of its own namespace (consumer
// routes) first. Path prefixes match as Envoy prefixes here (the real
// mesh matches path segments: /api does not take /apis); filters: request
// and response header modifiers, URL rewrite, redirect, request timeout.

// HTTPRouteGVR and GRPCRouteGVR are the Gateway API routes the simulated
// API serves (Options.GatewayAPI): the resources sbx reads and writes.
var (
	HTTPRouteGVR = cluster.HTTPRouteGVR
	GRPCRouteGVR = cluster.GRPCRouteGVR
)

// gammaVirtualServices converts the HTTPRoutes to the VirtualServices
// Istio derives from them.
func gammaVirtualServices(items []*unstructured.Unstructured, domain string) []*istiovs.VirtualService {
	type merged struct {
		vs     *istiovs.VirtualService
		routes []gammaRoute
	}
	byKey := map[string]*merged{}
	var keys []string
	var hrs []*gwv1.HTTPRoute
	for _, u := range items {
		if u.GetKind() == "GRPCRoute" {
			var g gwv1.GRPCRoute
			if err := runtime.DefaultUnstructuredConverter.FromUnstructured(u.Object, &g); err != nil {
				continue
			}
			hrs = append(hrs, grpcAsHTTP(&g))
			continue
		}
		var h gwv1.HTTPRoute
		if err := runtime.DefaultUnstructuredConverter.FromUnstructured(u.Object, &h); err != nil {
			continue // the real API server would have refused it
		}
		hrs = append(hrs, &h)
	}
	slices.SortStableFunc(hrs, func(a, b *gwv1.HTTPRoute) int {
		if c := a.CreationTimestamp.Compare(b.CreationTimestamp.Time); c != 0 {
			return c
		}
		return cmp.Compare(a.Namespace+"/"+a.Name, b.Namespace+"/"+b.Name)
	})
	for _, h := range hrs {
		for _, ref := range h.Spec.ParentRefs {
			if ref.Kind == nil || *ref.Kind != "Service" || (ref.Group != nil && *ref.Group != "" && *ref.Group != "core") {
				continue
			}
			ns := h.Namespace
			if ref.Namespace != nil {
				ns = string(*ref.Namespace)
			}
			host := string(ref.Name) + "." + ns + ".svc." + domain
			key := h.Namespace
			var port uint32
			if ref.Port != nil {
				port = uint32(*ref.Port)
				key += "/" + strconv.Itoa(int(port))
			}
			key += "/" + host
			m, ok := byKey[key]
			if !ok {
				m = &merged{vs: &istiovs.VirtualService{Namespace: h.Namespace, Name: strings.ReplaceAll(key, "/", "~"),
					Created: h.CreationTimestamp.Time, Gateway: true,
					Spec: &networking.VirtualService{Hosts: []string{host}}}}
				byKey[key] = m
				keys = append(keys, key)
			}
			for i, rule := range h.Spec.Rules {
				matches := rule.Matches
				if len(matches) == 0 {
					matches = []gwv1.HTTPRouteMatch{{}}
				}
				for j, match := range matches {
					m.routes = append(m.routes, gammaRoute{match: match, grpc: h.Annotations[fromGRPC] == "true",
						route: convertRule(h, i, j, rule, match, port, domain)})
				}
			}
		}
	}
	var out []*istiovs.VirtualService
	for _, k := range keys {
		m := byKey[k]
		slices.SortStableFunc(m.routes, func(a, b gammaRoute) int { return a.precedence(b) })
		for _, r := range m.routes {
			m.vs.Spec.Http = append(m.vs.Spec.Http, r.route)
		}
		out = append(out, m.vs)
	}
	return out
}

// grpcAsHTTP is a GRPCRoute as the HTTPRoute Istio's conversion amounts
// to (createGRPCURIMatch): a method match is a path match on
// /<service>/<method> (exact with both, a /<service>/ prefix, or a regex
// with only the method); headers, header filters and backends as they are.
func grpcAsHTTP(g *gwv1.GRPCRoute) *gwv1.HTTPRoute {
	h := &gwv1.HTTPRoute{ObjectMeta: *g.ObjectMeta.DeepCopy()}
	if h.Annotations == nil {
		h.Annotations = map[string]string{}
	}
	h.Annotations[fromGRPC] = "true"
	h.Spec.ParentRefs = g.Spec.ParentRefs
	for _, r := range g.Spec.Rules {
		hr := gwv1.HTTPRouteRule{Name: r.Name}
		for _, m := range r.Matches {
			var hm gwv1.HTTPRouteMatch
			if mm := m.Method; mm != nil {
				regex := mm.Type != nil && *mm.Type == gwv1.GRPCMethodMatchRegularExpression
				svc, meth := ptrOr(mm.Service, ""), ptrOr(mm.Method, "")
				var typ gwv1.PathMatchType
				var v string
				switch {
				case mm.Method == nil && !regex:
					typ, v = gwv1.PathMatchPathPrefix, "/"+svc+"/"
				case mm.Method == nil:
					typ, v = gwv1.PathMatchRegularExpression, "/"+svc+"/.+"
				case mm.Service == nil:
					typ, v = gwv1.PathMatchRegularExpression, "/[^/]+/"+meth
				case regex:
					typ, v = gwv1.PathMatchRegularExpression, "/"+svc+"/"+meth
				default:
					typ, v = gwv1.PathMatchExact, "/"+svc+"/"+meth
				}
				hm.Path = &gwv1.HTTPPathMatch{Type: &typ, Value: &v}
			}
			for _, hd := range m.Headers {
				t := gwv1.HeaderMatchExact
				if hd.Type != nil && *hd.Type == gwv1.GRPCHeaderMatchRegularExpression {
					t = gwv1.HeaderMatchRegularExpression
				}
				hm.Headers = append(hm.Headers, gwv1.HTTPHeaderMatch{Type: &t, Name: gwv1.HTTPHeaderName(hd.Name), Value: hd.Value})
			}
			hr.Matches = append(hr.Matches, hm)
		}
		for _, f := range r.Filters {
			switch f.Type {
			case gwv1.GRPCRouteFilterRequestHeaderModifier:
				hr.Filters = append(hr.Filters, gwv1.HTTPRouteFilter{Type: gwv1.HTTPRouteFilterRequestHeaderModifier, RequestHeaderModifier: f.RequestHeaderModifier})
			case gwv1.GRPCRouteFilterResponseHeaderModifier:
				hr.Filters = append(hr.Filters, gwv1.HTTPRouteFilter{Type: gwv1.HTTPRouteFilterResponseHeaderModifier, ResponseHeaderModifier: f.ResponseHeaderModifier})
			}
		}
		for _, b := range r.BackendRefs {
			hr.BackendRefs = append(hr.BackendRefs, gwv1.HTTPBackendRef{BackendRef: b.BackendRef})
		}
		h.Spec.Rules = append(h.Spec.Rules, hr)
	}
	return h
}

// fromGRPC marks an HTTPRoute grpcAsHTTP made: its matches without a
// path have no URI match (an HTTPRoute's get the CRD's default "/").
const fromGRPC = "sim.sbx.dev/from-grpcroute"

// gammaRoute is one converted rule × match.
type gammaRoute struct {
	match gwv1.HTTPRouteMatch
	route *networking.HTTPRoute
	grpc  bool
}

// precedence orders two routes as Istio's sortHTTPRoutes does: path match
// type (exact, prefix, regex), its length, a method, more headers, more
// query parameters; ties keep their order (oldest route first).
func (a gammaRoute) precedence(b gammaRoute) int {
	rank := func(r gammaRoute) (int, int) {
		m := r.match
		if m.Path == nil && r.grpc {
			return 0, 0 // no URI match: below every URI match
		}
		if m.Path == nil || m.Path.Type == nil {
			return 2, 1 // the CRD's default, PathPrefix "/"
		}
		v := 0
		if m.Path.Value != nil {
			v = len(*m.Path.Value)
		}
		switch *m.Path.Type {
		case gwv1.PathMatchExact:
			return 3, v
		case gwv1.PathMatchPathPrefix:
			return 2, v
		}
		return 1, v
	}
	ra, la := rank(a)
	rb, lb := rank(b)
	switch {
	case ra != rb:
		return rb - ra
	case la != lb:
		return lb - la
	case (a.match.Method == nil) != (b.match.Method == nil):
		if a.match.Method != nil {
			return -1
		}
		return 1
	case len(a.match.Headers) != len(b.match.Headers):
		return len(b.match.Headers) - len(a.match.Headers)
	}
	return len(b.match.QueryParams) - len(a.match.QueryParams)
}

// convertRule is one rule × match of h as an Istio route.
func convertRule(h *gwv1.HTTPRoute, i, j int, rule gwv1.HTTPRouteRule, m gwv1.HTTPRouteMatch, port uint32, domain string) *networking.HTTPRoute {
	r := &networking.HTTPRoute{Name: h.Namespace + "." + h.Name + "." + strconv.Itoa(i) + "." + strconv.Itoa(j)}
	mr := &networking.HTTPMatchRequest{Port: port}
	if p := m.Path; p != nil && p.Value != nil {
		switch ptrOr(p.Type, gwv1.PathMatchPathPrefix) {
		case gwv1.PathMatchExact:
			mr.Uri = &networking.StringMatch{MatchType: &networking.StringMatch_Exact{Exact: *p.Value}}
		case gwv1.PathMatchRegularExpression:
			mr.Uri = &networking.StringMatch{MatchType: &networking.StringMatch_Regex{Regex: *p.Value}}
		default:
			mr.Uri = &networking.StringMatch{MatchType: &networking.StringMatch_Prefix{Prefix: *p.Value}}
		}
	}
	if m.Method != nil {
		mr.Method = &networking.StringMatch{MatchType: &networking.StringMatch_Exact{Exact: string(*m.Method)}}
	}
	for _, hm := range m.Headers {
		if mr.Headers == nil {
			mr.Headers = map[string]*networking.StringMatch{}
		}
		mr.Headers[strings.ToLower(string(hm.Name))] = stringMatch(hm.Type, hm.Value)
	}
	for _, q := range m.QueryParams {
		if mr.QueryParams == nil {
			mr.QueryParams = map[string]*networking.StringMatch{}
		}
		mr.QueryParams[string(q.Name)] = stringMatch((*gwv1.HeaderMatchType)(q.Type), q.Value)
	}
	r.Match = []*networking.HTTPMatchRequest{mr}
	for _, f := range rule.Filters {
		switch f.Type {
		case gwv1.HTTPRouteFilterRequestHeaderModifier:
			r.Headers = headerOps(r.Headers, f.RequestHeaderModifier, true)
		case gwv1.HTTPRouteFilterResponseHeaderModifier:
			r.Headers = headerOps(r.Headers, f.ResponseHeaderModifier, false)
		case gwv1.HTTPRouteFilterURLRewrite:
			rw := &networking.HTTPRewrite{}
			if f.URLRewrite.Hostname != nil {
				rw.Authority = string(*f.URLRewrite.Hostname)
			}
			if p := f.URLRewrite.Path; p != nil {
				if p.ReplaceFullPath != nil {
					rw.Uri = *p.ReplaceFullPath
				}
				if p.ReplacePrefixMatch != nil {
					rw.Uri = *p.ReplacePrefixMatch
				}
			}
			r.Rewrite = rw
		case gwv1.HTTPRouteFilterRequestRedirect:
			rd := &networking.HTTPRedirect{}
			if f.RequestRedirect.Hostname != nil {
				rd.Authority = string(*f.RequestRedirect.Hostname)
			}
			if f.RequestRedirect.StatusCode != nil {
				rd.RedirectCode = uint32(*f.RequestRedirect.StatusCode)
			}
			r.Redirect = rd
		}
	}
	if rule.Timeouts != nil && rule.Timeouts.Request != nil {
		if d, err := time.ParseDuration(string(*rule.Timeouts.Request)); err == nil && d > 0 {
			r.Timeout = durationpb.New(d)
		}
	}
	if r.Redirect != nil {
		return r
	}
	total := 0
	for _, b := range rule.BackendRefs {
		ns := h.Namespace
		if b.Namespace != nil {
			ns = string(*b.Namespace)
		}
		d := &networking.HTTPRouteDestination{Destination: &networking.Destination{Host: string(b.Name) + "." + ns + ".svc." + domain}}
		if b.Port != nil {
			d.Destination.Port = &networking.PortSelector{Number: uint32(*b.Port)}
		}
		w := int32(1)
		if b.Weight != nil {
			w = *b.Weight
		}
		d.Weight = w
		total += int(w)
		r.Route = append(r.Route, d)
	}
	if total == 0 {
		// No backend (or all at weight 0): Istio answers 500.
		r.Route = nil
		r.DirectResponse = &networking.HTTPDirectResponse{Status: 500}
	}
	return r
}

func stringMatch(t *gwv1.HeaderMatchType, v string) *networking.StringMatch {
	if t != nil && *t == gwv1.HeaderMatchRegularExpression {
		return &networking.StringMatch{MatchType: &networking.StringMatch_Regex{Regex: v}}
	}
	return &networking.StringMatch{MatchType: &networking.StringMatch_Exact{Exact: v}}
}

func headerOps(h *networking.Headers, f *gwv1.HTTPHeaderFilter, request bool) *networking.Headers {
	if f == nil {
		return h
	}
	if h == nil {
		h = &networking.Headers{}
	}
	ops := &networking.Headers_HeaderOperations{Remove: slices.Clone(f.Remove)}
	for _, s := range f.Set {
		if ops.Set == nil {
			ops.Set = map[string]string{}
		}
		ops.Set[string(s.Name)] = s.Value
	}
	for _, a := range f.Add {
		if ops.Add == nil {
			ops.Add = map[string]string{}
		}
		ops.Add[string(a.Name)] = a.Value
	}
	if request {
		h.Request = ops
	} else {
		h.Response = ops
	}
	return h
}

func ptrOr[T any](p *T, def T) T {
	if p == nil {
		return def
	}
	return *p
}

// Package gatewayroute plans a sandbox's mesh routes as Gateway API
// HTTPRoutes with a Service as parent (the GAMMA mesh profile, which
// Istio and Linkerd implement). Unlike the VirtualService backend
// (cluster/istiovs), sbx never edits CD's objects here: Gateway API routes
// with the same parent merge, ordered by the spec's precedence (the most
// specific match: exact path, longest prefix, method, most header
// matches, most query matches; then the oldest route; then namespace/name;
// then rule order). So a sandbox adds its own HTTPRoute next to CD's, and
// each keyed rule outranks the rule it copies by one header match, the
// baggage one.
//
// The package is free of clients: it takes the routes it finds and returns
// the objects to write.
package gatewayroute

import (
	"cmp"
	"fmt"
	"slices"
	"strconv"
	"strings"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"
	gwv1 "sigs.k8s.io/gateway-api/apis/v1"
)

// Limits of the standard HTTPRoute CRD: rules per route, matches in all
// rules of a route, header matches per match.
const (
	maxRules        = 16
	maxMatches      = 128
	maxHeaderMatch  = 16
	baggageHeader   = "baggage"
	defaultPrefix   = "/"
	serviceKind     = "Service"
	gatewayAPIGroup = "gateway.networking.k8s.io"
)

// Service is the baseline Service a sandbox takes keyed requests of.
type Service struct {
	Namespace, Name string
	// Ports are all the Service's ports.
	Ports []int32
}

// Input is one mapped Service port of a sandbox.
type Input struct {
	Service Service
	// Port is the mapped port; the sandbox Service has the same number.
	Port int32
	// SandboxService is the sandbox's Service for the workload, in
	// SandboxNamespace (the relay's).
	SandboxService, SandboxNamespace string
	// Key is the routing key and Regex the anchored baggage regex
	// (cluster.BaggageRegex) that matches it.
	Key, Regex string
	// Routes and GRPCRoutes are every HTTPRoute and GRPCRoute in the
	// cluster; the planner picks those with the Service as a parent and
	// ignores sbx's own (IsOwn). The mesh merges both kinds of a parent.
	Routes     []*gwv1.HTTPRoute
	GRPCRoutes []*gwv1.GRPCRoute
	// IsOwn tells sbx's routes apart (labelled like every sbx object).
	IsOwn func(metav1.Object) bool
}

// Plan is what the sandbox writes for one Service port: its HTTPRoutes
// (more than one only when the keyed rules exceed the CRD's limits), the
// CD routes they mirror, and what the user should know.
type Plan struct {
	Routes []*gwv1.HTTPRoute
	// GRPCRoutes mirror CD's GRPCRoutes of the parent (none without).
	GRPCRoutes []*gwv1.GRPCRoute
	// Mirrors are the CD routes ("namespace/name") whose rules were
	// copied; empty when no CD route has the Service as parent.
	Mirrors  []string
	Warnings []string
	// PortForm says how the parentRef names the Service: "port" or
	// "portless" (the form CD's routes use, so that the mesh merges them).
	PortForm string
}

// cdRule is a rule of a CD route that applies to the parent port.
type cdRule struct {
	route *gwv1.HTTPRoute
	index int
	rule  gwv1.HTTPRouteRule
}

// MakePlan plans the sandbox's HTTPRoute(s) for in.Port of in.Service.
func MakePlan(in Input) (*Plan, error) {
	if in.Regex == "" || in.Key == "" || in.SandboxService == "" {
		return nil, fmt.Errorf("gatewayroute: Key, Regex and SandboxService are required")
	}
	if in.SandboxNamespace != "" && in.SandboxNamespace != in.Service.Namespace {
		// A backendRef to another namespace needs a ReferenceGrant there,
		// which sbx does not write.
		return nil, fmt.Errorf("Service %s/%s is in another namespace than the sandbox's relay (%s); with Gateway API routing sbx sends keyed requests only to a sandbox Service in the Service's own namespace: put the sandbox's home namespace (its first local workload) in %s, or use mesh: istio",
			in.Service.Namespace, in.Service.Name, in.SandboxNamespace, in.Service.Namespace)
	}
	p := &Plan{}
	var rules []cdRule
	var grpcRules []cdGRPCRule
	portless, withPort := 0, 0
	type attached struct {
		kind    string
		meta    *metav1.ObjectMeta
		parents []gwv1.ParentReference
		http    *gwv1.HTTPRoute
		grpc    *gwv1.GRPCRoute
	}
	var cd []attached
	for _, r := range in.Routes {
		cd = append(cd, attached{kind: "HTTPRoute", meta: &r.ObjectMeta, parents: r.Spec.ParentRefs, http: r})
	}
	for _, r := range in.GRPCRoutes {
		cd = append(cd, attached{kind: "GRPCRoute", meta: &r.ObjectMeta, parents: r.Spec.ParentRefs, grpc: r})
	}
	// Oldest first, then namespace/name: the order that breaks ties in
	// precedence, so the copies keep it among themselves.
	slices.SortStableFunc(cd, func(a, b attached) int {
		if c := a.meta.CreationTimestamp.Compare(b.meta.CreationTimestamp.Time); c != 0 {
			return c
		}
		return cmp.Compare(a.meta.Namespace+"/"+a.meta.Name, b.meta.Namespace+"/"+b.meta.Name)
	})
	for _, r := range cd {
		if in.IsOwn != nil && in.IsOwn(r.meta) {
			continue
		}
		noPort, thisPort := 0, 0
		for _, ref := range r.parents {
			if !isService(ref, r.meta.Namespace, in.Service) {
				continue
			}
			switch {
			case ref.Port == nil:
				noPort++
			case int32(*ref.Port) == in.Port:
				thisPort++
			}
		}
		if noPort+thisPort == 0 {
			continue
		}
		if r.meta.Namespace != in.Service.Namespace {
			// A consumer route: the mesh applies it to clients in its own
			// namespace in place of the Service's routes, and sbx's route
			// (a producer route, in the Service's namespace) does not merge
			// with it. Copying its rules would change what other clients get.
			p.Warnings = append(p.Warnings, fmt.Sprintf("%s %s/%s routes Service %s/%s for clients in namespace %s, where it takes precedence over the Service's own routes: keyed requests from there reach the baseline",
				r.kind, r.meta.Namespace, r.meta.Name, in.Service.Namespace, in.Service.Name, r.meta.Namespace))
			continue
		}
		portless, withPort = portless+noPort, withPort+thisPort
		p.Mirrors = append(p.Mirrors, r.kind+" "+r.meta.Namespace+"/"+r.meta.Name)
		if r.http != nil {
			for i, rule := range r.http.Spec.Rules {
				rules = append(rules, cdRule{route: r.http, index: i, rule: rule})
			}
		} else {
			for i, rule := range r.grpc.Spec.Rules {
				grpcRules = append(grpcRules, cdGRPCRule{route: r.grpc, index: i, rule: rule})
			}
		}
	}
	switch {
	case portless > 0 && withPort > 0:
		// The mesh merges routes per parentRef form and then keeps only
		// the oldest of the two for the host and port (Istio: "duplicate
		// domain from virtual service"): sbx's route would merge with the
		// one that may be dropped.
		return nil, fmt.Errorf("CD routes Service %s/%s with routes both with and without port %d in their parentRefs (%s); the mesh applies only one form's routes to a port, so sbx's route could be dropped: give CD's routes one form, or leave %s out of the sandbox",
			in.Service.Namespace, in.Service.Name, in.Port, strings.Join(p.Mirrors, ", "), in.Service.Name)
	case portless > 0:
		p.PortForm = "portless"
	case withPort > 0:
		p.PortForm = "port"
	case len(in.Service.Ports) == 1:
		p.PortForm = "portless"
	default:
		p.PortForm = "port"
	}
	if p.PortForm == "portless" && len(in.Service.Ports) > 1 {
		return nil, fmt.Errorf("%s routes Service %s/%s, which has %d ports, without naming a port; sbx's keyed rules would then take keyed requests on every port of it, but only port %d is mapped: give CD's parentRef a port (port: %d), or use mesh: istio",
			p.Mirrors[0], in.Service.Namespace, in.Service.Name, len(in.Service.Ports), in.Port, in.Port)
	}

	sandbox := gwv1.HTTPBackendRef{BackendRef: gwv1.BackendRef{BackendObjectReference: gwv1.BackendObjectReference{
		Name: gwv1.ObjectName(in.SandboxService), Port: ptr.To(gwv1.PortNumber(in.Port)),
	}}}
	baseline := gwv1.HTTPBackendRef{BackendRef: gwv1.BackendRef{BackendObjectReference: gwv1.BackendObjectReference{
		Name: gwv1.ObjectName(in.Service.Name), Port: ptr.To(gwv1.PortNumber(in.Port)),
	}}}
	var out []gwv1.HTTPRouteRule
	for _, r := range rules {
		// Every CD rule gets a keyed copy, also those that send elsewhere
		// (they keep their backends): the baggage match raises each copy
		// by one header, so only copies of all rules keep CD's precedence
		// among keyed requests — a copy of a lower rule would otherwise
		// outrank a CD rule above it.
		target := &sandbox
		if !sendsTo(r.rule, r.route.Namespace, in.Service, in.Port) {
			target = nil
		}
		k, warn := keyedCopy(r, in.Regex, target, in.Service, in.Port)
		if warn != "" {
			p.Warnings = append(p.Warnings, warn)
			continue
		}
		out = append(out, k)
	}
	// Keyed requests no CD rule matches reach the sandbox too. Where CD
	// has GRPCRoutes, that rule is a GRPCRoute's, with no path: the mesh
	// ranks path matches first (exact, prefix, regex, none), and a "/"
	// prefix would outrank the keyed copies of gRPC rules whose method
	// match is a regex or absent (see grpcPlan).
	if len(grpcRules) == 0 {
		out = append(out, gwv1.HTTPRouteRule{
			Name:        ptr.To(gwv1.SectionName("sbx-keyed")),
			Matches:     []gwv1.HTTPRouteMatch{keyedMatch(gwv1.HTTPRouteMatch{}, in.Regex)},
			BackendRefs: []gwv1.HTTPBackendRef{sandbox},
		})
	}
	if len(p.Mirrors) == 0 {
		// With a route attached, requests no rule matches get a 404:
		// non-keyed requests keep going to the baseline, as with none.
		out = append(out, gwv1.HTTPRouteRule{
			Name:        ptr.To(gwv1.SectionName("sbx-baseline")),
			Matches:     []gwv1.HTTPRouteMatch{{Path: &gwv1.HTTPPathMatch{Type: ptr.To(gwv1.PathMatchPathPrefix), Value: ptr.To(defaultPrefix)}}},
			BackendRefs: []gwv1.HTTPBackendRef{baseline},
		})
	}

	parent := gwv1.ParentReference{Group: ptr.To(gwv1.Group("")), Kind: ptr.To(gwv1.Kind(serviceKind)), Name: gwv1.ObjectName(in.Service.Name)}
	if p.PortForm == "port" {
		parent.Port = ptr.To(gwv1.PortNumber(in.Port))
	}
	if len(grpcRules) > 0 {
		var warns []string
		p.GRPCRoutes, warns = grpcPlan(in, grpcRules, parent)
		p.Warnings = append(p.Warnings, warns...)
	}
	if len(out) == 0 {
		return p, nil // CD routes the parent with GRPCRoutes only
	}
	for i, chunk := range split(out) {
		name := RouteName(in.Key, in.Service.Name, in.Port)
		if i > 0 {
			name += "-" + strconv.Itoa(i+1)
		}
		p.Routes = append(p.Routes, &gwv1.HTTPRoute{
			TypeMeta:   metav1.TypeMeta{APIVersion: gatewayAPIGroup + "/v1", Kind: "HTTPRoute"},
			ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: in.Service.Namespace},
			Spec: gwv1.HTTPRouteSpec{
				CommonRouteSpec: gwv1.CommonRouteSpec{ParentRefs: []gwv1.ParentReference{parent}},
				Rules:           chunk,
			},
		})
	}
	return p, nil
}

// RouteName is the name of a sandbox's HTTPRoute for a Service port.
// (A Service name has at most 63 characters, so it stays a valid name.)
func RouteName(key, service string, port int32) string {
	return fmt.Sprintf("sbx-%s-%s-%d", key, service, port)
}

// isService reports whether ref names Service s (a route's parentRef
// namespace defaults to the route's own).
func isService(ref gwv1.ParentReference, routeNS string, s Service) bool {
	group := ""
	if ref.Group != nil {
		group = string(*ref.Group)
	}
	kind := ""
	if ref.Kind != nil {
		kind = string(*ref.Kind)
	}
	ns := routeNS
	if ref.Namespace != nil {
		ns = string(*ref.Namespace)
	}
	return (group == "" || group == "core") && kind == serviceKind && string(ref.Name) == s.Name && ns == s.Namespace
}

// sendsTo reports whether a rule sends (some of) its requests to the
// Service's port: only those are the sandboxed workload's requests. A
// rule without backendRefs (a redirect) keeps its behaviour for keyed
// requests.
func sendsTo(rule gwv1.HTTPRouteRule, routeNS string, s Service, port int32) bool {
	for _, b := range rule.BackendRefs {
		group, kind, ns := "", serviceKind, routeNS
		if b.Group != nil {
			group = string(*b.Group)
		}
		if b.Kind != nil {
			kind = string(*b.Kind)
		}
		if b.Namespace != nil {
			ns = string(*b.Namespace)
		}
		if (group == "" || group == "core") && kind == serviceKind && string(b.Name) == s.Name && ns == s.Namespace &&
			(b.Port == nil || int32(*b.Port) == port) && ptr.Deref(b.Weight, 1) > 0 {
			return true
		}
	}
	return false
}

// keyedCopy is a CD rule with the baggage match added to each of its
// matches; everything else (filters, timeouts) as the rule has it, so a
// keyed request is treated as the baseline's. With sandbox set, the rule's
// requests for the Service port go to the sandbox (with the filters of
// the backendRef it replaces) and no longer to the rule's other backends
// (a canary's); without, the copy keeps the rule's backends. Retry and
// session persistence (experimental fields the standard CRDs prune) are
// not set.
func keyedCopy(r cdRule, regex string, sandbox *gwv1.HTTPBackendRef, s Service, port int32) (gwv1.HTTPRouteRule, string) {
	matches := r.rule.Matches
	if len(matches) == 0 {
		matches = []gwv1.HTTPRouteMatch{{}}
	}
	out := gwv1.HTTPRouteRule{
		Filters:     slices.Clone(r.rule.Filters),
		BackendRefs: slices.Clone(r.rule.BackendRefs),
		Timeouts:    r.rule.Timeouts,
	}
	if sandbox != nil {
		b := *sandbox
		for _, orig := range r.rule.BackendRefs {
			if sendsTo(gwv1.HTTPRouteRule{BackendRefs: []gwv1.HTTPBackendRef{orig}}, r.route.Namespace, s, port) {
				b.Filters = slices.Clone(orig.Filters)
				break
			}
		}
		out.BackendRefs = []gwv1.HTTPBackendRef{b}
	}
	name := fmt.Sprintf("rule %d", r.index)
	if r.rule.Name != nil {
		name = string(*r.rule.Name)
		out.Name = ptr.To(gwv1.SectionName(shortSection("sbx-" + string(*r.rule.Name))))
	}
	for _, m := range matches {
		var names []string
		for _, h := range m.Headers {
			names = append(names, string(h.Name))
		}
		if why := cannotKey("HTTPRoute", &r.route.ObjectMeta, name, names); why != "" {
			return out, why
		}
		out.Matches = append(out.Matches, keyedMatch(m, regex))
	}
	return out, ""
}

// cannotKey says why a match with these header names cannot take the
// baggage match ("" when it can): the CRD's limit, or a baggage match of
// its own.
func cannotKey(kind string, route *metav1.ObjectMeta, rule string, headers []string) string {
	if len(headers) >= maxHeaderMatch {
		return fmt.Sprintf("%s %s/%s %s has %d header matches, the most a match may have: sbx cannot add the baggage match, so keyed requests it matches reach the baseline",
			kind, route.Namespace, route.Name, rule, len(headers))
	}
	for _, h := range headers {
		if strings.EqualFold(h, baggageHeader) {
			return fmt.Sprintf("%s %s/%s %s already matches the baggage header: keyed requests it matches reach the baseline",
				kind, route.Namespace, route.Name, rule)
		}
	}
	return ""
}

// keyedMatch is m plus the baggage header match (a path of "/" prefix
// when m has none, as the CRD's default would give it).
func keyedMatch(m gwv1.HTTPRouteMatch, regex string) gwv1.HTTPRouteMatch {
	k := *m.DeepCopy()
	if k.Path == nil {
		k.Path = &gwv1.HTTPPathMatch{Type: ptr.To(gwv1.PathMatchPathPrefix), Value: ptr.To(defaultPrefix)}
	}
	k.Headers = append(k.Headers, gwv1.HTTPHeaderMatch{
		Type: ptr.To(gwv1.HeaderMatchRegularExpression), Name: baggageHeader, Value: regex,
	})
	return k
}

// shortSection keeps a rule name within a section name's 253 characters.
func shortSection(s string) string {
	if len(s) > 253 {
		return s[:253]
	}
	return s
}

// split packs rules into routes within the CRD's limits, in order.
func split(rules []gwv1.HTTPRouteRule) [][]gwv1.HTTPRouteRule {
	var out [][]gwv1.HTTPRouteRule
	var cur []gwv1.HTTPRouteRule
	matches := 0
	for _, r := range rules {
		n := max(len(r.Matches), 1)
		if len(cur) == maxRules || matches+n > maxMatches {
			out = append(out, cur)
			cur, matches = nil, 0
		}
		cur = append(cur, r)
		matches += n
	}
	return append(out, cur)
}

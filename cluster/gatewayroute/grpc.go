package gatewayroute

import (
	"fmt"
	"slices"
	"strconv"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"
	gwv1 "sigs.k8s.io/gateway-api/apis/v1"
)

// cdGRPCRule is a rule of a CD GRPCRoute that applies to the parent port.
type cdGRPCRule struct {
	route *gwv1.GRPCRoute
	index int
	rule  gwv1.GRPCRouteRule
}

// grpcPlan is sbx's GRPCRoute(s) next to CD's GRPCRoutes of the parent:
// a keyed copy of every CD rule (its method and header matches plus the
// baggage match; filters as they are; the sandbox as backend where the
// rule sends to the Service port, its own backends elsewhere), and the
// rule for keyed requests no CD rule matches (a baggage match without a
// path, so that it ranks below every copy; the mesh merges both kinds of a
// parent into one list).
func grpcPlan(in Input, rules []cdGRPCRule, parent gwv1.ParentReference) ([]*gwv1.GRPCRoute, []string) {
	sandbox := gwv1.GRPCBackendRef{BackendRef: gwv1.BackendRef{BackendObjectReference: gwv1.BackendObjectReference{
		Name: gwv1.ObjectName(in.SandboxService), Port: ptr.To(gwv1.PortNumber(in.Port)),
	}}}
	var out []gwv1.GRPCRouteRule
	var warnings []string
	for _, r := range rules {
		k, warn := keyedGRPCCopy(r, in.Regex, sandbox, in.Service, in.Port)
		if warn != "" {
			warnings = append(warnings, warn)
			continue
		}
		out = append(out, k)
	}
	// Keyed requests no CD rule matches: a match on the baggage header
	// alone, which the mesh ranks after every path match and, among
	// matches without one, after the copies (same header count, older
	// rule first), so it never takes a request a copy would.
	out = append(out, gwv1.GRPCRouteRule{
		Name: ptr.To(gwv1.SectionName("sbx-keyed")),
		Matches: []gwv1.GRPCRouteMatch{{Headers: []gwv1.GRPCHeaderMatch{{
			Type: ptr.To(gwv1.GRPCHeaderMatchRegularExpression), Name: baggageHeader, Value: in.Regex,
		}}}},
		BackendRefs: []gwv1.GRPCBackendRef{sandbox},
	})
	var routes []*gwv1.GRPCRoute
	for i := 0; i < len(out); i += maxRules {
		chunk := out[i:min(i+maxRules, len(out))]
		name := GRPCRouteName(in.Key, in.Service.Name, in.Port)
		if i > 0 {
			name += "-" + strconv.Itoa(i/maxRules+1)
		}
		routes = append(routes, &gwv1.GRPCRoute{
			TypeMeta:   metav1.TypeMeta{APIVersion: gatewayAPIGroup + "/v1", Kind: "GRPCRoute"},
			ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: in.Service.Namespace},
			Spec: gwv1.GRPCRouteSpec{
				CommonRouteSpec: gwv1.CommonRouteSpec{ParentRefs: []gwv1.ParentReference{parent}},
				Rules:           slices.Clone(chunk),
			},
		})
	}
	return routes, warnings
}

// GRPCRouteName is the name of a sandbox's GRPCRoute for a Service port.
func GRPCRouteName(key, service string, port int32) string {
	return RouteName(key, service, port) + "-grpc"
}

// keyedGRPCCopy is keyedCopy for a GRPCRoute rule.
func keyedGRPCCopy(r cdGRPCRule, regex string, sandbox gwv1.GRPCBackendRef, s Service, port int32) (gwv1.GRPCRouteRule, string) {
	out := gwv1.GRPCRouteRule{Filters: slices.Clone(r.rule.Filters), BackendRefs: slices.Clone(r.rule.BackendRefs)}
	for _, b := range r.rule.BackendRefs {
		if sendsTo(gwv1.HTTPRouteRule{BackendRefs: []gwv1.HTTPBackendRef{{BackendRef: b.BackendRef}}}, r.route.Namespace, s, port) {
			sb := sandbox
			sb.Filters = slices.Clone(b.Filters)
			out.BackendRefs = []gwv1.GRPCBackendRef{sb}
			break
		}
	}
	name := fmt.Sprintf("rule %d", r.index)
	if r.rule.Name != nil {
		name = string(*r.rule.Name)
		out.Name = ptr.To(gwv1.SectionName(shortSection("sbx-" + string(*r.rule.Name))))
	}
	matches := r.rule.Matches
	if len(matches) == 0 {
		matches = []gwv1.GRPCRouteMatch{{}}
	}
	for _, m := range matches {
		var names []string
		for _, h := range m.Headers {
			names = append(names, string(h.Name))
		}
		if why := cannotKey("GRPCRoute", &r.route.ObjectMeta, name, names); why != "" {
			return out, why
		}
		k := *m.DeepCopy()
		k.Headers = append(k.Headers, gwv1.GRPCHeaderMatch{
			Type: ptr.To(gwv1.GRPCHeaderMatchRegularExpression), Name: baggageHeader, Value: regex,
		})
		out.Matches = append(out.Matches, k)
	}
	return out, ""
}

package gatewayroute

import (
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"
	gwv1 "sigs.k8s.io/gateway-api/apis/v1"
	"sigs.k8s.io/yaml"
)

const (
	key   = "k1k1k1k1k1k1k"
	regex = `^(?:(?:.*,)?[ \t]*sbx-routing-key[ \t]*=[ \t]*k1k1k1k1k1k1k[ \t]*(?:[;,].*)?)$`
)

func route(t *testing.T, doc string, created time.Time) *gwv1.HTTPRoute {
	t.Helper()
	var r gwv1.HTTPRoute
	require.NoError(t, yaml.UnmarshalStrict([]byte(doc), &r))
	r.CreationTimestamp = metav1.NewTime(created)
	return &r
}

func input(routes ...*gwv1.HTTPRoute) Input {
	return Input{
		Service: Service{Namespace: "hotrod", Name: "route", Ports: []int32{8083}},
		Port:    8083, SandboxService: "route-sbx-" + key, SandboxNamespace: "hotrod",
		Key: key, Regex: regex, Routes: routes,
		IsOwn: func(r metav1.Object) bool { return r.GetLabels()["app.kubernetes.io/managed-by"] == "sbx" },
	}
}

func ruleNames(r *gwv1.HTTPRoute) []string {
	var out []string
	for _, rule := range r.Spec.Rules {
		out = append(out, string(ptr.Deref(rule.Name, "")))
	}
	return out
}

// No CD route: a keyed rule to the sandbox and a catch-all that keeps
// non-keyed requests on the baseline, under a portless parent (one port).
func TestPlanWithoutCDRoute(t *testing.T) {
	p, err := MakePlan(input())
	require.NoError(t, err)
	require.Empty(t, p.Mirrors)
	require.Equal(t, "portless", p.PortForm)
	require.Len(t, p.Routes, 1)
	r := p.Routes[0]
	require.Equal(t, "sbx-"+key+"-route-8083", r.Name)
	require.Equal(t, "hotrod", r.Namespace)
	require.Equal(t, []string{"sbx-keyed", "sbx-baseline"}, ruleNames(r))
	ref := r.Spec.ParentRefs[0]
	require.Equal(t, "Service", string(*ref.Kind))
	require.Nil(t, ref.Port)
	keyed := r.Spec.Rules[0]
	require.Equal(t, gwv1.HeaderMatchRegularExpression, *keyed.Matches[0].Headers[0].Type)
	require.Equal(t, regex, keyed.Matches[0].Headers[0].Value)
	require.Equal(t, "/", *keyed.Matches[0].Path.Value)
	require.Equal(t, "route-sbx-"+key, string(keyed.BackendRefs[0].Name))
	require.Equal(t, "route", string(r.Spec.Rules[1].BackendRefs[0].Name))
	require.Empty(t, r.Spec.Rules[1].Matches[0].Headers, "the catch-all takes every request")

	// Two ports: the route names the mapped one, so the other's keyed
	// requests are not taken.
	in := input()
	in.Service.Ports = []int32{8083, 9001}
	p, err = MakePlan(in)
	require.NoError(t, err)
	require.Equal(t, "port", p.PortForm)
	require.EqualValues(t, 8083, *p.Routes[0].Spec.ParentRefs[0].Port)
}

// CD's rules for the Service get keyed copies in order (same matches,
// filters and timeouts, one more header match); a rule that sends
// elsewhere, and CD routes of other parents, are left alone; the
// parentRef takes CD's form.
func TestPlanMirrorsCDRules(t *testing.T) {
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	cd := route(t, `
metadata: {name: route, namespace: hotrod}
spec:
  parentRefs: [{group: "", kind: Service, name: route, port: 8083}]
  rules:
  - name: api
    matches: [{path: {type: PathPrefix, value: /api}, headers: [{name: x-team, value: a}]}, {path: {type: Exact, value: /v}}]
    filters: [{type: RequestHeaderModifier, requestHeaderModifier: {set: [{name: x-via, value: cd}]}}]
    timeouts: {request: 3s}
    backendRefs: [{name: route, port: 8083}]
  - name: admin
    matches: [{path: {type: PathPrefix, value: /admin}}]
    backendRefs: [{name: driver, port: 8082}]
  - backendRefs: [{name: route, port: 8083, weight: 90}, {name: route-v2, port: 8083, weight: 10}]
`, t0)
	other := route(t, `
metadata: {name: driver, namespace: hotrod}
spec:
  parentRefs: [{group: "", kind: Service, name: driver}]
  rules: [{backendRefs: [{name: driver, port: 8082}]}]
`, t0)
	own := route(t, `
metadata: {name: sbx-other-route-8083, namespace: hotrod, labels: {app.kubernetes.io/managed-by: sbx}}
spec:
  parentRefs: [{group: "", kind: Service, name: route, port: 8083}]
  rules: [{backendRefs: [{name: route-sbx-other, port: 8083}]}]
`, t0.Add(time.Hour))
	in := input(cd, other, own)
	in.Service.Ports = []int32{8083, 9001}
	p, err := MakePlan(in)
	require.NoError(t, err)
	require.Equal(t, []string{"HTTPRoute hotrod/route"}, p.Mirrors, "another sandbox's route is not CD's")
	require.Equal(t, "port", p.PortForm)
	r := p.Routes[0]
	require.Equal(t, []string{"sbx-api", "sbx-admin", "", "sbx-keyed"}, ruleNames(r), "every rule has a keyed copy; no catch-all next to CD's routes")
	admin := r.Spec.Rules[1]
	require.Equal(t, "driver", string(admin.BackendRefs[0].Name), "the copy of a rule that sends elsewhere keeps its backend")
	api := r.Spec.Rules[0]
	require.Len(t, api.Matches, 2)
	require.Equal(t, "/api", *api.Matches[0].Path.Value)
	require.Len(t, api.Matches[0].Headers, 2)
	require.Equal(t, "x-team", string(api.Matches[0].Headers[0].Name))
	require.Equal(t, "baggage", string(api.Matches[0].Headers[1].Name))
	require.Equal(t, gwv1.PathMatchExact, *api.Matches[1].Path.Type)
	require.Equal(t, cdFilters(cd, 0), api.Filters)
	require.Equal(t, gwv1.Duration("3s"), *api.Timeouts.Request)
	require.Equal(t, []gwv1.HTTPBackendRef{{BackendRef: gwv1.BackendRef{BackendObjectReference: gwv1.BackendObjectReference{
		Name: "route-sbx-" + key, Port: ptr.To(gwv1.PortNumber(8083))}}}}, api.BackendRefs)
	canary := r.Spec.Rules[2]
	require.Equal(t, "/", *canary.Matches[0].Path.Value, "a rule without matches matches every path")
	require.Len(t, canary.BackendRefs, 1, "keyed requests of a canary split all go to the sandbox")
}

func cdFilters(r *gwv1.HTTPRoute, i int) []gwv1.HTTPRouteFilter { return r.Spec.Rules[i].Filters }

// Refusals name the route and the way out.
func TestPlanRefusals(t *testing.T) {
	portless := route(t, `
metadata: {name: route, namespace: hotrod}
spec:
  parentRefs: [{kind: Service, name: route}]
  rules: [{backendRefs: [{name: route, port: 8083}]}]
`, time.Now())
	in := input(portless)
	in.Service.Ports = []int32{8083, 9001}
	_, err := MakePlan(in)
	require.ErrorContains(t, err, "HTTPRoute hotrod/route routes Service hotrod/route, which has 2 ports, without naming a port")

	mixed := route(t, `
metadata: {name: ported, namespace: hotrod}
spec:
  parentRefs: [{kind: Service, name: route, port: 8083}]
  rules: [{backendRefs: [{name: route, port: 8083}]}]
`, time.Now())
	single := route(t, `
metadata: {name: bare, namespace: hotrod}
spec:
  parentRefs: [{kind: Service, name: route}]
  rules: [{backendRefs: [{name: route, port: 8083}]}]
`, time.Now())
	_, err = MakePlan(input(mixed, single))
	require.ErrorContains(t, err, "with routes both with and without port 8083 in their parentRefs")

	in = input()
	in.SandboxNamespace = "dev"
	_, err = MakePlan(in)
	require.ErrorContains(t, err, "in another namespace than the sandbox's relay (dev)")
}

// A match already at the CRD's header limit cannot take the baggage
// match: the rule is skipped with a warning rather than written invalid.
func TestPlanHeaderLimit(t *testing.T) {
	m := gwv1.HTTPRouteMatch{}
	for i := range maxHeaderMatch {
		m.Headers = append(m.Headers, gwv1.HTTPHeaderMatch{Name: gwv1.HTTPHeaderName("h" + string(rune('a'+i))), Value: "v"})
	}
	cd := &gwv1.HTTPRoute{ObjectMeta: metav1.ObjectMeta{Name: "route", Namespace: "hotrod"}}
	cd.Spec.ParentRefs = []gwv1.ParentReference{{Kind: ptr.To(gwv1.Kind("Service")), Name: "route"}}
	cd.Spec.Rules = []gwv1.HTTPRouteRule{{Matches: []gwv1.HTTPRouteMatch{m}, BackendRefs: []gwv1.HTTPBackendRef{{BackendRef: gwv1.BackendRef{BackendObjectReference: gwv1.BackendObjectReference{Name: "route", Port: ptr.To(gwv1.PortNumber(8083))}}}}}}
	p, err := MakePlan(input(cd))
	require.NoError(t, err)
	require.Len(t, p.Warnings, 1)
	require.Contains(t, p.Warnings[0], "has 16 header matches")
	require.Equal(t, []string{"sbx-keyed"}, ruleNames(p.Routes[0]))
}

// More keyed rules than one route may hold are split over routes.
func TestPlanSplitsAtTheCRDLimits(t *testing.T) {
	cd := &gwv1.HTTPRoute{ObjectMeta: metav1.ObjectMeta{Name: "route", Namespace: "hotrod"}}
	cd.Spec.ParentRefs = []gwv1.ParentReference{{Kind: ptr.To(gwv1.Kind("Service")), Name: "route"}}
	for i := range 16 {
		cd.Spec.Rules = append(cd.Spec.Rules, gwv1.HTTPRouteRule{
			Matches:     []gwv1.HTTPRouteMatch{{Path: &gwv1.HTTPPathMatch{Type: ptr.To(gwv1.PathMatchPathPrefix), Value: ptr.To("/p" + string(rune('a'+i)))}}},
			BackendRefs: []gwv1.HTTPBackendRef{{BackendRef: gwv1.BackendRef{BackendObjectReference: gwv1.BackendObjectReference{Name: "route", Port: ptr.To(gwv1.PortNumber(8083))}}}},
		})
	}
	p, err := MakePlan(input(cd))
	require.NoError(t, err)
	require.Len(t, p.Routes, 2)
	require.Len(t, p.Routes[0].Spec.Rules, 16)
	require.Len(t, p.Routes[1].Spec.Rules, 1)
	require.Equal(t, "sbx-"+key+"-route-8083-2", p.Routes[1].Name)
}

// A consumer route (in the client's namespace) does not merge with the
// Service's routes, and the mesh prefers it for its own namespace's
// clients: sbx does not copy its rules into its producer route (other
// clients would get them), keeps the catch-all to the baseline for them,
// and says that keyed requests from that namespace reach the baseline.
func TestPlanConsumerRoute(t *testing.T) {
	consumer := route(t, `
metadata: {name: cross, namespace: web}
spec:
  parentRefs: [{kind: Service, name: route, namespace: hotrod}]
  rules: [{matches: [{path: {type: PathPrefix, value: /web}}], backendRefs: [{name: route, namespace: hotrod, port: 8083}]}]
`, time.Now())
	p, err := MakePlan(input(consumer))
	require.NoError(t, err)
	require.Empty(t, p.Mirrors)
	require.Equal(t, []string{"sbx-keyed", "sbx-baseline"}, ruleNames(p.Routes[0]))
	require.Len(t, p.Warnings, 1)
	require.Contains(t, p.Warnings[0], "HTTPRoute web/cross routes Service hotrod/route for clients in namespace web")
}

package sim

import (
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/sbx-dev/sbx/cluster/istiovs"
	"github.com/stretchr/testify/require"
	networking "istio.io/api/networking/v1alpha3"
)

func exact(s string) *networking.StringMatch {
	return &networking.StringMatch{MatchType: &networking.StringMatch_Exact{Exact: s}}
}

func prefix(s string) *networking.StringMatch {
	return &networking.StringMatch{MatchType: &networking.StringMatch_Prefix{Prefix: s}}
}

func regex(s string) *networking.StringMatch {
	return &networking.StringMatch{MatchType: &networking.StringMatch_Regex{Regex: s}}
}

func routeTo(host string) []*networking.HTTPRouteDestination {
	return []*networking.HTTPRouteDestination{{Destination: &networking.Destination{Host: host}}}
}

// TestRouteFor checks the sim's use of Istio's selection: the chain's
// first VirtualService with a route for the port and client applies; one
// without falls through to the next, then to the default route; a
// VirtualService that applies but has no matching route is a 404, never a
// fall-through.
func TestRouteFor(t *testing.T) {
	const fqdn = "route.hotrod.svc.cluster.local"
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	mk := func(name string, age int, http ...*networking.HTTPRoute) *istiovs.VirtualService {
		return &istiovs.VirtualService{Namespace: "hotrod", Name: name, Created: t0.Add(time.Duration(age) * time.Minute),
			Spec: &networking.VirtualService{Hosts: []string{"route"}, Http: http}}
	}
	adminOnly := mk("admin", 0, &networking.HTTPRoute{Name: "admin", Match: []*networking.HTTPMatchRequest{{Port: 9001}}, Route: routeTo("route")})
	apiOnly := mk("api", 1, &networking.HTTPRoute{Name: "api", Match: []*networking.HTTPMatchRequest{{Uri: prefix("/api")}}, Route: routeTo("route")})
	feOnly := mk("fe", 2, &networking.HTTPRoute{Name: "fe", Match: []*networking.HTTPMatchRequest{{SourceLabels: map[string]string{"app": "frontend"}}}, Route: routeTo("route")})
	var c regexCache
	call := func(m *istiovs.Mesh, port int32, path string, labels map[string]string) (string, string, bool) {
		ri := requestInfo{req: httptest.NewRequest("GET", path, nil), port: port}
		if labels != nil {
			ri.source = &Source{Namespace: "hotrod", Labels: labels}
		}
		link, r, _, found := c.routeFor(m, fqdn, port, istiovs.Client{Namespace: "hotrod", Labels: labels}, ri)
		if link == nil {
			return "", "", false
		}
		return link.VS.Name, r.GetName(), found
	}
	m := &istiovs.Mesh{VirtualServices: []*istiovs.VirtualService{adminOnly, apiOnly, feOnly}}
	vs, r, found := call(m, 9001, "/", nil)
	require.Equal(t, []any{"admin", "admin", true}, []any{vs, r, found})
	vs, r, found = call(m, 8083, "/api/x", nil)
	require.Equal(t, []any{"api", "api", true}, []any{vs, r, found}, "admin has no route on 8083: the next one")
	vs, _, found = call(m, 8083, "/other", nil)
	require.Equal(t, []any{"api", false}, []any{vs, found}, "api applies and nothing matches: 404")

	m = &istiovs.Mesh{VirtualServices: []*istiovs.VirtualService{adminOnly, feOnly}}
	vs, r, found = call(m, 8083, "/", map[string]string{"app": "frontend"})
	require.Equal(t, []any{"fe", "fe", true}, []any{vs, r, found})
	vs, _, _ = call(m, 8083, "/", map[string]string{"app": "other"})
	require.Empty(t, vs, "no VirtualService yields a route: Istio's default route")
}

func TestMatchRequest(t *testing.T) {
	req := func(method, target string, hdr ...string) *http.Request {
		r := httptest.NewRequest(method, target, nil)
		for i := 0; i+1 < len(hdr); i += 2 {
			r.Header.Add(hdr[i], hdr[i+1])
		}
		return r
	}
	frontend := &Source{Namespace: "hotrod", Labels: map[string]string{"app": "frontend", "version": "baseline"}}
	const key = `^(.*,)?\s*sbx-routing-key\s*=\s*k3x9\s*(;[^,]*)?(,.*)?$`
	for _, tc := range []struct {
		name  string
		m     *networking.HTTPMatchRequest
		r     *http.Request
		port  int32
		src   *Source
		match bool
	}{
		{"nil match", nil, req("GET", "/"), 80, nil, true},
		{"empty match", &networking.HTTPMatchRequest{}, req("GET", "/"), 80, nil, true},
		{"header exact", &networking.HTTPMatchRequest{Headers: map[string]*networking.StringMatch{"x-user": exact("alice")}},
			req("GET", "/", "X-User", "alice"), 80, nil, true},
		{"header exact is case sensitive on the value", &networking.HTTPMatchRequest{Headers: map[string]*networking.StringMatch{"x-user": exact("alice")}},
			req("GET", "/", "X-User", "Alice"), 80, nil, false},
		{"header exact needs the whole value", &networking.HTTPMatchRequest{Headers: map[string]*networking.StringMatch{"x-user": exact("alice")}},
			req("GET", "/", "X-User", "alice2"), 80, nil, false},
		{"header missing", &networking.HTTPMatchRequest{Headers: map[string]*networking.StringMatch{"x-user": exact("alice")}},
			req("GET", "/"), 80, nil, false},
		{"header prefix", &networking.HTTPMatchRequest{Headers: map[string]*networking.StringMatch{"x-user": prefix("ali")}},
			req("GET", "/", "X-User", "alice"), 80, nil, true},
		{"header prefix no", &networking.HTTPMatchRequest{Headers: map[string]*networking.StringMatch{"x-user": prefix("bob")}},
			req("GET", "/", "X-User", "alice"), 80, nil, false},
		{"regex is a full match, not a search", &networking.HTTPMatchRequest{Headers: map[string]*networking.StringMatch{"baggage": regex("k3x9")}},
			req("GET", "/", "Baggage", "sbx-routing-key=k3x9"), 80, nil, false},
		{"regex full match", &networking.HTTPMatchRequest{Headers: map[string]*networking.StringMatch{"baggage": regex(".*k3x9")}},
			req("GET", "/", "Baggage", "sbx-routing-key=k3x9"), 80, nil, true},
		{"regex with alternation is anchored as a whole", &networking.HTTPMatchRequest{Headers: map[string]*networking.StringMatch{"x": regex("a|b")}},
			req("GET", "/", "X", "ab"), 80, nil, false},
		{"baggage regex in a list", &networking.HTTPMatchRequest{Headers: map[string]*networking.StringMatch{"baggage": regex(key)}},
			req("GET", "/", "Baggage", "a=1, sbx-routing-key=k3x9;p=2, b=3"), 80, nil, true},
		{"baggage regex other key", &networking.HTTPMatchRequest{Headers: map[string]*networking.StringMatch{"baggage": regex(key)}},
			req("GET", "/", "Baggage", "sbx-routing-key=k3x99"), 80, nil, false},
		{"multiple header lines are joined with a comma", &networking.HTTPMatchRequest{Headers: map[string]*networking.StringMatch{"baggage": regex(key)}},
			req("GET", "/", "Baggage", "a=1", "Baggage", "sbx-routing-key=k3x9"), 80, nil, true},
		{"joined value seen by exact", &networking.HTTPMatchRequest{Headers: map[string]*networking.StringMatch{"x": exact("1,2")}},
			req("GET", "/", "X", "1", "X", "2"), 80, nil, true},
		{"presence match", &networking.HTTPMatchRequest{Headers: map[string]*networking.StringMatch{"x-debug": {}}},
			req("GET", "/", "X-Debug", ""), 80, nil, true},
		{"presence match absent", &networking.HTTPMatchRequest{Headers: map[string]*networking.StringMatch{"x-debug": {}}},
			req("GET", "/"), 80, nil, false},
		{"all headers must match", &networking.HTTPMatchRequest{Headers: map[string]*networking.StringMatch{"a": exact("1"), "b": exact("2")}},
			req("GET", "/", "A", "1", "B", "3"), 80, nil, false},
		{"withoutHeaders absent", &networking.HTTPMatchRequest{WithoutHeaders: map[string]*networking.StringMatch{"x-canary": {}}},
			req("GET", "/"), 80, nil, true},
		{"withoutHeaders present", &networking.HTTPMatchRequest{WithoutHeaders: map[string]*networking.StringMatch{"x-canary": {}}},
			req("GET", "/", "X-Canary", "1"), 80, nil, false},
		{"withoutHeaders value differs", &networking.HTTPMatchRequest{WithoutHeaders: map[string]*networking.StringMatch{"x-canary": exact("yes")}},
			req("GET", "/", "X-Canary", "no"), 80, nil, true},
		{"uri prefix", &networking.HTTPMatchRequest{Uri: prefix("/api/")}, req("GET", "/api/v1?q=1"), 80, nil, true},
		{"uri exact ignores the query", &networking.HTTPMatchRequest{Uri: exact("/api")}, req("GET", "/api?q=1"), 80, nil, true},
		{"uri exact", &networking.HTTPMatchRequest{Uri: exact("/api")}, req("GET", "/api/x"), 80, nil, false},
		{"uri regex", &networking.HTTPMatchRequest{Uri: regex("/api/v[0-9]+")}, req("GET", "/api/v12"), 80, nil, true},
		{"uri ignore case", &networking.HTTPMatchRequest{Uri: prefix("/API"), IgnoreUriCase: true}, req("GET", "/api/x"), 80, nil, true},
		{"method", &networking.HTTPMatchRequest{Method: exact("POST")}, req("GET", "/"), 80, nil, false},
		{"authority", &networking.HTTPMatchRequest{Authority: prefix("route")}, req("GET", "http://route:8083/"), 80, nil, true},
		{"port", &networking.HTTPMatchRequest{Port: 8083}, req("GET", "/"), 8083, nil, true},
		{"port differs", &networking.HTTPMatchRequest{Port: 8083}, req("GET", "/"), 80, nil, false},
		{"query param", &networking.HTTPMatchRequest{QueryParams: map[string]*networking.StringMatch{"v": exact("2")}}, req("GET", "/?v=2"), 80, nil, true},
		{"query param missing", &networking.HTTPMatchRequest{QueryParams: map[string]*networking.StringMatch{"v": exact("2")}}, req("GET", "/"), 80, nil, false},
		{"match gateways without mesh", &networking.HTTPMatchRequest{Gateways: []string{"public"}}, req("GET", "/"), 80, nil, false},
		{"match gateways with mesh", &networking.HTTPMatchRequest{Gateways: []string{"public", "mesh"}}, req("GET", "/"), 80, nil, true},
		{"source labels", &networking.HTTPMatchRequest{SourceLabels: map[string]string{"app": "frontend"}}, req("GET", "/"), 80, frontend, true},
		{"source labels differ", &networking.HTTPMatchRequest{SourceLabels: map[string]string{"app": "driver"}}, req("GET", "/"), 80, frontend, false},
		{"source labels unknown source", &networking.HTTPMatchRequest{SourceLabels: map[string]string{"app": "frontend"}}, req("GET", "/"), 80, nil, false},
		{"source namespace", &networking.HTTPMatchRequest{SourceNamespace: "hotrod"}, req("GET", "/"), 80, frontend, true},
		{"source namespace differs", &networking.HTTPMatchRequest{SourceNamespace: "default"}, req("GET", "/"), 80, frontend, false},
		{"invalid regex never matches", &networking.HTTPMatchRequest{Headers: map[string]*networking.StringMatch{"x": regex("(")}},
			req("GET", "/", "X", "("), 80, nil, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var c regexCache
			require.Equal(t, tc.match, c.matches(tc.m, requestInfo{req: tc.r, port: tc.port, source: tc.src}))
		})
	}
}

func TestValidateVirtualService(t *testing.T) {
	ok := &networking.VirtualService{Hosts: []string{"route"}, Http: []*networking.HTTPRoute{{Route: routeTo("route")}}}
	require.NoError(t, validateVirtualService(ok))
	// No hosts: a delegate, as Istio accepts it.
	require.NoError(t, validateVirtualService(&networking.VirtualService{Http: ok.Http}))
	for name, vs := range map[string]*networking.VirtualService{
		"a delegate with gateways": {Gateways: []string{"hotrod/gw"}, Http: ok.Http},
		"a delegate with tcp":      {Tcp: []*networking.TCPRoute{{}}},
		"bad regex": {Hosts: []string{"route"}, Http: []*networking.HTTPRoute{{
			Match: []*networking.HTTPMatchRequest{{Headers: map[string]*networking.StringMatch{"baggage": regex("(a")}}},
			Route: routeTo("route")}}},
		"perl lookahead is not RE2": {Hosts: []string{"route"}, Http: []*networking.HTTPRoute{{
			Match: []*networking.HTTPMatchRequest{{Uri: regex("(?=a)")}}, Route: routeTo("route")}}},
		"no action":        {Hosts: []string{"route"}, Http: []*networking.HTTPRoute{{}}},
		"destination host": {Hosts: []string{"route"}, Http: []*networking.HTTPRoute{{Route: []*networking.HTTPRouteDestination{{Destination: &networking.Destination{}}}}}},
	} {
		require.Error(t, validateVirtualService(vs), name)
	}
}

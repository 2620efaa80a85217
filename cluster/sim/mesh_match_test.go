package sim

import (
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

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

func TestResolveHost(t *testing.T) {
	for _, tc := range []struct{ in, ns, want string }{
		{"route", "hotrod", "route.hotrod.svc.cluster.local"},
		{"Route", "other", "route.other.svc.cluster.local"},
		{"route.hotrod", "hotrod", "route.hotrod"}, // has a dot: taken as written
		{"route.hotrod.svc.cluster.local", "x", "route.hotrod.svc.cluster.local"},
		{"route.hotrod.svc.cluster.local.", "x", "route.hotrod.svc.cluster.local"},
		{"*", "hotrod", "*"},
		{"*.hotrod.svc.cluster.local", "x", "*.hotrod.svc.cluster.local"},
		{"10.96.0.3", "hotrod", "10.96.0.3"},
	} {
		require.Equal(t, tc.want, resolveHost(tc.in, tc.ns, "cluster.local"), tc.in)
	}
}

func TestSelectVirtualService(t *testing.T) {
	const fqdn = "route.hotrod.svc.cluster.local"
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	mk := func(ns, name string, age int, hosts []string, mut func(*networking.VirtualService)) *virtualService {
		spec := &networking.VirtualService{Hosts: hosts}
		if mut != nil {
			mut(spec)
		}
		return &virtualService{Namespace: ns, Name: name, Created: t0.Add(time.Duration(age) * time.Minute), Spec: spec}
	}
	gw := func(g ...string) func(*networking.VirtualService) {
		return func(s *networking.VirtualService) { s.Gateways = g }
	}
	export := func(e ...string) func(*networking.VirtualService) {
		return func(s *networking.VirtualService) { s.ExportTo = e }
	}
	for _, tc := range []struct {
		name     string
		all      []*virtualService
		clientNS string
		want     string
	}{
		{"none", nil, "hotrod", ""},
		{"short name in own namespace", []*virtualService{mk("hotrod", "a", 0, []string{"route"}, nil)}, "hotrod", "hotrod/a"},
		{"short name resolves in the VS namespace, not the service's",
			[]*virtualService{mk("other", "a", 0, []string{"route"}, nil)}, "hotrod", ""},
		{"svc.ns form is not expanded",
			[]*virtualService{mk("hotrod", "a", 0, []string{"route.hotrod"}, nil)}, "hotrod", ""},
		{"FQDN from another namespace", []*virtualService{mk("istio-config", "a", 0, []string{fqdn}, nil)}, "hotrod", "istio-config/a"},
		{"other host", []*virtualService{mk("hotrod", "a", 0, []string{"driver"}, nil)}, "hotrod", ""},
		{"gateway only is not for sidecars",
			[]*virtualService{mk("hotrod", "a", 0, []string{"route"}, gw("hotrod/public"))}, "hotrod", ""},
		{"gateway plus mesh",
			[]*virtualService{mk("hotrod", "a", 0, []string{"route"}, gw("hotrod/public", "mesh"))}, "hotrod", "hotrod/a"},
		{"exact beats wildcard even if younger", []*virtualService{
			mk("hotrod", "wild", 0, []string{"*.hotrod.svc.cluster.local"}, nil),
			mk("hotrod", "exact", 5, []string{"route"}, nil),
		}, "hotrod", "hotrod/exact"},
		{"longer wildcard beats *", []*virtualService{
			mk("hotrod", "all", 0, []string{"*"}, nil),
			mk("hotrod", "ns", 5, []string{"*.svc.cluster.local"}, nil),
		}, "hotrod", "hotrod/ns"},
		{"oldest wins among equals", []*virtualService{
			mk("hotrod", "young", 5, []string{"route"}, nil),
			mk("hotrod", "old", 1, []string{"route"}, nil),
		}, "hotrod", "hotrod/old"},
		{"name breaks ties", []*virtualService{
			mk("hotrod", "b", 1, []string{"route"}, nil),
			mk("hotrod", "a", 1, []string{"route"}, nil),
		}, "hotrod", "hotrod/a"},
		{"exportTo . hides from other namespaces",
			[]*virtualService{mk("hotrod", "a", 0, []string{fqdn}, export("."))}, "default", ""},
		{"exportTo . visible in own namespace",
			[]*virtualService{mk("hotrod", "a", 0, []string{fqdn}, export("."))}, "hotrod", "hotrod/a"},
		{"exportTo names the client namespace",
			[]*virtualService{mk("hotrod", "a", 0, []string{fqdn}, export("default"))}, "default", "hotrod/a"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := selectVirtualService(tc.all, fqdn, tc.clientNS, "cluster.local")
			if tc.want == "" {
				require.Nil(t, got)
				return
			}
			require.NotNil(t, got)
			require.Equal(t, tc.want, got.key())
		})
	}
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

func TestSelectRoute(t *testing.T) {
	keyed := func(k string) *networking.HTTPMatchRequest {
		return &networking.HTTPMatchRequest{Headers: map[string]*networking.StringMatch{
			"baggage": regex(`(.*,)?\s*sbx-routing-key=` + k + `\s*(;[^,]*)?(,.*)?`)}}
	}
	vs := &networking.VirtualService{
		Hosts: []string{"route"},
		Http: []*networking.HTTPRoute{
			{Name: "alice", Match: []*networking.HTTPMatchRequest{keyed("aaa")}, Route: routeTo("route-alice")},
			{Name: "bob", Match: []*networking.HTTPMatchRequest{keyed("bbb"), {Headers: map[string]*networking.StringMatch{"x-bob": {}}}}, Route: routeTo("route-bob")},
			{Name: "bob-too", Match: []*networking.HTTPMatchRequest{keyed("bbb")}, Route: routeTo("never")},
			{Name: "default", Route: routeTo("route")},
			{Name: "after-default", Route: routeTo("never")},
		},
	}
	for _, tc := range []struct {
		hdr  []string
		want string
	}{
		{nil, "default"},
		{[]string{"Baggage", "sbx-routing-key=aaa"}, "alice"},
		{[]string{"Baggage", "sbx-routing-key=bbb"}, "bob"},
		{[]string{"X-Bob", "1"}, "bob"},
		{[]string{"Baggage", "x=1,sbx-routing-key=aaa;ttl=3"}, "alice"},
		{[]string{"Baggage", "sbx-routing-key=aaab"}, "default"},
	} {
		r := httptest.NewRequest("GET", "/", nil)
		for i := 0; i+1 < len(tc.hdr); i += 2 {
			r.Header.Add(tc.hdr[i], tc.hdr[i+1])
		}
		var c regexCache
		i, _ := c.selectRoute(vs, requestInfo{req: r, port: 8083})
		require.GreaterOrEqual(t, i, 0)
		require.Equal(t, tc.want, vs.Http[i].Name, "%v", tc.hdr)
	}

	// Without a default route, an unmatched request matches nothing.
	noDefault := &networking.VirtualService{Hosts: []string{"route"}, Http: vs.Http[:2]}
	var c regexCache
	i, _ := c.selectRoute(noDefault, requestInfo{req: httptest.NewRequest("GET", "/", nil), port: 8083})
	require.Equal(t, -1, i)
}

func TestValidateVirtualService(t *testing.T) {
	ok := &networking.VirtualService{Hosts: []string{"route"}, Http: []*networking.HTTPRoute{{Route: routeTo("route")}}}
	require.NoError(t, validateVirtualService(ok))
	for name, vs := range map[string]*networking.VirtualService{
		"no hosts": {Http: ok.Http},
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

package istio

import (
	"net/http"
	"strings"
	"testing"
)

// These tests exercise the Envoy-matching half of the judge on the matchers
// Istio actually emits for each VirtualService match feature, and check that
// Behaviour tells route settings apart. They also prove the judge's strict
// mode accepts what Istio generates for them.

func TestMatchFeatures(t *testing.T) {
	spec := `{hosts: [route], http: [
	  {name: exact, match: [{uri: {exact: /exact}}], route: [{destination: {host: route}}]},
	  {name: regex, match: [{uri: {regex: "/items/[0-9]+"}}], route: [{destination: {host: route}}]},
	  {name: nocase, match: [{uri: {prefix: /NoCase}, ignoreUriCase: true}], route: [{destination: {host: route}}]},
	  {name: post, match: [{uri: {prefix: /m}, method: {exact: POST}}], route: [{destination: {host: route}}]},
	  {name: authority, match: [{uri: {prefix: /auth}, authority: {prefix: route.hotrod}}], route: [{destination: {host: route}}]},
	  {name: without, match: [{uri: {prefix: /without}, withoutHeaders: {x-skip: {exact: "yes"}}}], route: [{destination: {host: route}}]},
	  {name: present, match: [{uri: {prefix: /present}, headers: {x-flag: {}}}], route: [{destination: {host: route}}]},
	  {name: query, match: [{uri: {prefix: /q}, queryParams: {k: {exact: v}, r: {regex: "[0-9]+"}}}], route: [{destination: {host: route}}]},
	  {name: tier, match: [{uri: {prefix: /h}, headers: {x-tier: {prefix: gold}}}], route: [{destination: {host: route}}]},
	  {name: rest, route: [{destination: {host: route}}]}]}`
	w := mustWorld(t, vs("features", "hotrod", t0, spec))
	if warnings, err := ValidateVirtualService(w.VirtualServices[0]); err != nil {
		t.Fatalf("Istio validation: warnings %v, err %v", warnings, err)
	}
	j := NewJudge(t, w)
	h := func(kv ...string) http.Header {
		out := http.Header{}
		for i := 0; i < len(kv); i += 2 {
			out.Add(kv[i], kv[i+1])
		}
		return out
	}
	for _, c := range []struct {
		host, method, path string
		headers            http.Header
		want               string
	}{
		{"", "", "/exact", nil, "exact"},
		{"", "", "/exact?x=1", nil, "exact"},
		{"", "", "/exact/", nil, "rest"},
		{"", "", "/items/12", nil, "regex"},
		{"", "", "/items/12?y=z", nil, "regex"},
		{"", "", "/items/12/x", nil, "rest"},
		{"", "", "/nocase/x", nil, "nocase"},
		{"", "", "/NOCASE", nil, "nocase"},
		{"", "POST", "/m", nil, "post"},
		{"", "GET", "/m", nil, "rest"},
		{"route.hotrod:8083", "", "/auth", nil, "authority"},
		{"10.96.0.11", "", "/auth", nil, "rest"},
		{"", "", "/without", nil, "without"},
		{"", "", "/without", h("X-Skip", "no"), "without"},
		{"", "", "/without", h("X-Skip", "yes"), "rest"},
		{"", "", "/present", h("X-Flag", ""), "present"},
		{"", "", "/present", nil, "rest"},
		{"", "", "/q?k=v&r=12", nil, "query"},
		{"", "", "/q?r=1&k=v&k=w", nil, "query"},
		{"", "", "/q?k=w&k=v&r=1", nil, "rest"},
		{"", "", "/q?k=v&r=1a", nil, "rest"},
		{"", "", "/q?k=v", nil, "rest"},
		{"", "", "/h", h("X-Tier", "golden"), "tier"},
		{"", "", "/h", h("X-Tier", "silver"), "rest"},
		{"", "", "/h", h("X-Tier", "silver", "X-Tier", "gold"), "rest"}, // joined "silver,gold"
	} {
		if c.host == "" {
			c.host = routeFQDN
		}
		o := j.Call(inHotrod, Request{Host: c.host, Port: 8083, Method: c.method, Path: c.path, Headers: c.headers})
		if !o.Matched || o.Route != c.want {
			t.Errorf("%s %s %s %v: got %v, want route %q", c.method, c.host, c.path, c.headers, o, c.want)
		}
	}
}

func TestBehaviour(t *testing.T) {
	spec := `{hosts: [driver], http: [
	  {name: plain, match: [{uri: {prefix: /plain}}], route: [{destination: {host: driver}}]},
	  {name: same, match: [{uri: {prefix: /same}}], route: [{destination: {host: driver}}]},
	  {name: headers, match: [{uri: {prefix: /headers}}], headers: {request: {set: {x-a: "1"}}}, route: [{destination: {host: driver}}]},
	  {name: retries, match: [{uri: {prefix: /retries}}], retries: {attempts: 5, perTryTimeout: 1s}, route: [{destination: {host: driver}}]},
	  {name: fault, match: [{uri: {prefix: /fault}}], fault: {abort: {httpStatus: 503, percentage: {value: 100}}}, route: [{destination: {host: driver}}]},
	  {name: rewrite, match: [{uri: {prefix: /rewrite}}], rewrite: {uri: /x}, route: [{destination: {host: driver}}]},
	  {name: mirror, match: [{uri: {prefix: /mirror}}], mirror: {host: route.hotrod.svc.cluster.local, port: {number: 8083}}, route: [{destination: {host: driver}}]},
	  {name: split, match: [{uri: {prefix: /split}}], route: [{destination: {host: driver}, weight: 90},
	     {destination: {host: route.hotrod.svc.cluster.local, port: {number: 8083}}, weight: 10, headers: {request: {set: {x-canary: "1"}}}}]},
	  {name: redirect, match: [{uri: {prefix: /redirect}}], redirect: {uri: /elsewhere}},
	  {name: direct, match: [{uri: {prefix: /direct}}], directResponse: {status: 418, body: {string: teapot}}}]}`
	j := judgeFor(t, vs("behaviour", "hotrod", t0, spec))
	call := func(path string) Outcome {
		o := j.Call(inHotrod, Request{Host: "driver.hotrod.svc.cluster.local", Port: 8082, Path: path})
		t.Logf("%s: %v", path, o)
		if !o.Matched || o.Route != strings.TrimPrefix(path, "/") {
			t.Fatalf("%s: got %v", path, o)
		}
		return o
	}
	driver := "outbound|8082||driver.hotrod.svc.cluster.local"
	plain := call("/plain")
	if p2 := call("/same"); p2.Behaviour != plain.Behaviour || p2.Cluster != plain.Cluster {
		t.Errorf("two plain routes differ: %s vs %s", p2.Behaviour, plain.Behaviour)
	}
	seen := map[string]string{plain.Behaviour: "plain"}
	for _, p := range []string{"/headers", "/retries", "/fault", "/rewrite", "/mirror", "/split", "/redirect", "/direct"} {
		o := call(p)
		if prev, dup := seen[o.Behaviour]; dup {
			t.Errorf("%s has the same behaviour as %s: %s", p, prev, o.Behaviour)
		}
		seen[o.Behaviour] = p
		switch p {
		case "/split":
			if o.Cluster != driver+":90,"+routeCluster+":10" {
				t.Errorf("split cluster = %q", o.Cluster)
			}
			if field(t, o, "weighted_cluster_settings") == nil {
				t.Errorf("split: per-destination headers missing from behaviour")
			}
		case "/redirect", "/direct":
			if want := map[string]string{"/redirect": "redirect", "/direct": "direct_response"}[p]; o.Kind != want || o.Cluster != "" {
				t.Errorf("%s: kind %q cluster %q", p, o.Kind, o.Cluster)
			}
		default:
			if o.Kind != "route" || o.Cluster != driver {
				t.Errorf("%s: kind %q cluster %q", p, o.Kind, o.Cluster)
			}
		}
	}
}

// Envoy's virtual host selection, checked on a Service with a wildcard
// VirtualService next to exact domains: exact beats wildcard, and the port
// in Host is ignored (Istio sets ignore_port_in_host_matching).
func TestVirtualHostSelection(t *testing.T) {
	web := "\n---\napiVersion: v1\nkind: Service\nmetadata: {name: web, namespace: hotrod}\nspec: {clusterIP: 10.96.0.13, ports: [{name: http, port: 80}]}\n"
	j := judgeFor(t, web, vs("ext", "hotrod", t0,
		`{hosts: ["*.example.com", "api.example.com"], http: [{name: ext, route: [{destination: {host: route.hotrod.svc.cluster.local, port: {number: 8083}}}]}]}`))
	for _, c := range []struct {
		host, vhost, route string
	}{
		{"api.example.com", "api.example.com:80", "ext"},
		{"x.example.com:80", "*.example.com:80", "ext"},
		{"API.Example.COM", "api.example.com:80", "ext"},
		{".example.com", "allow_any", "allow_any"}, // a wildcard must match at least one character
		{"example.com", "allow_any", "allow_any"},
	} {
		o := j.Call(inHotrod, to(c.host, 80))
		t.Logf("%s: %v", c.host, o)
		if !o.Matched || o.VirtualHost != c.vhost || o.Route != c.route {
			t.Errorf("%s: got %v, want vhost %q route %q", c.host, o, c.vhost, c.route)
		}
	}
}

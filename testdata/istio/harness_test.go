package istio

import (
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"testing"

	"github.com/sbx-dev/sbx/cluster"
	"github.com/sbx-dev/sbx/tunnel"
)

// The tests below prove (or refute) claims about Istio's routing that sbx
// relies on. Each asserts concrete outcomes and logs what Istio did, so
// `go test -v` doubles as a record.

const (
	routeFQDN    = "route.hotrod.svc.cluster.local"
	routeCluster = "outbound|8083||route.hotrod.svc.cluster.local"
	adminCluster = "outbound|9001||route.hotrod.svc.cluster.local"
	t0           = "2026-01-01T00:00:00Z"
	t1           = "2026-01-02T00:00:00Z"
	t2           = "2026-01-03T00:00:00Z"
)

// testVerifier is the relay's --token-sha256 in the objects the tests
// render: the SHA-256 of a token no test ever sends (these tests exercise
// routing, not the tunnel).
var testVerifier = tunnel.VerifierOf("t").String()

const baseWorld = `
apiVersion: v1
kind: Namespace
metadata: {name: hotrod}
---
apiVersion: v1
kind: Namespace
metadata: {name: other}
---
apiVersion: v1
kind: Namespace
metadata: {name: third}
---
apiVersion: v1
kind: Service
metadata: {name: route, namespace: hotrod}
spec:
  clusterIP: 10.96.0.11
  selector: {app: route}
  ports:
  - {name: http, port: 8083}
  - {name: http-admin, port: 9001}
---
apiVersion: v1
kind: Service
metadata: {name: driver, namespace: hotrod}
spec:
  clusterIP: 10.96.0.12
  selector: {app: driver}
  ports:
  - {name: http, port: 8082}
`

var (
	inHotrod = Client{Namespace: "hotrod"}
	inOther  = Client{Namespace: "other"}
	inThird  = Client{Namespace: "third"}
	clients  = []Client{inHotrod, inOther, inThird}
)

// vs renders a VirtualService document; spec is a YAML flow mapping.
func vs(name, ns, created, spec string) string {
	return fmt.Sprintf(`
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: %s, namespace: %s, creationTimestamp: %q}
spec: %s
`, name, ns, created, spec)
}

// catchAll is a VirtualService spec for hosts sending everything to route
// through an http route named name.
func catchAll(hosts, name string) string {
	return fmt.Sprintf(`{hosts: %s, http: [{name: %s, route: [{destination: {host: route.hotrod.svc.cluster.local}}]}]}`, hosts, name)
}

func judgeFor(t *testing.T, docs ...string) *Judge {
	t.Helper()
	return NewJudge(t, mustWorld(t, docs...))
}

func mustWorld(t *testing.T, docs ...string) World {
	t.Helper()
	w, err := ParseWorld(baseWorld + strings.Join(docs, ""))
	if err != nil {
		t.Fatal(err)
	}
	return w
}

func to(host string, port int) Request { return Request{Host: host, Port: port} }

// want asserts a matched outcome with the given route name, VirtualService
// ("" for Istio's default route) and cluster, and logs it.
func want(t *testing.T, what string, o Outcome, routeName, vsName, cluster string) {
	t.Helper()
	t.Logf("%s: %v", what, o)
	if !o.Matched || o.Route != routeName || o.VirtualService != vsName || o.Cluster != cluster {
		t.Errorf("%s: got route %q vs %q cluster %q matched=%v; want route %q vs %q cluster %q",
			what, o.Route, o.VirtualService, o.Cluster, o.Matched, routeName, vsName, cluster)
	}
}

func wantDefault(t *testing.T, what string, o Outcome, cluster string) {
	t.Helper()
	want(t, what, o, "default", "", cluster)
}

// field digs a dotted path out of Outcome.Behaviour.
func field(t *testing.T, o Outcome, path string) any {
	t.Helper()
	var v any
	if err := json.Unmarshal([]byte(o.Behaviour), &v); err != nil {
		t.Fatal(err)
	}
	for _, k := range strings.Split(path, ".") {
		m, _ := v.(map[string]any)
		v = m[k]
	}
	return v
}

// a. No VirtualService: Istio's default route.
func TestClaimA_NoVirtualServiceDefaultRoute(t *testing.T) {
	j := judgeFor(t)
	for _, c := range clients {
		for _, h := range []string{routeFQDN, routeFQDN + ":8083", "route.hotrod", "route.hotrod.svc", "10.96.0.11:8083"} {
			wantDefault(t, c.Namespace+" "+h, j.Call(c, to(h, 8083)), routeCluster)
		}
	}
	// The bare short name is only a domain for clients in the Service's namespace.
	wantDefault(t, "hotrod route", j.Call(inHotrod, to("route", 8083)), routeCluster)
	o := j.Call(inOther, to("route", 8083))
	want(t, "other route", o, "allow_any", "", "PassthroughCluster")
	wantDefault(t, "9001", j.Call(inHotrod, to(routeFQDN, 9001)), adminCluster)
}

// b. hosts [route] (short) applies for every client; route.hotrod and
// route.hotrod.svc are not the Service's hostname, so they do not.
func TestClaimB_ShortHostAppliesDottedHostsDoNot(t *testing.T) {
	j := judgeFor(t, vs("short", "hotrod", t0, `{hosts: [route], http: [{name: short, route: [{destination: {host: route}}]}]}`))
	for _, c := range clients {
		want(t, "short/"+c.Namespace, j.Call(c, to(routeFQDN, 8083)), "short", "hotrod/short", routeCluster)
	}
	for _, h := range []string{"route.hotrod", "route.hotrod.svc"} {
		t.Run(h, func(t *testing.T) {
			j := judgeFor(t, vs("dotted", "hotrod", t0, catchAll("["+h+"]", "dotted"))).WithT(t)
			for _, c := range clients {
				wantDefault(t, c.Namespace+" fqdn", j.Call(c, to(routeFQDN, 8083)), routeCluster)
				wantDefault(t, c.Namespace+" "+h, j.Call(c, to(h, 8083)), routeCluster)
			}
		})
	}
}

// c. A VirtualService whose only route is for port 9001 leaves 8083 on the
// default route, with exactly the default Behaviour.
func TestClaimC_PortOnlyVirtualService(t *testing.T) {
	def := judgeFor(t).Call(inHotrod, to(routeFQDN, 8083))
	j := judgeFor(t, vs("admin", "hotrod", t0,
		`{hosts: [route], http: [{name: admin, match: [{port: 9001}], route: [{destination: {host: route, port: {number: 9001}}}]}]}`))
	o := j.Call(inHotrod, to(routeFQDN, 8083))
	wantDefault(t, "8083", o, routeCluster)
	if o.Behaviour != def.Behaviour {
		t.Errorf("8083 behaviour differs from no-VS default:\n%s\n%s", o.Behaviour, def.Behaviour)
	}
	want(t, "9001", j.Call(inHotrod, to(routeFQDN, 9001)), "admin", "hotrod/admin", adminCluster)
}

// d. sourceLabels select the route by client labels.
func TestClaimD_SourceLabels(t *testing.T) {
	j := judgeFor(t, vs("fe", "hotrod", t0,
		`{hosts: [route], http: [{name: fe, match: [{sourceLabels: {app: frontend}}], route: [{destination: {host: route}}]}]}`))
	fe := map[string]string{"app": "frontend", "version": "v1"}
	want(t, "frontend hotrod", j.Call(Client{Namespace: "hotrod", Labels: fe}, to(routeFQDN, 8083)), "fe", "hotrod/fe", routeCluster)
	want(t, "frontend other", j.Call(Client{Namespace: "other", Labels: fe}, to(routeFQDN, 8083)), "fe", "hotrod/fe", routeCluster)
	wantDefault(t, "no labels", j.Call(inHotrod, to(routeFQDN, 8083)), routeCluster)
	wantDefault(t, "app=driver", j.Call(Client{Namespace: "hotrod", Labels: map[string]string{"app": "driver"}}, to(routeFQDN, 8083)), routeCluster)
}

// e. Two public VirtualServices for one host: the oldest applies; equal
// timestamps fall back to name order; one that yields no route for the port
// gives way to the next.
func TestClaimE_Precedence(t *testing.T) {
	t.Run("older wins", func(t *testing.T) {
		j := judgeFor(t, vs("a-new", "hotrod", t1, catchAll("[route]", "new")), vs("b-old", "hotrod", t0, catchAll("[route]", "old"))).WithT(t)
		for _, c := range clients {
			want(t, c.Namespace, j.Call(c, to(routeFQDN, 8083)), "old", "hotrod/b-old", routeCluster)
		}
	})
	t.Run("same time, lower name", func(t *testing.T) {
		j := judgeFor(t, vs("beta", "hotrod", t0, catchAll("[route]", "beta")), vs("alpha", "hotrod", t0, catchAll("[route]", "alpha"))).WithT(t)
		for _, c := range clients {
			want(t, c.Namespace, j.Call(c, to(routeFQDN, 8083)), "alpha", "hotrod/alpha", routeCluster)
		}
	})
	t.Run("same time and name, lower namespace", func(t *testing.T) {
		j := judgeFor(t, vs("same", "other", t0, catchAll("[route.hotrod.svc.cluster.local]", "from-other")),
			vs("same", "hotrod", t0, catchAll("[route]", "from-hotrod"))).WithT(t)
		want(t, "third", j.Call(inThird, to(routeFQDN, 8083)), "from-hotrod", "hotrod/same", routeCluster)
	})
	t.Run("older has no route for the port", func(t *testing.T) {
		j := judgeFor(t,
			vs("old", "hotrod", t0, `{hosts: [route], http: [{name: old-admin, match: [{port: 9001}], route: [{destination: {host: route, port: {number: 9001}}}]}]}`),
			vs("new", "hotrod", t1, catchAll("[route]", "new"))).WithT(t)
		for _, c := range clients {
			want(t, c.Namespace+" 8083", j.Call(c, to(routeFQDN, 8083)), "new", "hotrod/new", routeCluster)
			want(t, c.Namespace+" 9001", j.Call(c, to(routeFQDN, 9001)), "old-admin", "hotrod/old", adminCluster)
		}
	})
}

// f. exportTo: private VirtualServices are only seen in their namespace and
// come first there; exported-by-name ones come before public ones.
func TestClaimF_ExportTo(t *testing.T) {
	t.Run("private only", func(t *testing.T) {
		j := judgeFor(t, vs("priv", "hotrod", t0, `{hosts: [route], exportTo: ["."], http: [{name: priv, route: [{destination: {host: route}}]}]}`)).WithT(t)
		want(t, "hotrod", j.Call(inHotrod, to(routeFQDN, 8083)), "priv", "hotrod/priv", routeCluster)
		wantDefault(t, "other", j.Call(inOther, to(routeFQDN, 8083)), routeCluster)
		wantDefault(t, "third", j.Call(inThird, to(routeFQDN, 8083)), routeCluster)
	})
	t.Run("private beats older public", func(t *testing.T) {
		j := judgeFor(t,
			vs("pub", "hotrod", t0, catchAll("[route]", "pub")),
			vs("priv", "hotrod", t1, `{hosts: [route], exportTo: ["."], http: [{name: priv, route: [{destination: {host: route}}]}]}`)).WithT(t)
		want(t, "hotrod", j.Call(inHotrod, to(routeFQDN, 8083)), "priv", "hotrod/priv", routeCluster)
		want(t, "other", j.Call(inOther, to(routeFQDN, 8083)), "pub", "hotrod/pub", routeCluster)
	})
	t.Run("private in other namespace beats older public", func(t *testing.T) {
		j := judgeFor(t,
			vs("pub", "hotrod", t0, catchAll("[route]", "pub")),
			vs("mine", "other", t1, `{hosts: [route.hotrod.svc.cluster.local], exportTo: ["."], http: [{name: mine, route: [{destination: {host: route.hotrod.svc.cluster.local}}]}]}`)).WithT(t)
		want(t, "other", j.Call(inOther, to(routeFQDN, 8083)), "mine", "other/mine", routeCluster)
		want(t, "hotrod", j.Call(inHotrod, to(routeFQDN, 8083)), "pub", "hotrod/pub", routeCluster)
	})
	t.Run("exported by name beats older public", func(t *testing.T) {
		j := judgeFor(t,
			vs("pub", "hotrod", t0, catchAll("[route]", "pub")),
			vs("exp", "other", t1, `{hosts: [route.hotrod.svc.cluster.local], exportTo: [hotrod], http: [{name: exp, route: [{destination: {host: route.hotrod.svc.cluster.local}}]}]}`)).WithT(t)
		want(t, "hotrod", j.Call(inHotrod, to(routeFQDN, 8083)), "exp", "other/exp", routeCluster)
		want(t, "other (own namespace not in exportTo)", j.Call(inOther, to(routeFQDN, 8083)), "pub", "hotrod/pub", routeCluster)
		want(t, "third", j.Call(inThird, to(routeFQDN, 8083)), "pub", "hotrod/pub", routeCluster)
	})
	t.Run("private beats exported by name", func(t *testing.T) {
		j := judgeFor(t,
			vs("priv", "hotrod", t2, `{hosts: [route], exportTo: ["."], http: [{name: priv, route: [{destination: {host: route}}]}]}`),
			vs("exp", "other", t0, `{hosts: [route.hotrod.svc.cluster.local], exportTo: [hotrod], http: [{name: exp, route: [{destination: {host: route.hotrod.svc.cluster.local}}]}]}`)).WithT(t)
		want(t, "hotrod", j.Call(inHotrod, to(routeFQDN, 8083)), "priv", "hotrod/priv", routeCluster)
	})
}

// g. Mesh defaultVirtualServiceExportTo ["."] makes VirtualServices without
// exportTo private; an explicit "*" is still public.
func TestClaimG_MeshDefaultExportTo(t *testing.T) {
	w := mustWorld(t,
		vs("implicit", "hotrod", t0, `{hosts: [route], http: [{name: implicit, route: [{destination: {host: route}}]}]}`),
		vs("explicit", "hotrod", t0, `{hosts: [driver], exportTo: ["*"], http: [{name: explicit, route: [{destination: {host: driver}}]}]}`))
	w.DefaultVirtualServiceExportTo = []string{"."}
	j := NewJudge(t, w)
	driverCluster := "outbound|8082||driver.hotrod.svc.cluster.local"
	want(t, "implicit hotrod", j.Call(inHotrod, to(routeFQDN, 8083)), "implicit", "hotrod/implicit", routeCluster)
	wantDefault(t, "implicit other", j.Call(inOther, to(routeFQDN, 8083)), routeCluster)
	for _, c := range clients {
		want(t, "explicit "+c.Namespace, j.Call(c, to("driver.hotrod.svc.cluster.local", 8082)), "explicit", "hotrod/explicit", driverCluster)
	}
}

// h. A wildcard-host VirtualService applies to Services with no exact-host
// VirtualService; once an exact one exists it no longer applies to that
// Service on any port.
func TestClaimH_Wildcard(t *testing.T) {
	wild := vs("wild", "hotrod", t0, `{hosts: ["*.hotrod.svc.cluster.local"], http: [{name: wild, route: [{destination: {host: route.hotrod.svc.cluster.local, port: {number: 8083}}}]}]}`)
	driverHost := "driver.hotrod.svc.cluster.local"
	t.Run("alone", func(t *testing.T) {
		j := judgeFor(t, wild).WithT(t)
		for _, c := range clients {
			want(t, c.Namespace+" route", j.Call(c, to(routeFQDN, 8083)), "wild", "hotrod/wild", routeCluster)
			want(t, c.Namespace+" route 9001", j.Call(c, to(routeFQDN, 9001)), "wild", "hotrod/wild", routeCluster)
			want(t, c.Namespace+" driver", j.Call(c, to(driverHost, 8082)), "wild", "hotrod/wild", routeCluster)
		}
	})
	t.Run("exact VS for other port", func(t *testing.T) {
		j := judgeFor(t, wild, vs("exact", "hotrod", t1,
			`{hosts: [route], http: [{name: exact-admin, match: [{port: 9001}], route: [{destination: {host: route, port: {number: 9001}}}]}]}`)).WithT(t)
		for _, c := range clients {
			wantDefault(t, c.Namespace+" route 8083", j.Call(c, to(routeFQDN, 8083)), routeCluster)
			want(t, c.Namespace+" route 9001", j.Call(c, to(routeFQDN, 9001)), "exact-admin", "hotrod/exact", adminCluster)
			want(t, c.Namespace+" driver", j.Call(c, to(driverHost, 8082)), "wild", "hotrod/wild", routeCluster)
		}
	})
	t.Run("exact VS for no port", func(t *testing.T) {
		j := judgeFor(t, wild, vs("exact", "hotrod", t1,
			`{hosts: [route], http: [{name: exact, match: [{port: 1234}], route: [{destination: {host: route, port: {number: 9001}}}]}]}`)).WithT(t)
		wantDefault(t, "route 8083", j.Call(inHotrod, to(routeFQDN, 8083)), routeCluster)
		wantDefault(t, "route 9001", j.Call(inHotrod, to(routeFQDN, 9001)), adminCluster)
	})
}

// i. No catch-all: a request matching no route of the effective
// VirtualService is a 404; there is no fall-through.
func TestClaimI_NoFallThrough(t *testing.T) {
	api := vs("api", "hotrod", t0, `{hosts: [route], http: [{name: api, match: [{uri: {prefix: /api}}], route: [{destination: {host: route}}]}]}`)
	for name, j := range map[string]*Judge{
		"alone":          judgeFor(t, api),
		"with newer VS":  judgeFor(t, api, vs("later", "hotrod", t1, catchAll("[route]", "later"))),
		"with wildcard":  judgeFor(t, api, vs("wild", "hotrod", t0, catchAll(`["*.hotrod.svc.cluster.local"]`, "wild"))),
		"with public VS": judgeFor(t, api, vs("other", "other", t1, catchAll("[route.hotrod.svc.cluster.local]", "other-catch-all"))),
	} {
		j := j.WithT(t)
		want(t, name+" /api", j.Call(inHotrod, Request{Host: routeFQDN, Port: 8083, Path: "/api/x"}), "api", "hotrod/api", routeCluster)
		o := j.Call(inHotrod, Request{Host: routeFQDN, Port: 8083, Path: "/other"})
		t.Logf("%s /other: %v", name, o)
		if o.Matched || o.VirtualHost != routeFQDN+":8083" {
			t.Errorf("%s /other: want 404 in vhost %s:8083, got %v", name, routeFQDN, o)
		}
	}
}

// j. The default route and an explicit port-8083 route to the same Service
// are indistinguishable (cluster and behaviour).
func TestClaimJ_ExplicitRouteEqualsDefault(t *testing.T) {
	def := judgeFor(t).Call(inHotrod, to(routeFQDN, 8083))
	j := judgeFor(t, vs("fallback", "hotrod", t0,
		`{hosts: [route], http: [{match: [{port: 8083}], route: [{destination: {host: route, port: {number: 8083}}}]}]}`))
	o := j.Call(inHotrod, to(routeFQDN, 8083))
	want(t, "explicit", o, "", "hotrod/fallback", routeCluster)
	t.Logf("default behaviour:  %s", def.Behaviour)
	t.Logf("explicit behaviour: %s", o.Behaviour)
	if o.Cluster != def.Cluster || o.Behaviour != def.Behaviour {
		t.Errorf("explicit route differs from default route:\n%s\n%s", o.Behaviour, def.Behaviour)
	}
}

// k. A baggage-member regex matches the member anywhere in the header, with
// properties, and not a longer value.
func TestClaimK_BaggageRegex(t *testing.T) {
	// The regex sbx writes, from the function that writes it.
	const k = "abcdefghijklm"
	re, err := cluster.BaggageRegex("sbx-routing-key", k)
	if err != nil {
		t.Fatal(err)
	}
	quoted, err := json.Marshal(re)
	if err != nil {
		t.Fatal(err)
	}
	spec := `{hosts: [route], http: [` +
		`{name: keyed, match: [{headers: {baggage: {regex: ` + string(quoted) + `}}}], route: [{destination: {host: route, port: {number: 9001}}}]},` +
		`{name: fallback, route: [{destination: {host: route, port: {number: 8083}}}]}]}`
	w := mustWorld(t, vs("keyed", "hotrod", t0, spec))
	warnings, err := ValidateVirtualService(w.VirtualServices[0])
	if err != nil || len(warnings) > 0 {
		t.Fatalf("Istio validation: warnings %v, err %v", warnings, err)
	}
	j := NewJudge(t, w)
	for _, c := range baggageCases(k) {
		r := Request{Host: routeFQDN, Port: 8083, Headers: http.Header{}}
		if c.baggage != nil {
			r.Headers["Baggage"] = c.baggage
		}
		o := j.Call(inHotrod, r)
		if c.keyed {
			want(t, fmt.Sprintf("baggage %q", c.baggage), o, "keyed", "hotrod/keyed", adminCluster)
		} else {
			want(t, fmt.Sprintf("baggage %q", c.baggage), o, "fallback", "hotrod/keyed", routeCluster)
		}
	}
}

// baggageCase is a request's baggage header lines and whether they carry
// routing key k.
type baggageCase struct {
	baggage []string
	keyed   bool
}

// baggageCases are the baggage headers the key regex is judged on (claim k
// and TestBaggageRegexSearchSemantics).
func baggageCases(k string) []baggageCase {
	return []baggageCase{
		{[]string{"sbx-routing-key=" + k}, true},
		{[]string{"a=b, sbx-routing-key=" + k + ";p=1"}, true},
		{[]string{"a=b", "sbx-routing-key=" + k}, true}, // two header lines, joined with ","
		{[]string{"sbx-routing-key = " + k + " , x=y"}, true},
		{[]string{"sbx-routing-key=" + k + ",x=y"}, true},
		{[]string{"a=b,\tsbx-routing-key=\t" + k}, true},
		{[]string{"sbx-routing-key=" + k + "n"}, false},
		{[]string{"xsbx-routing-key=" + k}, false},
		{[]string{"sbx-routing-key=" + k[:12]}, false},
		{[]string{"x=sbx-routing-key=" + k}, false},   // a value, not a member
		{[]string{"a=b;sbx-routing-key=" + k}, false}, // a property of a
		{[]string{"sbx-routing-key=" + k[:12] + "," + k}, false},
		{[]string{"a=" + k}, false},
		{[]string{"sbx-routing-key", "=" + k}, false}, // a member split over two lines
		{nil, false},
	}
}

// l. Delegation: the delegate's routes are merged into the root in order.
func TestClaimL_Delegation(t *testing.T) {
	w := mustWorld(t,
		vs("root", "hotrod", t0, `{hosts: [route], http: [{name: root, delegate: {name: d, namespace: hotrod}}]}`),
		vs("d", "hotrod", t0, `{http: [`+
			`{name: api, match: [{uri: {prefix: /api}}], route: [{destination: {host: route}}], timeout: 3s},`+
			`{name: rest, route: [{destination: {host: route}}]}]}`))
	for _, v := range w.VirtualServices {
		if warnings, err := ValidateVirtualService(v); err != nil || len(warnings) > 0 {
			t.Fatalf("Istio validation of %s: warnings %v, err %v", v.Name, warnings, err)
		}
	}
	j := NewJudge(t, w)
	api := j.Call(inHotrod, Request{Host: routeFQDN, Port: 8083, Path: "/api/users"})
	rest := j.Call(inHotrod, Request{Host: routeFQDN, Port: 8083, Path: "/dispatch"})
	// Istio names merged routes <root route name>-<delegate route name>.
	want(t, "/api/users", api, "root-api", "hotrod/root", routeCluster)
	want(t, "/dispatch", rest, "root-rest", "hotrod/root", routeCluster)
	if got := field(t, api, "route.route.timeout"); got != "3s" {
		t.Errorf("/api timeout = %v, want 3s", got)
	}
	if got := field(t, rest, "route.route.timeout"); got != "0s" {
		t.Errorf("/dispatch timeout = %v, want 0s (Istio's default: none)", got)
	}
}

// ValidateVirtualService reports Istio's admission errors.
func TestValidateVirtualService(t *testing.T) {
	w := mustWorld(t,
		vs("ok", "hotrod", t0, catchAll("[route]", "ok")),
		vs("star", "hotrod", t0, catchAll(`["*"]`, "star")),
		vs("empty", "hotrod", t0, `{hosts: [route]}`))
	for _, v := range w.VirtualServices {
		warnings, err := ValidateVirtualService(v)
		t.Logf("%s: warnings %v, err %v", v.Name, warnings, err)
		if (err == nil) != (v.Name == "ok") {
			t.Errorf("%s: err = %v", v.Name, err)
		}
	}
}

// ParseWorld is strict about field names.
func TestParseWorldStrict(t *testing.T) {
	for _, bad := range []string{
		vs("typo", "hotrod", t0, `{hosts: [route], exportto: ["."], http: [{route: [{destination: {host: route}}]}]}`),
		"\n---\napiVersion: v1\nkind: Service\nmetadata: {name: x, namespace: hotrod}\nspec: {clusterIp: 10.0.0.1}\n",
		"\n---\napiVersion: v1\nkind: ConfigMap\nmetadata: {name: x, namespace: hotrod}\n",
	} {
		if _, err := ParseWorld(bad); err == nil {
			t.Errorf("ParseWorld accepted %s", bad)
		}
	}
	w := mustWorld(t, vs("v", "hotrod", t1, catchAll("[route]", "v")))
	if got := w.VirtualServices[0].CreationTimestamp.UTC().Format("2006-01-02T15:04:05Z"); got != t1 {
		t.Errorf("creationTimestamp = %s", got)
	}
}

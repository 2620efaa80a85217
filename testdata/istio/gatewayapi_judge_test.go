package istio

import (
	"fmt"
	"regexp"
	"strings"
	"testing"

	gwv1 "sigs.k8s.io/gateway-api/apis/v1"

	"github.com/sbx-dev/sbx/cluster"
)

// httpRoute renders an HTTPRoute document; spec is a YAML flow mapping.
func httpRoute(name, ns, created, spec string) string {
	return fmt.Sprintf(`
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: %s, namespace: %s, creationTimestamp: %q}
spec: %s
`, name, ns, created, spec)
}

const driverCluster = "outbound|8082||driver.hotrod.svc.cluster.local"

// An HTTPRoute with a Service as parent (GAMMA) changes what a client
// sidecar does with requests for that Service's host and port: Istio's kube
// gateway controller turns it into a mesh VirtualService.
func TestGatewayAPI_ServiceParentRoute(t *testing.T) {
	before := judgeFor(t)
	after := judgeFor(t, httpRoute("route", "hotrod", t0, `{
		parentRefs: [{group: "", kind: Service, name: route, port: 8083}],
		rules: [
			{matches: [{path: {type: PathPrefix, value: /api}}], backendRefs: [{name: driver, port: 8082}]},
			{backendRefs: [{name: route, port: 8083}]}]}`))
	for _, c := range clients {
		api := Request{Host: routeFQDN + ":8083", Port: 8083, Path: "/api/x"}
		wantDefault(t, c.Namespace+" before: /api", before.Call(c, api), routeCluster)
		o := after.Call(c, api)
		t.Logf("%s after: /api: %v", c.Namespace, o)
		if !o.Matched || o.Cluster != driverCluster || o.Route != "hotrod.route.0" {
			t.Errorf("%s: /api goes to %v, want %s by rule hotrod.route.0", c.Namespace, o, driverCluster)
		}
		rest := after.Call(c, Request{Host: routeFQDN + ":8083", Port: 8083, Path: "/dispatch"})
		if !rest.Matched || rest.Cluster != routeCluster || rest.Route != "hotrod.route.1" {
			t.Errorf("%s: /dispatch goes to %v, want %s by rule hotrod.route.1", c.Namespace, rest, routeCluster)
		}
		// The parentRef names port 8083: port 9001 keeps Istio's default route.
		wantDefault(t, c.Namespace+" after: port 9001", after.Call(c, Request{Host: routeFQDN + ":9001", Port: 9001, Path: "/api/x"}), adminCluster)
	}
}

// The World stores HTTPRoutes as the API server does with the standard
// CRD: defaults applied, invalid routes refused.
func TestParseWorldHTTPRoute(t *testing.T) {
	w := mustWorld(t, httpRoute("route", "hotrod", t0, `{parentRefs: [{group: "", kind: Service, name: route}], rules: [{backendRefs: [{name: route, port: 8083}]}]}`))
	r := w.HTTPRoutes[0]
	m := r.Spec.Rules[0].Matches
	if len(m) != 1 || m[0].Path == nil || *m[0].Path.Type != gwv1.PathMatchPathPrefix || *m[0].Path.Value != "/" {
		t.Errorf("rule without matches: want the CRD's default / prefix match, got %+v", m)
	}
	if b := r.Spec.Rules[0].BackendRefs[0]; b.Weight == nil || *b.Weight != 1 || b.Kind == nil || *b.Kind != "Service" {
		t.Errorf("backendRef defaults missing: %+v", b)
	}
	t.Logf("stored as:\n%s", HTTPRouteYAML(r))
	for _, bad := range []string{
		// unknown field
		`{parentRefs: [{group: "", kind: Service, name: route}], rules: [{backendRefs: [{name: route, port: 8083}], nope: 1}]}`,
		// a Service backendRef needs a port (CEL)
		`{parentRefs: [{group: "", kind: Service, name: route}], rules: [{backendRefs: [{name: route}]}]}`,
		// retry is an experimental field, pruned by the standard CRD
		`{parentRefs: [{group: "", kind: Service, name: route}], rules: [{retry: {attempts: 2}, backendRefs: [{name: route, port: 8083}]}]}`,
	} {
		if _, err := ParseWorld(baseWorld + httpRoute("bad", "hotrod", t0, bad)); err == nil {
			t.Errorf("accepted %s", bad)
		} else {
			t.Logf("refused: %v", err)
		}
	}
}

// The regex sbx writes decides the same whether the proxy matches it the
// way Envoy does (Istio; Gateway API's RegularExpression header match):
// the whole value, repeated header lines joined with ","; or the way
// Linkerd's proxy does: each header line on its own, by searching
// (regexp.MatchString, no implicit anchors) or, in newer proxies
// (linkerd/http/route/src/http/match/header.rs), by requiring the
// leftmost match to span the value. It is anchored itself, so all agree.
// The cases are claim k's, which Istio's generated routes also judge.
func TestBaggageRegexSearchSemantics(t *testing.T) {
	const k = "abcdefghijklm"
	re, err := cluster.BaggageRegex("sbx-routing-key", k)
	if err != nil {
		t.Fatal(err)
	}
	envoy := regexp.MustCompile(`^(?:` + re + `)$`)
	search := regexp.MustCompile(re)
	for _, c := range baggageCases(k) {
		joined := strings.Join(c.baggage, ",")
		full := c.baggage != nil && envoy.MatchString(joined)
		searched, spanning := false, false
		for _, v := range c.baggage {
			searched = searched || search.MatchString(v)
			if loc := search.FindStringIndex(v); loc != nil && loc[0] == 0 && loc[1] == len(v) {
				spanning = true
			}
		}
		// The joined value too: a proxy that joins lines and searches.
		joinedSearch := c.baggage != nil && search.MatchString(joined)
		if full != c.keyed || searched != c.keyed || spanning != c.keyed || joinedSearch != c.keyed {
			t.Errorf("baggage %q (keyed: %v): Envoy full match %v, search per line %v, leftmost spanning match per line %v, search joined %v",
				c.baggage, c.keyed, full, searched, spanning, joinedSearch)
		}
	}
}

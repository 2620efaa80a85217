package istio

import (
	"fmt"
	"maps"
	"net/http"
	"slices"
	"testing"
)

// Claims about VirtualServices bound to an Istio ingress Gateway.

const (
	hotrodHost = "hotrod.example.com"
	// ingressGateway is Gateway istio-system/ingress: port 80, HTTP, any host.
	ingressGateway = `
---
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {name: ingress, namespace: istio-system, creationTimestamp: "2025-12-01T00:00:00Z"}
spec:
  selector: {istio: ingressgateway}
  servers:
  - port: {number: 80, name: http, protocol: HTTP}
    hosts: ["*"]
`
)

var ingressPod = GatewayClient{Namespace: "istio-system", Labels: map[string]string{"istio": "ingressgateway"}}

// gwVS renders a VirtualService in hotrod for hotrod.example.com bound to
// the ingress gateway, with the given http routes (a YAML flow sequence).
func gwVS(name, created, routes string) string {
	return vs(name, "hotrod", created,
		fmt.Sprintf(`{hosts: [%s], gateways: [istio-system/ingress], http: %s}`, hotrodHost, routes))
}

// toRoute is an http route named name sending everything to route:port.
func toRoute(name string, port int) string {
	return fmt.Sprintf(`{name: %s, route: [{destination: {host: route.hotrod.svc.cluster.local, port: {number: %d}}}]}`, name, port)
}

func gw(host string) Request { return Request{Host: host, Port: 80} }

func wantNotFound(t *testing.T, what string, o Outcome) {
	t.Helper()
	t.Logf("%s: %v", what, o)
	if o.Matched {
		t.Errorf("%s: want 404, got %v", what, o)
	}
}

// a. A VirtualService bound to the gateway routes the gateway's traffic for
// its host; other hosts get 404 (a gateway has no default routes).
func TestGatewayA_BoundVirtualService(t *testing.T) {
	j := judgeFor(t, ingressGateway, gwVS("hotrod", t0, "["+toRoute("web", 8083)+"]"))
	rcs := j.GatewayRouteConfigs(ingressPod)
	if _, ok := rcs["http.80"]; !ok || len(rcs) != 1 {
		t.Fatalf("gateway route configurations %v, want just http.80", slices.Sorted(maps.Keys(rcs)))
	}
	o := j.CallGateway(ingressPod, gw(hotrodHost))
	want(t, "hotrod.example.com", o, "web", "hotrod/hotrod", routeCluster)
	want(t, "hotrod.example.com:80", j.CallGateway(ingressPod, gw(hotrodHost+":80")), "web", "hotrod/hotrod", routeCluster)
	want(t, "HOTROD.example.com", j.CallGateway(ingressPod, gw("HOTROD.example.com")), "web", "hotrod/hotrod", routeCluster)
	want(t, "/dispatch", j.CallGateway(ingressPod, Request{Host: hotrodHost, Port: 80, Path: "/dispatch?customer=123"}),
		"web", "hotrod/hotrod", routeCluster)
	if o.VirtualHost != hotrodHost+":80" {
		t.Errorf("virtual host %q, want %s:80", o.VirtualHost, hotrodHost)
	}
	// The gateway's route configuration and virtual host settings are in
	// Behaviour, and for this route they are what a sidecar gets on the
	// default route to the same Service port.
	if got := field(t, o, "route_configuration.max_direct_response_body_size_bytes"); got == nil {
		t.Errorf("Behaviour lacks the gateway's max_direct_response_body_size_bytes: %s", o.Behaviour)
	}
	if got := field(t, o, "virtual_host.include_request_attempt_count"); got != true {
		t.Errorf("Behaviour lacks the gateway's include_request_attempt_count: %s", o.Behaviour)
	}
	if def := judgeFor(t).Call(inHotrod, to(routeFQDN, 8083)); o.Behaviour != def.Behaviour {
		t.Errorf("gateway behaviour differs from the sidecar default route:\n%s\n%s", o.Behaviour, def.Behaviour)
	}
	wantNotFound(t, "other host", j.CallGateway(ingressPod, gw("other.example.com")))
	wantNotFound(t, "service host", j.CallGateway(ingressPod, gw(routeFQDN)))

	// A gateway pod the Gateway does not select has nothing on port 80.
	other := GatewayClient{Namespace: "istio-system", Labels: map[string]string{"istio": "egressgateway"}}
	if rcs := j.GatewayRouteConfigs(other); len(rcs) != 0 {
		t.Errorf("unselected gateway has route configurations %v", slices.Sorted(maps.Keys(rcs)))
	}
}

// b. A baggage header route placed before the catch-all takes only the
// requests that carry the member.
func TestGatewayB_BaggageRoute(t *testing.T) {
	keyed := `{name: keyed, match: [{headers: {baggage: {regex: '^(?:(?:.*,)?[ \t]*sbx-routing-key[ \t]*=[ \t]*abc[ \t]*(?:[;,].*)?)$'}}}], ` +
		`route: [{destination: {host: route.hotrod.svc.cluster.local, port: {number: 9001}}}]}`
	w := mustWorld(t, ingressGateway, gwVS("hotrod", t0, "["+keyed+", "+toRoute("web", 8083)+"]"))
	if warnings, err := ValidateVirtualService(w.VirtualServices[0]); err != nil || len(warnings) > 0 {
		t.Fatalf("Istio validation: warnings %v, err %v", warnings, err)
	}
	j := NewJudge(t, w)
	for _, c := range []struct {
		baggage []string
		keyed   bool
	}{
		{[]string{"sbx-routing-key=abc"}, true},
		{[]string{"a=b, sbx-routing-key=abc;p=1"}, true},
		{[]string{"a=b", "sbx-routing-key=abc"}, true},
		{[]string{"sbx-routing-key=abcd"}, false},
		{[]string{"other=abc"}, false},
		{nil, false},
	} {
		r := Request{Host: hotrodHost, Port: 80, Path: "/dispatch", Headers: http.Header{}}
		if c.baggage != nil {
			r.Headers["Baggage"] = c.baggage
		}
		o := j.CallGateway(ingressPod, r)
		if c.keyed {
			want(t, fmt.Sprintf("baggage %q", c.baggage), o, "keyed", "hotrod/hotrod", adminCluster)
		} else {
			want(t, fmt.Sprintf("baggage %q", c.baggage), o, "web", "hotrod/hotrod", routeCluster)
		}
	}
}

// c. Two VirtualServices bound to the same gateway and host are merged, not
// "first wins" as for sidecars: the vhost holds the routes of both, in
// creation order (oldest first), and Istio then moves every catch-all route
// (prefix "/", no header or query match) behind all other routes. So the
// newer VirtualService's specific routes apply even though the older one has
// a catch-all, and of two catch-alls the older one's wins.
func TestGatewayC_TwoVirtualServicesMerge(t *testing.T) {
	older := gwVS("a-older", t0, "["+toRoute("older-all", 8083)+"]")
	newer := gwVS("b-newer", t1, `[{name: newer-admin, match: [{uri: {prefix: /admin}}], `+
		`route: [{destination: {host: route.hotrod.svc.cluster.local, port: {number: 9001}}}]}, `+
		toRoute("newer-all", 9001)+`]`)
	for name, j := range map[string]*Judge{
		"older listed first": judgeFor(t, ingressGateway, older, newer),
		"newer listed first": judgeFor(t, ingressGateway, newer, older),
	} {
		j := j.WithT(t)
		want(t, name+" /admin", j.CallGateway(ingressPod, Request{Host: hotrodHost, Port: 80, Path: "/admin/x"}),
			"newer-admin", "hotrod/b-newer", adminCluster)
		want(t, name+" /", j.CallGateway(ingressPod, gw(hotrodHost)), "older-all", "hotrod/a-older", routeCluster)

		vh := j.GatewayRouteConfigs(ingressPod)["http.80"].GetVirtualHosts()
		var order []string
		for _, v := range vh {
			for _, r := range v.Routes {
				order = append(order, r.Name)
			}
		}
		t.Logf("%s: routes %v", name, order)
		if fmt.Sprint(order) != "[newer-admin older-all newer-all]" {
			t.Errorf("%s: merged routes %v, want [newer-admin older-all newer-all]", name, order)
		}
	}
	// Creation time, not the name, orders the catch-alls.
	j := judgeFor(t, ingressGateway, gwVS("a-newer", t1, "["+toRoute("a-all", 9001)+"]"), gwVS("b-older", t0, "["+toRoute("b-all", 8083)+"]"))
	want(t, "swapped names /", j.CallGateway(ingressPod, gw(hotrodHost)), "b-all", "hotrod/b-older", routeCluster)

	// Sidecars, in contrast, take only the oldest VirtualService for a host.
	s := judgeFor(t, vs("a-older", "hotrod", t0, `{hosts: [route], http: [`+toRoute("older-all", 8083)+`]}`),
		vs("b-newer", "hotrod", t1, `{hosts: [route], http: [{name: newer-admin, match: [{uri: {prefix: /admin}}], `+
			`route: [{destination: {host: route, port: {number: 8083}}}]}]}`))
	want(t, "sidecar /admin", s.Call(inHotrod, Request{Host: routeFQDN, Port: 8083, Path: "/admin/x"}),
		"older-all", "hotrod/a-older", routeCluster)
}

// d. A VirtualService bound only to the gateway does not apply to sidecars,
// even when it names the Service's host; adding "mesh" makes it apply to
// both.
func TestGatewayD_SidecarsUnaffected(t *testing.T) {
	spec := func(gateways string) string {
		return fmt.Sprintf(`{hosts: [%s, route.hotrod.svc.cluster.local], gateways: %s, http: [%s]}`,
			hotrodHost, gateways, toRoute("gw", 9001))
	}
	j := judgeFor(t, ingressGateway, vs("hotrod", "hotrod", t0, spec("[istio-system/ingress]")))
	for _, c := range clients {
		wantDefault(t, c.Namespace+" route", j.Call(c, to(routeFQDN, 8083)), routeCluster)
		wantDefault(t, c.Namespace+" route 9001", j.Call(c, to(routeFQDN, 9001)), adminCluster)
		// hotrod.example.com is no Service: the sidecar passes it through.
		want(t, c.Namespace+" "+hotrodHost, j.Call(c, to(hotrodHost, 8083)), "allow_any", "", "PassthroughCluster")
	}
	want(t, "gateway", j.CallGateway(ingressPod, gw(hotrodHost)), "gw", "hotrod/hotrod", adminCluster)
	want(t, "gateway service host", j.CallGateway(ingressPod, gw(routeFQDN)), "gw", "hotrod/hotrod", adminCluster)

	both := judgeFor(t, ingressGateway, vs("hotrod", "hotrod", t0, spec("[istio-system/ingress, mesh]")))
	for _, c := range clients {
		want(t, c.Namespace+" with mesh", both.Call(c, to(routeFQDN, 8083)), "gw", "hotrod/hotrod", adminCluster)
	}
	want(t, "gateway with mesh", both.CallGateway(ingressPod, gw(hotrodHost)), "gw", "hotrod/hotrod", adminCluster)
}

// ParseWorld reads Gateways strictly, in every networking version.
func TestParseWorldGateway(t *testing.T) {
	for _, v := range []string{"v1", "v1beta1", "v1alpha3"} {
		w, err := ParseWorld(fmt.Sprintf("apiVersion: networking.istio.io/%s\nkind: Gateway\n"+
			"metadata: {name: g, namespace: istio-system}\nspec: {selector: {istio: ingressgateway}, servers: [{port: {number: 80, name: http, protocol: HTTP}, hosts: ['*']}]}\n", v))
		if err != nil || len(w.Gateways) != 1 || w.Gateways[0].Spec.Servers[0].Port.Number != 80 {
			t.Errorf("%s: %v %+v", v, err, w.Gateways)
		}
	}
	for _, bad := range []string{
		"apiVersion: networking.istio.io/v1\nkind: Gateway\nmetadata: {name: g, namespace: istio-system}\nspec: {selectors: {istio: ingressgateway}}\n",
		"apiVersion: networking.istio.io/v1\nkind: Gateway\nmetadata: {name: g, namespace: istio-system, labelz: {}}\nspec: {}\n",
		"apiVersion: networking.istio.io/v1\nkind: Gateway\nmetadata: {name: g}\nspec: {}\n",
	} {
		if _, err := ParseWorld(bad); err == nil {
			t.Errorf("ParseWorld accepted %s", bad)
		}
	}
}

package istio

import (
	"maps"
	"slices"

	route "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	"istio.io/istio/pilot/pkg/model"
	"istio.io/istio/pkg/config/protocol"
)

// gatewayIP is the ingress gateway pod's address. Like clientIP it belongs
// to no Service, so the gateway has no service targets and Istio binds each
// Gateway server to its own port number (no Service port -> targetPort
// translation): the route configuration of an HTTP server on port 80 is
// "http.80".
const gatewayIP = "10.244.0.20"

// GatewayClient is an ingress gateway pod: a router proxy (not a sidecar)
// that Gateway objects select by label, e.g. namespace istio-system, labels
// {istio: ingressgateway}.
type GatewayClient struct {
	Namespace string
	Labels    map[string]string
}

// gatewayProxy builds the router proxy the way Istio's gateway simulation
// tests do (a model.Router passed through ConfigGenTest.SetupProxy).
func (j *Judge) gatewayProxy(g GatewayClient) *model.Proxy {
	return j.newProxy(model.Router, "gateway.", g.Namespace, g.Labels, gatewayIP)
}

// GatewayRouteConfigs returns the HTTP route configurations Istio generates
// for the gateway, keyed by name ("http.80" for a plain-HTTP server on port
// 80; "https.443.<port name>.<gateway>.<namespace>" for HTTPS servers).
func (j *Judge) GatewayRouteConfigs(g GatewayClient) map[string]*route.RouteConfiguration {
	rcs, _ := j.gatewayRouteConfigs(g)
	return rcs
}

func (j *Judge) gatewayRouteConfigs(g GatewayClient) (map[string]*route.RouteConfiguration, *model.MergedGateway) {
	t := j.t
	t.Helper()
	if g.Namespace == "" {
		t.Fatalf("istio judge: gateway namespace is required")
	}
	// Sidecar keys start with a namespace, which cannot contain ':'.
	key := "gateway:" + clientKey(g.Namespace, g.Labels)
	rcs := j.routeConfigs(key, func() *model.Proxy {
		p := j.gatewayProxy(g)
		j.merged[key] = p.MergedGateway // under j.mu, held by routeConfigs
		return p
	})
	j.mu.Lock()
	defer j.mu.Unlock()
	return rcs, j.merged[key]
}

// CallGateway answers Call's question for a plain-text HTTP request arriving
// at an ingress gateway: r.Port is the Gateway server's port (e.g. 80) and
// r.Host the Host header. The route configuration is the one Istio generates
// for the plain-HTTP Gateway servers on that port; virtual host selection,
// route matching and the Outcome are as in Call. Behaviour is built the same
// way from the gateway's own route configuration, virtual host and route, so
// every setting they carry is in it (in this Istio version a gateway's
// route configuration and virtual host carry the same non-cosmetic settings
// as a sidecar's, so equal Behaviours mean the same treatment).
func (j *Judge) CallGateway(g GatewayClient, r Request) Outcome {
	t := j.t
	t.Helper()
	if r.Host == "" || r.Port == 0 {
		t.Fatalf("istio judge: request needs Host and Port: %+v", r)
	}
	if r.Path == "" {
		r.Path = "/"
	}
	if r.Method == "" {
		r.Method = "GET"
	}
	rcs, mg := j.gatewayRouteConfigs(g)
	if mg == nil {
		t.Fatalf("istio judge: no Gateway selects gateway client %+v", g)
	}
	// The route configuration names Istio gave the plain-HTTP servers on
	// the port (its gatewayRDSRouteName: "http.<port>[.<bind>]").
	names := map[string]bool{}
	for name, servers := range mg.ServersByRouteName {
		for _, s := range servers {
			if int(s.GetPort().GetNumber()) == r.Port && protocol.Parse(s.GetPort().GetProtocol()).IsHTTP() {
				names[name] = true
			}
		}
	}
	switch len(names) {
	case 0:
		t.Fatalf("istio judge: gateway client %+v has no plain-HTTP Gateway server on port %d (route configurations %v)",
			g, r.Port, slices.Sorted(maps.Keys(rcs)))
	case 1:
	default:
		t.Fatalf("istio judge: gateway client %+v has several HTTP route configurations for port %d: %v",
			g, r.Port, slices.Sorted(maps.Keys(names)))
	}
	var name string
	for n := range names {
		name = n
	}
	rc, ok := rcs[name]
	if !ok {
		t.Fatalf("istio judge: gateway client %+v: no listener refers to route configuration %q (has %v)",
			g, name, slices.Sorted(maps.Keys(rcs)))
	}
	return routeIn(t, rc, r)
}

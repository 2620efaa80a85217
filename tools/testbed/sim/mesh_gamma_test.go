package sim

import (
	"net/http"
	"testing"

	"github.com/stretchr/testify/require"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"sigs.k8s.io/yaml"

	"github.com/sbx-dev/sbx/cluster/istiovs"
)

func httpRoutes(t *testing.T, docs ...string) []*unstructured.Unstructured {
	t.Helper()
	var out []*unstructured.Unstructured
	for _, d := range docs {
		var u unstructured.Unstructured
		require.NoError(t, yaml.Unmarshal([]byte(d), &u.Object))
		out = append(out, &u)
	}
	return out
}

// HTTPRoutes of one Service, namespace and port form merge into one
// VirtualService ordered by the Gateway API's precedence across routes
// (a newer route's more specific match first; on a tie, the older
// route's); a consumer route in another namespace is its own, and its
// namespace's clients get it first.
func TestGammaVirtualServices(t *testing.T) {
	items := httpRoutes(t, `
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: cd, namespace: hotrod, creationTimestamp: "2026-01-01T00:00:00Z"}
spec:
  parentRefs: [{kind: Service, name: route, port: 8083}]
  rules:
  - matches: [{path: {type: PathPrefix, value: /api}}]
    backendRefs: [{name: route, port: 8083}]
`, `
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: sbx, namespace: hotrod, creationTimestamp: "2026-02-01T00:00:00Z"}
spec:
  parentRefs: [{kind: Service, name: route, port: 8083}]
  rules:
  - matches: [{path: {type: PathPrefix, value: /api}, headers: [{name: baggage, type: RegularExpression, value: ".*k=1.*"}]}]
    backendRefs: [{name: route-sbx, port: 8083}]
  - matches: [{path: {type: PathPrefix, value: /api}}]
    backendRefs: [{name: driver, port: 8082}]
`, `
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: mine, namespace: web, creationTimestamp: "2026-03-01T00:00:00Z"}
spec:
  parentRefs: [{kind: Service, name: route, namespace: hotrod}]
  rules: [{backendRefs: [{name: driver, namespace: hotrod, port: 8082}]}]
`)
	vss := gammaVirtualServices(items, "cluster.local")
	require.Len(t, vss, 2)
	merged := vss[0]
	require.True(t, merged.Gateway)
	require.Equal(t, []string{"route.hotrod.svc.cluster.local"}, merged.Spec.Hosts)
	var names []string
	for _, r := range merged.Spec.Http {
		names = append(names, r.Name)
		require.EqualValues(t, 8083, r.Match[0].Port, "a parentRef port is a port match")
	}
	require.Equal(t, []string{"hotrod.sbx.0.0", "hotrod.cd.0.0", "hotrod.sbx.1.0"}, names,
		"one more header outranks; on a tie the older route wins")

	mesh := &istiovs.Mesh{VirtualServices: vss}
	req, err := http.NewRequest(http.MethodGet, "http://route:8083/api/x", nil)
	require.NoError(t, err)
	d := Decide(mesh, "route.hotrod.svc.cluster.local", 8083, istiovs.Client{Namespace: "hotrod"}, req)
	require.Equal(t, "hotrod.cd.0.0", d.Route)
	req.Header.Set("baggage", "k=1")
	d = Decide(mesh, "route.hotrod.svc.cluster.local", 8083, istiovs.Client{Namespace: "hotrod"}, req)
	require.Equal(t, "route-sbx.hotrod.svc.cluster.local", d.Destination.GetHost())
	d = Decide(mesh, "route.hotrod.svc.cluster.local", 8083, istiovs.Client{Namespace: "web"}, req)
	require.Equal(t, "web.mine.0.0", d.Route, "the consumer route comes first for its namespace's clients")
}

// A GRPCRoute merges with the Service's HTTPRoutes; its method match is a
// path match on /<service>/<method>, as Istio converts it.
func TestGammaGRPCRoute(t *testing.T) {
	items := httpRoutes(t, `
apiVersion: gateway.networking.k8s.io/v1
kind: GRPCRoute
metadata: {name: cd, namespace: hotrod, creationTimestamp: "2026-01-01T00:00:00Z"}
spec:
  parentRefs: [{kind: Service, name: driver}]
  rules:
  - matches: [{method: {service: driver.Driver, method: Find}}]
    backendRefs: [{name: driver-v2, port: 8082}]
  - matches: [{method: {service: driver.Driver}}]
    backendRefs: [{name: driver, port: 8082}]
`, `
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: sbx, namespace: hotrod, creationTimestamp: "2026-02-01T00:00:00Z"}
spec:
  parentRefs: [{kind: Service, name: driver}]
  rules:
  - matches: [{path: {type: PathPrefix, value: /}, headers: [{name: baggage, type: RegularExpression, value: ".*k=1.*"}]}]
    backendRefs: [{name: driver-sbx, port: 8082}]
`)
	vss := gammaVirtualServices(items, "cluster.local")
	require.Len(t, vss, 1, "both kinds of one parent merge")
	mesh := &istiovs.Mesh{VirtualServices: vss}
	decide := func(path, baggage string) string {
		req, err := http.NewRequest(http.MethodPost, "http://driver:8082"+path, nil)
		require.NoError(t, err)
		if baggage != "" {
			req.Header.Set("baggage", baggage)
		}
		return Decide(mesh, "driver.hotrod.svc.cluster.local", 8082, istiovs.Client{Namespace: "hotrod"}, req).Destination.GetHost()
	}
	require.Equal(t, "driver-v2.hotrod.svc.cluster.local", decide("/driver.Driver/Find", ""))
	require.Equal(t, "driver.hotrod.svc.cluster.local", decide("/driver.Driver/List", ""))
	require.Equal(t, "driver-v2.hotrod.svc.cluster.local", decide("/driver.Driver/Find", "k=1"), "an exact method outranks the keyed / prefix")
	require.Equal(t, "driver-sbx.hotrod.svc.cluster.local", decide("/other.Svc/X", "k=1"))
}

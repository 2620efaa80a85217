package daemon

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"sigs.k8s.io/yaml"

	"github.com/sbx-dev/sbx/cluster/kube"
	"github.com/sbx-dev/sbx/cluster/live"
	"github.com/sbx-dev/sbx/daemon/api"
	"github.com/sbx-dev/sbx/tools/testbed/sim"
)

// cdHTTPRoute is CD's HTTPRoute for route: /route gets a request header
// and a timeout; /admin goes to driver.
const cdHTTPRoute = `
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: route, namespace: hotrod, creationTimestamp: "2026-01-01T00:00:00Z"}
spec:
  parentRefs: [{group: "", kind: Service, name: route, port: 8083}]
  rules:
  - matches: [{path: {type: PathPrefix, value: /route}}]
    filters: [{type: RequestHeaderModifier, requestHeaderModifier: {set: [{name: x-cd, value: "yes"}]}}]
    timeouts: {request: 5s}
    backendRefs: [{name: route, port: 8083}]
  - matches: [{path: {type: PathPrefix, value: /admin}}]
    backendRefs: [{name: driver, port: 8082}]
`

// TestSimulatedClusterGatewayAPI: on a mesh where CD routes route with a
// Gateway API HTTPRoute, sbx connect routes it with its own HTTPRoute next
// to CD's (CD's untouched): keyed requests reach the laptop with CD's
// header set, non-keyed ones the baseline, keyed /admin still goes to
// driver; status names the backend; a deleted sbx route is put back; and
// disconnect leaves CD's route as it was and keyed requests on the
// baseline.
func TestSimulatedClusterGatewayAPI(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a simulated cluster")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	c, err := sim.Start(ctx, sim.Options{Logger: testLogger(t).With("component", "sim"), GatewayAPI: true, WithoutBaselineVirtualService: true})
	require.NoError(t, err)
	t.Cleanup(c.Close)
	var cd unstructured.Unstructured
	require.NoError(t, yaml.Unmarshal([]byte(cdHTTPRoute), &cd.Object))
	hr := c.Clients.Dynamic.Resource(sim.HTTPRouteGVR).Namespace(sim.AppNamespace)
	_, err = hr.Create(ctx, &cd, metav1.CreateOptions{})
	require.NoError(t, err)
	kc := live.NewFromKube(&kube.Cluster{
		REST: c.RESTConfig, Kube: c.Clients.Kube, Istio: c.Clients.Istio, Dynamic: c.Clients.Dynamic,
		Namespace: sim.AppNamespace, Context: "sim",
	}, live.Options{Logger: testLogger(t), DefaultRelayImage: "ghcr.io/sbx-dev/sbx:test", WaitTimeout: 30 * time.Second, RouteResync: time.Hour})
	t.Cleanup(func() { _ = kc.Close() })

	// The laptop's process says what it got, CD's header included.
	svc, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, "from the laptop: %s %s x-cd=%q", r.Method, r.URL.Path, r.Header.Get("x-cd"))
	})}
	var wg sync.WaitGroup
	wg.Go(func() { _ = srv.Serve(svc) })
	t.Cleanup(func() { _ = srv.Close(); wg.Wait() })
	cfg := shortTunnelConfig()
	td := startDaemon(t, Options{
		Clusters:      func(context.Context, api.KubeconfigSource, string) (Cluster, error) { return kc, nil },
		Tunnel:        &cfg,
		LeaseInterval: 50 * time.Millisecond,
	})
	var progress []string
	st, err := td.client.Connect(ctx, api.ConnectRequest{Spec: testSpec("alice", svc.Addr().String()), Wait: true, Timeout: time.Minute},
		func(p api.Progress) { progress = append(progress, p.Message) })
	require.NoError(t, err, strings.Join(progress, "\n"))
	require.Contains(t, strings.Join(progress, "\n"), "routing Service hotrod/route: keyed requests routed with sbx's own Gateway API HTTPRoute (CD routes it with HTTPRoute hotrod/route)")
	own := "sbx-" + st.RoutingKey + "-route-8083"
	require.Contains(t, strings.Join(progress, "\n"), "created HTTPRoute hotrod/"+own)

	client := c.HTTPClient(sim.AppNamespace)
	defer client.CloseIdleConnections()
	call := func(path, baggage string) (int, string) {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://route:8083"+path, nil)
		require.NoError(t, err)
		if baggage != "" {
			req.Header.Set("baggage", baggage)
		}
		resp, err := client.Do(req)
		require.NoError(t, err)
		defer resp.Body.Close()
		b, err := io.ReadAll(resp.Body)
		require.NoError(t, err)
		return resp.StatusCode, string(b)
	}
	keyed := st.BaggageKey + "=" + st.RoutingKey
	code, body := call("/route", keyed)
	require.Equal(t, http.StatusOK, code, body)
	require.Contains(t, body, "from the laptop: GET /route")
	require.Contains(t, body, `x-cd="yes"`, "the keyed copy keeps CD's filter")
	code, body = call("/route", "")
	require.Equal(t, http.StatusOK, code, body)
	require.NotContains(t, body, "from the laptop", "non-keyed requests stay on the baseline")
	code, body = call("/admin", keyed)
	require.Equal(t, http.StatusOK, code, body)
	require.NotContains(t, body, "from the laptop", "keyed /admin goes where CD sends it (driver)")
	require.Contains(t, body, `"service":"driver"`)
	code, body = call("/other", "")
	require.Equal(t, http.StatusNotFound, code, "CD's route has no rule for /other, as before: %s", body)

	sb, err := td.client.Sandbox(ctx, "alice")
	require.NoError(t, err)
	require.Equal(t, api.KeyedSandbox, sb.Routes.Keyed, sb.Routes.Message)

	// sbx's route deleted by hand: the route watch puts it back.
	require.NoError(t, hr.Delete(ctx, own, metav1.DeleteOptions{}))
	require.Eventually(t, func() bool {
		_, err := hr.Get(ctx, own, metav1.GetOptions{})
		return err == nil
	}, 30*time.Second, 20*time.Millisecond, "the route watch recreates sbx's HTTPRoute")
	require.Eventually(t, func() bool {
		code, body := call("/route", keyed)
		return code == http.StatusOK && strings.Contains(body, "from the laptop")
	}, 30*time.Second, 50*time.Millisecond)

	_, err = td.client.Disconnect(ctx, "alice")
	require.NoError(t, err)
	_, err = hr.Get(ctx, own, metav1.GetOptions{})
	require.True(t, apierrors.IsNotFound(err), "disconnect deletes sbx's HTTPRoute: %v", err)
	after, err := hr.Get(ctx, "route", metav1.GetOptions{})
	require.NoError(t, err)
	require.Equal(t, cd.Object["spec"], after.Object["spec"], "CD's HTTPRoute is as it was")
	code, body = call("/route", keyed)
	require.Equal(t, http.StatusOK, code, body)
	require.NotContains(t, body, "from the laptop")
}

package live_test

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	dynamicfake "k8s.io/client-go/dynamic/fake"

	"github.com/sbx-dev/sbx/cluster"
	"github.com/sbx-dev/sbx/cluster/kube"
	"github.com/sbx-dev/sbx/cluster/live"
	"github.com/sbx-dev/sbx/tools/testbed/sim"
	"github.com/sbx-dev/sbx/tools/testbed/simenv"
	"github.com/sbx-dev/sbx/tunnel"
)

// TestWatchRoutesSeesGatewayAPIRoutes: while connected with mesh: istio,
// an HTTPRoute that takes one of the sandbox's Services over is seen within the watch's
// debounce, not at the next resync: the check says keyed requests can no
// longer be routed (a *cluster.RoutesRefusedError naming the route); once
// it is deleted the routes apply again.
func TestWatchRoutesSeesGatewayAPIRoutes(t *testing.T) {
	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	defer cancel()
	s, err := sim.Start(ctx, sim.Options{})
	require.NoError(t, err)
	t.Cleanup(s.Close)
	dyn := dynamicfake.NewSimpleDynamicClientWithCustomListKinds(runtime.NewScheme(), map[schema.GroupVersionResource]string{
		cluster.RolloutGVR: "RolloutList", cluster.HTTPRouteGVR: "HTTPRouteList", cluster.GRPCRouteGVR: "GRPCRouteList",
	})
	c := live.NewFromKube(&kube.Cluster{REST: s.RESTConfig, Kube: s.Clients.Kube, Istio: s.Clients.Istio, Dynamic: dyn, Namespace: sim.AppNamespace},
		live.Options{DefaultRelayImage: "ghcr.io/sbx-dev/sbx:test", RouteResync: time.Hour})
	t.Cleanup(func() { _ = c.Close() })

	spec := simenv.RouteSandbox("alice", "127.0.0.1:1")
	sb := &spec
	const key = "k1k1k1k1k1k1k"
	// mesh: istio: a Service an HTTPRoute takes over cannot be routed with
	// VirtualServices (auto would route it with Gateway API instead).
	opts := cluster.Options{RoutingKey: key, TokenVerifier: tunnel.VerifierOf("t").String(), Holder: "test", Mesh: cluster.MeshIstio}
	res, err := c.Apply(ctx, sb, opts, nil)
	require.NoError(t, err)

	type check struct {
		st  *cluster.RouteStatus
		err error
	}
	var mu sync.Mutex
	var checks []check
	last := func() (check, int) {
		mu.Lock()
		defer mu.Unlock()
		if len(checks) == 0 {
			return check{}, 0
		}
		return checks[len(checks)-1], len(checks)
	}
	wctx, wcancel := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() {
		defer close(done)
		c.WatchRoutes(wctx, sb, res.Ref, opts, func(st *cluster.RouteStatus, err error) {
			mu.Lock()
			checks = append(checks, check{st, err})
			mu.Unlock()
		})
	}()
	defer func() { wcancel(); <-done }()
	require.Eventually(t, func() bool { ch, n := last(); return n > 0 && ch.err == nil }, 30*time.Second, 10*time.Millisecond, "the first check")

	hr := &unstructured.Unstructured{Object: map[string]any{
		"apiVersion": "gateway.networking.k8s.io/v1", "kind": "HTTPRoute",
		"metadata": map[string]any{"name": "route-http", "namespace": sim.AppNamespace},
		"spec":     map[string]any{"parentRefs": []any{map[string]any{"group": "", "kind": "Service", "name": "route"}}},
	}}
	_, err = dyn.Resource(cluster.HTTPRouteGVR).Namespace(sim.AppNamespace).Create(ctx, hr, metav1.CreateOptions{})
	require.NoError(t, err)
	require.Eventually(t, func() bool {
		ch, _ := last()
		var re *cluster.RoutesRefusedError
		return errors.As(ch.err, &re)
	}, 10*time.Second, 10*time.Millisecond, "an HTTPRoute for the Service is seen without waiting for the resync")
	ch, _ := last()
	require.Contains(t, ch.err.Error(), "routed by HTTPRoute hotrod/route-http")

	require.NoError(t, dyn.Resource(cluster.HTTPRouteGVR).Namespace(sim.AppNamespace).Delete(ctx, "route-http", metav1.DeleteOptions{}))
	require.Eventually(t, func() bool { ch, _ := last(); return ch.err == nil && ch.st != nil }, 10*time.Second, 10*time.Millisecond, "routes apply again")
}

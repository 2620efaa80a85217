package main

import (
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/sbx-dev/sbx/cluster"
	"github.com/sbx-dev/sbx/cluster/sim"
	"github.com/sbx-dev/sbx/daemon"
)

// End-to-end tests: the simulated cluster (real relay started from the
// generated Deployment, real port-forward, mesh applying the generated
// VirtualServices) and the real daemon, with a local "v2" route server
// standing in for the developer's process.

func e2eLogger(t *testing.T) *slog.Logger {
	if os.Getenv("SBX_E2E_LOG") != "" {
		return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	return slog.New(slog.NewTextHandler(testWriter{t}, &slog.HandlerOptions{Level: slog.LevelInfo}))
}

type testWriter struct{ t *testing.T }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}

func startE2E(t *testing.T) *simEnv {
	t.Helper()
	if testing.Short() {
		t.Skip("end-to-end test")
	}
	dir, err := tempDir()
	require.NoError(t, err)
	t.Cleanup(func() { _ = os.RemoveAll(dir) })
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	e, err := startSimEnv(ctx, dir, e2eLogger(t), sim.Options{})
	require.NoError(t, err)
	t.Cleanup(e.Close)
	return e
}

// dispatch sends one request to frontend from inside the cluster.
func dispatch(t *testing.T, client *http.Client, baggage string) (int, sim.Hop, string) {
	t.Helper()
	req, err := http.NewRequest(http.MethodGet, "http://frontend.hotrod:8080/dispatch", nil)
	require.NoError(t, err)
	if baggage != "" {
		req.Header.Set("baggage", baggage)
	}
	resp, err := client.Do(req)
	require.NoError(t, err)
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	var hop sim.Hop
	_ = json.Unmarshal(body, &hop)
	return resp.StatusCode, hop, string(body)
}

const (
	allBaseline = "frontend@baseline(route@baseline, driver@baseline)"
	routeV2     = "frontend@baseline(route@v2, driver@baseline)"
)

func eventuallyServed(t *testing.T, client *http.Client, baggage, want string) {
	t.Helper()
	var last string
	require.Eventually(t, func() bool {
		_, hop, body := dispatch(t, client, baggage)
		last = body
		return hop.String() == want
	}, 20*time.Second, 20*time.Millisecond, "want %s; last answer %s", want, last)
}

func vsSnapshot(t *testing.T, e *simEnv) string {
	t.Helper()
	vs, err := e.Sim.Clients.Istio.NetworkingV1().VirtualServices(sim.AppNamespace).Get(context.Background(), "route", metav1.GetOptions{})
	require.NoError(t, err)
	b, err := json.Marshal(struct {
		Labels, Annotations map[string]string
		Spec                any
	}{vs.Labels, vs.Annotations, &vs.Spec})
	require.NoError(t, err)
	return string(b)
}

// sbxObjects lists the names of every object sbx labelled as its own.
func sbxObjects(t *testing.T, e *simEnv) []string {
	t.Helper()
	ctx := context.Background()
	sel := metav1.ListOptions{LabelSelector: cluster.LabelManagedBy + "=" + cluster.ManagedByValue}
	k := e.Sim.Clients.Kube
	var out []string
	deps, err := k.AppsV1().Deployments(sim.AppNamespace).List(ctx, sel)
	require.NoError(t, err)
	for _, o := range deps.Items {
		out = append(out, "deployment/"+o.Name)
	}
	svcs, err := k.CoreV1().Services(sim.AppNamespace).List(ctx, sel)
	require.NoError(t, err)
	for _, o := range svcs.Items {
		out = append(out, "service/"+o.Name)
	}
	secs, err := k.CoreV1().Secrets(sim.AppNamespace).List(ctx, sel)
	require.NoError(t, err)
	for _, o := range secs.Items {
		out = append(out, "secret/"+o.Name)
	}
	leases, err := k.CoordinationV1().Leases(sim.AppNamespace).List(ctx, sel)
	require.NoError(t, err)
	for _, o := range leases.Items {
		out = append(out, "lease/"+o.Name)
	}
	pods, err := k.CoreV1().Pods(sim.AppNamespace).List(ctx, sel)
	require.NoError(t, err)
	for _, o := range pods.Items {
		out = append(out, "pod/"+o.Name)
	}
	vss, err := e.Sim.Clients.Istio.NetworkingV1().VirtualServices(sim.AppNamespace).List(ctx, sel)
	require.NoError(t, err)
	for _, o := range vss.Items {
		out = append(out, "virtualservice/"+o.Name)
	}
	return out
}

// Scenarios 1, 2 and 5: baseline before, during and after; keyed requests
// reach the laptop's route; disconnect removes everything and restores the
// CD-owned VirtualService exactly.
func TestE2EConnectRouteDisconnect(t *testing.T) {
	e := startE2E(t)
	ctx := context.Background()
	client := e.Sim.HTTPClient("default")
	defer client.CloseIdleConnections()

	before := vsSnapshot(t, e)
	require.Empty(t, sbxObjects(t, e))
	code, hop, body := dispatch(t, client, "")
	require.Equal(t, http.StatusOK, code, body)
	require.Equal(t, allBaseline, hop.String())

	local, err := sim.StartLocalRoute("127.0.0.1:0", nil, nil, e.log)
	require.NoError(t, err)
	defer local.Close()
	var progress []string
	st, err := e.Connect(ctx, "alice", local.Addr(), func(p daemon.Progress) {
		progress = append(progress, string(p.Phase)+": "+p.Message)
	})
	require.NoError(t, err, "progress: %v", progress)
	require.Equal(t, daemon.PhaseReady, st.Phase)
	require.Len(t, st.RoutingKey, 13)
	key := st.RoutingKey
	require.NotEmpty(t, sbxObjects(t, e))

	keyed := "sbx-routing-key=" + key
	eventuallyServed(t, client, keyed, routeV2)
	for _, b := range []string{"", "sbx-routing-key=" + key + "x", "other=" + key, "sbx-routing-key=" + key[:12]} {
		_, hop, body := dispatch(t, client, b)
		require.Equal(t, allBaseline, hop.String(), "baggage %q: %s", b, body)
	}
	for _, b := range []string{"userid=7, " + keyed, keyed + ";ttl=1,x=y"} {
		_, hop, body := dispatch(t, client, b)
		require.Equal(t, routeV2, hop.String(), "baggage %q: %s", b, body)
		require.Equal(t, b, hop.Find("driver").Baggage, "baggage propagated")
	}

	_, err = e.Client.Disconnect(ctx, "alice")
	require.NoError(t, err)
	require.Eventually(t, func() bool { return len(sbxObjects(t, e)) == 0 }, 20*time.Second, 20*time.Millisecond,
		"left behind: %v", sbxObjects(t, e))
	require.Equal(t, before, vsSnapshot(t, e), "the CD-owned VirtualService is back to its original content")
	require.Empty(t, e.Sim.RelayDeployments())
	eventuallyServed(t, client, keyed, allBaseline)
}

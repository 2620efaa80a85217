package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/sbx-dev/sbx/cluster"
	"github.com/sbx-dev/sbx/cluster/podstate"
	"github.com/sbx-dev/sbx/daemon/api"
	"github.com/sbx-dev/sbx/daemon/client"
	"github.com/sbx-dev/sbx/daemon/config"
	"github.com/sbx-dev/sbx/tools/testbed/sim"
	"github.com/sbx-dev/sbx/tools/testbed/simenv"
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

func startE2E(t *testing.T) *simenv.Env {
	t.Helper()
	if testing.Short() {
		t.Skip("end-to-end test")
	}
	dir, err := simenv.TempDir()
	require.NoError(t, err)
	t.Cleanup(func() { _ = os.RemoveAll(dir) })
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	e, err := simenv.Start(ctx, dir, e2eLogger(t), sim.Options{})
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

func vsSnapshot(t *testing.T, e *simenv.Env) string {
	t.Helper()
	s, err := e.VirtualServiceContent(context.Background(), sim.AppNamespace, "route")
	require.NoError(t, err)
	return s
}

func sbxObjects(t *testing.T, e *simenv.Env) []string {
	return e.SbxObjects(context.Background())
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

	local, err := sim.StartLocalRoute("127.0.0.1:0", nil, nil, e.Log)
	require.NoError(t, err)
	defer local.Close()
	var progress []string
	st, err := e.Connect(ctx, "alice", local.Addr(), func(p api.Progress) {
		progress = append(progress, string(p.Phase)+": "+p.Message)
	})
	require.NoError(t, err, "progress: %v", progress)
	require.Equal(t, api.PhaseReady, st.Phase)
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

// Scenario 4: two sandboxes on the same baseline route, each key to its own
// laptop server.
func TestE2ETwoSandboxesOneRoute(t *testing.T) {
	e := startE2E(t)
	ctx := context.Background()
	client := e.Sim.HTTPClient("default")
	defer client.CloseIdleConnections()

	servers := map[string]*sim.AppServer{}
	keys := map[string]string{}
	for _, name := range []string{"alice", "bob"} {
		srv, err := sim.StartApp(sim.AppConfig{Service: "route", Version: "v2-" + name, Pod: name + "-laptop"}, "127.0.0.1:0")
		require.NoError(t, err)
		defer srv.Close()
		servers[name] = srv
		st, err := e.Connect(ctx, name, srv.Addr(), nil)
		require.NoError(t, err)
		keys[name] = st.RoutingKey
	}
	require.NotEqual(t, keys["alice"], keys["bob"])
	for name, key := range keys {
		eventuallyServed(t, client, "sbx-routing-key="+key, "frontend@baseline(route@v2-"+name+", driver@baseline)")
	}
	_, hop, _ := dispatch(t, client, "")
	require.Equal(t, allBaseline, hop.String())

	// One leaves; the other keeps its route.
	_, err := e.Client.Disconnect(ctx, "alice")
	require.NoError(t, err)
	eventuallyServed(t, client, "sbx-routing-key="+keys["alice"], allBaseline)
	eventuallyServed(t, client, "sbx-routing-key="+keys["bob"], "frontend@baseline(route@v2-bob, driver@baseline)")
}

// Scenario 7: the laptop's route stops: keyed requests get the relay's 502
// explaining that nothing listens locally; it starts again: they succeed.
func TestE2ELocalProcessStops(t *testing.T) {
	e := startE2E(t)
	ctx := context.Background()
	client := e.Sim.HTTPClient("default")
	defer client.CloseIdleConnections()

	local, err := sim.StartLocalRoute("127.0.0.1:0", nil, nil, e.Log)
	require.NoError(t, err)
	addr := local.Addr()
	st, err := e.Connect(ctx, "alice", addr, nil)
	require.NoError(t, err)
	keyed := "sbx-routing-key=" + st.RoutingKey
	eventuallyServed(t, client, keyed, routeV2)

	require.NoError(t, local.Close())
	var hop sim.Hop
	require.Eventually(t, func() bool {
		_, hop, _ = dispatch(t, client, keyed)
		r := hop.Find("route")
		return r != nil && r.Status == http.StatusBadGateway
	}, 20*time.Second, 20*time.Millisecond)
	route := hop.Find("route")
	require.Contains(t, route.Error, addr, "the 502 names the local address that refused: %s", route.Error)
	require.Equal(t, "driver@baseline", hop.Find("driver").String())
	// Unkeyed traffic is unaffected.
	_, base, _ := dispatch(t, client, "")
	require.Equal(t, allBaseline, base.String())

	again, err := sim.StartLocalRoute(addr, nil, nil, e.Log)
	require.NoError(t, err)
	defer again.Close()
	eventuallyServed(t, client, keyed, routeV2)
}

// Scenario 8 (in-process; TestE2EBinary does it with kill -9 of a real
// daemon process): the daemon stops and starts again: the sandbox comes
// back with the same routing key, keyed traffic reaches the laptop again,
// and the hosts block is back with the same addresses.
func TestE2EDaemonRestart(t *testing.T) {
	e := startE2E(t)
	ctx := context.Background()
	client := e.Sim.HTTPClient("default")
	defer client.CloseIdleConnections()
	require.NoError(t, e.SetOutboundMode(config.ModeHosts))
	entries := func() string {
		b, err := os.ReadFile(e.HostsFile)
		require.NoError(t, err)
		require.LessOrEqual(t, strings.Count(string(b), "# BEGIN sbx"), 1, string(b))
		var out []string
		for _, l := range strings.Split(string(b), "\n") {
			if strings.Contains(l, ".svc.cluster.local") {
				out = append(out, l)
			}
		}
		return strings.Join(out, "\n")
	}

	local, err := sim.StartLocalRoute("127.0.0.1:0", nil, nil, e.Log)
	require.NoError(t, err)
	defer local.Close()
	st, err := e.Connect(ctx, "alice", local.Addr(), nil)
	require.NoError(t, err)
	keyed := "sbx-routing-key=" + st.RoutingKey
	eventuallyServed(t, client, keyed, routeV2)
	require.Eventually(t, func() bool { return strings.Contains(entries(), "driver.hotrod") }, 10*time.Second, 20*time.Millisecond)
	before := entries()

	require.NoError(t, e.StopDaemon())
	// The cluster objects stay while the daemon is away.
	require.NotEmpty(t, sbxObjects(t, e))
	require.NoError(t, e.StartDaemon(ctx))
	require.Eventually(t, func() bool {
		s, err := e.Client.Sandbox(ctx, "alice")
		return err == nil && s.Phase == api.PhaseReady && s.RoutingKey == st.RoutingKey
	}, 30*time.Second, 20*time.Millisecond)
	eventuallyServed(t, client, keyed, routeV2)
	require.Eventually(t, func() bool { return entries() == before }, 10*time.Second, 20*time.Millisecond,
		"hosts entries now:\n%s\nbefore:\n%s", entries(), before)
}

// Scenario 9: a sandbox whose daemon vanished is removed by gc (asked of
// another laptop's daemon) once its Lease expired long enough ago, and
// routing falls back to baseline.
func TestE2ELeaseExpiryGC(t *testing.T) {
	e := startE2E(t)
	ctx := context.Background()
	hc := e.Sim.HTTPClient("default")
	defer hc.CloseIdleConnections()
	before := vsSnapshot(t, e)

	local, err := sim.StartLocalRoute("127.0.0.1:0", nil, nil, e.Log)
	require.NoError(t, err)
	defer local.Close()
	st, err := e.Connect(ctx, "alice", local.Addr(), nil)
	require.NoError(t, err)
	keyed := "sbx-routing-key=" + st.RoutingKey
	eventuallyServed(t, hc, keyed, routeV2)
	require.NoError(t, e.StopDaemon()) // the laptop is gone for good

	// Another laptop's daemon (its own, empty state) runs gc.
	other, err := simenv.TempDir()
	require.NoError(t, err)
	defer os.RemoveAll(other)
	e.Paths = api.Paths{RuntimeDir: filepath.Join(other, "run"), StateDir: filepath.Join(other, "state")}
	e.Client = &client.Client{Socket: e.Paths.Socket()}
	require.NoError(t, e.StartDaemon(ctx))
	gc := func() []string {
		res, err := e.Client.GC(ctx, api.GCRequest{ClusterRequest: api.ClusterRequest{Namespace: sim.AppNamespace}})
		require.NoError(t, err)
		return res.Deleted
	}
	require.Empty(t, gc(), "the Lease has not expired: gc keeps the sandbox")
	require.NotEmpty(t, sbxObjects(t, e))

	// Its last renewal was two hours ago.
	leases := e.Sim.Clients.Kube.CoordinationV1().Leases(sim.AppNamespace)
	l, err := leases.Get(ctx, cluster.LeaseName("alice"), metav1.GetOptions{})
	require.NoError(t, err)
	old := metav1.NewMicroTime(time.Now().Add(-2 * time.Hour))
	l.Spec.RenewTime, l.Spec.AcquireTime = &old, &old
	_, err = leases.Update(ctx, l, metav1.UpdateOptions{})
	require.NoError(t, err)

	require.Equal(t, []string{"alice"}, gc())
	require.Eventually(t, func() bool { return len(sbxObjects(t, e)) == 0 }, 20*time.Second, 20*time.Millisecond,
		"left behind: %v", sbxObjects(t, e))
	require.Equal(t, before, vsSnapshot(t, e))
	eventuallyServed(t, hc, keyed, allBaseline)
}

// blob writes n deterministic pseudo-random bytes for seed.
func blob(seed uint64, n int) []byte {
	r := rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15))
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(r.Uint32())
	}
	return b
}

// Scenario 6: the port-forward is cut under load: the session reconnects,
// no stream is corrupted (every complete answer is byte-exact), and
// requests made during a short flap are held by the relay and served.
func TestE2EPortForwardCutUnderLoad(t *testing.T) {
	e := startE2E(t)
	ctx := context.Background()

	mux := http.NewServeMux()
	mux.HandleFunc("/blob", func(w http.ResponseWriter, r *http.Request) {
		seed, _ := strconv.ParseUint(r.URL.Query().Get("seed"), 10, 64)
		n, _ := strconv.Atoi(r.URL.Query().Get("n"))
		w.Header().Set("Content-Length", strconv.Itoa(n))
		_, _ = w.Write(blob(seed, n))
	})
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	srv := &http.Server{Handler: mux}
	go func() { _ = srv.Serve(ln) }()
	defer srv.Close()

	st, err := e.Connect(ctx, "alice", ln.Addr().String(), nil)
	require.NoError(t, err)
	keyed := "sbx-routing-key=" + st.RoutingKey

	fetch := func(client *http.Client, seed uint64, n int) (ok bool, corrupt string) {
		req, _ := http.NewRequest(http.MethodGet, fmt.Sprintf("http://route.hotrod:8083/blob?seed=%d&n=%d", seed, n), nil)
		req.Header.Set("baggage", keyed)
		resp, err := client.Do(req)
		if err != nil {
			return false, ""
		}
		defer resp.Body.Close()
		body, err := io.ReadAll(resp.Body)
		if err != nil || resp.StatusCode != http.StatusOK {
			return false, "" // a clean failure: cut mid-stream or answered by a proxy
		}
		if !bytes.Equal(body, blob(seed, n)) {
			return false, fmt.Sprintf("seed %d: %d bytes differ from what the laptop sent", seed, len(body))
		}
		return true, ""
	}
	client := e.Sim.HTTPClient("default")
	defer client.CloseIdleConnections()
	require.Eventually(t, func() bool { ok, _ := fetch(client, 1, 10); return ok }, 20*time.Second, 20*time.Millisecond)

	// Load from 4 workers while the port-forward is cut twice.
	var (
		mu        sync.Mutex
		okCount   int
		failCount int
		corrupt   []string
	)
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for w := range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c := e.Sim.HTTPClient("default")
			defer c.CloseIdleConnections()
			for i := uint64(0); ; i++ {
				select {
				case <-stop:
					return
				default:
				}
				ok, bad := fetch(c, uint64(w)<<32|i, 64<<10+int(i%7)*4096)
				mu.Lock()
				if ok {
					okCount++
				} else {
					failCount++
				}
				if bad != "" {
					corrupt = append(corrupt, bad)
				}
				mu.Unlock()
			}
		}()
	}
	waitOK := func(n int) {
		start := func() int { mu.Lock(); defer mu.Unlock(); return okCount }()
		require.Eventually(t, func() bool { mu.Lock(); defer mu.Unlock(); return okCount >= start+n }, 30*time.Second, 10*time.Millisecond)
	}
	waitOK(20)
	require.Positive(t, e.Sim.PortForward.CutAll())
	waitOK(20)
	require.Positive(t, e.Sim.PortForward.CutAll())
	waitOK(20)
	close(stop)
	wg.Wait()
	require.Empty(t, corrupt)
	t.Logf("under load: %d complete answers, %d clean failures around two cuts", okCount, failCount)

	// A short flap: cut, and refuse new port-forwards for a moment.
	// Requests made meanwhile are held by the relay and served after the
	// daemon reconnects.
	e.Sim.PortForward.RefuseFor(300 * time.Millisecond)
	require.Positive(t, e.Sim.PortForward.CutAll())
	var held sync.WaitGroup
	results := make(chan bool, 8)
	for i := range 8 {
		held.Add(1)
		go func() {
			defer held.Done()
			c := e.Sim.HTTPClient("default")
			defer c.CloseIdleConnections()
			ok, bad := fetch(c, uint64(1000+i), 32<<10)
			require.Empty(t, bad)
			results <- ok
		}()
	}
	held.Wait()
	close(results)
	for ok := range results {
		require.True(t, ok, "a request made during the flap was not served")
	}
	s, err := e.Client.Sandbox(ctx, "alice")
	require.NoError(t, err)
	require.GreaterOrEqual(t, s.Reconnects, 1)
}

// The relay fault switches: the relay container is killed (kill -9), then
// restarted gracefully; each time the kubelet restarts it, the daemon
// reaches the new process, and keyed requests reach the laptop again.
func TestE2ERelayCrash(t *testing.T) {
	e := startE2E(t)
	ctx := context.Background()
	client := e.Sim.HTTPClient("default")
	defer client.CloseIdleConnections()

	local, err := sim.StartLocalRoute("127.0.0.1:0", nil, nil, e.Log)
	require.NoError(t, err)
	defer local.Close()
	st, err := e.Connect(ctx, "alice", local.Addr(), nil)
	require.NoError(t, err)
	keyed := "sbx-routing-key=" + st.RoutingKey
	eventuallyServed(t, client, keyed, routeV2)

	require.Equal(t, []string{"hotrod/" + cluster.RelayName("alice")}, e.Sim.RelayDeployments())
	pod, ok := e.Sim.RelayPod(sim.AppNamespace, cluster.RelayName("alice"))
	require.True(t, ok)
	require.NoError(t, e.Sim.CrashRelay(sim.AppNamespace, cluster.RelayName("alice")))
	// The old process is gone, so a keyed request served now went through
	// a session to the restarted one. The daemon got there by reconnecting,
	// or, when it noticed its sessions die a heartbeat apart, by replacing
	// them one at a time while the sandbox stayed ready.
	eventuallyServed(t, client, keyed, routeV2)
	var crashed api.SandboxStatus
	require.Eventually(t, func() bool {
		crashed, err = e.Client.Sandbox(ctx, "alice")
		return err == nil && crashed.Phase == api.PhaseReady
	}, 30*time.Second, 20*time.Millisecond)
	again, ok := e.Sim.RelayPod(sim.AppNamespace, cluster.RelayName("alice"))
	require.True(t, ok)
	require.Equal(t, pod, again, "a container restart keeps the pod")

	// A graceful restart (SIGTERM: the relay drains and says why).
	require.NoError(t, e.Sim.RestartRelay(sim.AppNamespace, cluster.RelayName("alice")))
	require.Eventually(t, func() bool {
		s, err := e.Client.Sandbox(ctx, "alice")
		return err == nil && s.Reconnects > crashed.Reconnects && s.Phase == api.PhaseReady
	}, 30*time.Second, 20*time.Millisecond)
	eventuallyServed(t, client, keyed, routeV2)
}

// Scenario 3 (proxy mode, as `sbx run` sets it up; both modes in
// TestE2EOutboundModes): the laptop's route calls
// driver.hotrod.svc.cluster.local and reaches baseline driver through the
// tunnel, with the baggage it received.
func TestE2ELocalProcessReachesCluster(t *testing.T) {
	e := startE2E(t)
	ctx := context.Background()
	client := e.Sim.HTTPClient("default")
	defer client.CloseIdleConnections()
	laptop := e.LaptopClient()
	defer laptop.CloseIdleConnections()

	local, err := sim.StartLocalRoute("127.0.0.1:0", []string{"http://driver.hotrod.svc.cluster.local:8082/driver"}, laptop, e.Log)
	require.NoError(t, err)
	defer local.Close()
	st, err := e.Connect(ctx, "alice", local.Addr(), nil)
	require.NoError(t, err)
	keyed := "sbx-routing-key=" + st.RoutingKey
	eventuallyServed(t, client, keyed, "frontend@baseline(route@v2(driver@baseline), driver@baseline)")
	_, hop, _ := dispatch(t, client, keyed)
	require.Equal(t, keyed, hop.Find("route").Calls[0].Baggage, "the laptop propagated the baggage")
	require.Equal(t, sim.AppNamespace, hop.Find("route").Calls[0].Namespace)

	// Directly from the laptop, by every name form a pod in hotrod could use.
	for _, u := range []string{
		"http://driver.hotrod.svc.cluster.local:8082/x",
		"http://driver.hotrod.svc:8082/x",
		"http://driver.hotrod:8082/x",
	} {
		resp, err := laptop.Get(u)
		require.NoError(t, err, u)
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		require.Equal(t, http.StatusOK, resp.StatusCode, "%s: %s", u, body)
		require.Contains(t, string(body), `"service":"driver","version":"baseline"`)
	}
	_, err = e.DialOutbound(ctx, "alice", "nosuch.hotrod.svc.cluster.local:80")
	require.Error(t, err)
	require.Contains(t, err.Error(), "nosuch.hotrod.svc.cluster.local")
}

// TestE2ERelayImageCannotBePulled: a relay image no registry has (a
// development build's default, ghcr.io/sbx-dev/sbx:<git sha>) ends the
// connect with the image's name and how to set relayImage, as soon as the
// kubelet says so, not at the wait's deadline.
func TestE2ERelayImageCannotBePulled(t *testing.T) {
	if testing.Short() {
		t.Skip("end-to-end test")
	}
	dir, err := simenv.TempDir()
	require.NoError(t, err)
	t.Cleanup(func() { _ = os.RemoveAll(dir) })
	ctx := context.Background()
	var pushed atomic.Bool // the image reaches the registry later
	e, err := simenv.Start(ctx, dir, e2eLogger(t), sim.Options{Pullable: func(img string) bool { return pushed.Load() || img != "ghcr.io/sbx-dev/sbx:sim" }})
	require.NoError(t, err)
	t.Cleanup(e.Close)
	_, err = e.Client.Connect(ctx, api.ConnectRequest{Spec: simenv.RouteSandbox("alice", "127.0.0.1:1"), Wait: true, Timeout: 2 * time.Minute}, nil)
	var ce *api.ConnectError
	require.ErrorAs(t, err, &ce)
	require.Equal(t, api.PhaseFailed, ce.Phase, "the pull failure ends the connect, not the 2-minute timeout: %s", ce.Message)
	require.Contains(t, ce.Message, "cannot pull ghcr.io/sbx-dev/sbx:sim")
	require.Contains(t, ce.Message, "set relayImage in the sbx config")
	require.NotContains(t, ce.Message, "not ready after")

	// Once the image can be pulled and the kubelet has pulled it (the
	// message says how to make it try at once), connecting again gets the
	// sandbox up.
	require.Regexp(t, "`kubectl delete pod -n hotrod sbx-alice-relay-[a-z0-9-]+` makes the kubelet pull it again", ce.Message)
	pushed.Store(true)
	require.Eventually(t, func() bool {
		pods, err := e.Sim.Clients.Kube.CoreV1().Pods(sim.AppNamespace).List(ctx, metav1.ListOptions{LabelSelector: cluster.LabelSandbox + "=alice"})
		return err == nil && len(pods.Items) == 1 && podstate.Ready(&pods.Items[0])
	}, 30*time.Second, 20*time.Millisecond)
	st, err := e.Client.Connect(ctx, api.ConnectRequest{Spec: simenv.RouteSandbox("alice", "127.0.0.1:1"), Wait: true, Timeout: 2 * time.Minute}, nil)
	require.NoError(t, err)
	require.Equal(t, api.PhaseReady, st.Phase)
}

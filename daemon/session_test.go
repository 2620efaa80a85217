package daemon

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/sbx-dev/sbx/cluster"
	"github.com/sbx-dev/sbx/cluster/routingkey"
	"github.com/sbx-dev/sbx/cluster/spec"
	"github.com/sbx-dev/sbx/daemon/api"
	"github.com/sbx-dev/sbx/tunnel"
)

func TestConnectWaitStreamsEveryStep(t *testing.T) {
	fc := &fakeCluster{}
	td := startDaemon(t, Options{Clusters: fc.provider(), link: (&fakeLinker{}).link})
	var steps []api.Progress
	st, err := td.client.Connect(context.Background(), api.ConnectRequest{Spec: testSpec("alice", "localhost:1"), Wait: true, Timeout: time.Minute},
		func(p api.Progress) { steps = append(steps, p) })
	require.NoError(t, err)
	require.Equal(t, api.PhaseReady, st.Phase)
	require.NoError(t, routingkey.Validate(st.RoutingKey))
	require.Equal(t, "sbx-routing-key", st.BaggageKey)
	require.Equal(t, []string{"hotrod"}, st.Namespaces)
	require.Equal(t, []api.MappingStatus{{Workload: "route", Namespace: "hotrod", Port: 8083, ToLocal: "localhost:1", Services: []string{"route.hotrod"},
		From: &spec.Workload{Kind: spec.KindDeployment, Namespace: "hotrod", Name: "route"}}}, st.Mappings)
	var phases []api.Phase
	var msgs []string
	for _, p := range steps {
		if len(phases) == 0 || phases[len(phases)-1] != p.Phase {
			phases = append(phases, p.Phase)
		}
		msgs = append(msgs, p.Message)
	}
	require.Equal(t, []api.Phase{api.PhaseApplying, api.PhaseWaitingRelay, api.PhaseConnecting, api.PhaseReady}, phases)
	joined := strings.Join(msgs, "\n")
	require.Contains(t, joined, "created Deployment hotrod/sbx-"+st.RoutingKey)
	require.Contains(t, joined, "relay pod")
	require.NotContains(t, joined, "s3cret")

	// Connecting again with the same spec answers at once, same key, no
	// re-apply.
	st2, err := td.client.Connect(context.Background(), api.ConnectRequest{Spec: testSpec("alice", "localhost:1"), Wait: true}, nil)
	require.NoError(t, err)
	require.Equal(t, st.RoutingKey, st2.RoutingKey)
	require.Len(t, fc.appliedKeys(), 1)

	// A changed spec re-applies in place with the same key.
	st3, err := td.client.Connect(context.Background(), api.ConnectRequest{Spec: testSpec("alice", "localhost:2"), Wait: true}, nil)
	require.NoError(t, err)
	require.Equal(t, st.RoutingKey, st3.RoutingKey)
	require.Equal(t, "localhost:2", st3.Mappings[0].ToLocal)
	require.Equal(t, []string{st.RoutingKey, st.RoutingKey}, fc.appliedKeys())
}

func TestConnectWithoutWaitReturnsAtOnce(t *testing.T) {
	fc := &fakeCluster{waitBlock: make(chan struct{})}
	td := startDaemon(t, Options{Clusters: fc.provider(), link: (&fakeLinker{}).link})
	st, err := td.client.Connect(context.Background(), api.ConnectRequest{Spec: testSpec("alice", "localhost:1")}, nil)
	require.NoError(t, err)
	require.Equal(t, "alice", st.Name)
	require.NotEmpty(t, st.RoutingKey)
	waitPhase(t, td.client, "alice", api.PhaseWaitingRelay)
	close(fc.waitBlock)
	waitPhase(t, td.client, "alice", api.PhaseReady)
}

func TestConnectTimeoutKeepsRetrying(t *testing.T) {
	fc := &fakeCluster{waitErr: errors.New("pod sbx-x is ImagePullBackOff")}
	td := startDaemon(t, Options{Clusters: fc.provider(), link: (&fakeLinker{}).link})
	_, err := td.client.Connect(context.Background(), api.ConnectRequest{Spec: testSpec("alice", "localhost:1"), Wait: true, Timeout: 300 * time.Millisecond}, nil)
	var ce *api.ConnectError
	require.ErrorAs(t, err, &ce)
	require.Contains(t, ce.Message, "not ready after")
	require.Contains(t, ce.Message, "ImagePullBackOff")
	require.Contains(t, ce.Message, "sbx disconnect alice")
	// It keeps retrying with the same key.
	require.Eventually(t, func() bool { return len(fc.appliedKeys()) >= 3 }, 10*time.Second, 5*time.Millisecond)
	keys := fc.appliedKeys()
	for _, k := range keys {
		require.Equal(t, keys[0], k)
	}
	st, err := td.client.Sandbox(context.Background(), "alice")
	require.NoError(t, err)
	require.Positive(t, st.Reconnects)
	require.Contains(t, st.LastError, "ImagePullBackOff")
	require.False(t, st.LastErrorAt.IsZero())
}

func TestPermanentFailureStopsUntilConnectAgain(t *testing.T) {
	fc := &fakeCluster{applyErr: &PermanentError{errors.New("Deployment hotrod/route not found")}}
	td := startDaemon(t, Options{Clusters: fc.provider(), link: (&fakeLinker{}).link})
	_, err := td.client.Connect(context.Background(), api.ConnectRequest{Spec: testSpec("alice", "localhost:1"), Wait: true, Timeout: time.Minute}, nil)
	var ce *api.ConnectError
	require.ErrorAs(t, err, &ce)
	require.Equal(t, api.PhaseFailed, ce.Phase)
	require.Contains(t, ce.Message, "hotrod/route not found")
	require.Len(t, fc.appliedKeys(), 1, "no retries of a permanent failure")

	fc.mu.Lock()
	fc.applyErr = nil
	fc.mu.Unlock()
	st, err := td.client.Connect(context.Background(), api.ConnectRequest{Spec: testSpec("alice", "localhost:1"), Wait: true, Timeout: time.Minute}, nil)
	require.NoError(t, err)
	require.Equal(t, api.PhaseReady, st.Phase)
}

func TestSupervisorReconnectsWithSameKey(t *testing.T) {
	fc := &fakeCluster{}
	fl := &fakeLinker{}
	td := startDaemon(t, Options{Clusters: fc.provider(), link: fl.link})
	st, err := td.client.Connect(context.Background(), api.ConnectRequest{Spec: testSpec("alice", "localhost:1"), Wait: true}, nil)
	require.NoError(t, err)
	for i := 1; i <= 3; i++ {
		fl.last().kill(errors.New("port-forward closed"))
		require.Eventually(t, func() bool {
			s, err := td.client.Sandbox(context.Background(), "alice")
			return err == nil && s.Phase == api.PhaseReady && s.Reconnects == i
		}, 10*time.Second, 5*time.Millisecond)
	}
	s, err := td.client.Sandbox(context.Background(), "alice")
	require.NoError(t, err)
	require.Equal(t, st.RoutingKey, s.RoutingKey)
	require.Contains(t, s.LastError, "port-forward closed")
	require.Equal(t, 4, fl.count())
	for _, k := range fc.appliedKeys() {
		require.Equal(t, st.RoutingKey, k)
	}
	require.Equal(t, 2, s.Sessions)
	require.Equal(t, time.Millisecond, s.RTT)
}

func TestBackoffDelays(t *testing.T) {
	b := DefaultBackoff()
	cases := []struct {
		attempt  int
		rand     float64
		min, max time.Duration
	}{
		{0, 0, 250 * time.Millisecond, 250 * time.Millisecond},
		{0, 0.999, 250 * time.Millisecond, 500 * time.Millisecond},
		{1, 0, 500 * time.Millisecond, 500 * time.Millisecond},
		{3, 0.5, 2 * time.Second, 4 * time.Second},
		{6, 0.999, 15 * time.Second, 30 * time.Second},
		{20, 0, 15 * time.Second, 15 * time.Second},
		{1000, 0.999, 15 * time.Second, 30 * time.Second},
	}
	for _, tc := range cases {
		r := tc.rand
		b.Rand = func() float64 { return r }
		d := b.Delay(tc.attempt)
		require.GreaterOrEqual(t, d, tc.min, "attempt %d", tc.attempt)
		require.LessOrEqual(t, d, tc.max, "attempt %d", tc.attempt)
	}
}

func TestReadyConnectionResetsBackoff(t *testing.T) {
	// Jitter pinned to the low end, so each retry's delay is exactly
	// Min/2 * 2^attempt and shows in the log.
	logger, logs := capturingLogger(t)
	fc := &fakeCluster{}
	fl := &fakeLinker{}
	td := startDaemon(t, Options{Clusters: fc.provider(), link: fl.link, Logger: logger,
		Backoff: Backoff{Min: 4 * time.Millisecond, Max: time.Hour, Rand: func() float64 { return 0 }}})
	_, err := td.client.Connect(context.Background(), api.ConnectRequest{Spec: testSpec("alice", "localhost:1"), Wait: true}, nil)
	require.NoError(t, err)
	delays := func() []string {
		var out []string
		for _, l := range strings.Split(logs.String(), "\n") {
			if i := strings.Index(l, `msg="retrying in `); i >= 0 {
				rest := l[i+len(`msg="retrying in `):]
				out = append(out, rest[:strings.IndexByte(rest, '"')])
			}
		}
		return out
	}
	fail := func(on bool) {
		fl.mu.Lock()
		defer fl.mu.Unlock()
		fl.err = nil
		if on {
			fl.err = errors.New("handshake refused")
		}
	}
	// A link that was up longer than Min is redialed at once (AfterUp,
	// jitter pinned to 0); the failures in a row after it double the
	// delay: 4, 8, 16, 32 ms. (The link is held up well past Min first, so
	// a slow run cannot turn the first drop into a "short-lived link".)
	time.Sleep(40 * time.Millisecond) // 10 × Min
	fail(true)
	fl.last().kill(errors.New("gone"))
	require.Eventually(t, func() bool { return len(delays()) >= 5 }, 10*time.Second, 2*time.Millisecond)
	fail(false)
	waitPhase(t, td.client, "alice", api.PhaseReady)
	require.Equal(t, []string{"0s", "4ms", "8ms", "16ms", "32ms"}, delays()[:5])

	// A flapping link: every connection that became ready, however short
	// it lived, makes the next drop a first failure again, so ten cuts in
	// a row each wait the first delay at most (less when the connection
	// held for a while: AfterUp).
	for range 10 {
		n := len(delays())
		fl.last().kill(errors.New("the VPN dropped"))
		require.Eventually(t, func() bool { return len(delays()) > n }, 10*time.Second, 2*time.Millisecond)
		d, err := time.ParseDuration(delays()[n])
		require.NoError(t, err)
		require.LessOrEqual(t, d, 2*time.Millisecond, "delay after flap: %s", delays()[n])
		waitPhase(t, td.client, "alice", api.PhaseReady)
	}

	// Flaps whose first reconnect attempt is refused (a VPN coming back
	// slowly): the delay after the refusal is the same on every flap,
	// because each link that came up reset the count. Without the reset it
	// doubles with every flap.
	var afterRefusal []string
	for range 6 {
		n := len(delays())
		fail(true)
		fl.last().kill(errors.New("the VPN dropped"))
		require.Eventually(t, func() bool { return len(delays()) >= n+2 }, 10*time.Second, time.Millisecond)
		fail(false)
		waitPhase(t, td.client, "alice", api.PhaseReady)
		afterRefusal = append(afterRefusal, delays()[n+1])
	}
	for i, d := range afterRefusal {
		require.Equal(t, afterRefusal[0], d, "flap %d: the delay after a refused attempt grew with flaps: %v", i+1, afterRefusal)
	}
}

func TestBackoffAfterUp(t *testing.T) {
	b := DefaultBackoff()
	for _, r := range []float64{0, 0.5, 0.999} {
		b.Rand = func() float64 { return r }
		// Up for a while: back at once, within Min/5.
		d := b.AfterUp(time.Minute)
		require.GreaterOrEqual(t, d, time.Duration(0))
		require.Less(t, d, b.Min/5)
		// Dropped right after it came up: the first delay, as before.
		require.Equal(t, b.Delay(0), b.AfterUp(b.Min-time.Millisecond))
	}
}

// TestStateSurvivesRestart: the state file (0600) keeps the sandbox and
// its tunnel token, the only copy of it; a restarted daemon reconnects with
// the same key and token, so its apply asks for no new verifier (no relay
// rollout) and may not take the sandbox from another daemon.
func TestStateSurvivesRestart(t *testing.T) {
	fc := &fakeCluster{}
	paths := testPaths(t)
	td := startDaemon(t, Options{Paths: paths, Clusters: fc.provider(), link: (&fakeLinker{}).link})
	st, err := td.client.Connect(context.Background(), api.ConnectRequest{Spec: testSpec("alice", "localhost:1"), Context: "staging", Wait: true}, nil)
	require.NoError(t, err)
	td.stop()

	fi, err := os.Stat(paths.State())
	require.NoError(t, err)
	require.Equal(t, os.FileMode(0o600), fi.Mode().Perm())
	di, err := os.Stat(filepath.Dir(paths.State()))
	require.NoError(t, err)
	require.Equal(t, os.FileMode(0o700), di.Mode().Perm())
	b, err := os.ReadFile(paths.State())
	require.NoError(t, err)
	var doc stateDoc
	require.NoError(t, json.Unmarshal(b, &doc))
	require.Len(t, doc.Sandboxes, 1)
	token := doc.Sandboxes[0].Token
	require.Len(t, token, 43, "256 random bits, base64url")
	first := fc.appliedOptions()[0]
	require.Equal(t, tunnel.VerifierOf(token).String(), first.TokenVerifier, "the cluster gets the token's verifier")
	require.False(t, first.RefuseOtherVerifier, "a new token's first apply takes the sandbox")
	require.Equal(t, st.RoutingKey, doc.Sandboxes[0].RoutingKey)
	require.Equal(t, "staging", doc.Sandboxes[0].Context)
	require.Equal(t, "hotrod", doc.Sandboxes[0].Namespace)
	require.Empty(t, fc.deletes, "stopping the daemon keeps cluster objects")

	td2 := startDaemon(t, Options{Paths: paths, Clusters: fc.provider(), link: (&fakeLinker{}).link})
	st2 := waitPhase(t, td2.client, "alice", api.PhaseReady)
	require.Equal(t, st.RoutingKey, st2.RoutingKey)
	require.Equal(t, "staging", st2.Context)
	keys := fc.appliedKeys()
	require.Equal(t, st.RoutingKey, keys[len(keys)-1])
	opts := fc.appliedOptions()
	again := opts[len(opts)-1]
	require.Equal(t, first.TokenVerifier, again.TokenVerifier, "same token: the relay Deployment stays as it is")
	require.True(t, again.RefuseOtherVerifier, "a restarted daemon does not take the sandbox from another")

	// Disconnect removes it from the state file too.
	_, err = td2.client.Disconnect(context.Background(), "alice")
	require.NoError(t, err)
	td2.stop()
	b, err = os.ReadFile(paths.State())
	require.NoError(t, err)
	require.NoError(t, json.Unmarshal(b, &doc))
	require.Empty(t, doc.Sandboxes)
}

func TestCorruptStateIsReportedNotFatal(t *testing.T) {
	paths := testPaths(t)
	require.NoError(t, os.MkdirAll(paths.StateDir, 0o700))
	require.NoError(t, os.WriteFile(paths.State(), []byte("{not json"), 0o600))
	td := startDaemon(t, Options{Paths: paths, Clusters: (&fakeCluster{}).provider(), link: (&fakeLinker{}).link})
	st, err := td.client.Status(context.Background())
	require.NoError(t, err)
	require.Contains(t, st.ConfigError, "corrupt")
	require.Contains(t, st.ConfigError, "move it away")
}

func TestDisconnectAllAndDeleteFailure(t *testing.T) {
	fc := &fakeCluster{}
	td := startDaemon(t, Options{Clusters: fc.provider(), link: (&fakeLinker{}).link})
	ctx := context.Background()
	for _, n := range []string{"alice", "bob"} {
		_, err := td.client.Connect(ctx, api.ConnectRequest{Spec: testSpec(n, "localhost:1"), Wait: true}, nil)
		require.NoError(t, err)
	}
	fc.mu.Lock()
	fc.deleteErr = errors.New("forbidden")
	fc.mu.Unlock()
	_, err := td.client.Disconnect(ctx, "alice")
	var ae *api.APIError
	require.ErrorAs(t, err, &ae)
	require.Equal(t, 502, ae.StatusCode, "cluster trouble, not a daemon bug")
	require.Contains(t, err.Error(), "retry `sbx disconnect alice`")
	require.Contains(t, err.Error(), "--forget")
	st := waitPhase(t, td.client, "alice", api.PhaseFailed)
	require.Contains(t, st.LastError, "forbidden")

	// --forget drops it here without touching the cluster.
	res, err := td.client.Forget(ctx, "alice")
	require.NoError(t, err)
	require.Equal(t, []string{"alice"}, res.Disconnected)
	_, err = td.client.Sandbox(ctx, "alice")
	require.True(t, api.IsNotFound(err))
	require.Empty(t, fc.deletes)
	_, err = td.client.Connect(ctx, api.ConnectRequest{Spec: testSpec("alice", "localhost:1"), Wait: true}, nil)
	require.NoError(t, err)

	fc.mu.Lock()
	fc.deleteErr = nil
	fc.mu.Unlock()
	res, err = td.client.DisconnectAll(ctx)
	require.NoError(t, err)
	require.ElementsMatch(t, []string{"alice", "bob"}, res.Disconnected)
	full, err := td.client.Status(ctx)
	require.NoError(t, err)
	require.Empty(t, full.Sandboxes)
	require.Len(t, fc.deletes, 2)
}

func TestListMarksOrphansAndGC(t *testing.T) {
	fc := &fakeCluster{gcDeleted: []string{"old"}}
	td := startDaemon(t, Options{Clusters: fc.provider(), link: (&fakeLinker{}).link})
	ctx := context.Background()
	st, err := td.client.Connect(ctx, api.ConnectRequest{Spec: testSpec("alice", "localhost:1"), Wait: true}, nil)
	require.NoError(t, err)
	exp := time.Now().Add(time.Minute).UTC().Truncate(time.Second)
	fc.mu.Lock()
	fc.listed = []cluster.SandboxInfo{
		{Name: "alice", RoutingKey: st.RoutingKey, Namespace: "hotrod", Expires: exp},
		{Name: "old", RoutingKey: "0000000000000", Namespace: "hotrod", Expired: true},
		{Name: "bobs", RoutingKey: "1111111111111", Namespace: "hotrod", Holder: "bob@laptop", Expires: exp},
	}
	fc.mu.Unlock()
	res, err := td.client.List(ctx, api.ClusterRequest{}, true)
	require.NoError(t, err)
	require.Empty(t, res.ClusterError)
	require.Equal(t, []api.ListEntry{
		{Name: "alice", RoutingKey: st.RoutingKey, Namespace: "hotrod", Phase: api.PhaseReady, InDaemon: true, InCluster: true, LeaseExpires: exp},
		{Name: "old", RoutingKey: "0000000000000", Namespace: "hotrod", InCluster: true, Orphan: true},
		// Another daemon's, whose Lease is renewed: no orphan.
		{Name: "bobs", RoutingKey: "1111111111111", Namespace: "hotrod", InCluster: true, Holder: "bob@laptop", LeaseExpires: exp},
	}, res.Sandboxes)

	res, err = td.client.List(ctx, api.ClusterRequest{}, false)
	require.NoError(t, err)
	require.Len(t, res.Sandboxes, 1)

	fc.mu.Lock()
	renews := fc.renews
	fc.mu.Unlock()
	gc, err := td.client.GC(ctx, api.GCRequest{ClusterRequest: api.ClusterRequest{Namespace: "hotrod"}})
	require.NoError(t, err)
	require.Equal(t, []string{"old"}, gc.Deleted)
	fc.mu.Lock()
	renewsAfter := fc.renews
	fc.mu.Unlock()
	require.Greater(t, renewsAfter, renews, "gc renews this daemon's own sandboxes first")
}

type testClock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *testClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *testClock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
}

func TestGoneSandboxIsReapplied(t *testing.T) {
	fc := &fakeCluster{}
	fl := &fakeLinker{}
	td := startDaemon(t, Options{Clusters: fc.provider(), link: fl.link, LeaseInterval: 10 * time.Millisecond})
	st, err := td.client.Connect(context.Background(), api.ConnectRequest{Spec: testSpec("alice", "localhost:1"), Wait: true}, nil)
	require.NoError(t, err)
	fc.mu.Lock()
	fc.renewErr = fmt.Errorf("%w: lease hotrod/sbx-alice not found", cluster.ErrSandboxGone)
	fc.mu.Unlock()
	require.Eventually(t, func() bool { return len(fc.appliedKeys()) >= 2 }, 10*time.Second, 5*time.Millisecond)
	fc.mu.Lock()
	fc.renewErr = nil
	fc.mu.Unlock()
	sb := waitPhase(t, td.client, "alice", api.PhaseReady)
	require.Equal(t, st.RoutingKey, sb.RoutingKey)
	require.Contains(t, sb.LastError, "re-applying")
}

func TestFailedSandboxMayMoveCluster(t *testing.T) {
	fc := &fakeCluster{}
	var mu sync.Mutex
	var opened []string
	provider := func(ctx context.Context, _ api.KubeconfigSource, kctx string) (Cluster, error) {
		mu.Lock()
		defer mu.Unlock()
		opened = append(opened, kctx)
		if kctx == "typo" {
			return nil, &PermanentError{errors.New(`context "typo" not found in kubeconfig`)}
		}
		return fc, nil
	}
	td := startDaemon(t, Options{Clusters: provider, link: (&fakeLinker{}).link})
	ctx := context.Background()
	_, err := td.client.Connect(ctx, api.ConnectRequest{Spec: testSpec("alice", "localhost:1"), Context: "typo", Wait: true}, nil)
	var ce *api.ConnectError
	require.ErrorAs(t, err, &ce)
	require.Equal(t, api.PhaseFailed, ce.Phase)

	st, err := td.client.Connect(ctx, api.ConnectRequest{Spec: testSpec("alice", "localhost:1"), Context: "staging", Wait: true}, nil)
	require.NoError(t, err)
	require.Equal(t, "staging", st.Context)

	// A working sandbox cannot silently move: its objects would stay behind.
	_, err = td.client.Connect(ctx, api.ConnectRequest{Spec: testSpec("alice", "localhost:1"), Context: "prod", Wait: true}, nil)
	var ae *api.APIError
	require.ErrorAs(t, err, &ae)
	require.Equal(t, 409, ae.StatusCode)
	require.Contains(t, err.Error(), "disconnect it first")
}

// TestLocalProbeInEveryPhase: whether the local service listens is probed
// whatever the sandbox's phase. A sandbox that failed (or still waits for
// its relay) used to say "NOT listening (start your service there)" for a
// service that was running, sending the user to fix the wrong thing.
func TestLocalProbeInEveryPhase(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	defer ln.Close()
	fc := &fakeCluster{applyErr: &PermanentError{errors.New("Deployment hotrod/route not found")}}
	td := startDaemon(t, Options{Clusters: fc.provider(), link: (&fakeLinker{}).link, StatsInterval: 20 * time.Millisecond})
	_, err = td.client.Connect(context.Background(), api.ConnectRequest{Spec: testSpec("alice", ln.Addr().String()), Wait: true, Timeout: time.Minute}, nil)
	require.Error(t, err)
	listening := func() bool {
		st, err := td.client.Sandbox(context.Background(), "alice")
		require.NoError(t, err)
		require.Equal(t, api.PhaseFailed, st.Phase)
		return st.Mappings[0].Listening
	}
	require.Eventually(t, listening, 10*time.Second, 10*time.Millisecond, "a failed sandbox still sees its local service")
	require.NoError(t, ln.Close())
	require.Eventually(t, func() bool { return !listening() }, 10*time.Second, 10*time.Millisecond, "and sees it stop")
}

// TestLeaseRenewedWhileWaitingForRelay: a relay that takes long to start
// (an image pull, a busy node) does not let the sandbox's Lease lapse:
// others' `sbx list` would show a connecting sandbox as expired, and
// their `sbx gc` would delete it.
func TestLeaseRenewedWhileWaitingForRelay(t *testing.T) {
	fc := &fakeCluster{waitBlock: make(chan struct{})}
	td := startDaemon(t, Options{Clusters: fc.provider(), link: (&fakeLinker{}).link, LeaseInterval: 10 * time.Millisecond})
	_, err := td.client.Connect(context.Background(), api.ConnectRequest{Spec: testSpec("alice", "localhost:1")}, nil)
	require.NoError(t, err)
	waitPhase(t, td.client, "alice", api.PhaseWaitingRelay)
	require.Eventually(t, func() bool {
		fc.mu.Lock()
		defer fc.mu.Unlock()
		return fc.renews >= 3
	}, 10*time.Second, 5*time.Millisecond, "the Lease is renewed while the relay starts")
	close(fc.waitBlock)
	waitPhase(t, td.client, "alice", api.PhaseReady)
}

package daemon

import (
	"context"
	"errors"
	"net"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/sbx-dev/sbx/cluster"
	"github.com/sbx-dev/sbx/daemon/api"
)

// The daemon benchmarks a connected sandbox against the real relay: all
// three paths measure, with progress before the result. Figures are
// only checked to be there: tests never judge timings.
func TestBenchAgainstTheRealRelay(t *testing.T) {
	rr := startRealRelay(t, testToken)
	fc := relayCluster(func() string { return rr.addrs.Tunnel.String() })
	cfg := shortTunnelConfig()
	td := startDaemon(t, Options{newToken: fixedToken, Clusters: fc.provider(), Tunnel: &cfg, PoolSize: 2})
	connectTo(t, td, localService(t).Addr().String())

	var progress []string
	res, err := td.client.Bench(context.Background(), "alice", api.BenchRequest{Duration: 50 * time.Millisecond}, func(p api.BenchProgress) {
		progress = append(progress, p.Message)
	})
	require.NoError(t, err, "progress: %q", progress)
	require.Equal(t, "alice", res.Sandbox)
	require.Equal(t, "test", res.RelayVersion)
	require.Equal(t, 1, res.Bare.Connections)
	require.Equal(t, 1, res.Tunnel.Connections)
	require.Equal(t, 2, res.Pool.Connections)
	for name, p := range map[string]api.BenchPath{"bare": res.Bare, "tunnel": res.Tunnel, "pool": res.Pool} {
		require.Positive(t, p.UploadMBps, name)
		require.Positive(t, p.DownloadMBps, name)
		require.Positive(t, p.UploadBytes, name)
		require.Positive(t, p.DownloadBytes, name)
		require.Positive(t, p.RTTP50ms, name)
		require.GreaterOrEqual(t, p.RTTP99ms, p.RTTP50ms, name)
		require.Positive(t, p.RTTSamples, name)
	}
	require.Positive(t, res.TunnelVsBareUpload)
	require.Positive(t, res.PoolVsBareDownload)
	require.NotEmpty(t, res.Verdict)
	require.Len(t, progress, 1+3*4, "a header, then per path what it is, upload, download, round trips: %q", progress)
	require.Contains(t, progress[1], "bare: one new port-forward connection")

	// A second benchmark works as well: the relay let go of every slot.
	_, err = td.client.Bench(context.Background(), "alice", api.BenchRequest{Duration: 20 * time.Millisecond}, nil)
	require.NoError(t, err)
}

// A relay that predates benchmarks (no "bench" capability in its
// Welcome) is named with its version and how to upgrade it.
func TestBenchRelayWithoutTheCapability(t *testing.T) {
	relay := startMiniRelay(t, testToken)
	td := startDaemon(t, Options{newToken: fixedToken, Clusters: relayCluster(relay.addr).provider()})
	connectTo(t, td, "127.0.0.1:1")
	_, err := td.client.Bench(context.Background(), "alice", api.BenchRequest{Duration: 20 * time.Millisecond}, nil)
	var be *api.BenchError
	require.ErrorAs(t, err, &be)
	require.Equal(t, "the relay of sandbox alice runs sbx mini, which does not serve benchmarks; reconnect to upgrade the relay: "+
		"`sbx connect alice --rotate-token` rolls it to this daemon's relay image (if relayImage in the sbx config pins an older image, change it first)", be.Message)
}

func TestBenchRefusals(t *testing.T) {
	fc := &fakeCluster{dial: func(context.Context, cluster.Ref) (net.Conn, error) {
		return nil, errors.New("connection refused")
	}}
	td := startDaemon(t, Options{newToken: fixedToken, Clusters: fc.provider()})
	ctx := context.Background()

	// Unknown sandbox: 404, naming it.
	_, err := td.client.Bench(ctx, "nobody", api.BenchRequest{}, nil)
	require.True(t, api.IsNotFound(err), "%v", err)
	require.ErrorContains(t, err, `sandbox "nobody" is not connected`)

	// Out-of-range duration: 400.
	_, err = td.client.Bench(ctx, "nobody", api.BenchRequest{Duration: time.Hour}, nil)
	var ae *api.APIError
	require.ErrorAs(t, err, &ae)
	require.Equal(t, 400, ae.StatusCode)
	require.ErrorContains(t, err, "bench duration 1h0m0s is out of range: give 10ms to 1m0s per measurement")

	// Known but not connected: its relay cannot be reached.
	_, err = td.client.Connect(ctx, api.ConnectRequest{Spec: testSpec("alice", "127.0.0.1:1")}, nil)
	require.NoError(t, err)
	waitPhase(t, td.client, "alice", api.PhaseReconnecting)
	_, err = td.client.Bench(ctx, "alice", api.BenchRequest{}, nil)
	var be *api.BenchError
	require.ErrorAs(t, err, &be)
	require.Contains(t, be.Message, "sandbox alice is not connected (phase ")
	require.Contains(t, be.Message, "`sbx status alice` shows why, run the benchmark once it is ready")

	// One benchmark at a time.
	s, ok := td.d.mgr.Get("alice")
	require.True(t, ok)
	s.benching.Store(true)
	_, err = td.client.Bench(ctx, "alice", api.BenchRequest{}, nil)
	require.ErrorAs(t, err, &be)
	require.Equal(t, "a benchmark of sandbox alice is already running; wait for it to finish, then run it again", be.Message)
	s.benching.Store(false)
}

func TestBenchVerdict(t *testing.T) {
	base := api.BenchResult{
		Bare: api.BenchPath{Connections: 1, UploadMBps: 40, DownloadMBps: 80, RTTP50ms: 20},
		Pool: api.BenchPath{Connections: 2},
	}
	network := base
	network.TunnelVsBareUpload, network.TunnelVsBareDownload, network.TunnelVsBareRTT = 0.97, 1.02, 1.01
	network.Tunnel.RTTP50ms = 20.2
	require.Equal(t, "your network limits this sandbox, not the tunnel: a bare port-forward to the relay carries 40.0 MB/s up and 80.0 MB/s down "+
		"with 20.0 ms round trips, and one tunnel stream keeps up (0.97× up, 1.02× down, 0.200 ms more per round trip)", benchVerdict(network))

	tunnelBound := base
	tunnelBound.TunnelVsBareUpload, tunnelBound.TunnelVsBareDownload = 0.4, 0.9
	tunnelBound.PoolVsBareUpload, tunnelBound.PoolVsBareDownload = 0.8, 1.1
	require.Equal(t, "the tunnel limits this sandbox: one tunnel stream gets 0.40× a bare port-forward's upload and 0.90× its download "+
		"(the pool of 2 sessions together 0.80× and 1.10×); a bare port-forward to the relay carries 40.0 MB/s up and 80.0 MB/s down with 20.0 ms round trips",
		benchVerdict(tunnelBound))

	latency := base
	latency.TunnelVsBareUpload, latency.TunnelVsBareDownload, latency.TunnelVsBareRTT = 1, 1, 2
	latency.Tunnel.RTTP50ms = 40
	require.Equal(t, "the tunnel adds latency: 40.0 ms per round trip against 20.0 ms over a bare port-forward (2.00×); its throughput keeps up (1.00× up, 1.00× down)",
		benchVerdict(latency))

	// On loopback a doubled round trip of a tenth of a millisecond is
	// nothing a user notices.
	fast := base
	fast.TunnelVsBareUpload, fast.TunnelVsBareDownload, fast.TunnelVsBareRTT = 1, 1, 2
	fast.Bare.RTTP50ms, fast.Tunnel.RTTP50ms = 0.1, 0.2
	require.Contains(t, benchVerdict(fast), "your network limits this sandbox")
}

func TestBenchPercentile(t *testing.T) {
	var ds []time.Duration
	for i := 100; i >= 1; i-- {
		ds = append(ds, time.Duration(i)*time.Millisecond)
	}
	require.Equal(t, 50*time.Millisecond, percentile(ds, 50))
	require.Equal(t, 99*time.Millisecond, percentile(ds, 99))
	require.Equal(t, 100*time.Millisecond, ds[0], "the samples are not sorted in place")
	require.Zero(t, percentile(nil, 50))
	require.Equal(t, time.Millisecond, percentile([]time.Duration{time.Millisecond}, 99))
}

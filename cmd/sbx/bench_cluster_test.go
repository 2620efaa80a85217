package main

import (
	"context"
	"encoding/json"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/sbx-dev/sbx/cluster/spec"
	"github.com/sbx-dev/sbx/daemon/api"
	"github.com/sbx-dev/sbx/tools/testbed/sim"
	"github.com/sbx-dev/sbx/tools/testbed/simenv"
)

// TestE2EBenchCluster runs `sbx bench cluster` against a sandbox
// connected to the simulated cluster: the real relay from the generated
// Deployment, the real port-forward to it (bare path and the tunnel's
// sessions), the daemon's own pool. It checks that every path has
// figures, never what they are.
func TestE2EBenchCluster(t *testing.T) {
	e := startE2E(t)
	ctx := context.Background()
	local, err := sim.StartLocalRoute("127.0.0.1:0", nil, nil, e.Log)
	require.NoError(t, err)
	defer local.Close()
	_, err = e.Connect(ctx, "alice", local.Addr(), nil)
	require.NoError(t, err)
	useCLIWith(t, e)

	code, out, errOut := runCLI(t, "bench", "cluster", "alice", "--json", "--duration", "100ms")
	require.Equal(t, 0, code, errOut)
	var res api.BenchResult
	require.NoError(t, json.Unmarshal([]byte(out), &res), out)
	require.Equal(t, "alice", res.Sandbox)
	require.Equal(t, "sim", res.RelayVersion)
	for name, p := range map[string]api.BenchPath{"bare": res.Bare, "tunnel": res.Tunnel, "pool": res.Pool} {
		require.Positive(t, p.UploadMBps, "%s: %s", name, out)
		require.Positive(t, p.DownloadMBps, "%s: %s", name, out)
		require.Positive(t, p.RTTP50ms, "%s: %s", name, out)
		require.Positive(t, p.RTTP99ms, "%s: %s", name, out)
		require.Positive(t, p.Connections, "%s: %s", name, out)
	}
	for name, r := range map[string]float64{
		"tunnel_vs_bare_upload": res.TunnelVsBareUpload, "tunnel_vs_bare_download": res.TunnelVsBareDownload, "tunnel_vs_bare_rtt": res.TunnelVsBareRTT,
		"pool_vs_bare_upload": res.PoolVsBareUpload, "pool_vs_bare_download": res.PoolVsBareDownload, "pool_vs_bare_rtt": res.PoolVsBareRTT,
	} {
		require.Positive(t, r, name)
	}
	require.NotEmpty(t, res.Verdict)
	require.Contains(t, errOut, "bare: one new port-forward connection to the relay pod", "progress goes to stderr")
	require.Contains(t, errOut, "pool: round trip p50")
	var keys map[string]any
	require.NoError(t, json.Unmarshal([]byte(out), &keys))
	require.Contains(t, keys, "tunnel_vs_bare_upload", "the keys of the other sbx bench commands' JSON")
	t.Logf("sbx bench cluster on the simulator:\n%s", out)

	// Text: the table, the ratios and the verdict (which of them, the
	// loopback's load decides).
	code, out, errOut = runCLI(t, "bench", "cluster", "alice", "--duration", "50ms")
	require.Equal(t, 0, code, errOut)
	for _, want := range []string{"sandbox alice, relay sim: 50ms per measurement", "bare port-forward", "tunnel ÷ bare: upload", "pool ÷ bare:"} {
		require.Contains(t, out, want)
	}
	require.Regexp(t, `\n(your network limits this sandbox|the tunnel limits this sandbox|the tunnel adds latency)[^\n]+\n$`, out)

	// A name the daemon does not know: a usage error.
	code, _, errOut = runCLI(t, "bench", "cluster", "nobody", "--duration", "50ms")
	require.Equal(t, 2, code, errOut)
	require.Contains(t, errOut, `sandbox "nobody" is not connected`)
	require.Contains(t, errOut, "hint: connect it with `sbx connect -f FILE`")

	// A sandbox the daemon has but that is not connected: its workload
	// does not exist, so it failed. Exit 1, saying where to look.
	bad := simenv.RouteSandbox("bob", local.Addr())
	bad.Spec.Local[0].From = spec.Workload{Kind: spec.KindDeployment, Namespace: sim.AppNamespace, Name: "no-such-workload"}
	_, err = e.Client.Connect(ctx, api.ConnectRequest{Spec: bad}, nil)
	require.NoError(t, err)
	require.Eventually(t, func() bool {
		st, err := e.Client.Sandbox(ctx, "bob")
		return err == nil && st.Phase == api.PhaseFailed
	}, 20*time.Second, 20*time.Millisecond)
	code, _, errOut = runCLI(t, "bench", "cluster", "bob", "--duration", "50ms")
	require.Equal(t, 1, code, errOut)
	require.Contains(t, errOut, "sandbox bob is not connected (phase failed), and the benchmark measures through its tunnel")
	require.Contains(t, errOut, "hint: `sbx status bob` shows why")
}

func TestBenchClusterFlags(t *testing.T) {
	for name, c := range map[string]struct {
		args []string
		want string
	}{
		"duration":   {[]string{"bench", "cluster", "alice", "--duration", "2m"}, "bench duration 2m0s is out of range"},
		"no name":    {[]string{"bench", "cluster"}, "accepts 1 arg(s)"},
		"bad output": {[]string{"bench", "cluster", "alice", "-o", "wide"}, `output format "wide" is not supported`},
	} {
		t.Run(name, func(t *testing.T) {
			code, _, errOut := runCLI(t, c.args...)
			require.Equal(t, 2, code, errOut)
			require.Contains(t, errOut, c.want)
			require.Contains(t, errOut, "hint:")
		})
	}
}

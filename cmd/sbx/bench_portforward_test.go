package main

import (
	"encoding/json"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

func TestBenchPortForward(t *testing.T) {
	small := []string{"bench", "portforward", "--reps", "1", "--streams", "1", "--bulk-mib", "1", "--rtt-samples", "10", "--pool", "2"}

	code, out, errOut := runCLI(t, append(small, "--json")...)
	require.Equal(t, 0, code, errOut)
	var res map[string]any
	require.NoError(t, json.Unmarshal([]byte(out), &res), out)
	for _, k := range []string{"tunnel_vs_bare_throughput", "pool_vs_bare_throughput", "tunnel_vs_bare_rtt"} {
		require.Positive(t, res[k], k)
		require.Len(t, res["ci95"].(map[string]any)[k], 2, k)
	}
	require.Empty(t, errOut, "--json prints no progress")

	code, out, errOut = runCLI(t, small...)
	require.Equal(t, 0, code, errOut)
	for _, s := range []string{"bare (kubectl)", "tunnel", "pool of 2", "tunnel_vs_bare_throughput", "target >= 0.95", "95% CI"} {
		require.Contains(t, out, s)
	}
	require.Contains(t, errOut, "rep 1/1")

	code, out, errOut = runCLI(t, append(small, "--ab", "split-headers+frame=128k")...)
	require.Equal(t, 0, code, errOut)
	require.Contains(t, out, "variant split-headers+frame=128k")
	require.Contains(t, out, "pool_throughput")

	code, _, errOut = runCLI(t, "bench", "portforward", "--ab", "frame=12q")
	require.Equal(t, 2, code)
	require.Contains(t, errOut, `size "12q"`)

	code, _, errOut = runCLI(t, "bench", "portforward", "--transport", "pigeon")
	require.Equal(t, 2, code)
	require.True(t, strings.Contains(errOut, `unknown transport "pigeon"`), errOut)
}

// TestBenchPortForwardShaped runs the shaped bench through one small link
// with tiny transfers: the JSON has the shaped ratios, and requests
// through a 20 ms link take at least 20 ms.
func TestBenchPortForwardShaped(t *testing.T) {
	code, out, errOut := runCLI(t, "bench", "portforward", "--rtt", "20ms", "--bandwidth", "100mbit", "--reps", "1",
		"--streams", "2", "--pool", "2", "--bulk-mib", "1", "--rtt-samples", "3", "--json")
	require.Equal(t, 0, code, errOut)
	require.Empty(t, errOut, "--json prints no progress")
	var res struct {
		Links []map[string]any `json:"links"`
	}
	require.NoError(t, json.Unmarshal([]byte(out), &res), out)
	require.Len(t, res.Links, 1)
	l := res.Links[0]
	require.Equal(t, "custom", l["name"])
	require.InDelta(t, 100.0, l["bandwidth_mbit"], 1e-9)
	for _, k := range []string{"tunnel_vs_link_throughput", "tunnel_vs_bare_throughput"} {
		require.Positive(t, l[k], k)
	}
	for _, path := range []string{"link", "bare", "tunnel", "pool"} {
		p := l[path].(map[string]any)
		for _, k := range []string{"upload_mbps", "download_mbps", "parallel_upload_mbps"} {
			require.Positive(t, p[k], "%s %s", path, k)
		}
		require.GreaterOrEqual(t, p["rtt"].(map[string]any)["p50_ms"], 20.0, path)
	}
}

// TestBenchPortForwardLoss runs the shaped bench in the packet model with
// loss: the JSON says so, and counts packets lost at random and TCP
// retransmissions; every path still moved its bytes.
func TestBenchPortForwardLoss(t *testing.T) {
	code, out, errOut := runCLI(t, "bench", "portforward", "--rtt", "4ms", "--bandwidth", "100mbit", "--loss", "1%", "--reps", "1",
		"--streams", "2", "--pool", "2", "--bulk-mib", "1", "--rtt-samples", "3", "--json")
	require.Equal(t, 0, code, errOut)
	var res struct {
		Links []struct {
			Model   string  `json:"model"`
			LossPct float64 `json:"loss_pct"`
			Packets struct {
				Packets, Lost, Retransmits int64
			} `json:"packets"`
			TunnelVsLink float64 `json:"tunnel_vs_link_throughput"`
		} `json:"links"`
	}
	require.NoError(t, json.Unmarshal([]byte(out), &res), out)
	require.Len(t, res.Links, 1)
	l := res.Links[0]
	require.Equal(t, "packet", l.Model)
	require.InDelta(t, 1.0, l.LossPct, 1e-9)
	require.Positive(t, l.Packets.Lost, out)
	require.Positive(t, l.Packets.Retransmits, out)
	require.Greater(t, l.Packets.Packets, 100*l.Packets.Lost/5, "about 1%% lost, not more: %s", out)
	require.Positive(t, l.TunnelVsLink)
}

func TestBenchPortForwardShapedFlags(t *testing.T) {
	for _, tc := range []struct {
		args []string
		want []string
	}{
		{[]string{"--bandwidth", "100mbps"}, []string{`--bandwidth "100mbps"`, "ambiguous", "e.g. --bandwidth 100mbit"}},
		{[]string{"--bandwidth", "fast"}, []string{`--bandwidth "fast"`, "e.g. --bandwidth 100mbit"}},
		{[]string{"--rtt", "20"}, []string{`--rtt "20" is not a duration`, "e.g. --rtt 30ms"}},
		{[]string{"--rtt", "-5ms"}, []string{`--rtt "-5ms" is negative`}},
		{[]string{"--rtt", "0"}, []string{"shapes nothing"}},
		{[]string{"--loss", "1%"}, []string{"--loss 1% needs a shaped link", "e.g. --links vpn --loss 1%"}},
		{[]string{"--links", "vpn", "--loss", "0.01"}, []string{`--loss "0.01" is not a percentage`, "e.g. --loss 1% or --loss 0.1%"}},
		{[]string{"--links", "vpn", "--loss", "30%"}, []string{`--loss "30%" is above 20%`}},
		{[]string{"--links", "lan,moon"}, []string{`unknown link "moon"`, "lan,wifi,vpn,intercontinental"}},
		{[]string{"--links", "lan", "--rtt", "10ms"}, []string{"cannot be combined"}},
		{[]string{"--idle", "60s"}, []string{"--idle needs a shaped link"}},
		{[]string{"--idle", "soon", "--links", "lan"}, []string{`--idle "soon" is not a duration`, "e.g. --idle 60s"}},
		{[]string{"--links", "vpn", "--ab", "split-headers"}, []string{"not available with a shaped link"}},
		{[]string{"--links", "vpn", "--check"}, []string{"not available with a shaped link"}},
	} {
		code, _, errOut := runCLI(t, append([]string{"bench", "portforward"}, tc.args...)...)
		require.Equal(t, 2, code, "%v: %s", tc.args, errOut)
		for _, w := range tc.want {
			require.Contains(t, errOut, w, tc.args)
		}
	}
}

// TestBenchVariants: --ab values configure the tunnel at both ends;
// window= is the cap on growth (streams then start no higher), budget=0
// fixes windows, and a bad value says what is allowed.
func TestBenchVariants(t *testing.T) {
	v, err := parseBenchVariant("window=256k")
	require.NoError(t, err)
	require.Equal(t, uint32(256<<10), v.Tunnel.MaxStreamWindow)
	require.Equal(t, uint32(256<<10), v.Tunnel.MinStreamWindow, "a cap under the port-forward's 1 MiB start lowers the start")
	v, err = parseBenchVariant("budget=0+frame=128k")
	require.NoError(t, err)
	require.Zero(t, v.Tunnel.WindowBudget)
	require.Equal(t, 128<<10, v.Tunnel.MaxFrameSize)
	_, err = parseBenchVariant("window=1k")
	require.ErrorContains(t, err, "MaxStreamWindow")
	_, err = parseBenchVariant("budget=x")
	require.ErrorContains(t, err, "not a positive byte count")
	_, err = parseBenchVariant("speed=9")
	require.ErrorContains(t, err, "unknown variant")
}

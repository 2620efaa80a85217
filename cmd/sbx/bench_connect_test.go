//go:build !windows

package main

import (
	"bytes"
	"context"
	"encoding/json"
	"os/exec"
	"runtime"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// TestBenchConnect runs a short `sbx bench connect` with the built binary
// (the benchmark runs the binary's own connect, disconnect and daemon):
// every figure is there and positive. No figure is compared with a time.
func TestBenchConnect(t *testing.T) {
	bin := buildSbx(t)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, "bench", "connect", "--cuts", "3", "--connects", "1", "--json")
	var out, errOut bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errOut
	require.NoError(t, cmd.Run(), "stderr:\n%s", errOut.String())
	require.Empty(t, errOut.String(), "--json prints no progress")

	var res map[string]any
	require.NoError(t, json.Unmarshal(out.Bytes(), &res), out.String())
	t.Logf("%s", out.String())
	require.Equal(t, "simulated cluster", res["cluster"])
	require.Positive(t, res["first_connect_ms"])
	durations := func(what string, v any, n int) {
		d, ok := v.(map[string]any)
		require.True(t, ok, "%s: %v", what, v)
		for _, f := range []string{"median_ms", "p95_ms", "max_ms"} {
			require.Positive(t, d[f], "%s.%s", what, f)
		}
		require.Len(t, d["each_ms"], n, what)
	}
	durations("connect_new_relay", res["connect_new_relay"], 1)
	durations("connect_running_relay", res["connect_running_relay"], 1)
	cuts, ok := res["cuts"].([]any)
	require.True(t, ok, "cuts: %v", res["cuts"])
	require.Len(t, cuts, 1)
	c := cuts[0].(map[string]any)
	require.EqualValues(t, 3, c["cuts"])
	durations("cuts[0].to_ready", c["to_ready"], 3)
	durations("cuts[0].to_served", c["to_served"], 3)
	require.Positive(t, c["requests"])
	require.Positive(t, c["connections"])
	require.Contains(t, c, "failed_requests")
	require.EqualValues(t, 1000, res["streams"])
	require.Positive(t, res["seconds"])
	if runtime.GOOS != "linux" {
		require.Contains(t, res["rss"], "not measured")
		return
	}
	require.Equal(t, "measured", res["rss"])
	for _, k := range []string{"rss_idle_one_sandbox_mib", "rss_idle_anon_mib", "rss_idle_file_mib", "rss_after_streams_mib", "rss_after_streams_anon_mib", "rss_peak_mib"} {
		require.Positive(t, res[k], k)
	}
}

func TestBenchConnectFlags(t *testing.T) {
	for _, tc := range []struct {
		args []string
		want []string
	}{
		{[]string{"--cuts", "0"}, []string{"--cuts 0: must be 1 or more", "use --cuts 1 or more (default 20)"}},
		{[]string{"--cuts", "-3"}, []string{"--cuts -3: must be 1 or more"}},
		{[]string{"--connects", "0"}, []string{"--connects 0: must be 1 or more", "(default 3)"}},
		{[]string{"--streams", "0"}, []string{"--streams 0: must be 1 or more", "(default 1000)"}},
		{[]string{"--cuts", "many"}, []string{`invalid argument "many" for "--cuts"`}},
		{[]string{"-o", "wide"}, []string{`output format "wide" is not supported`}},
		{[]string{"extra"}, []string{`takes no arguments, got "extra"`}},
	} {
		code, _, errOut := runCLI(t, append([]string{"bench", "connect"}, tc.args...)...)
		require.Equal(t, 2, code, "%v: %s", tc.args, errOut)
		for _, w := range tc.want {
			require.Contains(t, errOut, w, tc.args)
		}
	}
}

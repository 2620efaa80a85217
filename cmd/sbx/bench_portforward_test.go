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

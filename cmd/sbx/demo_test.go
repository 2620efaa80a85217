package main

import (
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

// TestDemo runs `sbx demo` in-process: it must tell the whole story and
// exit 0, which means every expectation it checks held.
func TestDemo(t *testing.T) {
	if testing.Short() {
		t.Skip("end-to-end demo")
	}
	t.Setenv("HOME", t.TempDir())
	code, out, errOut := runCLI(t, "demo")
	require.Equal(t, 0, code, "stdout:\n%s\nstderr:\n%s", out, errOut)
	for _, want := range []string{
		"1. Starting a simulated cluster",
		"ready: routing key ",
		"v2 (laptop)",
		"baseline (via tunnel)",
		"answered by driver baseline",
		"back to baseline",
		"is back to exactly what it was",
		"expectations held",
	} {
		require.Contains(t, out, want)
	}
	require.NotContains(t, out, "UNEXPECTED")
	require.Equal(t, 2, strings.Count(out, "v2 (laptop)"), out)
}

func TestDemoRejectsArguments(t *testing.T) {
	code, _, errOut := runCLI(t, "demo", "extra")
	require.Equal(t, 2, code)
	require.Contains(t, errOut, `sbx demo takes no arguments, got "extra"`)
}

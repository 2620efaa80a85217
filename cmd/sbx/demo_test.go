package main

import (
	"context"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/sbx-dev/sbx/cluster/live"
	"github.com/sbx-dev/sbx/daemon"
	"github.com/sbx-dev/sbx/daemon/api"
	"github.com/sbx-dev/sbx/daemon/client"
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
		"the VirtualService hotrod/route (owned by CD) is exactly what it was",
		"expectations held",
	} {
		require.Contains(t, out, want)
	}
	require.NotContains(t, out, "UNEXPECTED")
	require.Equal(t, 2, strings.Count(out, "v2 (laptop)"), out)
}

// TestDemoGatewayAPI: `sbx demo --mesh gateway-api` tells the same story
// where CD routes with an HTTPRoute: sbx adds its own next to it, and CD's
// is untouched at the end.
func TestDemoGatewayAPI(t *testing.T) {
	if testing.Short() {
		t.Skip("end-to-end demo")
	}
	t.Setenv("HOME", t.TempDir())
	code, out, errOut := runCLI(t, "demo", "--mesh", "gateway-api")
	require.Equal(t, 0, code, "stdout:\n%s\nstderr:\n%s", out, errOut)
	for _, want := range []string{
		"CD routes route with HTTPRoute hotrod/route",
		"routing Service hotrod/route: keyed requests routed with sbx's own Gateway API HTTPRoute (mesh: gateway-api)",
		"created HTTPRoute hotrod/sbx-",
		"v2 (laptop)",
		"the HTTPRoute hotrod/route (owned by CD) is exactly what it was",
		"All 9 expectations held",
	} {
		require.Contains(t, out, want)
	}
	require.Equal(t, 2, strings.Count(out, "v2 (laptop)"), out)

	code, _, errOut = runCLI(t, "demo", "--mesh", "linkerd")
	require.Equal(t, 2, code)
	require.Contains(t, errOut, `--mesh: mesh "linkerd" is not one of auto, istio, gateway-api`)
}

func TestDemoRejectsArguments(t *testing.T) {
	code, _, errOut := runCLI(t, "demo", "extra")
	require.Equal(t, 2, code)
	require.Contains(t, errOut, `sbx demo takes no arguments, got "extra"`)
}

// TestDemoKeepWithYourOwnSandbox: `sbx demo --keep` invites the user to
// connect sandboxes of their own to the simulated cluster. One connected
// when Ctrl-C comes must not fail the demo's checks (its leftover check
// used to count every sbx object, and waited 30 s for the user's to go)
// nor be touched by them.
func TestDemoKeepWithYourOwnSandbox(t *testing.T) {
	if testing.Short() {
		t.Skip("end-to-end demo")
	}
	dir := cliEnv(t)
	kubeconfigLine := regexp.MustCompile(`export KUBECONFIG=(\S+)`)
	var mine api.SandboxStatus
	code, out, errOut := runCLIWhen(t, func(output string) bool { return strings.Contains(output, "Press Ctrl-C") },
		func(output string, interrupt context.CancelFunc) {
			m := kubeconfigLine.FindStringSubmatch(output)
			require.NotNil(t, m, output)
			t.Setenv("KUBECONFIG", m[1])
			clusters := live.NewClusters(live.Options{DefaultRelayImage: "ghcr.io/sbx-dev/sbx:test", WaitTimeout: 30 * time.Second})
			t.Cleanup(func() { _ = clusters.Close() })
			startInProcessDaemon(t, nil, func(o *daemon.Options) { o.Clusters = daemon.LiveClusters(clusters) })
			code, _, errOut := runCLI(t, "connect", "-f", writeSpec(t, dir), "--set", "name=mine")
			require.Equal(t, 0, code, errOut)
			c := &client.Client{}
			defer c.Close()
			var err error
			mine, err = c.Sandbox(context.Background(), "mine")
			require.NoError(t, err)
			interrupt() // Ctrl-C: the demo disconnects its own sandbox and checks
		}, "demo", "--keep")
	require.Equal(t, 0, code, "stdout:\n%s\nstderr:\n%s", out, errOut)
	require.Contains(t, out, "is exactly what it was")
	require.Contains(t, out, "expectations held")
	require.Equal(t, api.PhaseReady, mine.Phase)
}

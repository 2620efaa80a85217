package main

import (
	"encoding/json"
	"os"
	"path/filepath"
	"testing"

	"github.com/sbx-dev/sbx/cluster"
	"github.com/sbx-dev/sbx/cluster/live"
	"github.com/sbx-dev/sbx/tools/testbed/sim"
	"github.com/stretchr/testify/require"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// TestDoctorWithoutKubeconfig: doctor with no usable kubeconfig says so
// with the fix, still reports the daemon, and exits 1; -o json lists the
// checks.
func TestDoctorWithoutKubeconfig(t *testing.T) {
	dir := cliEnv(t)
	t.Setenv("KUBECONFIG", filepath.Join(dir, "missing"))
	code, out, errOut := runCLI(t, "doctor")
	require.Equal(t, 1, code, errOut)
	require.Contains(t, out, "✗ kubeconfig: ")
	require.Contains(t, out, "    fix: pass --kubeconfig/--context")
	require.Contains(t, out, "✓ daemon: not running; sbx connect starts it")
	code, out, _ = runCLI(t, "doctor", "-o", "json")
	require.Equal(t, 1, code)
	var checks []live.Check
	require.NoError(t, json.Unmarshal([]byte(out), &checks))
	require.Equal(t, "kubeconfig", checks[0].Name)
	require.Equal(t, live.LevelFail, checks[0].Level)

	// A config the daemon would refuse is a failed check, not ignored.
	require.NoError(t, os.WriteFile(filepath.Join(dir, "config", "sbx", "config.yaml"), []byte("relayImag: x\n"), 0o600))
	code, out, _ = runCLI(t, "doctor")
	require.Equal(t, 1, code)
	require.Contains(t, out, "✗ sbx config: ")
	require.Contains(t, out, "relayImag")
	require.Contains(t, out, "fix: fix the sbx config at "+filepath.Join(dir, "config", "sbx", "config.yaml"))
}

// TestDoctorRelayProbe: against the simulated cluster through a
// kubeconfig, doctor starts a short-lived relay of the config's relayImage:
// an image the cluster pulls passes, one it cannot pull fails naming the
// image and the fix, and either way the probe leaves nothing behind.
// --no-relay-probe creates nothing.
func TestDoctorRelayProbe(t *testing.T) {
	dir := cliEnv(t)
	ctx := t.Context()
	c, err := sim.Start(ctx, sim.Options{Pullable: func(img string) bool { return img != "registry.example/sbx:missing" }})
	require.NoError(t, err)
	t.Cleanup(c.Close)
	kubeconfig := filepath.Join(dir, "sim.kubeconfig")
	require.NoError(t, c.WriteKubeconfig(kubeconfig))
	setImage := func(img string) {
		writeTestConfig(t, dir)
		path := filepath.Join(dir, "config", "sbx", "config.yaml")
		b, err := os.ReadFile(path)
		require.NoError(t, err)
		require.NoError(t, os.WriteFile(path, append(b, []byte("relayImage: "+img+"\n")...), 0o600))
	}
	leftovers := func() []string {
		var names []string
		leases, err := c.Clients.Kube.CoordinationV1().Leases(sim.AppNamespace).List(ctx, metav1.ListOptions{})
		require.NoError(t, err)
		for _, l := range leases.Items {
			names = append(names, "Lease "+l.Name)
		}
		deps, err := c.Clients.Kube.AppsV1().Deployments(sim.AppNamespace).List(ctx, metav1.ListOptions{LabelSelector: cluster.LabelManagedBy})
		require.NoError(t, err)
		for _, d := range deps.Items {
			names = append(names, "Deployment "+d.Name)
		}
		return names
	}
	find := func(out string) live.Check {
		var checks []live.Check
		require.NoError(t, json.Unmarshal([]byte(out), &checks), out)
		for _, ch := range checks {
			if ch.Name == "relay image" {
				return ch
			}
		}
		t.Fatalf("no relay image check in %s", out)
		return live.Check{}
	}

	setImage("registry.example/sbx:good")
	code, out, errOut := runCLI(t, "doctor", "--kubeconfig", kubeconfig, "-o", "json")
	ch := find(out)
	require.Equal(t, live.LevelOK, ch.Level, "%+v\n%s", ch, errOut)
	require.Contains(t, ch.Detail, "registry.example/sbx:good: a relay started from it was ready")
	require.Contains(t, errOut, "relay probe: ", "the wait shows progress")
	require.Equal(t, 0, code, "%s\n%s", out, errOut)
	require.Empty(t, leftovers())

	setImage("registry.example/sbx:missing")
	code, out, errOut = runCLI(t, "doctor", "--kubeconfig", kubeconfig)
	require.Equal(t, 1, code, "%s\n%s", out, errOut)
	require.Contains(t, out, "✗ relay image: registry.example/sbx:missing: ")
	require.Contains(t, out, "cannot pull registry.example/sbx:missing")
	require.Contains(t, out, "fix: set relayImage in the sbx config")
	require.NotContains(t, out, "not ready after", "the pull failure ends the probe at once")
	require.Empty(t, leftovers())

	code, out, errOut = runCLI(t, "doctor", "--kubeconfig", kubeconfig, "--no-relay-probe")
	require.Equal(t, 0, code, "%s\n%s", out, errOut)
	require.NotContains(t, out, "relay image")
	require.NotContains(t, errOut, "relay probe")
}

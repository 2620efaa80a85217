package main

import (
	"encoding/json"
	"path/filepath"
	"testing"

	"github.com/sbx-dev/sbx/cluster/live"
	"github.com/stretchr/testify/require"
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
}

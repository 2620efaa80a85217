package main

import (
	"encoding/json"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/sbx-dev/sbx/cluster/live"
	"github.com/sbx-dev/sbx/daemon/api"
)

// TestRenderGC: a gc that deletes nothing because the only expired lease
// is within the grace says so, and when gc will take it, instead of "no
// sandbox has an expired lease" next to a list showing "expired 23s ago".
func TestRenderGC(t *testing.T) {
	now := time.Date(2026, 12, 7, 12, 0, 0, 0, time.UTC)
	waiting := []api.GCWaiting{{Name: "alice", Namespace: "hotrod", LeaseExpired: now.Add(-23 * time.Second), CollectableAt: now.Add(10*time.Minute - 23*time.Second)}}
	require.Equal(t, "no sandbox's lease expired more than 10m0s ago (the grace a laptop that slept gets to come back)\n"+
		"kept for now: alice in hotrod (lease expired 23s ago; gc collects it in 9m37s or later)",
		renderGC(api.GCResult{Deleted: []string{}, Waiting: waiting, Grace: 10 * time.Minute}, now))
	require.Equal(t, "no sandbox has an expired lease", renderGC(api.GCResult{Deleted: []string{}, Grace: 10 * time.Minute}, now))
	waiting[0].CollectableAt = now.Add(-time.Second)
	require.Contains(t, renderGC(api.GCResult{Waiting: waiting, Grace: 10 * time.Minute}, now), "the next gc collects it")
	require.Equal(t, "would delete 1 expired sandbox(es): old", renderGC(api.GCResult{Deleted: []string{"old"}, DryRun: true}, now))
}

// TestProgressPrinterSaysAnErrorOnce: retries failing the same way print
// the long message once, then a short line each; a new error is printed
// in full.
func TestProgressPrinterSaysAnErrorOnce(t *testing.T) {
	var b strings.Builder
	var pr progressPrinter
	long := "apply the cluster objects: " + strings.Repeat("x", 300)
	pr.print(&b, api.Progress{Phase: api.PhaseApplying, Message: "applying"})
	for range 3 {
		pr.print(&b, api.Progress{Phase: api.PhaseReconnecting, Error: long})
	}
	pr.print(&b, api.Progress{Phase: api.PhaseReconnecting, Error: "another"})
	require.Equal(t, 1, strings.Count(b.String(), long), b.String())
	require.Contains(t, b.String(), "  ! the same error again (2 times now)\n  ! the same error again (3 times now)\n  ! another\n")
}

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

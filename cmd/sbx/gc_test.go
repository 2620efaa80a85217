package main

import (
	"testing"
	"time"

	"github.com/stretchr/testify/require"

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

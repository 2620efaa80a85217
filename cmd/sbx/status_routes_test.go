package main

import (
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/sbx-dev/sbx/daemon/api"
)

// TestRenderRouteState: the routes line of sbx status says whether keyed
// requests reach the sandbox, how often the routes were put back after a
// CD sync removed them, where and how long ago, why a check failed, and
// where to look further.
func TestRenderRouteState(t *testing.T) {
	now := time.Date(2026, 12, 7, 12, 0, 0, 0, time.UTC)
	require.Equal(t, "effective (keyed requests reach the sandbox from every namespace)",
		renderRouteState("alice", api.RouteState{Keyed: api.KeyedSandbox}, now))

	restored := api.RouteState{Keyed: api.KeyedSandbox, Restored: 3, RestoredAt: now.Add(-42 * time.Second), RestoredIn: []string{"hotrod/route", "hotrod/frontend"}}
	require.Equal(t, "effective (keyed requests reach the sandbox from every namespace); restored 3 time(s), last 42s ago in hotrod/route, hotrod/frontend",
		renderRouteState("alice", restored, now))

	failed := restored
	failed.Error = "list VirtualServices: connection refused"
	require.Contains(t, renderRouteState("alice", failed, now), "; last check failed: list VirtualServices: connection refused")

	partial := api.RouteState{Keyed: api.KeyedPartial, Message: "keyed requests to route.hotrod:8083 from namespace web partly reach the baseline"}
	require.Equal(t, "PARTIAL: keyed requests to route.hotrod:8083 from namespace web partly reach the baseline (`sbx routes alice` shows each client namespace)",
		renderRouteState("alice", partial, now))

	refused := api.RouteState{Keyed: api.KeyedBaseline, Message: "Service hotrod/route is routed by HTTPRoute hotrod/r"}
	require.Equal(t, "NOT effective: Service hotrod/route is routed by HTTPRoute hotrod/r (`sbx routes alice` shows each client namespace)",
		renderRouteState("alice", refused, now))
}

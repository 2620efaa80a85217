package daemon

import (
	"errors"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/sbx-dev/sbx/cluster/istiovs"
)

// routeState folds checks into what status shows: the worst view decides,
// only repairs after the connect's own apply count as restored, and a
// failed check keeps the last known state and says why.
func TestRouteStateFolding(t *testing.T) {
	now := time.Date(2026, 12, 7, 10, 0, 0, 0, time.UTC)
	ports := func(keyed ...string) []istiovs.PortReport {
		p := istiovs.PortReport{Namespace: "hotrod", Service: "route", Port: 8083, Workload: "route"}
		for i, k := range keyed {
			v := istiovs.ViewReport{Keyed: k}
			if i > 0 {
				v.Clients = "other"
			}
			if k != KeyedSandbox {
				v.Reason = "because"
			}
			p.Views = append(p.Views, v)
		}
		return []istiovs.PortReport{p}
	}

	st := routeState(nil, RouteCheck{Changed: []string{"hotrod/route"}, Ports: ports(KeyedSandbox)}, now, true)
	require.Equal(t, KeyedSandbox, st.Keyed)
	require.Zero(t, st.Restored, "the apply's own writes are not repairs")

	st = routeState(st, RouteCheck{Ports: ports(KeyedSandbox)}, now.Add(time.Second), false)
	require.Zero(t, st.Restored, "nothing rewritten")

	st = routeState(st, RouteCheck{Changed: []string{"hotrod/route"}, Ports: ports(KeyedSandbox, KeyedPartial)}, now.Add(2*time.Second), false)
	require.Equal(t, 1, st.Restored)
	require.Equal(t, now.Add(2*time.Second), st.RestoredAt)
	require.Equal(t, []string{"hotrod/route"}, st.RestoredIn)
	require.Equal(t, KeyedPartial, st.Keyed)
	require.Equal(t, "keyed requests to route.hotrod:8083 from namespace other partly reach the baseline: because", st.Message)

	st = routeState(st, RouteCheck{Ports: ports(KeyedBaseline, KeyedPartial)}, now.Add(3*time.Second), false)
	require.Equal(t, KeyedBaseline, st.Keyed, "the worst view decides")
	require.Equal(t, "keyed requests to route.hotrod:8083 from other namespaces reach the baseline: because", st.Message)

	failed := routeState(st, RouteCheck{Err: errors.New("api down")}, now.Add(4*time.Second), false)
	require.Equal(t, "api down", failed.Error)
	require.Equal(t, st.Keyed, failed.Keyed, "the last known state stays")
	require.Equal(t, 1, failed.Restored)

	first := routeState(nil, RouteCheck{Err: errors.New("api down")}, now, false)
	require.Equal(t, KeyedBaseline, first.Keyed, "never checked: nothing is known to work")
	require.NotEmpty(t, first.Message)

	ok := routeState(failed, RouteCheck{Ports: ports(KeyedSandbox)}, now.Add(5*time.Second), false)
	require.Empty(t, ok.Error)
	require.Equal(t, KeyedSandbox, ok.Keyed)
	require.Empty(t, ok.Message)
}

package daemon

import (
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/sbx-dev/sbx/cluster"
	"github.com/sbx-dev/sbx/cluster/meshreport"
	"github.com/sbx-dev/sbx/daemon/api"
)

// ok0 returns a copy of a state that says keyed requests reach the sandbox.
func ok0(st *api.RouteState) *api.RouteState {
	c := *st
	c.Keyed, c.Message = api.KeyedSandbox, ""
	return &c
}

// routeState folds checks into what status shows: the worst view decides,
// only repairs after the connect's own apply count as restored, and a
// failed check keeps the last known state and says why.
func TestRouteStateFolding(t *testing.T) {
	now := time.Date(2026, 12, 7, 10, 0, 0, 0, time.UTC)
	ports := func(keyed ...string) []meshreport.PortReport {
		p := meshreport.PortReport{Namespace: "hotrod", Service: "route", Port: 8083, Workload: "route"}
		for i, k := range keyed {
			v := meshreport.ViewReport{Keyed: k}
			if i > 0 {
				v.Clients = "other"
			}
			if k != api.KeyedSandbox {
				v.Reason = "because"
			}
			p.Views = append(p.Views, v)
		}
		return []meshreport.PortReport{p}
	}

	st := routeState(nil, &cluster.RouteStatus{Changed: []string{"hotrod/route"}, Report: ports(api.KeyedSandbox)}, nil, now, true)
	require.Equal(t, api.KeyedSandbox, st.Keyed)
	require.Zero(t, st.Restored, "the apply's own writes are not repairs")

	st = routeState(st, &cluster.RouteStatus{Report: ports(api.KeyedSandbox)}, nil, now.Add(time.Second), false)
	require.Zero(t, st.Restored, "nothing rewritten")

	st = routeState(st, &cluster.RouteStatus{Changed: []string{"hotrod/route"}, Report: ports(api.KeyedSandbox, api.KeyedPartial)}, nil, now.Add(2*time.Second), false)
	require.Equal(t, 1, st.Restored)
	require.Equal(t, now.Add(2*time.Second), st.RestoredAt)
	require.Equal(t, []string{"hotrod/route"}, st.RestoredIn)
	require.Equal(t, api.KeyedPartial, st.Keyed)
	require.Equal(t, "keyed requests to route.hotrod:8083 from namespace other partly reach the baseline: because", st.Message)

	st = routeState(st, &cluster.RouteStatus{Report: ports(api.KeyedBaseline, api.KeyedPartial)}, nil, now.Add(3*time.Second), false)
	require.Equal(t, api.KeyedBaseline, st.Keyed, "the worst view decides")
	require.Equal(t, "keyed requests to route.hotrod:8083 from other namespaces reach the baseline: because", st.Message)

	failed := routeState(st, nil, errors.New("api down"), now.Add(4*time.Second), false)
	require.Equal(t, "api down", failed.Error)
	require.Equal(t, st.Keyed, failed.Keyed, "the last known state stays")
	require.Equal(t, 1, failed.Restored)

	first := routeState(nil, nil, errors.New("api down"), now, false)
	require.Equal(t, api.KeyedBaseline, first.Keyed, "never checked: nothing is known to work")
	require.NotEmpty(t, first.Message)

	// A refusal is not a failed check: the routes cannot apply, so keyed
	// requests reach the baseline, and status says why.
	refused := routeState(ok0(st), nil, fmt.Errorf("check: %w", &cluster.RoutesRefusedError{Err: errors.New("Service hotrod/route is routed by HTTPRoute hotrod/r")}), now.Add(4*time.Second), false)
	require.Equal(t, api.KeyedBaseline, refused.Keyed)
	require.Equal(t, "Service hotrod/route is routed by HTTPRoute hotrod/r", refused.Message)

	ok := routeState(failed, &cluster.RouteStatus{Report: ports(api.KeyedSandbox)}, nil, now.Add(5*time.Second), false)
	require.Empty(t, ok.Error)
	require.Equal(t, api.KeyedSandbox, ok.Keyed)
	require.Empty(t, ok.Message)
}

package daemon

import (
	"errors"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	istioapi "istio.io/api/networking/v1alpha3"
	istionet "istio.io/client-go/pkg/apis/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/sbx-dev/sbx/cluster"
	"github.com/sbx-dev/sbx/cluster/meshreport"
	"github.com/sbx-dev/sbx/daemon/api"
)

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

	st := routeState(nil, RouteCheck{Changed: []string{"hotrod/route"}, Ports: ports(api.KeyedSandbox)}, now, true)
	require.Equal(t, api.KeyedSandbox, st.Keyed)
	require.Zero(t, st.Restored, "the apply's own writes are not repairs")

	st = routeState(st, RouteCheck{Ports: ports(api.KeyedSandbox)}, now.Add(time.Second), false)
	require.Zero(t, st.Restored, "nothing rewritten")

	st = routeState(st, RouteCheck{Changed: []string{"hotrod/route"}, Ports: ports(api.KeyedSandbox, api.KeyedPartial)}, now.Add(2*time.Second), false)
	require.Equal(t, 1, st.Restored)
	require.Equal(t, now.Add(2*time.Second), st.RestoredAt)
	require.Equal(t, []string{"hotrod/route"}, st.RestoredIn)
	require.Equal(t, api.KeyedPartial, st.Keyed)
	require.Equal(t, "keyed requests to route.hotrod:8083 from namespace other partly reach the baseline: because", st.Message)

	st = routeState(st, RouteCheck{Ports: ports(api.KeyedBaseline, api.KeyedPartial)}, now.Add(3*time.Second), false)
	require.Equal(t, api.KeyedBaseline, st.Keyed, "the worst view decides")
	require.Equal(t, "keyed requests to route.hotrod:8083 from other namespaces reach the baseline: because", st.Message)

	failed := routeState(st, RouteCheck{Err: errors.New("api down")}, now.Add(4*time.Second), false)
	require.Equal(t, "api down", failed.Error)
	require.Equal(t, st.Keyed, failed.Keyed, "the last known state stays")
	require.Equal(t, 1, failed.Restored)

	first := routeState(nil, RouteCheck{Err: errors.New("api down")}, now, false)
	require.Equal(t, api.KeyedBaseline, first.Keyed, "never checked: nothing is known to work")
	require.NotEmpty(t, first.Message)

	ok := routeState(failed, RouteCheck{Ports: ports(api.KeyedSandbox)}, now.Add(5*time.Second), false)
	require.Empty(t, ok.Error)
	require.Equal(t, api.KeyedSandbox, ok.Keyed)
	require.Empty(t, ok.Message)
}

// Only VirtualService changes that can concern the sandbox wake a route
// check.
func TestRelevantVS(t *testing.T) {
	names := map[string]bool{"route": true}
	mk := func(hosts []string, dest, routeName string, labels map[string]string) *istionet.VirtualService {
		v := &istionet.VirtualService{ObjectMeta: metav1.ObjectMeta{Labels: labels}}
		v.Spec.Hosts = hosts
		v.Spec.Http = []*istioapi.HTTPRoute{{Name: routeName, Route: []*istioapi.HTTPRouteDestination{{Destination: &istioapi.Destination{Host: dest}}}}}
		return v
	}
	for _, tc := range []struct {
		name string
		vs   *istionet.VirtualService
		want bool
	}{
		{"the Service's host", mk([]string{"route"}, "route", "", nil), true},
		{"its FQDN", mk([]string{"Route.hotrod.svc.cluster.local"}, "x", "", nil), true},
		{"a wildcard", mk([]string{"*.hotrod.svc.cluster.local"}, "x", "", nil), true},
		{"a gateway host sending to it", mk([]string{"shop.example.com"}, "route.hotrod.svc.cluster.local", "", nil), true},
		{"a delegate", mk(nil, "x", "", nil), true},
		{"sbx's own", mk([]string{"driver"}, "driver", "", map[string]string{cluster.LabelManagedBy: cluster.ManagedByValue}), true},
		{"holding our routes", mk([]string{"driver"}, "driver", "sbx-k1k1k1k1k1k1k-route-8083", nil), true},
		{"unrelated", mk([]string{"driver"}, "driver", "", nil), false},
		{"a longer name", mk([]string{"router"}, "router", "", nil), false},
	} {
		require.Equal(t, tc.want, relevantVS(tc.vs, names, "k1k1k1k1k1k1k"), tc.name)
	}
	require.True(t, relevantVS(mk([]string{"driver"}, "driver", "", nil), nil, "k"), "before the first check: every change")
}

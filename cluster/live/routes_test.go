package live

import (
	"testing"

	"github.com/stretchr/testify/require"
	istioapi "istio.io/api/networking/v1alpha3"
	istionet "istio.io/client-go/pkg/apis/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/sbx-dev/sbx/cluster"
)

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

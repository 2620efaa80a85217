package live

import (
	"testing"

	"github.com/stretchr/testify/require"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	fakediscovery "k8s.io/client-go/discovery/fake"
	kubefake "k8s.io/client-go/kubernetes/fake"

	"github.com/sbx-dev/sbx/cluster/kube"
)

// TestMeshCheck: doctor says how sbx can route keyed requests from the
// route kinds the API server serves.
func TestMeshCheck(t *testing.T) {
	vs := &metav1.APIResourceList{GroupVersion: "networking.istio.io/v1", APIResources: []metav1.APIResource{{Name: "virtualservices"}}}
	hr := &metav1.APIResourceList{GroupVersion: "gateway.networking.k8s.io/v1", APIResources: []metav1.APIResource{{Name: "httproutes"}}}
	lk := &metav1.APIResourceList{GroupVersion: "policy.linkerd.io/v1beta3", APIResources: []metav1.APIResource{{Name: "servers"}}}
	for _, tc := range []struct {
		name  string
		lists []*metav1.APIResourceList
		level string
		want  string
	}{
		{"Istio with Gateway API", []*metav1.APIResourceList{vs, hr}, LevelOK, "routes each Service the way CD does"},
		{"Istio", []*metav1.APIResourceList{vs}, LevelOK, "sbx routes with VirtualServices"},
		{"Linkerd with Gateway API", []*metav1.APIResourceList{hr, lk}, LevelOK, "Linkerd with Gateway API HTTPRoutes"},
		{"Linkerd without Gateway API", []*metav1.APIResourceList{lk}, LevelFail, "serves no Gateway API HTTPRoutes"},
		{"Gateway API alone", []*metav1.APIResourceList{hr}, LevelWarn, "neither Istio nor Linkerd was found"},
		{"nothing", nil, LevelFail, "serves neither Istio VirtualServices nor Gateway API HTTPRoutes"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			k := kubefake.NewClientset()
			k.Discovery().(*fakediscovery.FakeDiscovery).Resources = tc.lists
			c := NewFromKube(&kube.Cluster{Kube: k}, Options{})
			defer c.Close()
			got := c.meshCheck()
			require.Equal(t, tc.level, got.Level, "%+v", got)
			require.Contains(t, got.Detail, tc.want)
		})
	}
}

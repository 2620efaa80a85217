package daemon

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	istiofake "istio.io/client-go/pkg/clientset/versioned/fake"
	kubefake "k8s.io/client-go/kubernetes/fake"
	"k8s.io/client-go/rest"

	"github.com/sbx-dev/sbx/cluster/kube"
	"github.com/sbx-dev/sbx/cluster/live"
	"github.com/sbx-dev/sbx/daemon/api"
)

// TestApplyErrorNamesTheSandboxOnce: a connect whose workload is missing
// fails with "sandbox jo failed: apply the cluster objects: spec.local[0]:
// …", naming the sandbox once (package cluster, the session and the
// connect answer each named it).
func TestApplyErrorNamesTheSandboxOnce(t *testing.T) {
	c := live.NewFromKube(&kube.Cluster{
		REST: &rest.Config{Host: "https://api.staging:6443"}, Kube: kubefake.NewClientset(), Istio: istiofake.NewSimpleClientset(),
		Namespace: "hotrod", Context: "staging",
	}, live.Options{DefaultRelayImage: "relay:1"})
	defer c.Close()
	td := startDaemon(t, Options{Clusters: func(context.Context, api.KubeconfigSource, string) (Cluster, error) { return c, nil }, link: (&fakeLinker{}).link})
	_, err := td.client.Connect(context.Background(), api.ConnectRequest{Spec: testSpec("jo", "localhost:1"), Wait: true, Timeout: time.Minute}, nil)
	var ce *api.ConnectError
	require.ErrorAs(t, err, &ce)
	require.Contains(t, ce.Message, "sandbox jo failed: apply the cluster objects: spec.local[0]: Deployment hotrod/route not found")
	require.Equal(t, api.KindUser, ce.Kind, "a spec that does not fit the cluster is the user's to fix")
	require.Equal(t, 1, strings.Count(ce.Message, "sandbox jo "), ce.Message)
	require.Contains(t, ce.Message, "(fix the cause and run connect again); or remove it with `sbx disconnect jo`")
}

// TestConnectFailureHintNotRepeated: a cause that carries its own next
// step (a kubeconfig error, a sandbox taken over by another daemon) is not
// followed by a second, generic "run connect again"; one without gets it.
func TestConnectFailureHintNotRepeated(t *testing.T) {
	for _, tc := range []struct {
		name string
		err  error
		want string
	}{
		{"kubeconfig", &live.KubeconfigError{Err: errors.New(`context "gone" not found`), Hint: "pass --kubeconfig/--context, and connect again"},
			`context "gone" not found (pass --kubeconfig/--context, and connect again); or remove it with ` + "`sbx disconnect jo`"},
		{"taken over", &nextStepError{errors.New("replaced by another client"), "run sbx connect here again to take the sandbox back"},
			"replaced by another client (run sbx connect here again to take the sandbox back); or remove it with `sbx disconnect jo`"},
		{"no step of its own", errors.New("relay image refused"),
			"relay image refused (fix the cause and run connect again); or remove it with `sbx disconnect jo`"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			open := func(context.Context, api.KubeconfigSource, string) (Cluster, error) {
				return nil, &PermanentError{tc.err}
			}
			td := startDaemon(t, Options{Clusters: open, link: (&fakeLinker{}).link})
			_, err := td.client.Connect(context.Background(), api.ConnectRequest{Spec: testSpec("jo", "localhost:1"), Wait: true, Timeout: time.Minute}, nil)
			var ce *api.ConnectError
			require.ErrorAs(t, err, &ce)
			require.Equal(t, 1, strings.Count(ce.Message, " again"), ce.Message)
			require.Contains(t, ce.Message, tc.want)
		})
	}
}

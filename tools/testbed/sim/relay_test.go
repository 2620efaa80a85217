package sim

import (
	"context"
	"io"
	"net"
	"net/http"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/sbx-dev/sbx/cluster/podstate"
	"github.com/sbx-dev/sbx/cluster/portforward"
	"github.com/sbx-dev/sbx/tunnel"
	"github.com/stretchr/testify/require"
	networking "istio.io/api/networking/v1alpha3"
	appsv1 "k8s.io/api/apps/v1"
	coordv1 "k8s.io/api/coordination/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// TestRealRelayEndToEnd runs the real relay from a relay Deployment, reaches
// it through the real port-forward path, and plays the daemon's part with
// the tunnel package directly: keyed requests reach a local v2 route, whose
// own call to driver goes back through the tunnel to baseline.
func TestRealRelayEndToEnd(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	c, err := Start(ctx, Options{Logger: testLogger(t), WithoutBaselineVirtualService: true})
	require.NoError(t, err)
	defer c.Close()
	ns := AppNamespace
	kube := c.Clients.Kube

	lease, err := kube.CoordinationV1().Leases(ns).Create(ctx, &coordv1.Lease{ObjectMeta: metav1.ObjectMeta{Name: "sbx-alice", Namespace: ns}}, metav1.CreateOptions{})
	require.NoError(t, err)
	secret, dep, svc := relayObjects(ns, "alice", "0123456789abcdef0123456789abcdef", string(lease.UID))
	createRelay(ctx, t, c, secret, dep, svc)
	_, err = c.Clients.Istio.NetworkingV1().VirtualServices(ns).Create(ctx, newVS(ns, "route", []string{"route"},
		&networking.HTTPRoute{
			Match: []*networking.HTTPMatchRequest{{Headers: map[string]*networking.StringMatch{
				"baggage": regex(`(.*,)?\s*sbx-routing-key\s*=\s*alicekey\s*(;[^,]*)?(,.*)?`)}}},
			Route: routeTo("route-sbx-alice"),
		},
		&networking.HTTPRoute{Route: routeTo("route")},
	), metav1.CreateOptions{})
	require.NoError(t, err)

	d, err := portforward.New(portforward.Config{REST: c.RESTConfig, Client: kube, Namespace: ns,
		Selector: "sbx.dev/sandbox=alice", Port: 7000, Logger: testLogger(t)})
	require.NoError(t, err)
	defer d.Close()
	conn, err := d.Dial(ctx)
	require.NoError(t, err)
	sess, welcome, err := tunnel.Client(ctx, conn, tunnel.DefaultConfig(), tunnel.Hello{
		Token: string(secret.StringData["token"]), ClientID: "test", Sandbox: "alice", User: "dev@laptop"})
	require.NoError(t, err)
	defer sess.Close()
	require.Equal(t, "sim", welcome.RelayVersion)
	// What the relay logs is its pod's log (kubectl logs).
	relayPod, ok := c.RelayPod(ns, dep.Name)
	require.True(t, ok)
	require.Eventually(t, func() bool {
		lines, _, _ := c.logs.lines(ns, relayPod, 0)
		return len(lines) > 0
	}, 5*time.Second, 10*time.Millisecond, "the relay pod's log is empty")

	// The laptop: v2 route calling driver through the tunnel.
	viaTunnel := &http.Client{Transport: &http.Transport{
		DialContext: func(ctx context.Context, _, addr string) (net.Conn, error) {
			return sess.Open(ctx, tunnel.Header{Kind: tunnel.KindOutbound, Target: addr})
		},
	}}
	defer viaTunnel.CloseIdleConnections()
	local, err := StartLocalRoute("127.0.0.1:0", []string{"http://driver.hotrod.svc.cluster.local:8082/driver"}, viaTunnel, testLogger(t))
	require.NoError(t, err)
	defer local.Close()
	served := make(chan struct{})
	go func() {
		defer close(served)
		var streams sync.WaitGroup
		defer streams.Wait()
		for {
			st, err := sess.Accept(ctx)
			if err != nil {
				return
			}
			streams.Add(1)
			go func() {
				defer streams.Done()
				defer st.Close()
				lc, err := net.Dial("tcp", local.Addr())
				if err != nil {
					_ = st.Reject(tunnel.ReasonRefused, err.Error())
					return
				}
				if st.Accept() != nil {
					lc.Close()
					return
				}
				_ = tunnel.Pipe(ctx, st, lc)
			}()
		}
	}()

	client := c.HTTPClient(ns)
	defer client.CloseIdleConnections()
	eventuallyPath(t, client, "sbx-routing-key=alicekey", "frontend@baseline(route@v2(driver@baseline), driver@baseline)")
	_, hop, _ := get(t, client, "http://frontend:8080/dispatch", "")
	require.Equal(t, "frontend@baseline(route@baseline, driver@baseline)", hop.String())

	// The relay's dial policy refuses the cloud metadata address.
	_, err = sess.Open(ctx, tunnel.Header{Kind: tunnel.KindOutbound, Target: "169.254.169.254:80"})
	var de *tunnel.DialError
	require.ErrorAs(t, err, &de)
	require.Equal(t, tunnel.ReasonDenied, de.Reason)

	sess.Close()
	<-served
}

// TestRelayOfflineThroughMesh: with no laptop connected, the relay holds a
// keyed request for --grace and answers 503 naming the sandbox. Istio's
// default retry policy (1.24 and later, which the mesh follows) does not
// retry a 503, so the relay answers once. (Up to 1.23 it retried twice;
// sbx's keyed routes set their own policy for that reason.)
func TestRelayOfflineThroughMesh(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	c, err := Start(ctx, Options{Logger: testLogger(t), WithoutBaselineVirtualService: true})
	require.NoError(t, err)
	defer c.Close()
	ns := AppNamespace
	secret, dep, svc := relayObjects(ns, "alice", "0123456789abcdef0123456789abcdef", "")
	args := dep.Spec.Template.Spec.Containers[0].Args
	i := slices.Index(args, "--grace")
	require.True(t, i >= 0 && i+1 < len(args), "relayObjects passes --grace VALUE for the test to shorten: %q", args)
	args[i+1] = "200ms"
	pod := createRelay(ctx, t, c, secret, dep, svc)

	client := c.HTTPClient(ns)
	defer client.CloseIdleConnections()
	var resp *http.Response
	var body []byte
	require.Eventually(t, func() bool {
		resp, err = client.Get("http://route-sbx-alice:8083/route")
		require.NoError(t, err)
		body, _ = io.ReadAll(resp.Body)
		resp.Body.Close()
		return resp.StatusCode != http.StatusServiceUnavailable || !strings.Contains(string(body), "no healthy upstream")
	}, 10*time.Second, 20*time.Millisecond)
	require.Equal(t, http.StatusServiceUnavailable, resp.StatusCode, string(body))
	require.Contains(t, string(body), "alice", "the relay's 503 names the offline sandbox")

	// One relay answer for one request: no retry of the 503.
	addr, err := c.Network.PodPortAddr(ns, pod.Name, 7001)
	require.NoError(t, err)
	require.Eventually(t, func() bool {
		m, err := http.Get("http://" + addr + "/metrics")
		if err != nil {
			return false
		}
		defer m.Body.Close()
		b, _ := io.ReadAll(m.Body)
		for _, line := range strings.Split(string(b), "\n") {
			if strings.HasPrefix(line, "sbx_relay_http_answers_total") && strings.Contains(line, `"503"`) {
				return strings.HasSuffix(line, " 1")
			}
		}
		return false
	}, 5*time.Second, 20*time.Millisecond)
	http.DefaultClient.CloseIdleConnections()
}

// createRelay creates a relay's Secret, Deployment and Service, in the order
// sbx applies them, and returns the relay pod once it passes the template's
// readiness probe.
func createRelay(ctx context.Context, t *testing.T, c *Cluster, secret *corev1.Secret, dep *appsv1.Deployment, svc *corev1.Service) *corev1.Pod {
	t.Helper()
	kube := c.Clients.Kube
	_, err := kube.CoreV1().Secrets(dep.Namespace).Create(ctx, secret, metav1.CreateOptions{})
	require.NoError(t, err)
	_, err = kube.AppsV1().Deployments(dep.Namespace).Create(ctx, dep, metav1.CreateOptions{})
	require.NoError(t, err)
	_, err = kube.CoreV1().Services(dep.Namespace).Create(ctx, svc, metav1.CreateOptions{})
	require.NoError(t, err)
	var pod *corev1.Pod
	require.Eventually(t, func() bool {
		pod = relayPodObject(t, c, dep.Namespace, dep.Labels["sbx.dev/sandbox"])
		return pod != nil && podstate.Ready(pod)
	}, 20*time.Second, 10*time.Millisecond, "the real relay passes the template's readiness probe")
	return pod
}

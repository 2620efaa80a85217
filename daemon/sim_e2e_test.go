package daemon

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/sbx-dev/sbx/cluster"
	"github.com/sbx-dev/sbx/cluster/kube"
	"github.com/sbx-dev/sbx/cluster/live"
	"github.com/sbx-dev/sbx/daemon/api"
	"github.com/sbx-dev/sbx/tools/testbed/sim"
	"github.com/sbx-dev/sbx/tunnel"
)

// TestSimulatedCluster runs the whole path on the simulated cluster: the
// real cluster objects, the real port-forward (client-go against the
// kubelet's handler), the real relay in its simulated pod, the mesh
// routing on the baggage header, and this daemon.
func TestSimulatedCluster(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a simulated cluster")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	c, err := sim.Start(ctx, sim.Options{Logger: testLogger(t).With("component", "sim")})
	require.NoError(t, err)
	t.Cleanup(c.Close)
	kc := live.NewFromKube(&kube.Cluster{
		REST: c.RESTConfig, Kube: c.Clients.Kube, Istio: c.Clients.Istio,
		Namespace: sim.AppNamespace, Context: "sim",
	}, live.Options{Logger: testLogger(t), DefaultRelayImage: "ghcr.io/sbx-dev/sbx:test", WaitTimeout: 30 * time.Second,
		// Only the watch on VirtualServices can repair the routes in time.
		RouteResync: time.Hour})
	t.Cleanup(func() { _ = kc.Close() })

	svc := localService(t)
	cfg := shortTunnelConfig()
	// A raised relay stream cap and a deny list, carried from the user
	// config to the relay Deployment (and accepted by the relay the
	// simulated pod runs).
	cfgPath := filepath.Join(shortTempDir(t), "config.yaml")
	require.NoError(t, os.WriteFile(cfgPath, []byte("relayMaxStreams: 512\noutbound:\n  deny: [10.0.0.0/24]\n"), 0o600))
	td := startDaemon(t, Options{
		Clusters:      func(context.Context, api.KubeconfigSource, string) (Cluster, error) { return kc, nil },
		Tunnel:        &cfg,
		LeaseInterval: 50 * time.Millisecond,
		ConfigPath:    cfgPath,
	})
	var progress []string
	st, err := td.client.Connect(ctx, api.ConnectRequest{Spec: testSpec("alice", svc.Addr().String()), Wait: true, Timeout: time.Minute},
		func(p api.Progress) { progress = append(progress, string(p.Phase)+" "+p.Message) })
	require.NoError(t, err, strings.Join(progress, "\n"))
	require.Equal(t, api.PhaseReady, st.Phase)
	require.Equal(t, []string{"route.hotrod"}, st.Mappings[0].Services)
	require.True(t, st.Mappings[0].Listening)
	require.Contains(t, strings.Join(progress, "\n"), "created Deployment hotrod/")
	dep, err := c.Clients.Kube.AppsV1().Deployments(sim.AppNamespace).Get(ctx, cluster.RelayName("alice"), metav1.GetOptions{})
	require.NoError(t, err)
	relayC := dep.Spec.Template.Spec.Containers[0]
	require.Equal(t, []string{"--max-streams", "512", "--deny", "10.0.0.0/24"}, relayC.Args[len(relayC.Args)-4:])
	require.Equal(t, "768Mi", relayC.Resources.Limits.Memory().String())

	// The relay in the pod refuses the configured range, its NAT64 form,
	// and the metadata address, and says why.
	for target, why := range map[string]string{
		"10.0.0.5:80":             "relay refuses to dial 10.0.0.5:80: 10.0.0.0/24 is denied by --deny (outbound.deny in the sbx config)",
		"[64:ff9b::a00:5]:80":     "it is the NAT64 form of 10.0.0.5: 10.0.0.0/24 is denied by --deny",
		"100.100.100.200:80":      "Alibaba Cloud metadata service 100.100.100.200 is never dialed",
		"[64:ff9b::a9fe:a9fe]:80": "it is the NAT64 form of 169.254.169.254: link-local (cloud metadata service)",
	} {
		_, err := td.d.DialOutbound(ctx, "alice", target, "test")
		var de *tunnel.DialError
		require.ErrorAs(t, err, &de, target)
		require.Equal(t, tunnel.ReasonDenied, de.Reason, target)
		require.Contains(t, err.Error(), why)
	}

	client := c.HTTPClient(sim.AppNamespace)
	defer client.CloseIdleConnections()
	call := func(baggage string) (int, string) {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://route:8083/route", nil)
		require.NoError(t, err)
		if baggage != "" {
			req.Header.Set("baggage", baggage)
		}
		resp, err := client.Do(req)
		require.NoError(t, err)
		defer resp.Body.Close()
		b, err := io.ReadAll(resp.Body)
		require.NoError(t, err)
		return resp.StatusCode, string(b)
	}
	keyed := "other=1, " + st.BaggageKey + "=" + st.RoutingKey
	code, body := call(keyed)
	require.Equal(t, http.StatusOK, code, body)
	require.Contains(t, body, "from the laptop: GET /route")
	code, body = call("")
	require.Equal(t, http.StatusOK, code, body)
	require.NotContains(t, body, "from the laptop", "unkeyed requests stay on the baseline")
	require.NotNil(t, st.Routes)
	require.Equal(t, api.KeyedSandbox, st.Routes.Keyed, st.Routes.Message)
	require.Zero(t, st.Routes.Restored)

	// A CD sync puts CD's VirtualService back as it is in git, without the
	// sandbox's routes: the daemon restores them within seconds and says
	// so in its status.
	vsc := c.Clients.Istio.NetworkingV1().VirtualServices(sim.AppNamespace)
	live, err := vsc.Get(ctx, "route", metav1.GetOptions{})
	require.NoError(t, err)
	require.Len(t, live.Spec.Http, 2, "the twin before CD's route")
	live.Spec.Http = sim.BaselineVirtualService().Spec.Http
	_, err = vsc.Update(ctx, live, metav1.UpdateOptions{})
	require.NoError(t, err)
	require.Eventually(t, func() bool {
		sb, err := td.client.Sandbox(ctx, "alice")
		return err == nil && sb.Routes != nil && sb.Routes.Restored == 1 && sb.Routes.Keyed == api.KeyedSandbox
	}, 30*time.Second, 20*time.Millisecond)
	require.Eventually(t, func() bool {
		code, body := call(keyed)
		return code == http.StatusOK && strings.Contains(body, "from the laptop")
	}, 30*time.Second, 50*time.Millisecond)
	sb0, err := td.client.Sandbox(ctx, "alice")
	require.NoError(t, err)
	require.Equal(t, []string{sim.AppNamespace + "/route"}, sb0.Routes.RestoredIn)

	// The relay container is killed (kill -9); the kubelet restarts it and
	// the daemon reconnects with the same key.
	require.NoError(t, c.CrashRelay(sim.AppNamespace, relayDeploymentOf(t, c)))
	require.Eventually(t, func() bool {
		sb, err := td.client.Sandbox(ctx, "alice")
		return err == nil && sb.Reconnects >= 1 && sb.Phase == api.PhaseReady
	}, time.Minute, 20*time.Millisecond)
	require.Eventually(t, func() bool {
		code, body := call(keyed)
		return code == http.StatusOK && strings.Contains(body, "from the laptop")
	}, 30*time.Second, 50*time.Millisecond)
	sb, err := td.client.Sandbox(ctx, "alice")
	require.NoError(t, err)
	require.Equal(t, st.RoutingKey, sb.RoutingKey)

	// Someone deletes the sandbox's Lease (gc from another laptop after a
	// long sleep, kubectl delete): the daemon notices and re-applies with
	// the same key.
	applied := func() int {
		sb, _ := td.client.Sandbox(ctx, "alice")
		return sb.Reconnects
	}
	before := applied()
	require.NoError(t, c.Clients.Kube.CoordinationV1().Leases(sim.AppNamespace).Delete(ctx, cluster.LeaseName("alice"), metav1.DeleteOptions{}))
	require.Eventually(t, func() bool { return applied() > before }, time.Minute, 20*time.Millisecond)
	require.Eventually(t, func() bool {
		_, err := c.Clients.Kube.CoordinationV1().Leases(sim.AppNamespace).Get(ctx, cluster.LeaseName("alice"), metav1.GetOptions{})
		return err == nil
	}, time.Minute, 20*time.Millisecond)
	require.Eventually(t, func() bool {
		code, body := call(keyed)
		return code == http.StatusOK && strings.Contains(body, "from the laptop")
	}, time.Minute, 50*time.Millisecond)

	// list sees it in the cluster and the daemon; disconnect removes it.
	res, err := td.client.List(ctx, api.ClusterRequest{}, true)
	require.NoError(t, err)
	require.Empty(t, res.ClusterError)
	require.Len(t, res.Sandboxes, 1)
	require.True(t, res.Sandboxes[0].InCluster && res.Sandboxes[0].InDaemon && !res.Sandboxes[0].Orphan)

	_, err = td.client.Disconnect(ctx, "alice")
	require.NoError(t, err)
	code, body = call(keyed)
	require.Equal(t, http.StatusOK, code, body)
	require.NotContains(t, body, "from the laptop", "after disconnect the key goes to the baseline")
	res, err = td.client.List(ctx, api.ClusterRequest{}, true)
	require.NoError(t, err)
	require.Empty(t, res.Sandboxes)
}

// relayDeploymentOf returns the name of the one relay Deployment.
func relayDeploymentOf(t *testing.T, c *sim.Cluster) string {
	deps := c.RelayDeployments()
	require.Len(t, deps, 1)
	_, name, _ := strings.Cut(deps[0], "/")
	return name
}

// TestRelayRolloutLosesNothing: the relay Deployment rolls out (a
// `kubectl rollout restart`, a new sbx image) while keyed requests reach
// the laptop and the laptop calls the cluster. The new pod starts before
// the old one stops; the old relay tells the daemon it is draining, the
// daemon opens sessions to the new pod at once, and the old one finishes
// what it serves. Not one request may fail.
func TestRelayRolloutLosesNothing(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a simulated cluster")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	c, err := sim.Start(ctx, sim.Options{Logger: testLogger(t).With("component", "sim")})
	require.NoError(t, err)
	t.Cleanup(c.Close)
	kc := live.NewFromKube(&kube.Cluster{
		REST: c.RESTConfig, Kube: c.Clients.Kube, Istio: c.Clients.Istio,
		Namespace: sim.AppNamespace, Context: "sim",
	}, live.Options{Logger: testLogger(t), DefaultRelayImage: "ghcr.io/sbx-dev/sbx:test", WaitTimeout: 30 * time.Second})
	t.Cleanup(func() { _ = kc.Close() })
	svc := localService(t)
	cfg := shortTunnelConfig()
	td := startDaemon(t, Options{
		Clusters:      func(context.Context, api.KubeconfigSource, string) (Cluster, error) { return kc, nil },
		Tunnel:        &cfg,
		LeaseInterval: 50 * time.Millisecond,
	})
	st, err := td.client.Connect(ctx, api.ConnectRequest{Spec: testSpec("alice", svc.Addr().String()), Wait: true, Timeout: time.Minute}, nil)
	require.NoError(t, err)
	require.Equal(t, api.PhaseReady, st.Phase)
	depName := relayDeploymentOf(t, c)
	oldPod, ok := c.RelayPod(sim.AppNamespace, depName)
	require.True(t, ok)

	client := c.HTTPClient(sim.AppNamespace)
	defer client.CloseIdleConnections()
	inbound := func() error { return keyedRouteCall(ctx, client, st) }
	outbound := func() error { return outboundRouteCall(ctx, td.d) }
	require.NoError(t, inbound())
	require.NoError(t, outbound())

	// Load in both directions until told to stop.
	type tally struct {
		ok   int
		errs []error
		max  time.Duration
	}
	stop := make(chan struct{})
	results := make([]tally, 2)
	var wg sync.WaitGroup
	for i, f := range []func() error{inbound, outbound} {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				select {
				case <-stop:
					return
				default:
				}
				start := time.Now()
				err := f()
				results[i].max = max(results[i].max, time.Since(start))
				if err != nil {
					results[i].errs = append(results[i].errs, err)
				} else {
					results[i].ok++
				}
			}
		}()
	}

	// kubectl rollout restart.
	rolloutStart := time.Now()
	deps := c.Clients.Kube.AppsV1().Deployments(sim.AppNamespace)
	dep, err := deps.Get(ctx, depName, metav1.GetOptions{})
	require.NoError(t, err)
	if dep.Spec.Template.Annotations == nil {
		dep.Spec.Template.Annotations = map[string]string{}
	}
	dep.Spec.Template.Annotations["kubectl.kubernetes.io/restartedAt"] = time.Now().Format(time.RFC3339)
	_, err = deps.Update(ctx, dep, metav1.UpdateOptions{})
	require.NoError(t, err)
	// The old pod is gone (its Pod object deleted after its drain).
	require.Eventually(t, func() bool {
		_, err := c.Clients.Kube.CoreV1().Pods(sim.AppNamespace).Get(ctx, oldPod, metav1.GetOptions{})
		return apierrors.IsNotFound(err)
	}, time.Minute, 20*time.Millisecond)
	rolled := time.Since(rolloutStart)
	// And traffic keeps flowing on the new pod for a while.
	time.Sleep(500 * time.Millisecond)
	close(stop)
	wg.Wait()
	newPod, _ := c.RelayPod(sim.AppNamespace, depName)
	require.NotEqual(t, oldPod, newPod)
	t.Logf("rollout %s -> %s in %s; inbound %d ok (slowest %s), outbound %d ok (slowest %s)",
		oldPod, newPod, rolled.Round(time.Millisecond), results[0].ok, results[0].max.Round(time.Millisecond),
		results[1].ok, results[1].max.Round(time.Millisecond))
	require.Empty(t, results[0].errs, "keyed requests failed during the rollout")
	require.Empty(t, results[1].errs, "laptop-to-cluster calls failed during the rollout")
	require.Positive(t, results[0].ok)
	require.Positive(t, results[1].ok)
	sb, err := td.client.Sandbox(ctx, "alice")
	require.NoError(t, err)
	require.Equal(t, api.PhaseReady, sb.Phase)
	require.Zero(t, sb.Reconnects, "a rollout is not a reconnect")
}

// outboundRouteCall is what a local process does through outbound access:
// a GET of route's /route over a connection d dials for sandbox alice,
// checked for a 200 and a whole body.
func outboundRouteCall(ctx context.Context, d *Daemon) error {
	conn, err := d.DialOutbound(ctx, "alice", "route.hotrod.svc.cluster.local:8083", "127.0.0.1:40000")
	if err != nil {
		return fmt.Errorf("outbound dial: %w", err)
	}
	defer conn.Close()
	req, _ := http.NewRequest(http.MethodGet, "http://route.hotrod.svc.cluster.local:8083/route", nil)
	req.Close = true
	if err := req.Write(conn); err != nil {
		return fmt.Errorf("outbound write: %w", err)
	}
	resp, err := http.ReadResponse(bufio.NewReader(conn), req)
	if err != nil {
		return fmt.Errorf("outbound read: %w", err)
	}
	defer resp.Body.Close()
	if _, err := io.Copy(io.Discard, resp.Body); err != nil {
		return fmt.Errorf("outbound body: %w", err)
	}
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("outbound: %d", resp.StatusCode)
	}
	return nil
}

// keyedRouteCall sends one keyed request for route through the mesh, as a
// caller in the cluster would, and says whether the laptop answered it.
func keyedRouteCall(ctx context.Context, client *http.Client, st api.SandboxStatus) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://route:8083/route", nil)
	if err != nil {
		return err
	}
	req.Header.Set("baggage", st.BaggageKey+"="+st.RoutingKey)
	resp, err := client.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return err
	}
	if resp.StatusCode != http.StatusOK || !strings.Contains(string(b), "from the laptop") {
		return fmt.Errorf("keyed request: %d %s", resp.StatusCode, b)
	}
	return nil
}

package daemon

import (
	"context"
	"encoding/json"
	"net/http"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	appsv1 "k8s.io/api/apps/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/sbx-dev/sbx/cluster"
	"github.com/sbx-dev/sbx/cluster/kube"
	"github.com/sbx-dev/sbx/cluster/live"
	"github.com/sbx-dev/sbx/cluster/spec"
	"github.com/sbx-dev/sbx/daemon/api"
	"github.com/sbx-dev/sbx/tools/testbed/sim"
	"github.com/sbx-dev/sbx/tunnel"
)

// simEnv is a simulated cluster with what a daemon needs to use it.
type simTokenEnv struct {
	t   *testing.T
	ctx context.Context
	c   *sim.Cluster
	svc string // the laptop's service
	cfg tunnel.Config
}

func startSimTokenEnv(t *testing.T) *simTokenEnv {
	if testing.Short() {
		t.Skip("starts a simulated cluster")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	t.Cleanup(cancel)
	c, err := sim.Start(ctx, sim.Options{Logger: testLogger(t).With("component", "sim")})
	require.NoError(t, err)
	t.Cleanup(c.Close)
	return &simTokenEnv{t: t, ctx: ctx, c: c, svc: localService(t).Addr().String(), cfg: shortTunnelConfig()}
}

// cluster is a fresh connection to the simulated cluster, as one daemon
// (one laptop) has.
func (e *simTokenEnv) cluster() Cluster {
	kc := live.NewFromKube(&kube.Cluster{
		REST: e.c.RESTConfig, Kube: e.c.Clients.Kube, Istio: e.c.Clients.Istio,
		Namespace: sim.AppNamespace, Context: "sim",
	}, live.Options{Logger: testLogger(e.t), DefaultRelayImage: "ghcr.io/sbx-dev/sbx:test", WaitTimeout: 30 * time.Second})
	e.t.Cleanup(func() { _ = kc.Close() })
	return kc
}

// daemon starts a daemon keeping its state in paths, with real tokens.
func (e *simTokenEnv) daemon(paths api.Paths, kc Cluster) *testDaemon {
	cfg := e.cfg
	return startDaemon(e.t, Options{
		Paths:         paths,
		Clusters:      func(context.Context, api.KubeconfigSource, string) (Cluster, error) { return kc, nil },
		Tunnel:        &cfg,
		LeaseInterval: 50 * time.Millisecond,
	})
}

func (e *simTokenEnv) connect(td *testDaemon) api.SandboxStatus {
	st, err := td.client.Connect(e.ctx, api.ConnectRequest{Spec: testSpec("alice", e.svc), Wait: true, Timeout: time.Minute}, nil)
	require.NoError(e.t, err)
	require.Equal(e.t, api.PhaseReady, st.Phase)
	return st
}

func (e *simTokenEnv) relayDeployment() *appsv1.Deployment {
	d, err := e.c.Clients.Kube.AppsV1().Deployments(sim.AppNamespace).Get(e.ctx, cluster.RelayName("alice"), metav1.GetOptions{})
	require.NoError(e.t, err)
	return d
}

// relayVerifier is the --token-sha256 the relay Deployment passes.
func (e *simTokenEnv) relayVerifier() string {
	args := e.relayDeployment().Spec.Template.Spec.Containers[0].Args
	for i, a := range args {
		if a == "--token-sha256" && i+1 < len(args) {
			return args[i+1]
		}
	}
	return ""
}

func (e *simTokenEnv) relayPod() string {
	p, ok := e.c.RelayPod(sim.AppNamespace, cluster.RelayName("alice"))
	require.True(e.t, ok)
	return p
}

// keyed sends one keyed request through the mesh and says whether the
// laptop answered it.
func (e *simTokenEnv) keyed(client *http.Client, st api.SandboxStatus) error {
	return keyedRouteCall(e.ctx, client, st)
}

func (e *simTokenEnv) eventuallyKeyed(st api.SandboxStatus) {
	client := e.c.HTTPClient(sim.AppNamespace)
	defer client.CloseIdleConnections()
	require.Eventually(e.t, func() bool { return e.keyed(client, st) == nil }, time.Minute, 50*time.Millisecond)
}

// savedToken reads the sandbox's token from the daemon's state file, the
// one place it is kept.
func savedToken(t *testing.T, paths api.Paths) string {
	b, err := os.ReadFile(paths.State())
	require.NoError(t, err)
	var doc stateDoc
	require.NoError(t, json.Unmarshal(b, &doc))
	require.Len(t, doc.Sandboxes, 1)
	require.NotEmpty(t, doc.Sandboxes[0].Token)
	return doc.Sandboxes[0].Token
}

// TestSimTokenSurvivesRestartNotStateLoss: a daemon restarted with its
// state reconnects with its token: same key, relay Deployment untouched,
// same relay pod. A daemon whose state is gone connects the sandbox again
// with a new token: its verifier replaces the old one, the relay rolls, and
// keyed requests reach the laptop through the new pod.
func TestSimTokenSurvivesRestartNotStateLoss(t *testing.T) {
	e := startSimTokenEnv(t)
	paths := testPaths(t)
	kc := e.cluster()
	td := e.daemon(paths, kc)
	st := e.connect(td)
	token := savedToken(t, paths)
	require.Equal(t, tunnel.VerifierOf(token).String(), e.relayVerifier(), "the relay checks the daemon's token")
	dep, pod := e.relayDeployment(), e.relayPod()
	e.eventuallyKeyed(st)
	td.stop()

	td = e.daemon(paths, kc)
	st2 := waitPhase(t, td.client, "alice", api.PhaseReady)
	require.Equal(t, st.RoutingKey, st2.RoutingKey)
	require.Equal(t, token, savedToken(t, paths))
	again := e.relayDeployment()
	require.Equal(t, dep.Generation, again.Generation, "no rollout: the Deployment was not written")
	require.Equal(t, dep.ResourceVersion, again.ResourceVersion)
	require.Equal(t, pod, e.relayPod())
	e.eventuallyKeyed(st2)
	td.stop()

	// The laptop lost its state: the sandbox is connected again.
	require.NoError(t, os.Remove(paths.State()))
	td = e.daemon(paths, kc)
	st3 := e.connect(td)
	token3 := savedToken(t, paths)
	require.NotEqual(t, token, token3)
	require.Equal(t, tunnel.VerifierOf(token3).String(), e.relayVerifier(), "the new token's verifier replaced the old one")
	require.Greater(t, e.relayDeployment().Generation, dep.Generation, "the relay rolled")
	require.Eventually(t, func() bool {
		_, err := e.c.Clients.Kube.CoreV1().Pods(sim.AppNamespace).Get(e.ctx, pod, metav1.GetOptions{})
		return apierrors.IsNotFound(err)
	}, time.Minute, 20*time.Millisecond, "the old relay pod goes")
	e.eventuallyKeyed(st3)
	sb, err := td.client.Sandbox(e.ctx, "alice")
	require.NoError(t, err)
	require.Equal(t, api.PhaseReady, sb.Phase)
}

// TestSimRotateTokenUnderLoad: `sbx connect alice --rotate-token` while
// keyed requests reach the laptop and the laptop calls the cluster. The
// relay rolls to a pod that checks the new token; the tunnel stays up and
// moves to it as the old pod drains. No keyed request started after the
// new relay is ready fails (nor, as it happens, any before), the daemon
// does not reconnect, and the old token is refused afterwards.
func TestSimRotateTokenUnderLoad(t *testing.T) {
	e := startSimTokenEnv(t)
	paths := testPaths(t)
	kc := e.cluster()
	td := e.daemon(paths, kc)
	st := e.connect(td)
	oldToken, oldPod := savedToken(t, paths), e.relayPod()

	client := e.c.HTTPClient(sim.AppNamespace)
	defer client.CloseIdleConnections()
	outbound := func() error { return outboundRouteCall(e.ctx, td.d) }
	require.NoError(t, e.keyed(client, st))
	require.NoError(t, outbound())

	type call struct {
		start time.Time
		err   error
	}
	var mu sync.Mutex
	calls := [2][]call{}
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for i, f := range []func() error{func() error { return e.keyed(client, st) }, outbound} {
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
				mu.Lock()
				calls[i] = append(calls[i], call{start, err})
				mu.Unlock()
			}
		}()
	}

	rotateStart := time.Now()
	st2, err := td.client.Connect(e.ctx, api.ConnectRequest{Spec: spec.Sandbox{Name: "alice"}, RotateToken: true, Wait: true, Timeout: time.Minute}, nil)
	require.NoError(t, err)
	newReady := time.Now() // the relay for the new token is ready
	require.Equal(t, api.PhaseReady, st2.Phase)
	require.Eventually(t, func() bool {
		_, err := e.c.Clients.Kube.CoreV1().Pods(sim.AppNamespace).Get(e.ctx, oldPod, metav1.GetOptions{})
		return apierrors.IsNotFound(err)
	}, time.Minute, 20*time.Millisecond, "the old relay pod goes")
	rolled := time.Since(rotateStart)
	time.Sleep(500 * time.Millisecond) // and traffic goes on through the new pod
	close(stop)
	wg.Wait()

	newToken := savedToken(t, paths)
	require.NotEqual(t, oldToken, newToken)
	require.Equal(t, tunnel.VerifierOf(newToken).String(), e.relayVerifier())
	require.NotEqual(t, oldPod, e.relayPod())
	for i, name := range []string{"keyed requests", "laptop-to-cluster calls"} {
		var before, after, failedBefore []string
		for _, c := range calls[i] {
			switch {
			case c.err == nil && c.start.Before(newReady):
				before = append(before, "ok")
			case c.err == nil:
				after = append(after, "ok")
			case c.start.Before(newReady):
				failedBefore = append(failedBefore, c.err.Error())
			default:
				t.Errorf("%s: started %s after the new relay was ready, failed: %v", name, c.start.Sub(newReady).Round(time.Millisecond), c.err)
			}
		}
		t.Logf("rotation %s -> %s in %s: %s: %d ok before the new relay was ready, %d failed, %d ok after",
			oldPod, e.relayPod(), rolled.Round(time.Millisecond), name, len(before), len(failedBefore), len(after))
		require.Positive(t, len(after), name)
		require.Empty(t, failedBefore, "%s: the tunnel stays up through a rotation", name)
	}
	sb, err := td.client.Sandbox(e.ctx, "alice")
	require.NoError(t, err)
	require.Equal(t, api.PhaseReady, sb.Phase)
	require.Zero(t, sb.Reconnects, "a rotation is not a reconnect")
	require.Equal(t, st.RoutingKey, sb.RoutingKey)

	// The old token is refused now; the daemon's sessions carry on.
	conn, err := kc.DialRelay(e.ctx, cluster.Ref{Name: "alice", RoutingKey: st.RoutingKey, Namespace: sim.AppNamespace})
	require.NoError(t, err)
	_, _, err = tunnel.Client(e.ctx, conn, e.cfg, tunnel.Hello{Token: oldToken, ClientID: "old-token", Sandbox: "alice", User: "mallory@elsewhere"})
	require.ErrorIs(t, err, tunnel.ErrBadToken)
	require.NoError(t, e.keyed(client, st))
}

// TestSimSecondDaemonDoesNotFight: a second laptop connects the same
// sandbox with its own token. Its verifier replaces the first's; the first
// daemon loses its relay, finds another verifier when it re-applies on its
// own, and stops saying why and how to take the sandbox back, rather than
// re-applying its own (which would break the second's tunnel, and so on in
// turn).
func TestSimSecondDaemonDoesNotFight(t *testing.T) {
	e := startSimTokenEnv(t)
	first := e.daemon(testPaths(t), e.cluster())
	e.connect(first)
	second := e.daemon(testPaths(t), e.cluster())
	st := e.connect(second)

	var sb api.SandboxStatus
	require.Eventually(t, func() bool {
		var err error
		sb, err = first.client.Sandbox(e.ctx, "alice")
		return err == nil && sb.Phase == api.PhaseFailed
	}, time.Minute, 20*time.Millisecond)
	for _, want := range []string{"sandbox alice", "the relay's verifier does not match this daemon's token: the relay was re-created by another daemon or its Deployment was edited",
		"this daemon stopped reconnecting", "sbx connect alice --rotate-token"} {
		require.Contains(t, sb.LastError, want)
	}
	e.eventuallyKeyed(st)
	gen := e.relayDeployment().Generation
	time.Sleep(time.Second)
	require.Equal(t, gen, e.relayDeployment().Generation, "nobody re-applies the relay")
	sb2, err := second.client.Sandbox(e.ctx, "alice")
	require.NoError(t, err)
	require.Equal(t, api.PhaseReady, sb2.Phase)
	require.Zero(t, sb2.Reconnects, "the second daemon's tunnel was left alone")
}

package sim

import (
	"bufio"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	appsv1 "k8s.io/api/apps/v1"
	coordv1 "k8s.io/api/coordination/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/apimachinery/pkg/watch"

	"github.com/sbx-dev/sbx/cluster/podstate"
	"github.com/sbx-dev/sbx/tunnel"
)

// fakeRelay stands in for the relay: it parses the flags the relay takes,
// listens where told (through the simulator's Listen hook), answers
// /readyz, writes the token on each tunnel connection and answers HTTP on
// inbound ports.
func fakeRelay(ctx context.Context, p RelayProcess) error {
	fs := flag.NewFlagSet("relay", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	sandbox := fs.String("sandbox", "", "")
	listen := fs.String("listen", "127.0.0.1:7000", "")
	health := fs.String("health-listen", ":7001", "")
	fs.String("token-sha256", "", "")
	fs.String("grace", "", "")
	fs.String("drain-timeout", "", "")
	var inbound []string
	fs.Func("inbound", "", func(s string) error { inbound = append(inbound, s); return nil })
	if err := fs.Parse(p.Args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("unexpected arguments %q", fs.Args())
	}
	token := p.Getenv("SBX_RELAY_TOKEN")
	if token == "" {
		return errors.New("no token")
	}
	var wg sync.WaitGroup
	var lns []net.Listener
	defer func() {
		for _, ln := range lns {
			ln.Close()
		}
		wg.Wait()
	}()
	serve := func(addr string, h http.Handler) error {
		ln, err := p.Listen("tcp", addr)
		if err != nil {
			return err
		}
		lns = append(lns, ln)
		srv := &http.Server{Handler: h}
		wg.Add(2)
		go func() { defer wg.Done(); _ = srv.Serve(ln) }()
		go func() { defer wg.Done(); <-ctx.Done(); srv.Close() }()
		return nil
	}
	if err := serve(*health, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintln(w, "ok")
	})); err != nil {
		return err
	}
	for _, in := range inbound {
		port, _, _ := strings.Cut(in, "=")
		if err := serve(":"+port, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			fmt.Fprintf(w, "relay %s inbound %s pod %s", *sandbox, port, p.PodIP)
		})); err != nil {
			return err
		}
	}
	tl, err := p.Listen("tcp", *listen)
	if err != nil {
		return err
	}
	lns = append(lns, tl)
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			c, err := tl.Accept()
			if err != nil {
				return
			}
			fmt.Fprintf(c, "token=%s\n", token)
			c.Close()
		}
	}()
	<-ctx.Done()
	return nil
}

// relayObjects mirrors what sbx generates: the relay Deployment, whose args
// carry the token's verifier (--token-sha256), and a Service selecting the
// relay pod, owned by a Lease. sbx writes no Secret; this one feeds the
// container an env var from a secretKeyRef, which the fake relay prints,
// to test the simulated kubelet's env resolution.
func relayObjects(ns, sandbox, token string, leaseUID string) (*corev1.Secret, *appsv1.Deployment, *corev1.Service) {
	yes := true
	owner := []metav1.OwnerReference{{APIVersion: "coordination.k8s.io/v1", Kind: "Lease", Name: "sbx-" + sandbox,
		UID: typesUID(leaseUID), Controller: &yes}}
	lbl := map[string]string{"app.kubernetes.io/managed-by": "sbx", "sbx.dev/sandbox": sandbox, "sbx.dev/component": "relay"}
	secret := &corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{Name: "sbx-" + sandbox + "-token", Namespace: ns, OwnerReferences: owner},
		StringData: map[string]string{"token": token},
	}
	one := int32(1)
	grace := int64(1)
	dep := &appsv1.Deployment{
		ObjectMeta: metav1.ObjectMeta{Name: "sbx-" + sandbox + "-relay", Namespace: ns, OwnerReferences: owner, Labels: lbl},
		Spec: appsv1.DeploymentSpec{
			Replicas: &one,
			Selector: &metav1.LabelSelector{MatchLabels: lbl},
			Template: corev1.PodTemplateSpec{
				ObjectMeta: metav1.ObjectMeta{Labels: lbl},
				Spec: corev1.PodSpec{
					TerminationGracePeriodSeconds: &grace,
					Containers: []corev1.Container{{
						Name:    "relay",
						Image:   "ghcr.io/sbx-dev/sbx:test",
						Command: []string{"sbx"},
						Args: []string{"relay", "--sandbox", sandbox, "--token-sha256", tunnel.VerifierOf(token).String(),
							"--listen", "127.0.0.1:7000", "--health-listen", ":7001",
							"--inbound", "20001=route/8083/http", "--grace", "10s"},
						Env: []corev1.EnvVar{{Name: "SBX_RELAY_TOKEN", ValueFrom: &corev1.EnvVarSource{
							SecretKeyRef: &corev1.SecretKeySelector{LocalObjectReference: corev1.LocalObjectReference{Name: secret.Name}, Key: "token"}}}},
						Ports: []corev1.ContainerPort{{Name: "tunnel", ContainerPort: 7000}, {Name: "health", ContainerPort: 7001}, {Name: "in-20001", ContainerPort: 20001}},
						ReadinessProbe: &corev1.Probe{ProbeHandler: corev1.ProbeHandler{HTTPGet: &corev1.HTTPGetAction{
							Path: "/readyz", Port: intstr.FromString("health")}}},
					}},
				},
			},
		},
	}
	http := "http"
	svc := &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Name: "route-sbx-" + sandbox, Namespace: ns, OwnerReferences: owner},
		Spec: corev1.ServiceSpec{
			Selector: lbl,
			Ports:    []corev1.ServicePort{{Name: "http", Port: 8083, TargetPort: intstr.FromInt32(20001), AppProtocol: &http}},
		},
	}
	return secret, dep, svc
}

func startWithFakeRelay(t *testing.T) *Cluster {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	c, err := Start(ctx, Options{Logger: testLogger(t), Relay: fakeRelay})
	require.NoError(t, err)
	t.Cleanup(c.Close)
	return c
}

func relayPodObject(t *testing.T, c *Cluster, ns, sandbox string) *corev1.Pod {
	t.Helper()
	pods, err := c.Clients.Kube.CoreV1().Pods(ns).List(context.Background(), metav1.ListOptions{LabelSelector: "sbx.dev/sandbox=" + sandbox})
	require.NoError(t, err)
	if len(pods.Items) != 1 {
		return nil
	}
	return &pods.Items[0]
}

func readToken(t *testing.T, c *Cluster, ns, pod string) string {
	t.Helper()
	addr, err := c.Network.PodPortAddr(ns, pod, 7000)
	require.NoError(t, err)
	conn, err := net.Dial("tcp", addr)
	require.NoError(t, err)
	defer conn.Close()
	line, err := bufio.NewReader(conn).ReadString('\n')
	require.NoError(t, err)
	return strings.TrimSpace(line)
}

func TestRelayPodLifecycle(t *testing.T) {
	c := startWithFakeRelay(t)
	ctx := context.Background()
	ns := AppNamespace
	kube := c.Clients.Kube

	lease, err := kube.CoordinationV1().Leases(ns).Create(ctx, &coordv1.Lease{ObjectMeta: metav1.ObjectMeta{Name: "sbx-alice", Namespace: ns}}, metav1.CreateOptions{})
	require.NoError(t, err)
	require.NotEmpty(t, lease.UID, "the simulated API server assigns uids")
	secret, dep, svc := relayObjects(ns, "alice", "s3cr3t", string(lease.UID))

	// The Deployment first: its pod waits for the Secret, as a kubelet does.
	_, err = kube.AppsV1().Deployments(ns).Create(ctx, dep, metav1.CreateOptions{})
	require.NoError(t, err)
	require.Eventually(t, func() bool {
		p := relayPodObject(t, c, ns, "alice")
		return p != nil && len(p.Status.ContainerStatuses) == 1 && p.Status.ContainerStatuses[0].State.Waiting != nil &&
			p.Status.ContainerStatuses[0].State.Waiting.Reason == "CreateContainerConfigError"
	}, 10*time.Second, 10*time.Millisecond)

	_, err = kube.CoreV1().Secrets(ns).Create(ctx, secret, metav1.CreateOptions{})
	require.NoError(t, err)
	stored, err := kube.CoreV1().Secrets(ns).Get(ctx, secret.Name, metav1.GetOptions{})
	require.NoError(t, err)
	require.Equal(t, "s3cr3t", string(stored.Data["token"]), "stringData is merged into data")
	_, err = kube.CoreV1().Services(ns).Create(ctx, svc, metav1.CreateOptions{})
	require.NoError(t, err)

	var pod *corev1.Pod
	require.Eventually(t, func() bool {
		pod = relayPodObject(t, c, ns, "alice")
		return pod != nil && podstate.Ready(pod)
	}, 10*time.Second, 10*time.Millisecond)
	require.Equal(t, "alice", pod.Labels["sbx.dev/sandbox"])
	require.Equal(t, "Deployment", pod.OwnerReferences[0].Kind)
	require.Eventually(t, func() bool {
		d, err := kube.AppsV1().Deployments(ns).Get(ctx, dep.Name, metav1.GetOptions{})
		return err == nil && d.Status.ReadyReplicas == 1 && d.Status.ObservedGeneration == d.Generation
	}, 10*time.Second, 10*time.Millisecond)
	name, ok := c.RelayPod(ns, dep.Name)
	require.True(t, ok)
	require.Equal(t, pod.Name, name)

	// The container got the token from the Secret; its tunnel port is
	// reachable through the port-forward path only.
	require.Equal(t, "token=s3cr3t", readToken(t, c, ns, pod.Name))
	client := c.HTTPClient(ns)
	defer client.CloseIdleConnections()
	_, err = c.Network.Resolver(ns).DialContext(ctx, "tcp", net.JoinHostPort(pod.Status.PodIP, "7000"))
	require.Error(t, err, "the tunnel listener is on the pod's loopback")

	// Through the mesh, the sandbox Service reaches the relay's inbound port.
	// (The mesh learns about the ready pod through its informer.)
	var body string
	require.Eventually(t, func() bool {
		resp, err := client.Get("http://route-sbx-alice:8083/")
		require.NoError(t, err)
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		body = string(b)
		return resp.StatusCode == http.StatusOK
	}, 10*time.Second, 10*time.Millisecond)
	require.Equal(t, "relay alice inbound 20001 pod "+pod.Status.PodIP, body)

	// Crash: same pod, restarted container, ready again.
	require.NoError(t, c.CrashRelay(ns, dep.Name))
	require.Eventually(t, func() bool {
		p := relayPodObject(t, c, ns, "alice")
		return p != nil && p.Name == pod.Name && p.Status.ContainerStatuses[0].RestartCount == 1 && podstate.Ready(p)
	}, 10*time.Second, 10*time.Millisecond)
	require.Equal(t, "token=s3cr3t", readToken(t, c, ns, pod.Name))

	// Graceful restart: the same pod again, one more restart.
	require.NoError(t, c.RestartRelay(ns, dep.Name))
	require.Eventually(t, func() bool {
		p := relayPodObject(t, c, ns, "alice")
		return p != nil && p.Name == pod.Name && p.Status.ContainerStatuses[0].RestartCount == 2 && podstate.Ready(p)
	}, 10*time.Second, 10*time.Millisecond)
	require.Error(t, c.RestartRelay(ns, "no-such-relay"))

	// A new template replaces the pod, in a real cluster's order: the new
	// pod is Ready in the API before the old one is marked terminating,
	// and the old one stays Ready until then (whoever lists the pods while
	// it drains sees which one to use).
	events := watchPods(t, c, ns)
	d, err := kube.AppsV1().Deployments(ns).Get(ctx, dep.Name, metav1.GetOptions{})
	require.NoError(t, err)
	d.Spec.Template.Spec.Containers[0].Args = append(d.Spec.Template.Spec.Containers[0].Args, "--drain-timeout", "5s")
	d, err = kube.AppsV1().Deployments(ns).Update(ctx, d, metav1.UpdateOptions{})
	require.NoError(t, err)
	require.Equal(t, int64(2), d.Generation)
	require.Eventually(t, func() bool {
		p := relayPodObject(t, c, ns, "alice")
		return p != nil && p.Name != pod.Name && podstate.Ready(p)
	}, 10*time.Second, 10*time.Millisecond)
	newReady, oldTerminating := false, false
	for _, p := range events() {
		switch {
		case p.Name != pod.Name:
			newReady = newReady || podstate.Ready(p)
		case p.DeletionTimestamp != nil:
			if !oldTerminating {
				require.True(t, newReady, "the old pod is marked terminating only once the new one is Ready")
			}
			oldTerminating = true
		default:
			require.True(t, podstate.Ready(p), "the old pod stays Ready until it is marked terminating: %+v", p.Status.Conditions)
		}
	}
	require.True(t, oldTerminating, "the old pod was marked terminating")

	// Deleting the anchor Lease garbage-collects everything it owns; the
	// relay stops and its pod goes away.
	require.NoError(t, kube.CoordinationV1().Leases(ns).Delete(ctx, lease.Name, metav1.DeleteOptions{}))
	require.Eventually(t, func() bool {
		_, errD := kube.AppsV1().Deployments(ns).Get(ctx, dep.Name, metav1.GetOptions{})
		_, errS := kube.CoreV1().Secrets(ns).Get(ctx, secret.Name, metav1.GetOptions{})
		_, errV := kube.CoreV1().Services(ns).Get(ctx, svc.Name, metav1.GetOptions{})
		return apierrors.IsNotFound(errD) && apierrors.IsNotFound(errS) && apierrors.IsNotFound(errV) &&
			relayPodObject(t, c, ns, "alice") == nil
	}, 10*time.Second, 10*time.Millisecond)
	_, ok = c.RelayPod(ns, dep.Name)
	require.False(t, ok)
	require.Empty(t, c.RelayDeployments())
}

func TestRelayPodBadCommandLine(t *testing.T) {
	c := startWithFakeRelay(t)
	ctx := context.Background()
	ns := AppNamespace
	secret, dep, _ := relayObjects(ns, "bob", "tok", "")
	dep.OwnerReferences = nil
	secret.OwnerReferences = nil
	// A flag the relay does not know: the container crash-loops.
	dep.Spec.Template.Spec.Containers[0].Args = append(dep.Spec.Template.Spec.Containers[0].Args, "--no-such-flag")
	_, err := c.Clients.Kube.CoreV1().Secrets(ns).Create(ctx, secret, metav1.CreateOptions{})
	require.NoError(t, err)
	_, err = c.Clients.Kube.AppsV1().Deployments(ns).Create(ctx, dep, metav1.CreateOptions{})
	require.NoError(t, err)
	require.Eventually(t, func() bool {
		p := relayPodObject(t, c, ns, "bob")
		if p == nil || len(p.Status.ContainerStatuses) == 0 {
			return false
		}
		cs := p.Status.ContainerStatuses[0]
		return cs.RestartCount >= 1 && cs.LastTerminationState.Terminated != nil &&
			strings.Contains(cs.LastTerminationState.Terminated.Message, "no-such-flag") && !podstate.Ready(p)
	}, 10*time.Second, 10*time.Millisecond)
	require.NoError(t, c.Clients.Kube.AppsV1().Deployments(ns).Delete(ctx, dep.Name, metav1.DeleteOptions{}))
	require.Eventually(t, func() bool { return relayPodObject(t, c, ns, "bob") == nil }, 10*time.Second, 10*time.Millisecond)
}

func TestRelayCommand(t *testing.T) {
	for _, tc := range []struct {
		cmd, args []string
		want      []string
		ok        bool
	}{
		{[]string{"sbx"}, []string{"relay", "--sandbox", "a"}, []string{"--sandbox", "a"}, true},
		{[]string{"/usr/local/bin/sbx", "relay"}, []string{"--sandbox", "a"}, []string{"--sandbox", "a"}, true},
		{nil, []string{"relay"}, []string{}, true},
		{[]string{"sbx"}, []string{"daemon"}, nil, false},
		{[]string{"/bin/sh", "-c"}, []string{"sbx relay"}, nil, false},
	} {
		got, ok := relayCommand(corev1.Container{Command: tc.cmd, Args: tc.args})
		require.Equal(t, tc.ok, ok, "%v %v", tc.cmd, tc.args)
		if ok {
			require.Equal(t, tc.want, got)
		}
	}
}

// watchPods records every version of the pods in ns from now on; the
// returned func gives them in order.
func watchPods(t *testing.T, c *Cluster, ns string) func() []*corev1.Pod {
	t.Helper()
	w, err := c.Clients.Kube.CoreV1().Pods(ns).Watch(context.Background(), metav1.ListOptions{})
	require.NoError(t, err)
	var mu sync.Mutex
	var seen []*corev1.Pod
	done := make(chan struct{})
	go func() {
		defer close(done)
		for ev := range w.ResultChan() {
			if p, ok := ev.Object.(*corev1.Pod); ok && ev.Type != watch.Deleted {
				mu.Lock()
				seen = append(seen, p)
				mu.Unlock()
			}
		}
	}()
	t.Cleanup(func() { w.Stop(); <-done })
	return func() []*corev1.Pod {
		mu.Lock()
		defer mu.Unlock()
		return append([]*corev1.Pod(nil), seen...)
	}
}

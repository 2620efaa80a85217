package scenarios

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	authorizationv1 "k8s.io/api/authorization/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	"k8s.io/client-go/rest"

	"github.com/sbx-dev/sbx/cluster"
	"github.com/sbx-dev/sbx/cluster/kube"
	"github.com/sbx-dev/sbx/cluster/live"
	"github.com/sbx-dev/sbx/cluster/spec"
	"github.com/sbx-dev/sbx/daemon"
	"github.com/sbx-dev/sbx/daemon/api"
	"github.com/sbx-dev/sbx/daemon/client"
	"github.com/sbx-dev/sbx/tools/testbed/sim"
)

// laptop is the developer's side: sbx's daemon in-process, talking to the
// real API server as the developer (strict field validation, warnings
// recorded), with its tunnel over the API server's port-forward to the
// node stand-in's kubelet API.
type laptop struct {
	t       *testing.T
	e       *env
	dir     string
	Client  *client.Client
	cluster *live.Cluster

	// leaseInterval is the daemon's Lease renewal period (0: sbx's).
	leaseInterval time.Duration

	mu   sync.Mutex
	stop context.CancelFunc
	errc chan error
}

// laptopOptions tune newLaptopWith.
type laptopOptions struct {
	user          *rest.Config // default the developer
	namespace     string       // the kube context's ("" none)
	waitTimeout   time.Duration
	leaseInterval time.Duration
}

// newLaptop starts a daemon for e's namespace; it stops when t ends.
func newLaptop(t *testing.T, e *env, image string) *laptop {
	t.Helper()
	return newLaptopAs(t, e, cp.Developer, image, e.ns)
}

// newLaptopAs is newLaptop as the user of user, with the kube context's
// namespace ns ("": the context names none).
func newLaptopAs(t *testing.T, e *env, user *rest.Config, image, ns string) *laptop {
	t.Helper()
	return newLaptopWith(t, e, image, laptopOptions{user: user, namespace: ns})
}

func newLaptopWith(t *testing.T, e *env, image string, o laptopOptions) *laptop {
	t.Helper()
	user, ns := o.user, o.namespace
	if user == nil {
		user = cp.Developer
	}
	if o.waitTimeout <= 0 {
		o.waitTimeout = 90 * time.Second
	}
	dir, err := os.MkdirTemp("", "sbxd") // short: the daemon's socket lives here
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	cfg := strictConfig(user, e.warnings)
	clients, err := cluster.NewClients(cfg)
	if err != nil {
		t.Fatal(err)
	}
	l := &laptop{t: t, e: e, dir: dir, leaseInterval: o.leaseInterval}
	l.cluster = live.NewFromKube(&kube.Cluster{
		REST: cfg, Kube: clients.Kube, Istio: clients.Istio, Dynamic: clients.Dynamic,
		Namespace: ns, NamespaceExplicit: ns != "", Context: "realcp",
	}, live.Options{
		Logger:            testLogger(t, "laptop"),
		WaitTimeout:       o.waitTimeout,
		DefaultRelayImage: image,
	})
	t.Cleanup(func() { _ = l.cluster.Close() })
	hosts := filepath.Join(dir, "hosts")
	if err := os.WriteFile(hosts, []byte("127.0.0.1 localhost\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	conf := fmt.Sprintf("relayImage: %s\noutbound:\n  mode: proxy\n  hostsFile: %s\n  hostsRange: 127.244.0.0/16\n  proxyListen: 127.0.0.1:0\n", image, hosts)
	if err := os.WriteFile(filepath.Join(dir, "config.yaml"), []byte(conf), 0o600); err != nil {
		t.Fatal(err)
	}
	l.startDaemon()
	t.Cleanup(l.stopDaemon)
	return l
}

func (l *laptop) paths() api.Paths {
	return api.Paths{RuntimeDir: filepath.Join(l.dir, "run"), StateDir: filepath.Join(l.dir, "state")}
}

func (l *laptop) startDaemon() {
	l.t.Helper()
	l.mu.Lock()
	defer l.mu.Unlock()
	d, err := daemon.New(daemon.Options{
		Paths:      l.paths(),
		ConfigPath: filepath.Join(l.dir, "config.yaml"),
		Logger:     testLogger(l.t, "daemon"),
		Version:    "realcp",
		Clusters: func(context.Context, api.KubeconfigSource, string) (daemon.Cluster, error) {
			return l.cluster, nil
		},
		StatsInterval: 200 * time.Millisecond,
		LeaseInterval: l.leaseInterval,
		Backoff:       daemon.Backoff{Min: 100 * time.Millisecond, Max: time.Second},
	})
	if err != nil {
		l.t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	errc := make(chan error, 1)
	go func() { errc <- d.Run(ctx) }()
	l.stop, l.errc = cancel, errc
	l.Client = &client.Client{Socket: l.paths().Socket()}
	deadline := time.Now().Add(10 * time.Second)
	for {
		if _, err := l.Client.Status(l.t.Context()); err == nil {
			return
		} else if time.Now().After(deadline) {
			l.t.Fatalf("the daemon did not come up: %v", err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func (l *laptop) stopDaemon() {
	l.mu.Lock()
	stop, errc := l.stop, l.errc
	l.stop = nil
	l.mu.Unlock()
	if stop == nil {
		return
	}
	stop()
	if err := <-errc; err != nil {
		l.t.Logf("daemon stopped: %v", err)
	}
	l.Client.Close()
}

// connect connects sb and waits until it is ready (or fails).
func (l *laptop) connect(sb spec.Sandbox, timeout time.Duration) (api.SandboxStatus, error) {
	l.t.Helper()
	return l.Client.Connect(l.t.Context(), api.ConnectRequest{Spec: sb, Wait: true, Timeout: timeout}, func(p api.Progress) {
		l.t.Logf("connect: %s %s %s", p.Phase, p.Message, p.Error)
	})
}

// routeSandbox is a sandbox whose route workload (port 8083) runs at
// local on the laptop.
func routeSandbox(name, ns, local string) spec.Sandbox {
	return spec.Sandbox{
		Name: name,
		Spec: spec.Spec{
			Description: "route on my laptop",
			Local: []spec.Local{{
				Name:     "route",
				From:     spec.Workload{Kind: spec.KindDeployment, Namespace: ns, Name: "route"},
				Mappings: []spec.Mapping{{Port: 8083, ToLocal: local}},
			}},
		},
	}
}

// localServer is the developer's service on the laptop: it answers every
// request with its name and counts them.
func localServer(t *testing.T, name string) (addr string, hits func() int) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	n := 0
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		n++
		mu.Unlock()
		fmt.Fprintf(w, "%s on the laptop: %s %s", name, r.Method, r.URL.Path)
	}), ReadHeaderTimeout: 5 * time.Second}
	done := make(chan struct{})
	go func() { defer close(done); _ = srv.Serve(ln) }()
	t.Cleanup(func() { _ = srv.Close(); <-done })
	return ln.Addr().String(), func() int { mu.Lock(); defer mu.Unlock(); return n }
}

// relayInbound is the address (pod IP and inbound port) of the sandbox's
// ready relay pod: what the sandbox's Service sends the keyed requests
// of workload to.
func (e *env) relayInbound(sandbox string) string {
	e.t.Helper()
	pods, err := e.Admin.CoreV1().Pods(e.ns).List(e.t.Context(), metav1.ListOptions{
		LabelSelector: cluster.LabelSandbox + "=" + sandbox,
	})
	if err != nil {
		e.t.Fatal(err)
	}
	for _, p := range pods.Items {
		if p.DeletionTimestamp != nil || p.Status.PodIP == "" || !podReady(&p) {
			continue
		}
		for _, c := range p.Spec.Containers {
			for _, port := range c.Ports {
				if strings.HasPrefix(port.Name, "in-") {
					return net.JoinHostPort(p.Status.PodIP, fmt.Sprint(port.ContainerPort))
				}
			}
		}
	}
	e.t.Fatalf("no ready relay pod of sandbox %s in %s", sandbox, e.ns)
	return ""
}

func podReady(p *corev1.Pod) bool {
	for _, c := range p.Status.Conditions {
		if c.Type == corev1.PodReady {
			return c.Status == corev1.ConditionTrue
		}
	}
	return false
}

// get GETs url and returns the body, failing t on an error or a non-200.
func get(t *testing.T, url string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 20*time.Second)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET %s: %s: %s", url, resp.Status, body)
	}
	return string(body)
}

// testLogger logs to t at Info and above.
func testLogger(t *testing.T, side string) *slog.Logger {
	return slog.New(slog.NewTextHandler(tWriter{t}, &slog.HandlerOptions{Level: slog.LevelInfo})).With("side", side)
}

type tWriter struct{ t *testing.T }

func (w tWriter) Write(b []byte) (int, error) {
	w.t.Log(strings.TrimRight(string(b), "\n"))
	return len(b), nil
}

// The developer connects with the in-process daemon: the relay pod is
// scheduled and run by the node stand-in, becomes ready from its /readyz,
// and the tunnel runs over the real API server's port-forward to the
// stand-in's kubelet API; a request to the relay's inbound port reaches
// the developer's local server. Disconnect removes the sandbox.
func TestConnectTunnel(t *testing.T) {
	e := newEnv(t, "tunnel", nil)
	local, hits := localServer(t, "route")
	l := newLaptop(t, e, relayImage)
	start := time.Now()
	pfBefore := theNode.PortForwards()
	st, err := l.connect(routeSandbox("alice", e.ns, local), 90*time.Second)
	if err != nil {
		t.Fatalf("connect: %v", err)
	}
	t.Logf("connected in %s: phase %s", time.Since(start).Round(100*time.Millisecond), st.Phase)
	if theNode.PortForwards() == pfBefore {
		t.Errorf("the kubelet API served no port-forward: the tunnel did not go through the API server")
	}
	addr := e.relayInbound("alice")
	body := get(t, "http://"+addr+"/dispatch")
	if !strings.Contains(body, "route on the laptop") || hits() == 0 {
		t.Fatalf("GET via the relay at %s: %q (local hits %d)", addr, body, hits())
	}
	t.Logf("via the relay pod %s: %q", addr, body)
	res, err := l.Client.Disconnect(t.Context(), "alice")
	if err != nil {
		t.Fatalf("disconnect: %v", err)
	}
	t.Logf("disconnect: %+v", res)
}

// A relay image that cannot be pulled (a development build's default,
// ghcr.io/sbx-dev/sbx:<git sha>, exists in no registry): the node
// stand-in reports ErrImagePull, then ImagePullBackOff, as a kubelet
// does, and sbx connect says within seconds which image and how to set
// relayImage, not at the wait's 3-minute deadline. (The daemon keeps
// retrying until --timeout, as it does for every relay that is not ready;
// the test stops waiting, as a user would with Ctrl-C, once it is told.)
func TestRelayImageCannotBePulled(t *testing.T) {
	e := newEnv(t, "imagepull", nil)
	const image = "ghcr.io/sbx-dev/sbx:0f3c2a19e5d7"
	theNode.FailPull(image)
	local, _ := localServer(t, "route")
	l := newLaptop(t, e, image)
	// The pull failure ends the connect (a pod that cannot become ready
	// by itself), not its 3-minute timeout: the answer is the failure,
	// naming the image and how to set relayImage.
	start := time.Now()
	_, err := l.Client.Connect(t.Context(), api.ConnectRequest{Spec: routeSandbox("alice", e.ns, local), Wait: true, Timeout: 3 * time.Minute},
		func(p api.Progress) { t.Logf("connect: %s %s %s", p.Phase, p.Message, p.Error) })
	var ce *api.ConnectError
	if !errors.As(err, &ce) {
		t.Fatalf("connect: %v, want the relay's failure", err)
	}
	t.Logf("after %s connect failed: %s", time.Since(start).Round(100*time.Millisecond), ce.Message)
	if ce.Phase != api.PhaseFailed || strings.Contains(ce.Message, "not ready after") {
		t.Errorf("connect ended at its timeout, not at the pull failure: phase %s: %s", ce.Phase, ce.Message)
	}
	for _, want := range []string{image, "relayImage"} {
		if !strings.Contains(ce.Message, want) {
			t.Errorf("connect's failure does not name %q: %s", want, ce.Message)
		}
	}
	p := relayPod(t, e, "alice")
	if w := p.Status.ContainerStatuses[0].State.Waiting; w == nil || (w.Reason != "ErrImagePull" && w.Reason != "ImagePullBackOff") {
		t.Errorf("relay pod %s: container state %+v, want waiting on ErrImagePull or ImagePullBackOff", p.Name, p.Status.ContainerStatuses[0].State)
	}
	res, err := l.Client.Disconnect(t.Context(), "alice")
	if err != nil {
		t.Fatalf("disconnect: %v", err)
	}
	t.Logf("disconnect: %+v", res)
}

// relayPod is the newest relay pod of sandbox that is not being deleted.
func relayPod(t *testing.T, e *env, sandbox string) *corev1.Pod {
	t.Helper()
	pods, err := e.Admin.CoreV1().Pods(e.ns).List(t.Context(), metav1.ListOptions{LabelSelector: cluster.LabelSandbox + "=" + sandbox})
	if err != nil {
		t.Fatal(err)
	}
	var newest *corev1.Pod
	for i := range pods.Items {
		p := &pods.Items[i]
		if p.DeletionTimestamp == nil && (newest == nil || newest.CreationTimestamp.Before(&p.CreationTimestamp)) {
			newest = p
		}
	}
	if newest == nil {
		t.Fatalf("no relay pod of sandbox %s in %s", sandbox, e.ns)
	}
	return newest
}

// reaches waits until a request through the ready relay pod of sandbox
// (its inbound port of route) reaches the local server named want, and
// returns the answer.
func (e *env) reaches(sandbox, want string, timeout time.Duration) string {
	e.t.Helper()
	deadline := time.Now().Add(timeout)
	client := &http.Client{Timeout: 5 * time.Second}
	defer client.CloseIdleConnections()
	var last string
	for {
		if addr, ok := e.tryRelayInbound(sandbox); ok {
			resp, err := client.Get("http://" + addr + "/dispatch")
			if err == nil {
				body, _ := io.ReadAll(resp.Body)
				resp.Body.Close()
				if resp.StatusCode == http.StatusOK && strings.Contains(string(body), want) {
					return string(body)
				}
				last = fmt.Sprintf("%s: %s", resp.Status, body)
			} else {
				last = err.Error()
			}
		} else {
			last = "no ready relay pod"
		}
		if time.Now().After(deadline) {
			e.t.Fatalf("sandbox %s: no request through its relay reached %s within %s (last: %s)", sandbox, want, timeout, last)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

func (e *env) tryRelayInbound(sandbox string) (string, bool) {
	pods, err := e.Admin.CoreV1().Pods(e.ns).List(e.t.Context(), metav1.ListOptions{LabelSelector: cluster.LabelSandbox + "=" + sandbox})
	if err != nil {
		return "", false
	}
	for _, p := range pods.Items {
		if p.DeletionTimestamp != nil || p.Status.PodIP == "" || !podReady(&p) {
			continue
		}
		for _, c := range p.Spec.Containers {
			for _, port := range c.Ports {
				if strings.HasPrefix(port.Name, "in-") {
					return net.JoinHostPort(p.Status.PodIP, fmt.Sprint(port.ContainerPort)), true
				}
			}
		}
	}
	return "", false
}

// waitPhase waits until the daemon reports sandbox in phase.
func (l *laptop) waitPhase(name string, phase api.Phase, timeout time.Duration) {
	l.t.Helper()
	deadline := time.Now().Add(timeout)
	var last api.SandboxStatus
	for {
		st, err := l.Client.Sandbox(l.t.Context(), name)
		if err == nil && st.Phase == phase {
			return
		}
		last = st
		if time.Now().After(deadline) {
			l.t.Fatalf("sandbox %s not %s within %s: phase %s, last error %q (%v)", name, phase, timeout, last.Phase, last.LastError, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// Two sandboxes on one Service (route): each relay reaches its own
// developer's local server.
func TestTwoSandboxesOneService(t *testing.T) {
	e := newEnv(t, "two", nil)
	aliceLocal, _ := localServer(t, "alice's route")
	bobLocal, _ := localServer(t, "bob's route")
	l := newLaptop(t, e, relayImage)
	if _, err := l.connect(routeSandbox("alice", e.ns, aliceLocal), 90*time.Second); err != nil {
		t.Fatalf("connect alice: %v", err)
	}
	if _, err := l.connect(routeSandbox("bob", e.ns, bobLocal), 90*time.Second); err != nil {
		t.Fatalf("connect bob: %v", err)
	}
	e.reaches("alice", "alice's route", 30*time.Second)
	e.reaches("bob", "bob's route", 30*time.Second)
	for _, name := range []string{"alice", "bob"} {
		if _, err := l.Client.Disconnect(t.Context(), name); err != nil {
			t.Fatalf("disconnect %s: %v", name, err)
		}
	}
}

// The daemon restarts (same state folder): it takes the connected
// sandbox up again, and requests reach the laptop.
func TestDaemonRestart(t *testing.T) {
	e := newEnv(t, "daemonrestart", nil)
	local, _ := localServer(t, "route")
	l := newLaptop(t, e, relayImage)
	if _, err := l.connect(routeSandbox("alice", e.ns, local), 90*time.Second); err != nil {
		t.Fatalf("connect: %v", err)
	}
	e.reaches("alice", "route on the laptop", 30*time.Second)
	l.stopDaemon()
	start := time.Now()
	l.startDaemon()
	l.waitPhase("alice", api.PhaseReady, 60*time.Second)
	e.reaches("alice", "route on the laptop", 30*time.Second)
	t.Logf("ready and reached again %s after the daemon restarted", time.Since(start).Round(100*time.Millisecond))
	if _, err := l.Client.Disconnect(t.Context(), "alice"); err != nil {
		t.Fatalf("disconnect: %v", err)
	}
}

// The node stand-in restarts (its processes and network namespaces go,
// as when a node reboots): it runs the relay pod again (same pod, same IP,
// a restart counted), and the daemon's tunnel comes back.
func TestNodeRestart(t *testing.T) {
	e := newEnv(t, "noderestart", nil)
	local, _ := localServer(t, "route")
	l := newLaptop(t, e, relayImage)
	if _, err := l.connect(routeSandbox("alice", e.ns, local), 90*time.Second); err != nil {
		t.Fatalf("connect: %v", err)
	}
	e.reaches("alice", "route on the laptop", 30*time.Second)
	subnet := theNode.Subnet()
	theNode.Close()
	start := time.Now()
	var err error
	// The new stand-in outlives the test (the scenarios share it): it
	// logs as TestMain's did.
	theNode, err = startNode(t.Context(), subnet)
	if err != nil {
		t.Fatalf("restart the node stand-in: %v", err)
	}
	e.reaches("alice", "route on the laptop", 60*time.Second)
	l.waitPhase("alice", api.PhaseReady, 60*time.Second)
	t.Logf("reached again %s after the node stand-in restarted", time.Since(start).Round(100*time.Millisecond))
	if _, err := l.Client.Disconnect(t.Context(), "alice"); err != nil {
		t.Fatalf("disconnect: %v", err)
	}
}

// The Lease of a connected sandbox is deleted (by hand, or another
// user's sbx gc): the real garbage collector removes the relay and the
// Services; the daemon notices and applies the sandbox again, and
// requests reach the laptop again.
func TestLeaseDeletedWhileConnected(t *testing.T) {
	e := newEnv(t, "leasegone", nil)
	local, _ := localServer(t, "route")
	l := newLaptop(t, e, relayImage)
	if _, err := l.connect(routeSandbox("alice", e.ns, local), 90*time.Second); err != nil {
		t.Fatalf("connect: %v", err)
	}
	e.reaches("alice", "route on the laptop", 30*time.Second)
	before := relayPod(t, e, "alice")
	start := time.Now()
	if err := e.Admin.CoordinationV1().Leases(e.ns).Delete(t.Context(), cluster.LeaseName("alice"), metav1.DeleteOptions{}); err != nil {
		t.Fatalf("delete the Lease: %v", err)
	}
	// A new relay pod (the collector removed the old Deployment) is ready
	// and reaches the laptop.
	deadline := time.Now().Add(90 * time.Second)
	for {
		if p, ok := e.tryRelayPod("alice"); ok && p.UID != before.UID && podReady(p) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no new ready relay pod within 90s of deleting the Lease")
		}
		time.Sleep(200 * time.Millisecond)
	}
	e.reaches("alice", "route on the laptop", 60*time.Second)
	if _, err := e.Admin.CoordinationV1().Leases(e.ns).Get(t.Context(), cluster.LeaseName("alice"), metav1.GetOptions{}); err != nil {
		t.Errorf("the Lease is not back: %v", err)
	}
	t.Logf("re-applied and reached again %s after the Lease was deleted", time.Since(start).Round(100*time.Millisecond))
	if _, err := l.Client.Disconnect(t.Context(), "alice"); err != nil {
		t.Fatalf("disconnect: %v", err)
	}
}

func (e *env) tryRelayPod(sandbox string) (*corev1.Pod, bool) {
	pods, err := e.Admin.CoreV1().Pods(e.ns).List(e.t.Context(), metav1.ListOptions{LabelSelector: cluster.LabelSandbox + "=" + sandbox})
	if err != nil {
		return nil, false
	}
	for i := range pods.Items {
		if pods.Items[i].DeletionTimestamp == nil {
			return &pods.Items[i], true
		}
	}
	return nil, false
}

// sbx list and sbx gc as the developer (what the CLI asks the daemon):
// in the namespace; across all namespaces, which the namespaced Role does
// not allow, so sbx falls back to the context's namespace; and, with no
// namespace to fall back to, the 403 with its hint. gc collects a
// sandbox whose Lease expired long ago (another laptop's, gone), and the
// real garbage collector the rest.
func TestListAndGCAsDeveloper(t *testing.T) {
	e := newEnv(t, "listgc", nil)
	ctx := t.Context()
	local, _ := localServer(t, "route")
	l := newLaptop(t, e, relayImage)
	if _, err := l.connect(routeSandbox("alice", e.ns, local), 90*time.Second); err != nil {
		t.Fatalf("connect: %v", err)
	}
	// Bob's sandbox, left by a laptop that went away two hours ago.
	bob := e.sandbox()
	bob.Name = "bob"
	e.apply(bob, newToken(t))
	lease, err := e.Admin.CoordinationV1().Leases(e.ns).Get(ctx, cluster.LeaseName("bob"), metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	old := metav1.NewMicroTime(time.Now().Add(-2 * time.Hour))
	lease.Spec.RenewTime, lease.Spec.AcquireTime = &old, &old
	if _, err := e.Admin.CoordinationV1().Leases(e.ns).Update(ctx, lease, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}

	names := func(r api.ListResult) map[string]api.ListEntry {
		m := map[string]api.ListEntry{}
		for _, s := range r.Sandboxes {
			m[s.Name] = s
		}
		return m
	}
	for _, ns := range []string{e.ns, ""} {
		res, err := l.Client.List(ctx, api.ClusterRequest{Namespace: ns}, true)
		if err != nil {
			t.Fatalf("list -n %q: %v", ns, err)
		}
		got := names(res)
		t.Logf("list -n %q: %+v (cluster error %q)", ns, res.Sandboxes, res.ClusterError)
		if res.ClusterError != "" {
			t.Errorf("list -n %q: cluster error %s", ns, res.ClusterError)
		}
		if a := got["alice"]; !a.InCluster || !a.InDaemon || a.Orphan {
			t.Errorf("list -n %q: alice = %+v, want in the cluster and the daemon", ns, a)
		}
		if b := got["bob"]; !b.InCluster || !b.Orphan {
			t.Errorf("list -n %q: bob = %+v, want an orphan in the cluster", ns, b)
		}
	}

	dry, err := l.Client.GC(ctx, api.GCRequest{DryRun: true})
	if err != nil {
		t.Fatalf("gc --dry-run, all namespaces: %v", err)
	}
	if len(dry.Deleted) != 1 || dry.Deleted[0] != "bob" || !dry.DryRun {
		t.Errorf("gc --dry-run across all namespaces: %+v, want bob to go", dry)
	}
	gc, err := l.Client.GC(ctx, api.GCRequest{ClusterRequest: api.ClusterRequest{Namespace: e.ns}})
	if err != nil {
		t.Fatalf("gc -n %s: %v", e.ns, err)
	}
	t.Logf("gc -n %s: %+v", e.ns, gc)
	if len(gc.Deleted) != 1 || gc.Deleted[0] != "bob" {
		t.Errorf("gc deleted %v, want [bob]", gc.Deleted)
	}
	deadline := time.Now().Add(60 * time.Second)
	for left := sandboxObjects(t, e, "bob"); len(left) > 0; left = sandboxObjects(t, e, "bob") {
		if time.Now().After(deadline) {
			t.Fatalf("after gc, bob's objects are left: %v", left)
		}
		time.Sleep(250 * time.Millisecond)
	}
	e.reaches("alice", "route on the laptop", 30*time.Second)

	// Carol is bound to the sbx Role in the namespace only, without the
	// cluster-wide sbx-route-reader: across all namespaces sbx falls back
	// to her context's namespace, and without one it says what is
	// missing.
	carol := e.userBoundToRole("carol@example.com")
	lc := newLaptopAs(t, e, carol, relayImage, e.ns)
	res, err := lc.Client.List(ctx, api.ClusterRequest{}, true)
	if err != nil || res.ClusterError != "" || !names(res)["alice"].InCluster {
		t.Errorf("carol's list, all namespaces, falling back to %s: %+v, %v", e.ns, res, err)
	}
	lc2 := newLaptopAs(t, e, carol, relayImage, "")
	res, err = lc2.Client.List(ctx, api.ClusterRequest{}, true)
	msg := res.ClusterError
	if err != nil {
		msg = err.Error()
	}
	t.Logf("carol's list, all namespaces, no namespace to fall back to: %s", msg)
	for _, want := range []string{"auth can-i list leases.coordination.k8s.io", "ClusterRole sbx-route-reader in deploy/rbac.yaml", "-n NAMESPACE"} {
		if !strings.Contains(msg, want) {
			t.Errorf("list across all namespaces without the right: %q does not say %q", msg, want)
		}
	}
	_, err = lc2.Client.GC(ctx, api.GCRequest{})
	t.Logf("carol's gc, all namespaces, no namespace to fall back to: %v", err)
	if err == nil || !strings.Contains(err.Error(), "ClusterRole sbx-route-reader in deploy/rbac.yaml") || !strings.Contains(err.Error(), "-n NAMESPACE") {
		t.Errorf("gc across all namespaces without the right: %v, want the 403 with its hint", err)
	}
	if _, err := l.Client.Disconnect(ctx, "alice"); err != nil {
		t.Fatalf("disconnect: %v", err)
	}
}

// userBoundToRole is a user (a client certificate from the cluster's CA)
// bound to deploy/rbac.yaml's sbx-developer Role in e's namespace and to
// nothing cluster-wide.
func (e *env) userBoundToRole(user string) *rest.Config {
	e.t.Helper()
	certPEM, keyPEM, err := cp.CA.IssueClient(user, nil)
	if err != nil {
		e.t.Fatal(err)
	}
	if _, err := e.Admin.RbacV1().RoleBindings(e.ns).Create(e.t.Context(), &rbacv1.RoleBinding{
		ObjectMeta: metav1.ObjectMeta{Name: "sbx-" + strings.Split(user, "@")[0]},
		RoleRef:    rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "Role", Name: "sbx-developer"},
		Subjects:   []rbacv1.Subject{{APIGroup: rbacv1.GroupName, Kind: rbacv1.UserKind, Name: user}},
	}, metav1.CreateOptions{}); err != nil {
		e.t.Fatal(err)
	}
	cfg := &rest.Config{Host: cp.URL, TLSClientConfig: rest.TLSClientConfig{CAData: cp.CA.PEM, CertData: certPEM, KeyData: keyPEM}}
	// Wait until RBAC knows the binding.
	deadline := time.Now().Add(30 * time.Second)
	for {
		r, err := e.Admin.AuthorizationV1().SubjectAccessReviews().Create(e.t.Context(), &authorizationv1.SubjectAccessReview{
			Spec: authorizationv1.SubjectAccessReviewSpec{User: user, ResourceAttributes: &authorizationv1.ResourceAttributes{
				Namespace: e.ns, Verb: "list", Group: "coordination.k8s.io", Resource: "leases"}},
		}, metav1.CreateOptions{})
		if err == nil && r.Status.Allowed {
			return cfg
		}
		if time.Now().After(deadline) {
			e.t.Fatalf("%s may not list leases in %s after the binding: %v", user, e.ns, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// dispatch GETs frontend's /dispatch through the mesh, as a pod of the
// namespace, with baggage (if any), and returns the hops.
func dispatch(t *testing.T, ns, baggage string) (sim.Hop, error) {
	t.Helper()
	client := mesh.HTTPClient(ns)
	defer client.CloseIdleConnections()
	ctx, cancel := context.WithTimeout(t.Context(), 15*time.Second)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, "http://frontend:8080/dispatch", nil)
	if baggage != "" {
		req.Header.Set("baggage", baggage)
	}
	resp, err := client.Do(req)
	if err != nil {
		return sim.Hop{}, err
	}
	defer resp.Body.Close()
	var hop sim.Hop
	body, _ := io.ReadAll(resp.Body)
	if err := json.Unmarshal(body, &hop); err != nil {
		return sim.Hop{}, fmt.Errorf("%s: %s", resp.Status, body)
	}
	return hop, nil
}

// eventually retries f for up to timeout.
func eventually(t *testing.T, timeout time.Duration, what string, f func() error) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		err := f()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within %s: %v", what, timeout, err)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// routeVersion is the version of route that served a dispatch.
func routeVersion(hop sim.Hop) string {
	if r := hop.Find("route"); r != nil {
		return r.Version
	}
	return ""
}

// A keyed request goes pod -> mesh (the real VirtualServices, sbx's
// routes in CD's route VirtualService) -> the sandbox's Service -> the
// relay pod -> the tunnel over the API server's port-forward -> the
// laptop's route (v2); requests without the key stay on the baseline
// (v1); after disconnect the keyed ones go back to the baseline too.
func TestKeyedRequestThroughMesh(t *testing.T) {
	e := newEnv(t, "mesh", nil)
	local, err := sim.StartLocalRoute("127.0.0.1:0", nil, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = local.Close() })
	eventually(t, 60*time.Second, "the baseline answers through the mesh", func() error {
		hop, err := dispatch(t, e.ns, "")
		if err == nil && (routeVersion(hop) != "v1" || hop.Status != http.StatusOK) {
			err = fmt.Errorf("route version %q: %s", routeVersion(hop), &hop)
		}
		return err
	})
	l := newLaptop(t, e, relayImage)
	st, err := l.connect(routeSandbox("alice", e.ns, local.Addr()), 90*time.Second)
	if err != nil {
		t.Fatalf("connect: %v", err)
	}
	keyed := "sbx-routing-key=" + st.RoutingKey
	eventually(t, 30*time.Second, "a keyed request reaches the laptop's route", func() error {
		hop, err := dispatch(t, e.ns, keyed)
		if err == nil && routeVersion(hop) != "v2" {
			err = fmt.Errorf("route version %q: %s", routeVersion(hop), &hop)
		}
		return err
	})
	hop, err := dispatch(t, e.ns, "")
	if err != nil || routeVersion(hop) != "v1" {
		t.Errorf("an unkeyed request: %v %s, want the baseline route (v1)", err, &hop)
	}
	t.Logf("keyed: reached the laptop; unkeyed: %s", &hop)
	if _, err := l.Client.Disconnect(t.Context(), "alice"); err != nil {
		t.Fatalf("disconnect: %v", err)
	}
	eventually(t, 30*time.Second, "after disconnect a keyed request stays on the baseline", func() error {
		hop, err := dispatch(t, e.ns, keyed)
		if err == nil && routeVersion(hop) != "v1" {
			err = fmt.Errorf("route version %q: %s", routeVersion(hop), &hop)
		}
		return err
	})
}

// proxyClient is an HTTP client through the daemon's outbound proxy (as
// the developer's service on the laptop is configured by sbx run/env):
// cluster names are dialed by the relay in the cluster.
func (l *laptop) proxyClient() *http.Client {
	return &http.Client{
		Transport: &http.Transport{
			Proxy: func(r *http.Request) (*url.URL, error) {
				st, err := l.Client.Status(r.Context())
				if err != nil {
					return nil, err
				}
				if st.Outbound == nil || st.Outbound.ProxyAddr == "" {
					return nil, fmt.Errorf("the daemon's outbound proxy is not running")
				}
				pc, err := l.Client.ProxyCredential(r.Context())
				if err != nil {
					return nil, err
				}
				return &url.URL{Scheme: "http", User: url.UserPassword(pc.Username, pc.Password), Host: st.Outbound.ProxyAddr}, nil
			},
		},
		Timeout: 20 * time.Second,
	}
}

// The full way: a keyed request reaches the laptop's route, which calls
// driver by its cluster name through sbx's outbound proxy: the relay in
// its pod resolves driver.NS.svc.cluster.local with the cluster DNS (the
// node stand-in's, from the pod's resolv.conf) and dials it, and the mesh
// takes it to the baseline driver.
func TestOutboundFromLaptopToDriver(t *testing.T) {
	e := newEnv(t, "outbound", nil)
	l := newLaptop(t, e, relayImage)
	proxied := l.proxyClient()
	defer proxied.CloseIdleConnections()
	local, err := sim.StartLocalRoute("127.0.0.1:0", []string{"http://driver." + e.ns + ".svc.cluster.local:8082/driver"}, proxied, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = local.Close() })
	st, err := l.connect(routeSandbox("alice", e.ns, local.Addr()), 90*time.Second)
	if err != nil {
		t.Fatalf("connect: %v", err)
	}
	keyed := "sbx-routing-key=" + st.RoutingKey
	var hop sim.Hop
	eventually(t, 60*time.Second, "a keyed request reaches the laptop, and the laptop's call reaches driver", func() error {
		var err error
		hop, err = dispatch(t, e.ns, keyed)
		if err != nil {
			return err
		}
		r := hop.Find("route")
		if r == nil || r.Version != "v2" || len(r.Calls) != 1 || r.Calls[0].Version != "v1" || r.Calls[0].Status != http.StatusOK {
			return fmt.Errorf("hops %s", &hop)
		}
		return nil
	})
	t.Logf("hops: %s", &hop)
	if b := hop.Find("route").Calls[0].Baggage; b != keyed {
		t.Errorf("driver saw baggage %q, want %q (propagated by the laptop's route)", b, keyed)
	}
	if _, err := l.Client.Disconnect(t.Context(), "alice"); err != nil {
		t.Fatalf("disconnect: %v", err)
	}
}

// traffic sends keyed dispatches through the mesh until stop is called,
// and counts those that did not reach the laptop's route (v2).
type traffic struct {
	stop         context.CancelFunc
	done         chan struct{}
	mu           sync.Mutex
	sent, failed int
	lastFailure  string
}

func startTraffic(t *testing.T, ns, baggage string) *traffic {
	ctx, cancel := context.WithCancel(t.Context())
	tr := &traffic{stop: cancel, done: make(chan struct{})}
	go func() {
		defer close(tr.done)
		for ctx.Err() == nil {
			hop, err := dispatch(t, ns, baggage)
			if ctx.Err() != nil {
				return
			}
			tr.mu.Lock()
			tr.sent++
			if err != nil || routeVersion(hop) != "v2" || hop.Status != http.StatusOK {
				tr.failed++
				tr.lastFailure = fmt.Sprintf("%v %s", err, &hop)
			}
			tr.mu.Unlock()
			time.Sleep(20 * time.Millisecond)
		}
	}()
	return tr
}

func (tr *traffic) end() (sent, failed int, last string) {
	tr.stop()
	<-tr.done
	tr.mu.Lock()
	defer tr.mu.Unlock()
	return tr.sent, tr.failed, tr.lastFailure
}

// connectMeshSandbox connects alice (route on a local v2) and waits until
// keyed requests through the mesh reach it; it returns the baggage.
func connectMeshSandbox(t *testing.T, e *env, l *laptop) string {
	t.Helper()
	local, err := sim.StartLocalRoute("127.0.0.1:0", nil, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = local.Close() })
	st, err := l.connect(routeSandbox("alice", e.ns, local.Addr()), 90*time.Second)
	if err != nil {
		t.Fatalf("connect: %v", err)
	}
	keyed := "sbx-routing-key=" + st.RoutingKey
	eventually(t, 30*time.Second, "a keyed request reaches the laptop's route", func() error {
		hop, err := dispatch(t, e.ns, keyed)
		if err == nil && routeVersion(hop) != "v2" {
			err = fmt.Errorf("hops %s", &hop)
		}
		return err
	})
	return keyed
}

// The relay rolls out (a spec change: the token rotated, so the pod
// template's verifier changed) while keyed requests flow: the Deployment
// starts the new pod before it stops the old one, the daemon moves its
// tunnel to the new pod, the old one drains, and no request fails.
func TestRelayRolloutWithTraffic(t *testing.T) {
	e := newEnv(t, "rollout", nil)
	l := newLaptop(t, e, relayImage)
	keyed := connectMeshSandbox(t, e, l)
	before := relayPod(t, e, "alice")
	tr := startTraffic(t, e.ns, keyed)
	start := time.Now()
	if _, err := l.Client.Connect(t.Context(), api.ConnectRequest{Spec: spec.Sandbox{Name: "alice"}, RotateToken: true, Wait: true, Timeout: 90 * time.Second},
		func(p api.Progress) { t.Logf("rotate: %s %s %s", p.Phase, p.Message, p.Error) }); err != nil {
		tr.end()
		t.Fatalf("connect --rotate-token: %v", err)
	}
	// Until the old pod is gone.
	eventually(t, 90*time.Second, "the old relay pod goes", func() error {
		if _, err := e.Admin.CoreV1().Pods(e.ns).Get(t.Context(), before.Name, metav1.GetOptions{}); err == nil {
			return fmt.Errorf("pod %s still there", before.Name)
		}
		return nil
	})
	time.Sleep(500 * time.Millisecond)
	sent, failed, last := tr.end()
	after := relayPod(t, e, "alice")
	t.Logf("rollout %s -> %s in %s: %d keyed requests, %d failed", before.Name, after.Name, time.Since(start).Round(100*time.Millisecond), sent, failed)
	if after.UID == before.UID {
		t.Fatalf("the relay pod did not change")
	}
	if sent < 10 {
		t.Errorf("only %d requests during the rollout", sent)
	}
	if failed > 0 {
		t.Errorf("%d of %d keyed requests failed during the rollout; last: %s", failed, sent, last)
	}
	if _, err := l.Client.Disconnect(t.Context(), "alice"); err != nil {
		t.Fatalf("disconnect: %v", err)
	}
}

// A CD sync re-applies the baseline's route VirtualService (Argo CD
// self-heal: spec.http replaced, sbx's routes gone): sbx, connected,
// puts its routes back, and keyed requests reach the laptop again.
func TestCDSyncRepairsRoutes(t *testing.T) {
	e := newEnv(t, "cdsync", nil)
	l := newLaptop(t, e, relayImage)
	keyed := connectMeshSandbox(t, e, l)
	vs, err := e.AdminClients.Istio.NetworkingV1().VirtualServices(e.ns).Get(t.Context(), "route", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	n := len(vs.Spec.Http)
	// The baseline's routes: the last one, "default" (sbx puts its own
	// before it).
	vs.Spec.Http = vs.Spec.Http[n-1:]
	if vs.Spec.Http[0].Name != "default" {
		t.Fatalf("the route VirtualService's last route is %q, want the baseline's default", vs.Spec.Http[0].Name)
	}
	start := time.Now()
	if _, err := e.AdminClients.Istio.NetworkingV1().VirtualServices(e.ns).Update(t.Context(), vs, metav1.UpdateOptions{}); err != nil {
		t.Fatalf("the CD sync: %v", err)
	}
	eventually(t, 60*time.Second, "sbx puts its routes back", func() error {
		vs, err := e.AdminClients.Istio.NetworkingV1().VirtualServices(e.ns).Get(t.Context(), "route", metav1.GetOptions{})
		if err == nil && len(vs.Spec.Http) != n {
			err = fmt.Errorf("%d routes, want %d", len(vs.Spec.Http), n)
		}
		return err
	})
	eventually(t, 30*time.Second, "keyed requests reach the laptop again", func() error {
		hop, err := dispatch(t, e.ns, keyed)
		if err == nil && routeVersion(hop) != "v2" {
			err = fmt.Errorf("hops %s", &hop)
		}
		return err
	})
	t.Logf("routes repaired and used again %s after the sync", time.Since(start).Round(100*time.Millisecond))
	if _, err := l.Client.Disconnect(t.Context(), "alice"); err != nil {
		t.Fatalf("disconnect: %v", err)
	}
}

// The relay process dies (SIGKILL): the node stand-in restarts the
// container (restartCount, CrashLoopBackOff while it backs off), and the
// daemon's tunnel comes back to the same pod.
func TestRelayCrashRestarts(t *testing.T) {
	e := newEnv(t, "crash", nil)
	local, _ := localServer(t, "route")
	l := newLaptop(t, e, relayImage)
	if _, err := l.connect(routeSandbox("alice", e.ns, local), 90*time.Second); err != nil {
		t.Fatalf("connect: %v", err)
	}
	e.reaches("alice", "route on the laptop", 30*time.Second)
	p := relayPod(t, e, "alice")
	pid, err := strconv.Atoi(strings.TrimPrefix(p.Status.ContainerStatuses[0].ContainerID, "sbxnode://"))
	if err != nil {
		t.Fatalf("container ID %q: %v", p.Status.ContainerStatuses[0].ContainerID, err)
	}
	if err := syscall.Kill(pid, syscall.SIGKILL); err != nil {
		t.Fatalf("kill the relay (pid %d): %v", pid, err)
	}
	start := time.Now()
	eventually(t, 60*time.Second, "the relay is restarted and ready", func() error {
		p, err := e.Admin.CoreV1().Pods(e.ns).Get(t.Context(), p.Name, metav1.GetOptions{})
		if err != nil {
			return err
		}
		cs := p.Status.ContainerStatuses[0]
		if cs.RestartCount != 1 || !cs.Ready || cs.LastTerminationState.Terminated == nil {
			return fmt.Errorf("restartCount %d, ready %v, last state %+v", cs.RestartCount, cs.Ready, cs.LastTerminationState)
		}
		if code := cs.LastTerminationState.Terminated.ExitCode; code != 137 {
			return fmt.Errorf("last exit code %d, want 137 (SIGKILL)", code)
		}
		return nil
	})
	e.reaches("alice", "route on the laptop", 60*time.Second)
	t.Logf("the relay restarted and reached the laptop again %s after it was killed", time.Since(start).Round(100*time.Millisecond))
	if _, err := l.Client.Disconnect(t.Context(), "alice"); err != nil {
		t.Fatalf("disconnect: %v", err)
	}
}

// A relay that never becomes ready (its readiness probe fails, as the node
// stand-in makes it for this image): at the wait's deadline sbx says what
// the pod waits for and the kubelet's warning (the probe failure), not a
// network problem; and the daemon renews the sandbox's Lease while it
// waits, so another user's sbx list does not see it expired.
func TestRelayNeverReady(t *testing.T) {
	e := newEnv(t, "neverready", nil)
	const image = "ghcr.io/sbx-dev/sbx:realcp-unready"
	theNode.FailReadiness(image)
	local, _ := localServer(t, "route")
	l := newLaptopWith(t, e, image, laptopOptions{namespace: e.ns, waitTimeout: 6 * time.Second, leaseInterval: time.Second})
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	var told string
	// The Lease's renewals while the daemon waits, sampled.
	var renewals []time.Time
	sampled := make(chan struct{})
	go func() {
		defer close(sampled)
		for ctx.Err() == nil {
			if lease, err := e.Admin.CoordinationV1().Leases(e.ns).Get(ctx, cluster.LeaseName("alice"), metav1.GetOptions{}); err == nil && lease.Spec.RenewTime != nil {
				if n := len(renewals); n == 0 || !renewals[n-1].Equal(lease.Spec.RenewTime.Time) {
					renewals = append(renewals, lease.Spec.RenewTime.Time)
				}
			}
			select {
			case <-ctx.Done():
			case <-time.After(200 * time.Millisecond):
			}
		}
	}()
	_, err := l.Client.Connect(ctx, api.ConnectRequest{Spec: routeSandbox("alice", e.ns, local), Wait: true, Timeout: 60 * time.Second},
		func(p api.Progress) {
			t.Logf("connect: %s %s %s", p.Phase, p.Message, p.Error)
			if msg := p.Message + " " + p.Error; told == "" && strings.Contains(msg, "not ready after") {
				told = msg
				cancel()
			}
		})
	cancel()
	<-sampled
	if told == "" {
		t.Fatalf("connect never said the relay was not ready after the wait: %v", err)
	}
	t.Logf("told: %s", told)
	for _, want := range []string{"Readiness probe failed", "kubectl describe pod", "not ready"} {
		if !strings.Contains(told, want) {
			t.Errorf("the timeout does not say %q: %s", want, told)
		}
	}
	for _, bad := range []string{"check your network", "rate limiter", "would exceed context deadline"} {
		if strings.Contains(told, bad) {
			t.Errorf("the timeout says %q: %s", bad, told)
		}
	}
	// sbx status, while the sandbox is not connected: the local service
	// listens, and status says so.
	st, err := l.Client.Sandbox(t.Context(), "alice")
	if err != nil {
		t.Fatal(err)
	}
	if len(st.Mappings) != 1 || !st.Mappings[0].Listening {
		t.Errorf("status in phase %s: mappings %+v, want the local %s listening", st.Phase, st.Mappings, local)
	}
	if len(renewals) < 3 {
		t.Errorf("the Lease was renewed %d times while the daemon waited for the relay (renewTimes %v), want it renewed every second", len(renewals)-1, renewals)
	}
	if _, err := l.Client.Disconnect(t.Context(), "alice"); err != nil {
		t.Fatalf("disconnect: %v", err)
	}
}

// Only the Lease of a sandbox whose laptop is gone (the daemon stopped)
// is deleted: the real garbage collector removes the relay, its pods and
// the Services; the developer's sbx gc (from another daemon) removes the
// routes left in CD's VirtualService, none is left, and keyed requests go
// to the baseline again (before the gc they get the mesh's 503).
func TestLeaseDeletedWhileDisconnected(t *testing.T) {
	e := newEnv(t, "leasegoneoff", nil)
	l := newLaptop(t, e, relayImage)
	keyed := connectMeshSandbox(t, e, l)
	l.stopDaemon()
	ctx := t.Context()
	if err := e.Admin.CoordinationV1().Leases(e.ns).Delete(ctx, cluster.LeaseName("alice"), metav1.DeleteOptions{}); err != nil {
		t.Fatalf("delete the Lease: %v", err)
	}
	start := time.Now()
	eventually(t, 90*time.Second, "the garbage collector removes the sandbox's objects", func() error {
		if left := sandboxObjects(t, e, "alice"); len(left) > 0 {
			return fmt.Errorf("left: %v", left)
		}
		return nil
	})
	t.Logf("collected in %s", time.Since(start).Round(100*time.Millisecond))
	// Until a gc, sbx's keyed route in CD's VirtualService points at the
	// collected sandbox Service: the mesh answers 503 for keyed requests,
	// as Istio does for a destination that does not exist.
	hop, err := dispatch(t, e.ns, keyed)
	t.Logf("a keyed request before gc: %v %s", err, &hop)
	if err == nil && routeVersion(hop) == "v2" {
		t.Errorf("a keyed request still reached the laptop's route after the sandbox was collected")
	}
	other := newLaptop(t, e, relayImage)
	gc, err := other.Client.GC(ctx, api.GCRequest{ClusterRequest: api.ClusterRequest{Namespace: e.ns}})
	if err != nil {
		t.Fatalf("gc: %v", err)
	}
	t.Logf("gc: %+v", gc)
	if len(gc.Routes) == 0 {
		t.Errorf("gc removed no dead route: sbx's routes in CD's VirtualServices outlive the sandbox otherwise")
	}
	if left, err := cluster.Leftovers(ctx, e.Dev, []string{e.ns}, "cluster.local"); err != nil || len(left) > 0 {
		t.Errorf("after gc, routes left: %+v (err %v)", left, err)
	}
	vs, err := e.AdminClients.Istio.NetworkingV1().VirtualServices(e.ns).Get(ctx, "route", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if len(vs.Spec.Http) != 1 || vs.Spec.Http[0].Name != "default" {
		var names []string
		for _, r := range vs.Spec.Http {
			names = append(names, r.Name)
		}
		t.Errorf("route VirtualService's routes after gc: %v, want only the baseline's default", names)
	}
	eventually(t, 30*time.Second, "after gc, keyed requests go to the baseline", func() error {
		hop, err := dispatch(t, e.ns, keyed)
		if err == nil && (routeVersion(hop) != "v1" || hop.Status != http.StatusOK) {
			err = fmt.Errorf("hops %s", &hop)
		}
		return err
	})
}

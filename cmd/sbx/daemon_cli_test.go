package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	apierrors "k8s.io/apimachinery/pkg/api/errors"

	"github.com/sbx-dev/sbx/cluster"
	"github.com/sbx-dev/sbx/cluster/kube"
	"github.com/sbx-dev/sbx/cluster/live"
	"github.com/sbx-dev/sbx/cluster/meshreport"
	"github.com/sbx-dev/sbx/cluster/spec"
	"github.com/sbx-dev/sbx/daemon"
	"github.com/sbx-dev/sbx/daemon/api"
	"github.com/sbx-dev/sbx/daemon/client"
	"github.com/sbx-dev/sbx/tools/testbed/sim"
	istioapi "istio.io/api/networking/v1alpha3"
	istionet "istio.io/client-go/pkg/apis/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// cliEnv points the CLI and daemon at a private temp home. Unix socket
// paths are short-limited, so it lives directly under the temp dir.
func cliEnv(t *testing.T) string {
	dir, err := os.MkdirTemp("", "sbxc")
	require.NoError(t, err)
	t.Cleanup(func() { _ = os.RemoveAll(dir) })
	t.Setenv("HOME", dir)
	t.Setenv("XDG_RUNTIME_DIR", filepath.Join(dir, "run"))
	t.Setenv("XDG_STATE_HOME", filepath.Join(dir, "state"))
	t.Setenv("XDG_CONFIG_HOME", filepath.Join(dir, "config"))
	t.Setenv("SBX_DAEMON_AUTOSTART", "0") // in-process tests never exec the test binary
	writeTestConfig(t, dir)
	// connect reads the kubeconfig before it asks the daemon; the tests'
	// daemons use fake clusters that never contact this one. Through
	// KUBECONFIG: client-go fixes ~/.kube/config at init, before HOME is
	// set here.
	kubeconfig := filepath.Join(dir, "kubeconfig")
	require.NoError(t, os.WriteFile(kubeconfig, []byte(testKubeconfig), 0o600))
	t.Setenv("KUBECONFIG", kubeconfig)
	return dir
}

// testKubeconfig has one context, "test", for a cluster nothing listens at.
const testKubeconfig = `apiVersion: v1
kind: Config
clusters:
- name: test
  cluster: {server: "https://127.0.0.1:1"}
users:
- name: test
  user: {token: test}
contexts:
- name: test
  context: {cluster: test, user: test}
current-context: test
`

// writeTestConfig gives a daemon that `sbx daemon` starts with HOME and
// XDG_CONFIG_HOME under dir a config naming a hosts file under dir: tests
// never let a daemon edit the machine's /etc/hosts (outbound refuses it
// in a test binary).
func writeTestConfig(t *testing.T, dir string) {
	t.Helper()
	hosts := filepath.Join(dir, "hosts")
	require.NoError(t, os.WriteFile(hosts, []byte("127.0.0.1 localhost\n"), 0o644))
	cfgDir := filepath.Join(dir, "config", "sbx")
	require.NoError(t, os.MkdirAll(cfgDir, 0o700))
	require.NoError(t, os.WriteFile(filepath.Join(cfgDir, "config.yaml"), []byte("outbound:\n  hostsFile: "+hosts+"\n"), 0o600))
}

// cliCluster is a daemon.Cluster for CLI tests: it applies instantly and
// its relay never becomes ready unless told to.
type cliCluster struct {
	mu      sync.Mutex
	deletes []string
	listed  []cluster.SandboxInfo
	ready   chan struct{}
}

func (c *cliCluster) Apply(ctx context.Context, sb *spec.Sandbox, o cluster.Options, progress func(cluster.Event)) (*cluster.Result, error) {
	key := o.RoutingKey
	progress(cluster.Event{Action: cluster.ActionCreated, Kind: "Deployment", Namespace: sb.Namespaces()[0], Name: "sbx-" + sb.Name})
	return &cluster.Result{Ref: cluster.Ref{Name: sb.Name, RoutingKey: key, Namespace: sb.Namespaces()[0], Namespaces: sb.Namespaces()},
		Routes: &cluster.RouteStatus{Report: []meshreport.PortReport{{Namespace: "hotrod", Service: "route", Port: 8083, Workload: "route",
			Views: []meshreport.ViewReport{
				{Clients: "", Chain: []string{"platform/wild (public, wildcard *.hotrod.svc.cluster.local)"}, Applies: "platform/wild",
					Keyed: meshreport.KeyedPartial, Reason: "clients platform/wild gives no route on port 8083 reach the baseline"},
				{Clients: "hotrod", Chain: []string{"hotrod/route (private)"}, Applies: "hotrod/route", Keyed: meshreport.KeyedSandbox},
			}}}}}, nil
}

// Leftovers and SweepRoutes make cliCluster a daemon.RouteSweeper.
func (c *cliCluster) Leftovers(ctx context.Context, ns string) ([]meshreport.Leftover, error) {
	return []meshreport.Leftover{{Namespace: "hotrod", Name: "route", What: "dead routes"}}, nil
}

func (c *cliCluster) SweepRoutes(ctx context.Context, ns string) ([]meshreport.Leftover, error) {
	return c.Leftovers(ctx, ns)
}

func (c *cliCluster) WaitRelay(ctx context.Context, t cluster.Ref, progress func(cluster.Event)) error {
	progress(cluster.Event{Action: cluster.ActionWaiting, Message: "waiting for pod"})
	select {
	case <-c.ready:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

func (c *cliCluster) DialRelay(ctx context.Context, t cluster.Ref) (net.Conn, error) {
	return nil, errors.New("no relay")
}
func (c *cliCluster) RenewLease(ctx context.Context, t cluster.Ref) error { return nil }
func (c *cliCluster) Delete(ctx context.Context, t cluster.Ref) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.deletes = append(c.deletes, t.Name)
	return nil
}
func (c *cliCluster) List(ctx context.Context, ns string) ([]cluster.SandboxInfo, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.listed, nil
}
func (c *cliCluster) GC(ctx context.Context, ns string, dryRun bool) (*cluster.GCReport, error) {
	return &cluster.GCReport{Deleted: []string{"old"}, Grace: 10 * time.Minute, DryRun: dryRun,
		Waiting: []cluster.SandboxInfo{{Name: "napping", Namespace: "hotrod", Holder: "jo@laptop", Expires: time.Now().Add(-23 * time.Second)}}}, nil
}

// startInProcessDaemon runs a daemon on the CLI's default paths. Its
// outbound access edits a temporary hosts file, never the machine's; tweak
// changes other options. It stops when the test ends, or earlier when the
// returned stop is called (which waits until it has stopped).
func startInProcessDaemon(t *testing.T, cl daemon.Cluster, tweak ...func(*daemon.Options)) (stop func()) {
	hosts := filepath.Join(t.TempDir(), "hosts")
	require.NoError(t, os.WriteFile(hosts, []byte("127.0.0.1 localhost\n"), 0o644))
	opts := daemon.Options{
		Paths:     api.DefaultPaths(os.Getenv),
		Version:   "test",
		Clusters:  func(context.Context, api.KubeconfigSource, string) (daemon.Cluster, error) { return cl, nil },
		HostsFile: hosts,
	}
	for _, f := range tweak {
		f(&opts)
	}
	d, err := daemon.New(opts)
	require.NoError(t, err)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- d.Run(ctx) }()
	var once sync.Once
	stop = func() {
		once.Do(func() {
			cancel()
			require.NoError(t, <-done)
		})
	}
	t.Cleanup(stop)
	c := &client.Client{}
	defer c.Close()
	require.Eventually(t, func() bool { _, err := c.Status(context.Background()); return err == nil }, 10*time.Second, 5*time.Millisecond)
	return stop
}

// writeSpec writes dir/sandbox.yaml, a spec mapping route's port 8083 to
// localhost:8083.
func writeSpec(t *testing.T, dir string) string {
	p := filepath.Join(dir, "sandbox.yaml")
	require.NoError(t, os.WriteFile(p, []byte(routeSpec("localhost:8083")), 0o600))
	return p
}

// routeSpec is a sandbox spec (name from --set name=…) mapping route's
// port 8083 to toLocal.
func routeSpec(toLocal string) string {
	return `name: '@{name}'
spec:
  local:
    - name: route
      from: {kind: Deployment, namespace: hotrod, name: route}
      mappings:
        - port: 8083
          toLocal: ` + toLocal + "\n"
}

func TestCLIWithoutDaemon(t *testing.T) {
	cliEnv(t)
	code, _, errOut := runCLI(t, "status")
	require.Equal(t, 1, code, "a daemon that is not running is a state, not a usage error")
	require.Contains(t, errOut, "not running")
	require.Contains(t, errOut, "hint:")

	code, _, errOut = runCLI(t, "connect", "-f", "nope.yaml", "--set", "name=alice")
	require.Equal(t, 2, code)
	require.Contains(t, errOut, "hint:")

	code, _, errOut = runCLI(t, "list")
	require.Equal(t, 2, code)
	require.Contains(t, errOut, "SBX_DAEMON_AUTOSTART")

	code, _, errOut = runCLI(t, "logs")
	require.Equal(t, 2, code)
	require.Contains(t, errOut, "no daemon log")

	code, out, _ := runCLI(t, "daemon", "stop")
	require.Equal(t, 0, code)
	require.Contains(t, out, "not running")

	code, _, errOut = runCLI(t, "disconnect")
	require.Equal(t, 2, code)
	require.Contains(t, errOut, "--all")
}

func TestCLIConnectStatusListDisconnect(t *testing.T) {
	dir := cliEnv(t)
	cl := &cliCluster{ready: make(chan struct{})}
	startInProcessDaemon(t, cl)
	specPath := writeSpec(t, dir)

	code, out, errOut := runCLI(t, "connect", "-f", specPath, "--set", "name=alice", "--wait=false")
	require.Equal(t, 0, code, errOut)
	require.Contains(t, out, "connecting in the background")

	code, out, errOut = runCLI(t, "status", "alice", "-o", "json")
	require.Equal(t, 0, code, errOut)
	var sb api.SandboxStatus
	require.NoError(t, json.Unmarshal([]byte(out), &sb))
	require.Equal(t, "alice", sb.Name)
	require.Len(t, sb.RoutingKey, 13)

	require.Eventually(t, func() bool {
		_, out, _ := runCLI(t, "status", "alice", "-o", "json")
		var sb api.SandboxStatus
		return json.Unmarshal([]byte(out), &sb) == nil && sb.Routes != nil
	}, 10*time.Second, 20*time.Millisecond, "the apply's route report reaches the status")
	code, out, _ = runCLI(t, "status")
	require.Equal(t, 0, code)
	require.Contains(t, out, "alice")
	require.Contains(t, out, "route.hotrod:8083 -> localhost:8083")
	require.Contains(t, out, "routes: PARTIAL: keyed requests to route.hotrod:8083 from other namespaces partly reach the baseline")
	require.Contains(t, out, "`sbx routes alice`")

	code, out, errOut = runCLI(t, "routes", "alice")
	require.Equal(t, 0, code, errOut)
	require.Contains(t, out, "route.hotrod:8083 (local workload route)")
	require.Contains(t, out, "clients in other namespaces\n    VirtualServices: platform/wild (public, wildcard *.hotrod.svc.cluster.local)")
	require.Contains(t, out, "keyed requests: PARTLY reach the sandbox: clients platform/wild gives no route")
	require.Contains(t, out, "clients in hotrod\n    VirtualServices: hotrod/route (private)\n    applies: hotrod/route\n    keyed requests: reach the sandbox")
	code, out, errOut = runCLI(t, "routes", "alice", "-o", "json")
	require.Equal(t, 0, code, errOut)
	var rs api.RouteState
	require.NoError(t, json.Unmarshal([]byte(out), &rs))
	require.Equal(t, api.KeyedPartial, rs.Keyed)
	require.Len(t, rs.Ports[0].Views, 2)
	code, _, errOut = runCLI(t, "routes", "bob")
	require.Equal(t, 2, code)
	require.Contains(t, errOut, "not connected")
	code, _, _ = runCLI(t, "routes")
	require.Equal(t, 2, code, "NAME is required")

	code, _, errOut = runCLI(t, "status", "bob")
	require.Equal(t, 2, code)
	require.Contains(t, errOut, "not connected")

	cl.mu.Lock()
	cl.listed = []cluster.SandboxInfo{{Name: "alice", RoutingKey: sb.RoutingKey, Namespace: "hotrod"}, {Name: "ghost", RoutingKey: "zzzzzzzzzzzzz", Namespace: "hotrod", Expired: true},
		{Name: "bobs", RoutingKey: "yyyyyyyyyyyyy", Namespace: "hotrod", Holder: "bob@laptop", Expires: time.Now().Add(time.Minute)}}
	cl.mu.Unlock()
	code, out, errOut = runCLI(t, "list")
	require.Equal(t, 0, code, errOut)
	require.Contains(t, out, "ghost")
	require.Contains(t, out, "(orphan)")
	require.Regexp(t, `bobs +yyyyyyyyyyyyy +hotrod +- +cluster +bob@laptop +expires in`, out, "another daemon's live sandbox: its holder, no orphan mark")
	require.Contains(t, out, "daemon+cluster")
	require.Contains(t, out, "leftover: dead routes in VirtualService hotrod/route (`sbx gc` removes it)")

	code, out, _ = runCLI(t, "gc", "-o", "json")
	require.Equal(t, 0, code)
	var gcRes api.GCResult
	require.NoError(t, json.Unmarshal([]byte(out), &gcRes))
	require.Equal(t, []string{"old"}, gcRes.Deleted)
	require.Equal(t, []meshreport.Leftover{{Namespace: "hotrod", Name: "route", What: "dead routes"}}, gcRes.Routes)
	require.Equal(t, 10*time.Minute, gcRes.Grace)
	require.Len(t, gcRes.Waiting, 1)
	require.Equal(t, "napping", gcRes.Waiting[0].Name)
	code, out, _ = runCLI(t, "gc")
	require.Equal(t, 0, code)
	require.Regexp(t, `^deleted 1 expired sandbox\(es\): old
kept for now: napping in hotrod \(lease expired 2\ds ago; gc collects it in 9m\d+s or later; held by jo@laptop\)
removed dead routes: VirtualService hotrod/route
$`, out)
	// A dry run says what it would do.
	code, out, _ = runCLI(t, "gc", "--dry-run")
	require.Equal(t, 0, code)
	require.Contains(t, out, "would delete 1 expired sandbox(es): old\n")
	require.Contains(t, out, "would remove dead routes: VirtualService hotrod/route\n")

	// Completion offers the daemon's sandbox names.
	code, out, _ = runCLI(t, "__complete", "disconnect", "")
	require.Equal(t, 0, code)
	require.Contains(t, out, "alice")

	code, _, errOut = runCLI(t, "connect", "-f", specPath, "--set", "name=bob", "--wait=false")
	require.Equal(t, 0, code, errOut)
	code, out, errOut = runCLI(t, "disconnect", "bob", "--forget")
	require.Equal(t, 0, code, errOut)
	require.Contains(t, out, "forgot bob")
	code, _, errOut = runCLI(t, "disconnect", "bob", "--forget", "--orphan")
	require.Equal(t, 2, code)
	require.Contains(t, errOut, "contradict")

	code, _, errOut = runCLI(t, "disconnect", "ghost")
	require.Equal(t, 2, code)
	require.Contains(t, errOut, "sbx: sandbox \"ghost\" is not connected to this daemon\n"+
		"  hint: `sbx status` lists the connected sandboxes; for a leftover shown as orphan by `sbx list`, use `sbx disconnect NAME --orphan`\n")
	require.Equal(t, 1, strings.Count(errOut, "sbx status"), "says where to look once: %s", errOut)
	code, out, errOut = runCLI(t, "disconnect", "ghost", "--orphan")
	require.Equal(t, 0, code, errOut)
	require.Contains(t, out, "sandbox ghost disconnected")
	cl.mu.Lock()
	deletes := slices.Clone(cl.deletes)
	cl.mu.Unlock()
	require.Equal(t, []string{"ghost"}, deletes, "forget touched nothing, orphan deleted ghost")

	// Another daemon renews bobs's Lease: --orphan refuses, --force does it.
	code, _, errOut = runCLI(t, "disconnect", "bobs", "--orphan")
	require.NotEqual(t, 0, code)
	require.Contains(t, errOut, "sandbox bobs in namespace hotrod is no orphan: bob@laptop renews its Lease")
	code, _, errOut = runCLI(t, "disconnect", "bobs", "--force")
	require.Equal(t, 2, code)
	require.Contains(t, errOut, "--force goes with --orphan")
	code, _, errOut = runCLI(t, "disconnect", "bobs", "--orphan", "--force")
	require.Equal(t, 0, code, errOut)

	code, out, errOut = runCLI(t, "disconnect", "alice")
	require.Equal(t, 0, code, errOut)
	require.Contains(t, out, "sandbox alice disconnected")
	code, _, errOut = runCLI(t, "disconnect", "alice")
	require.Equal(t, 2, code)
	require.Contains(t, errOut, "sbx status")
}

// TestCLIConnectWaitTimeout: a sandbox not ready within --timeout exits 1
// and says how to follow it; meanwhile, as the daemon has no news (a relay
// pod that never gets ready), connect --wait says that it still waits, how
// long so far and that Ctrl-C stops only the waiting.
//
// The daemon's progress must arrive before the timeout and before a
// quarter of it passes in silence (the heartbeat's spell, see quietEvery):
// 4s leaves a loaded CI machine a second for what takes milliseconds.
func TestCLIConnectWaitTimeout(t *testing.T) {
	dir := cliEnv(t)
	startInProcessDaemon(t, &cliCluster{ready: make(chan struct{})})
	code, _, errOut := runCLI(t, "connect", "-f", writeSpec(t, dir), "--set", "name=alice", "--timeout", "4s")
	require.Equal(t, 1, code, "a sandbox not ready in time is a failure, not a usage error: %s", errOut)
	require.Contains(t, errOut, "applying")
	require.Contains(t, errOut, "waiting for pod")
	require.Contains(t, errOut, "not ready after 4s")
	require.Contains(t, errOut, "sbx status alice")

	require.Contains(t, errOut, "still waiting: ")
	require.Contains(t, errOut, "so far, no news from the daemon (Ctrl-C stops waiting; the daemon keeps trying)")
	require.Less(t, strings.Index(errOut, "waiting for pod"), strings.Index(errOut, "still waiting"))
}

func TestCLIConnectInvalidSpec(t *testing.T) {
	dir := cliEnv(t)
	p := filepath.Join(dir, "bad.yaml")
	require.NoError(t, os.WriteFile(p, []byte("name: alice\nspec:\n  local: []\n  bogus: 1\n"), 0o600))
	code, _, errOut := runCLI(t, "connect", "-f", p)
	require.Equal(t, 2, code)
	require.Contains(t, errOut, "bogus")
	require.Contains(t, errOut, "hint:")
}

// buildSbx builds the sbx binary once per test run.
func buildSbx(t *testing.T) string {
	t.Helper()
	if testing.Short() {
		t.Skip("builds the binary")
	}
	bin := filepath.Join(t.TempDir(), "sbx")
	out, err := exec.Command("go", "build", "-o", bin, ".").CombinedOutput()
	require.NoError(t, err, string(out))
	return bin
}

func TestBinaryAutostartsDaemon(t *testing.T) {
	bin := buildSbx(t)
	dir := cliEnv(t)
	env := append(os.Environ(), "SBX_DAEMON_AUTOSTART=1")
	run := func(args ...string) (int, string, string) {
		cmd := exec.Command(bin, args...)
		cmd.Env = env
		var out, errb strings.Builder
		cmd.Stdout, cmd.Stderr = &out, &errb
		err := cmd.Run()
		code := 0
		var ee *exec.ExitError
		if errors.As(err, &ee) {
			code = ee.ExitCode()
		} else {
			require.NoError(t, err)
		}
		return code, out.String(), errb.String()
	}
	var pid int
	t.Cleanup(func() {
		run("daemon", "stop")
		if pid > 0 {
			// os.Process.Kill is SIGKILL on Unix, TerminateProcess on Windows.
			if p, err := os.FindProcess(pid); err == nil {
				_ = p.Kill()
			}
		}
	})

	code, _, errOut := run("status")
	require.Equal(t, 1, code, "status never starts a daemon")
	require.Contains(t, errOut, "not running")

	code, out, errOut := run("-v", "list", "--local")
	require.Equal(t, 0, code, errOut)
	require.Contains(t, errOut, "starting the sbx daemon in the background")
	require.Contains(t, out, "no sandboxes")

	code, out, errOut = run("status", "-o", "json")
	require.Equal(t, 0, code, errOut)
	var st api.Status
	require.NoError(t, json.Unmarshal([]byte(out), &st))
	pid = st.PID
	require.NotEqual(t, os.Getpid(), pid)
	require.Equal(t, filepath.Join(dir, "state", "sbx", "daemon.log"), st.LogPath)
	if runtime.GOOS == "linux" {
		cmdline, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
		require.NoError(t, err)
		require.Contains(t, strings.Split(string(cmdline), "\x00"), "-v", "the auto-started daemon inherits -v")
	}

	paths := api.DefaultPaths(os.Getenv)
	fi, err := os.Stat(paths.RuntimeDir)
	require.NoError(t, err)
	require.Equal(t, os.FileMode(0o700), fi.Mode().Perm())
	fi, err = os.Stat(paths.Socket())
	require.NoError(t, err)
	require.Equal(t, os.FileMode(0o600), fi.Mode().Perm())

	// Already running: a second daemon refuses, a second autostart reuses.
	code, _, errOut = run("daemon")
	require.Equal(t, 2, code)
	require.Contains(t, errOut, "already running")
	require.Contains(t, errOut, "sbx daemon stop")
	code, _, errOut = run("list", "--local")
	require.Equal(t, 0, code)
	require.NotContains(t, errOut, "starting")

	code, out, _ = run("logs")
	require.Equal(t, 0, code)
	require.Contains(t, out, "daemon listening")

	code, out, _ = run("daemon", "stop")
	require.Equal(t, 0, code)
	require.Contains(t, out, "stopped")
	_, err = os.Stat(paths.Socket())
	require.True(t, errors.Is(err, os.ErrNotExist))
	code, _, _ = run("status")
	require.Equal(t, 1, code)
}

// watchRun is an `sbx connect --watch` of sandbox alice running against
// the test daemon.
type watchRun struct {
	errb   *lockedBuffer
	c      *client.Client
	cancel context.CancelFunc
	done   chan int
}

func startConnectWatch(t *testing.T, specPath string) *watchRun {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	w := &watchRun{errb: &lockedBuffer{}, c: &client.Client{}, cancel: cancel, done: make(chan int, 1)}
	t.Cleanup(func() { cancel(); w.c.Close() })
	go func() {
		var out lockedBuffer
		w.done <- run(ctx, []string{"connect", "-f", specPath, "--set", "name=alice", "--wait=false", "--watch"}, strings.NewReader(""), &out, w.errb)
	}()
	require.Eventually(t, func() bool { return strings.Contains(w.errb.String(), "Watching") }, 10*time.Second, 10*time.Millisecond)
	return w
}

// toLocal is where alice's first mapping points, "" before it is known.
func (w *watchRun) toLocal() string {
	sb, err := w.c.Sandbox(context.Background(), "alice")
	if err != nil || len(sb.Mappings) == 0 {
		return ""
	}
	return sb.Mappings[0].ToLocal
}

// stop ends the watch and checks that it ended cleanly.
func (w *watchRun) stop(t *testing.T) {
	t.Helper()
	w.cancel()
	select {
	case code := <-w.done:
		require.Equal(t, 0, code, w.errb.String())
	case <-time.After(10 * time.Second):
		t.Fatal("connect --watch did not stop")
	}
}

func TestCLIConnectWatchReapplies(t *testing.T) {
	dir := cliEnv(t)
	startInProcessDaemon(t, &cliCluster{ready: make(chan struct{})})
	specPath := writeSpec(t, dir)
	w := startConnectWatch(t, specPath)
	require.Equal(t, "localhost:8083", w.toLocal())
	key := func() string { sb, _ := w.c.Sandbox(context.Background(), "alice"); return sb.RoutingKey }()

	// An invalid edit is reported; the sandbox keeps its spec.
	require.NoError(t, os.WriteFile(specPath, []byte("name: '@{name}'\nspec:\n  local: 7\n"), 0o600))
	require.Eventually(t, func() bool { return strings.Contains(w.errb.String(), "keeps its last good spec") }, 10*time.Second, 10*time.Millisecond)
	require.Equal(t, "localhost:8083", w.toLocal())

	// A valid edit (saved the way editors do: new file renamed over it)
	// is re-applied with the same key.
	tmp := specPath + ".new"
	require.NoError(t, os.WriteFile(tmp, []byte(routeSpec("localhost:9090")), 0o600))
	require.NoError(t, os.Rename(tmp, specPath))
	require.Eventually(t, func() bool { return w.toLocal() == "localhost:9090" }, 10*time.Second, 10*time.Millisecond)
	sb, err := w.c.Sandbox(context.Background(), "alice")
	require.NoError(t, err)
	require.Equal(t, key, sb.RoutingKey)

	w.stop(t)
	require.Contains(t, w.errb.String(), "stays connected")
}

// TestCLIConnectWatchFollowsSymlink: a spec reached through a symlink
// (dotfiles managers, mounted ConfigMaps) is re-applied when its target is
// edited, although the link's own directory sees no event.
func TestCLIConnectWatchFollowsSymlink(t *testing.T) {
	dir := cliEnv(t)
	startInProcessDaemon(t, &cliCluster{ready: make(chan struct{})})
	realDir := filepath.Join(dir, "dotfiles")
	require.NoError(t, os.Mkdir(realDir, 0o700))
	target := filepath.Join(realDir, "sandbox.yaml")
	require.NoError(t, os.WriteFile(target, []byte(routeSpec("localhost:8083")), 0o600))
	link := filepath.Join(dir, "sandbox.yaml")
	require.NoError(t, os.Symlink(target, link))

	w := startConnectWatch(t, link)
	require.Eventually(t, func() bool { return w.toLocal() == "localhost:8083" }, 10*time.Second, 10*time.Millisecond)
	require.NoError(t, os.WriteFile(target, []byte(routeSpec("localhost:9191")), 0o600))
	require.Eventually(t, func() bool { return w.toLocal() == "localhost:9191" }, 10*time.Second, 10*time.Millisecond,
		"an edit of the symlink's target is re-applied")
	w.stop(t)
}

func TestCLIConnectOnSimulatedCluster(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a simulated cluster")
	}
	dir := cliEnv(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	startSimDaemon(ctx, t, sim.Options{}, nil)

	code, out, errOut := runCLI(t, "connect", "-f", writeSpec(t, dir), "--set", "name=alice")
	require.Equal(t, 0, code, errOut)
	for _, step := range []string{"Connecting sandbox alice", "applying", "created Deployment hotrod/", "waiting-relay", "connecting", "ready"} {
		require.Contains(t, errOut, step)
	}
	require.Contains(t, out, "Sandbox alice is ready.")
	c2 := &client.Client{}
	defer c2.Close()
	st, err := c2.Sandbox(ctx, "alice")
	require.NoError(t, err)
	require.Contains(t, out, "routing key: "+st.RoutingKey)
	require.Contains(t, out, "curl -H 'baggage: sbx-routing-key="+st.RoutingKey+"' http://route.hotrod:8083/")
	require.Contains(t, out, "nothing listening on localhost:8083")

	require.NotContains(t, out, "BUT ", "the simulated cluster's routes work from every namespace")

	code, out, _ = runCLI(t, "status")
	require.Equal(t, 0, code)
	require.Contains(t, out, "alice  ready")
	require.Contains(t, out, "NOT listening")
	require.Contains(t, out, "2 session(s)")
	require.Contains(t, out, "routes: effective (keyed requests reach the sandbox from every namespace)")

	code, out, errOut = runCLI(t, "list", "-o", "json")
	require.Equal(t, 0, code, errOut)
	var res api.ListResult
	require.NoError(t, json.Unmarshal([]byte(out), &res))
	require.Len(t, res.Sandboxes, 1)
	require.True(t, res.Sandboxes[0].InCluster)

	code, _, errOut = runCLI(t, "disconnect", "--all")
	require.Equal(t, 0, code, errOut)
}

// A connect whose keyed requests cannot reach the sandbox from everywhere
// says so at the end instead of a plain "ready": here a wildcard
// VirtualService routes route only for frontend, and an exact-host
// VirtualService of sbx's would take route away from it.
func TestCLIConnectSaysWhereKeyedRequestsDoNotReach(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a simulated cluster")
	}
	dir := cliEnv(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	wild := &istionet.VirtualService{ObjectMeta: metav1.ObjectMeta{Name: "wild", Namespace: sim.AppNamespace}}
	wild.Spec.Hosts = []string{"*.hotrod.svc.cluster.local"}
	wild.Spec.Http = []*istioapi.HTTPRoute{{
		Name:  "frontend-only",
		Match: []*istioapi.HTTPMatchRequest{{SourceLabels: map[string]string{"app": "frontend"}}},
		Route: []*istioapi.HTTPRouteDestination{{Destination: &istioapi.Destination{Host: "route.hotrod.svc.cluster.local"}}},
	}}
	c := startSimDaemon(ctx, t, sim.Options{WithoutBaselineVirtualService: true}, func(c *sim.Cluster) {
		_, err := c.Clients.Istio.NetworkingV1().VirtualServices(sim.AppNamespace).Create(ctx, wild, metav1.CreateOptions{})
		require.NoError(t, err)
	})

	code, out, errOut := runCLI(t, "connect", "-f", writeSpec(t, dir), "--set", "name=alice")
	require.Equal(t, 0, code, errOut)
	require.Contains(t, errOut, "would take route away from it", "the plan's warning")
	require.Contains(t, errOut, "routing Service hotrod/route: keyed requests routed with Istio VirtualServices (CD routes it with VirtualService hotrod/wild)", "connect says how and why")
	require.Contains(t, out, "Sandbox alice is ready.")
	require.Contains(t, out, "BUT keyed requests to route.hotrod:8083 from ")
	require.Contains(t, out, "`sbx routes alice`")
	_, err := c.Clients.Istio.NetworkingV1().VirtualServices(sim.AppNamespace).Get(ctx, "route-sbx", metav1.GetOptions{})
	require.True(t, apierrors.IsNotFound(err), "no exact-host VirtualService next to the wildcard")

	code, out, errOut = runCLI(t, "routes", "alice")
	require.Equal(t, 0, code, errOut)
	require.Contains(t, out, "hotrod/wild (public, wildcard *.hotrod.svc.cluster.local)")
	code, _, errOut = runCLI(t, "disconnect", "--all")
	require.Equal(t, 0, code, errOut)
	got, err := c.Clients.Istio.NetworkingV1().VirtualServices(sim.AppNamespace).Get(ctx, "wild", metav1.GetOptions{})
	require.NoError(t, err)
	require.Len(t, got.Spec.Http, 1, "the twin is gone")
}

// startSimDaemon starts a simulated cluster (seed changes it first) and an
// in-process daemon on the CLI's default paths that uses it.
func startSimDaemon(ctx context.Context, t *testing.T, opts sim.Options, seed func(*sim.Cluster)) *sim.Cluster {
	t.Helper()
	c, err := sim.Start(ctx, opts)
	require.NoError(t, err)
	t.Cleanup(c.Close)
	if seed != nil {
		seed(c)
	}
	kc := live.NewFromKube(&kube.Cluster{REST: c.RESTConfig, Kube: c.Clients.Kube, Istio: c.Clients.Istio, Namespace: sim.AppNamespace},
		live.Options{DefaultRelayImage: "ghcr.io/sbx-dev/sbx:test"})
	t.Cleanup(func() { _ = kc.Close() })
	startInProcessDaemon(t, kc)
	return c
}

func TestCLILogsTail(t *testing.T) {
	dir := cliEnv(t)
	logDir := filepath.Join(dir, "state", "sbx")
	require.NoError(t, os.MkdirAll(logDir, 0o700))
	var lines []string
	for i := range 10 {
		lines = append(lines, fmt.Sprintf("line %d", i))
	}
	require.NoError(t, os.WriteFile(filepath.Join(logDir, "daemon.log"), []byte(strings.Join(lines, "\n")+"\n"), 0o600))
	code, out, errOut := runCLI(t, "logs", "--tail", "3")
	require.Equal(t, 0, code, errOut)
	require.Equal(t, "line 7\nline 8\nline 9\n", out)
	code, out, _ = runCLI(t, "logs")
	require.Equal(t, 0, code)
	require.Equal(t, strings.Join(lines, "\n")+"\n", out)
	code, out, _ = runCLI(t, "logs", "--tail", "100")
	require.Equal(t, 0, code)
	require.Equal(t, strings.Join(lines, "\n")+"\n", out)

	// The log is text: -o json is refused, not silently ignored.
	code, _, errOut = runCLI(t, "logs", "-o", "json")
	require.Equal(t, 2, code)
	require.Contains(t, errOut, "not supported")
}

func TestCLIStatusWatch(t *testing.T) {
	dir := cliEnv(t)
	startInProcessDaemon(t, &cliCluster{ready: make(chan struct{})})
	for _, format := range []string{"json", "text"} {
		t.Run(format, func(t *testing.T) {
			ctx, cancel := context.WithCancel(context.Background())
			var out, errb lockedBuffer
			done := make(chan int, 1)
			go func() {
				done <- run(ctx, []string{"status", "--watch", "-o", format}, strings.NewReader(""), &out, &errb)
			}()
			if format == "json" {
				require.Eventually(t, func() bool { return strings.Contains(out.String(), `"snapshot"`) }, 10*time.Second, 10*time.Millisecond)
			} else {
				require.Eventually(t, func() bool { return strings.Contains(out.String(), "sbx daemon test") }, 10*time.Second, 10*time.Millisecond)
			}
			name := "w" + format
			code, _, errOut := runCLI(t, "connect", "-f", writeSpec(t, dir), "--set", "name="+name, "--wait=false")
			require.Equal(t, 0, code, errOut)
			require.Eventually(t, func() bool { return strings.Contains(out.String(), name) }, 10*time.Second, 10*time.Millisecond)
			cancel()
			require.Equal(t, exitInterrupted, <-done, "Ctrl-C ends a watch: %s", errb.String())
			if format == "json" {
				// One JSON event per line, the first a snapshot.
				lines := strings.Split(strings.TrimSpace(out.String()), "\n")
				require.Greater(t, len(lines), 1)
				for i, l := range lines {
					var ev api.Event
					require.NoError(t, json.Unmarshal([]byte(l), &ev), l)
					require.Equal(t, i == 0, ev.Snapshot != nil)
				}
			}
		})
	}
}

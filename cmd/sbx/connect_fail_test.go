package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	istiofake "istio.io/client-go/pkg/clientset/versioned/fake"
	kubefake "k8s.io/client-go/kubernetes/fake"

	"github.com/stretchr/testify/require"
	"k8s.io/client-go/rest"

	"github.com/sbx-dev/sbx/cluster"
	"github.com/sbx-dev/sbx/cluster/kube"
	"github.com/sbx-dev/sbx/cluster/live"
	"github.com/sbx-dev/sbx/daemon"
	"github.com/sbx-dev/sbx/daemon/api"
)

// runCLIUntil runs the CLI in-process and calls then once its stdout or
// stderr contains marker, while the command still runs (nil then cancels
// the command's context, as main does on Ctrl-C); it returns the exit
// code and the final stderr.
func runCLIUntil(t *testing.T, marker string, then func(), args ...string) (int, string) {
	t.Helper()
	var next func(string, context.CancelFunc)
	if then != nil {
		next = func(string, context.CancelFunc) { then() }
	}
	code, _, errOut := runCLIWhen(t, func(output string) bool { return strings.Contains(output, marker) }, next, args...)
	return code, errOut
}

// runCLIWhen is runCLIUntil with a condition: then is called once ready
// (given stdout and stderr so far) holds, with the output so far and the
// cancel func that stands for Ctrl-C; nil then is Ctrl-C at once.
func runCLIWhen(t *testing.T, ready func(output string) bool, then func(output string, interrupt context.CancelFunc), args ...string) (code int, stdout, stderr string) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var out, errb lockedBuffer
	done := make(chan int, 1)
	go func() { done <- run(ctx, args, strings.NewReader(""), &out, &errb) }()
	// Generous: what the test waits for may be a heartbeat that takes
	// seconds to come (clusterWaitEvery), on a CI machine that may be slow.
	deadline := time.Now().Add(30 * time.Second)
	for !ready(out.String() + errb.String()) {
		select {
		case code := <-done:
			t.Fatalf("sbx %s ended (exit %d) before the test was ready; stderr:\n%s", strings.Join(args, " "), code, errb.String())
		case <-time.After(5 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			t.Fatalf("sbx %s: still not ready after 30s; stderr:\n%s", strings.Join(args, " "), errb.String())
		}
	}
	if then == nil {
		cancel() // as main does on SIGINT
	} else {
		then(out.String(), cancel)
	}
	select {
	case code := <-done:
		return code, out.String(), errb.String()
	case <-time.After(30 * time.Second):
		t.Fatalf("sbx %s did not return; stderr:\n%s", strings.Join(args, " "), errb.String())
		return 0, "", ""
	}
}

// TestCLIConnectInterrupted: Ctrl-C while connect waits for a relay that
// never gets ready says what happens to the sandbox (the daemon goes on)
// and how to follow or remove it, exits 130, and leaks no "context
// canceled".
func TestCLIConnectInterrupted(t *testing.T) {
	dir := cliEnv(t)
	startInProcessDaemon(t, &cliCluster{ready: make(chan struct{})})
	code, errOut := runCLIUntil(t, "waiting for pod", nil, "connect", "-f", writeSpec(t, dir), "--set", "name=alice")
	require.Equal(t, exitInterrupted, code, errOut)
	require.NotContains(t, errOut, "context canceled")
	require.Contains(t, errOut, "sbx: interrupted while connecting sandbox alice (phase waiting-relay); the daemon keeps connecting it in the background")
	require.Contains(t, errOut, "hint: `sbx status alice --watch` follows it, `sbx disconnect alice` removes it")

	code, _, errOut = runCLI(t, "status", "alice")
	require.Equal(t, 0, code, errOut)
}

// TestCLIInterruptedWithoutContextCanceled: any command ended by Ctrl-C
// says "interrupted" and exits 130, not Go's "context canceled" and 1.
func TestCLIInterruptedWithoutContextCanceled(t *testing.T) {
	cliEnv(t)
	startInProcessDaemon(t, &cliCluster{ready: make(chan struct{})})
	for _, args := range [][]string{{"list"}, {"gc"}, {"disconnect", "--all"}} {
		code, errOut := runCLICanceled(t, args...)
		require.Equal(t, exitInterrupted, code, "%v: %s", args, errOut)
		require.Equal(t, "sbx: interrupted\n", errOut, args)
	}
}

// TestCLIConnectDaemonDies: a daemon that stops while connect waits is
// reported as such, with the next step, not as "unexpected EOF" and a bug.
func TestCLIConnectDaemonDies(t *testing.T) {
	dir := cliEnv(t)
	stop := startInProcessDaemon(t, &cliCluster{ready: make(chan struct{})})
	code, errOut := runCLIUntil(t, "waiting for pod", stop, "connect", "-f", writeSpec(t, dir), "--set", "name=alice")
	require.Equal(t, 1, code, errOut)
	require.Contains(t, errOut, "sbx: the sbx daemon stopped while connecting sandbox alice")
	require.Contains(t, errOut, "hint: connect again: a new daemon resumes alice with its routing key")
	require.NotContains(t, errOut, "looks like a bug")
}

func TestQuietEvery(t *testing.T) {
	for _, tt := range []struct{ timeout, want time.Duration }{
		{0, 15 * time.Second},
		{3 * time.Minute, 15 * time.Second},
		{40 * time.Second, 10 * time.Second},
		{2 * time.Second, 500 * time.Millisecond},
	} {
		require.Equal(t, tt.want, quietEvery(tt.timeout), tt.timeout)
	}
}

// TestCLIConnectChecksKubeconfigFirst: a missing or broken kubeconfig or
// an unknown --context is refused before the daemon is asked, so no
// failed sandbox is left in the daemon to disconnect.
func TestCLIConnectChecksKubeconfigFirst(t *testing.T) {
	dir := cliEnv(t)
	startInProcessDaemon(t, &cliCluster{ready: make(chan struct{})})
	specPath := writeSpec(t, dir)
	broken := filepath.Join(dir, "broken")
	require.NoError(t, os.WriteFile(broken, []byte("garbage: [\n"), 0o600))
	tests := []struct {
		args []string
		want string
	}{
		{[]string{"--context", "nope"}, `--context "nope" is not in kubeconfig`},
		{[]string{"--kubeconfig", filepath.Join(dir, "missing")}, "no such file or directory"},
		{[]string{"--kubeconfig", broken}, "load kubeconfig " + broken},
	}
	for _, tt := range tests {
		t.Run(strings.Join(tt.args, " "), func(t *testing.T) {
			code, _, errOut := runCLI(t, append([]string{"connect", "-f", specPath, "--set", "name=alice", "--wait=false"}, tt.args...)...)
			require.Equal(t, 2, code, errOut)
			require.Contains(t, errOut, "sbx: cannot connect sandbox alice: ")
			require.Contains(t, errOut, tt.want)
			require.Contains(t, errOut, "nothing was sent to the daemon")
		})
	}
	code, out, errOut := runCLI(t, "status", "-o", "json")
	require.Equal(t, 0, code, errOut)
	var st api.Status
	require.NoError(t, json.Unmarshal([]byte(out), &st))
	require.Empty(t, st.Sandboxes, "no failed sandbox was left in the daemon")

	// The context the kubeconfig has is accepted.
	code, _, errOut = runCLI(t, "connect", "-f", specPath, "--set", "name=alice", "--context", "test", "--wait=false")
	require.Equal(t, 0, code, errOut)
}

// TestInterruptedHidesTeardownErrors: after Ctrl-C, whatever broke as the
// command was torn down (context canceled, a closed connection) is
// reported as the interruption; an error sbx explained stays as it is, and
// nothing changes without an interruption.
func TestInterruptedHidesTeardownErrors(t *testing.T) {
	live := context.Background()
	gone, cancel := context.WithCancel(live)
	cancel()
	closed := errors.New("read tcp 127.0.0.1:1->127.0.0.1:2: use of closed network connection")
	explained := userError(errors.New("interrupted while connecting sandbox alice"), "hint")
	tests := []struct {
		ctx  context.Context
		err  error
		want string
		code int
	}{
		{gone, context.Canceled, "sbx: interrupted", exitInterrupted},
		{gone, fmt.Errorf("bench: %w", closed), "sbx: interrupted", exitInterrupted},
		{gone, explained, formatError(explained), 2},
		{live, closed, "sbx: " + closed.Error(), 1},
	}
	for _, tt := range tests {
		err := interrupted(tt.ctx, tt.err)
		require.Equal(t, tt.want, formatError(err))
		require.Equal(t, tt.code, exitCode(err))
	}
}

// TestCLIClusterCommandsCheckKubeconfigFirst: list, gc and disconnect
// --orphan report an unknown --context (or a missing or broken
// kubeconfig) plainly, before the daemon tries the cluster; list still
// lists the daemon's own sandboxes, and says so in its JSON too.
func TestCLIClusterCommandsCheckKubeconfigFirst(t *testing.T) {
	dir := cliEnv(t)
	cl := &cliCluster{ready: make(chan struct{})}
	startInProcessDaemon(t, cl)
	code, _, errOut := runCLI(t, "connect", "-f", writeSpec(t, dir), "--set", "name=alice", "--wait=false")
	require.Equal(t, 0, code, errOut)

	code, out, errOut := runCLI(t, "list", "--context", "nope", "-o", "json")
	require.Equal(t, 2, code, "the daemon's sandboxes are listed, and the exit code says the context cannot work: %s", errOut)
	var res api.ListResult
	require.NoError(t, json.Unmarshal([]byte(out), &res), out)
	require.Len(t, res.Sandboxes, 1)
	require.Equal(t, "alice", res.Sandboxes[0].Name)
	require.Contains(t, res.ClusterError, `cannot list sbx objects in the cluster: context not found in kubeconfig: --context "nope" is not in kubeconfig`)
	require.Contains(t, res.ClusterError, "or pass --local to skip the cluster")
	require.Contains(t, errOut, "! "+res.ClusterError)

	code, _, errOut = runCLI(t, "gc", "--context", "nope")
	require.Equal(t, 2, code, errOut)
	require.Contains(t, errOut, `sbx: cannot collect expired sandboxes: context not found in kubeconfig: --context "nope"`)
	require.Contains(t, errOut, "hint: fix --kubeconfig, $KUBECONFIG or --context")

	code, _, errOut = runCLI(t, "disconnect", "ghost", "--orphan", "--kubeconfig", filepath.Join(dir, "missing"))
	require.Equal(t, 2, code, errOut)
	require.Contains(t, errOut, "sbx: cannot delete the objects of sandbox ghost: load kubeconfig ")
	cl.mu.Lock()
	defer cl.mu.Unlock()
	require.Empty(t, cl.deletes)
}

// TestCLIStatusWatchDaemonStops: a daemon that stops under `status
// --watch` ends it with exit 1 (a failure, not a usage error) and says
// how to start it again.
func TestCLIStatusWatchDaemonStops(t *testing.T) {
	cliEnv(t)
	stop := startInProcessDaemon(t, &cliCluster{ready: make(chan struct{})})
	code, errOut := runCLIUntil(t, "sbx daemon test", stop, "status", "--watch")
	require.Equal(t, 1, code, errOut)
	require.Contains(t, errOut, "sbx: the sbx daemon ended the watch (it stopped)")
	require.Contains(t, errOut, "hint: start it again with `sbx daemon` or any connect")
}

// TestCLIDaemonStopsMidRequest: a daemon that goes away while a command
// waits for its answer (kill -9 during a disconnect: the connection ends
// without an answer and the socket stops answering) is reported as
// stopped, with the next step, not as `Delete "http://local.sbx/...": EOF`
// and a bug in sbx.
func TestCLIDaemonStopsMidRequest(t *testing.T) {
	cliEnv(t)
	paths := api.DefaultPaths(os.Getenv)
	require.NoError(t, os.MkdirAll(paths.RuntimeDir, 0o700))
	ln, err := net.Listen("unix", paths.Socket())
	require.NoError(t, err)
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodDelete {
			w.Header().Set("Content-Type", "application/json")
			_, _ = w.Write([]byte(`{"version":"dev","path":"/nonexistent/daemon.log"}`))
			return
		}
		// What kill -9 leaves: no answer, and no daemon on the socket.
		_ = ln.Close()
		conn, _, err := http.NewResponseController(w).Hijack()
		if err == nil {
			_ = conn.Close()
		}
	})}
	done := make(chan struct{})
	go func() { defer close(done); _ = srv.Serve(ln) }()
	t.Cleanup(func() { _ = srv.Close(); <-done })

	code, _, errOut := runCLI(t, "disconnect", "alice")
	require.Equal(t, 1, code, errOut)
	require.Contains(t, errOut, "sbx: the sbx daemon stopped before it answered (killed, crashed or stopped)\n"+
		"  hint: run the command again: a new daemon starts and restores the saved sandboxes with their routing keys; `sbx logs` shows why the old one stopped\n")
	require.NotContains(t, errOut, "bug")
}

// slowDeleteCluster is a cliCluster whose Delete waits for release;
// entered, when set, hears of each Delete that starts waiting.
type slowDeleteCluster struct {
	*cliCluster
	release chan struct{}
	entered chan struct{}
}

func (c *slowDeleteCluster) Delete(ctx context.Context, t cluster.Ref) error {
	if c.entered != nil {
		select {
		case c.entered <- struct{}{}:
		default:
		}
	}
	select {
	case <-c.release:
	case <-ctx.Done():
		return ctx.Err()
	}
	return c.cliCluster.Delete(ctx, t)
}

// TestCLIDisconnectSaysItStillWaits: a disconnect the cluster makes slow
// says, every few quiet seconds, that it is still at work and on what.
func TestCLIDisconnectSaysItStillWaits(t *testing.T) {
	dir := cliEnv(t)
	cl := &slowDeleteCluster{cliCluster: &cliCluster{ready: make(chan struct{})}, release: make(chan struct{})}
	startInProcessDaemon(t, cl)
	code, _, errOut := runCLI(t, "connect", "-f", writeSpec(t, dir), "--set", "name=alice", "--wait=false")
	require.Equal(t, 0, code, errOut)
	code, errOut = runCLIUntil(t, "still disconnecting alice: ", func() { close(cl.release) }, "disconnect", "alice")
	require.Equal(t, 0, code, errOut)
	require.Contains(t, errOut, "so far (the daemon is deleting cluster objects)\n")
}

// TestCLIStuckDaemon: a daemon that accepts connections but never answers
// (SIGSTOP, a deadlock) is reported as stuck, with its pid and what to do,
// after a bounded wait, not waited for in silence forever; and Ctrl-C
// meanwhile is not reported as "the sbx daemon is not running".
func TestCLIStuckDaemon(t *testing.T) {
	cliEnv(t)
	paths := api.DefaultPaths(os.Getenv)
	require.NoError(t, os.MkdirAll(paths.RuntimeDir, 0o700))
	require.NoError(t, os.WriteFile(paths.Lock(), []byte("4242\n"), 0o600))
	ln, err := net.Listen("unix", paths.Socket())
	require.NoError(t, err)
	unstick := make(chan struct{})
	srv := &http.Server{Handler: http.HandlerFunc(func(http.ResponseWriter, *http.Request) { <-unstick })}
	done := make(chan struct{})
	go func() { defer close(done); _ = srv.Serve(ln) }()
	t.Cleanup(func() { close(unstick); _ = srv.Close(); <-done })

	code, _, errOut := runCLI(t, "status")
	require.Equal(t, 1, code, errOut)
	require.Contains(t, errOut, "sbx: the sbx daemon (pid 4242) does not answer on "+paths.Socket()+" within 5s: it is stuck, stopped (SIGSTOP) or overloaded\n")
	require.Contains(t, errOut, "hint: `sbx logs` shows what it did last; kill it (`kill 4242`) and run the command again")

	// Nor would it answer a shutdown.
	code, _, errOut = runCLI(t, "daemon", "stop")
	require.Equal(t, 1, code, errOut)
	require.Contains(t, errOut, "sbx: the sbx daemon (pid 4242) does not answer on ")

	code, errOut = runCLICanceled(t, "status")
	require.Equal(t, exitInterrupted, code, errOut)
	require.Equal(t, "sbx: interrupted\n", errOut)
}

// TestCLIConnectTinyTimeout: a --timeout so short that a quarter of it is
// under a nanosecond is a sandbox not ready in time, not a panic of the
// "still waiting" heartbeat's ticker.
func TestCLIConnectTinyTimeout(t *testing.T) {
	dir := cliEnv(t)
	startInProcessDaemon(t, &cliCluster{ready: make(chan struct{})})
	code, _, errOut := runCLI(t, "connect", "-f", writeSpec(t, dir), "--set", "name=alice", "--timeout", "3ns")
	require.Equal(t, 1, code, errOut)
	require.Contains(t, errOut, "not ready after 3ns")
}

// TestQuietWaitHeartbeat: the heartbeat notes a quiet wait, even with a
// spell too short for a ticker of a quarter of it, and writes nothing
// once stop has returned (under -race, a late write is a data race with
// the read below).
func TestQuietWaitHeartbeat(t *testing.T) {
	for _, every := range []time.Duration{time.Nanosecond, 20 * time.Millisecond} {
		var out strings.Builder
		q := newQuietWait(&out)
		stop := q.heartbeat(context.Background(), every, func(waited time.Duration) string { return "still waiting" })
		require.Eventually(t, func() bool {
			q.mu.Lock() // not q.do, which would end the quiet spell
			defer q.mu.Unlock()
			return strings.Contains(out.String(), "still waiting\n")
		}, 30*time.Second, time.Millisecond, every)
		stop()
		require.Contains(t, out.String(), "still waiting\n", every)
	}
}

// TestCLIConnectCheckAcceptsWhatTheDaemonAccepts: connect's kubeconfig
// check before asking the daemon refuses nothing the daemon would take: a
// $KUBECONFIG list with a file missing (kubectl skips it), a spec.cluster
// the user config maps to a context (the daemon resolves it), and
// --context with a spec.cluster (--context wins). A spec.cluster that is
// no context is still refused, by the daemon, naming it.
func TestCLIConnectCheckAcceptsWhatTheDaemonAccepts(t *testing.T) {
	dir := cliEnv(t)
	cfg := filepath.Join(dir, "config", "sbx", "config.yaml")
	b, err := os.ReadFile(cfg)
	require.NoError(t, err)
	require.NoError(t, os.WriteFile(cfg, append(b, "contexts:\n  staging-1: test\n"...), 0o600))
	startInProcessDaemon(t, &cliCluster{ready: make(chan struct{})}, func(o *daemon.Options) { o.ConfigPath = cfg })
	plain := writeSpec(t, dir)
	withCluster := func(cluster string) string {
		p := filepath.Join(dir, cluster+".yaml")
		require.NoError(t, os.WriteFile(p, []byte(strings.Replace(routeSpec("localhost:8083"), "spec:\n", "spec:\n  cluster: "+cluster+"\n", 1)), 0o600))
		return p
	}
	t.Setenv("KUBECONFIG", filepath.Join(dir, "missing")+string(filepath.ListSeparator)+os.Getenv("KUBECONFIG"))
	for _, tt := range []struct {
		name string
		args []string
	}{
		{"a", []string{"-f", plain}},
		{"b", []string{"-f", withCluster("staging-1")}},
		{"c", []string{"-f", withCluster("nowhere"), "--context", "test"}},
	} {
		code, _, errOut := runCLI(t, append([]string{"connect", "--wait=false", "--set", "name=" + tt.name}, tt.args...)...)
		require.Equal(t, 0, code, "%v: %s", tt.args, errOut)
	}
	code, _, errOut := runCLI(t, "connect", "--wait=false", "--set", "name=d", "-f", withCluster("nowhere"))
	require.Equal(t, 2, code, errOut)
	require.Contains(t, errOut, `spec cluster "nowhere" is neither a context`)
	require.NotContains(t, errOut, "nothing was sent to the daemon", "refused by the daemon, not the CLI's check")
}

// TestCLIDisconnectInterrupted: Ctrl-C while the daemon deletes a
// sandbox's objects stops the daemon there too; disconnect says that
// objects may remain and which command finishes the work, not just
// "interrupted".
func TestCLIDisconnectInterrupted(t *testing.T) {
	dir := cliEnv(t)
	cl := &slowDeleteCluster{cliCluster: &cliCluster{ready: make(chan struct{})}, release: make(chan struct{}), entered: make(chan struct{}, 1)}
	startInProcessDaemon(t, cl)
	code, _, errOut := runCLI(t, "connect", "-f", writeSpec(t, dir), "--set", "name=alice", "--wait=false")
	require.Equal(t, 0, code, errOut)
	tests := []struct {
		args []string
		want string
	}{
		{[]string{"disconnect", "alice"}, "sbx: interrupted while disconnecting alice; the daemon stopped there, so cluster objects may remain\n" +
			"  hint: `sbx status` shows what is left; `sbx disconnect alice` finishes it\n"},
		{[]string{"disconnect", "--all"}, "sbx: interrupted while disconnecting every sandbox; the daemon stopped there, so cluster objects may remain\n" +
			"  hint: `sbx status` shows what is left; `sbx disconnect --all` finishes it\n"},
		{[]string{"disconnect", "ghost", "--orphan", "--context", "test", "-n", "hotrod"}, "sbx: interrupted while disconnecting ghost; the daemon stopped there, so cluster objects may remain\n" +
			"  hint: `sbx list` shows what is left; `sbx disconnect ghost --orphan --context test -n hotrod` finishes it\n"},
	}
	cl.mu.Lock()
	cl.listed = []cluster.SandboxInfo{{Name: "ghost", Namespace: "hotrod", Expired: true}}
	cl.mu.Unlock()
	for _, tt := range tests {
		entered := false // the daemon waits for the cluster
		code, _, errOut := runCLIWhen(t, func(string) bool {
			select {
			case <-cl.entered:
				entered = true
			default:
			}
			return entered
		}, nil, tt.args...)
		require.Equal(t, exitInterrupted, code, errOut)
		require.Contains(t, errOut, tt.want, tt.args)
	}
}

// TestCLIConnectSpecMismatchIsUsage: a spec that does not fit the cluster
// (its workload does not exist) is the user's input to fix: exit 2, as
// the README says, not 1 as for a cluster that failed.
func TestCLIConnectSpecMismatchIsUsage(t *testing.T) {
	dir := cliEnv(t)
	kc := live.NewFromKube(&kube.Cluster{REST: &rest.Config{Host: "https://127.0.0.1:1"}, Kube: kubefake.NewClientset(), Istio: istiofake.NewSimpleClientset(),
		Namespace: "hotrod", Context: "test"}, live.Options{DefaultRelayImage: "relay:1"})
	t.Cleanup(func() { _ = kc.Close() })
	startInProcessDaemon(t, kc)
	code, _, errOut := runCLI(t, "connect", "-f", writeSpec(t, dir), "--set", "name=alice")
	require.Equal(t, 2, code, errOut)
	require.Contains(t, errOut, "spec.local[0]: Deployment hotrod/route not found")
	require.Contains(t, errOut, "hint: fix the spec")
}

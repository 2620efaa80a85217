package daemon

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"
	"k8s.io/client-go/kubernetes"

	"github.com/sbx-dev/sbx/cluster"
	"github.com/sbx-dev/sbx/cluster/discovery"
	"github.com/sbx-dev/sbx/cluster/spec"
	"github.com/sbx-dev/sbx/daemon/api"
	"github.com/sbx-dev/sbx/daemon/client"
	"github.com/sbx-dev/sbx/daemon/config"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m,
		// client-go and spdystream leave these behind by design (see
		// tools/testbed/sim's tests): klog's flush daemon, and spdystream's
		// shutdown waiter lingering for its close timeout.
		goleak.IgnoreTopFunction("k8s.io/klog/v2.(*flushDaemon).run.func1"),
		goleak.IgnoreTopFunction("github.com/moby/spdystream.(*Connection).shutdown"),
	)
}

// testLogger writes the daemon's log into the test's output.
func testLogger(t *testing.T) *slog.Logger {
	return slog.New(slog.NewTextHandler(tWriter{t}, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

type tWriter struct{ t *testing.T }

// logBuffer keeps everything a logger wrote, for assertions on logs.
type logBuffer struct {
	mu sync.Mutex
	b  []byte
}

func (l *logBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.b = append(l.b, p...)
	return len(p), nil
}

func (l *logBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return string(l.b)
}

// capturingLogger logs to the test output and to the returned buffer.
func capturingLogger(t *testing.T) (*slog.Logger, *logBuffer) {
	buf := &logBuffer{}
	return slog.New(slog.NewTextHandler(io.MultiWriter(tWriter{t}, buf), &slog.HandlerOptions{Level: slog.LevelDebug})), buf
}

func (w tWriter) Write(p []byte) (int, error) {
	w.t.Helper()
	w.t.Log(string(p))
	return len(p), nil
}

// shortTempDir returns a temp dir with a short path: unix socket paths are
// limited to ~104 bytes and t.TempDir() paths can be long.
func shortTempDir(t *testing.T) string {
	dir, err := os.MkdirTemp("", "sbxd")
	require.NoError(t, err)
	t.Cleanup(func() { _ = os.RemoveAll(dir) })
	return dir
}

// tempHostsFile writes a hosts file with content and returns its path.
func tempHostsFile(t *testing.T, content string) string {
	p := filepath.Join(shortTempDir(t), "hosts")
	require.NoError(t, os.WriteFile(p, []byte(content), 0o644))
	return p
}

func testPaths(t *testing.T) api.Paths {
	dir := shortTempDir(t)
	return api.Paths{RuntimeDir: filepath.Join(dir, "run", "sbx"), StateDir: filepath.Join(dir, "state", "sbx")}
}

// testToken is the tunnel token of tests whose relay starts before the
// daemon connects (fixedToken mints it).
const testToken = "s3cret-token"

func fixedToken() (string, error) { return testToken, nil }

// fakeCluster is a Cluster whose steps tests control.
type fakeCluster struct {
	mu        sync.Mutex
	applies   []string          // routing keys, one per Apply
	opts      []cluster.Options // one per Apply
	waits     []cluster.Ref     // one per WaitRelay
	deletes   []string
	renews    int
	renewErr  error
	applyErr  error
	waitErr   error
	waitBlock chan struct{} // WaitRelay blocks until closed, when set
	deleteErr error
	// hang makes Delete, List and GC wait for their context and fail
	// with its error, as a call to an API server that does not answer.
	hang      bool
	hangs     int // calls hanging so far
	dial      func(ctx context.Context, ref cluster.Ref) (net.Conn, error)
	listed    []cluster.SandboxInfo
	gcDeleted []string
	gcWaiting []cluster.SandboxInfo
	kube      kubernetes.Interface // Services for outbound discovery; nil: none
}

// WatchServices makes fakeCluster a ServiceDiscoverer.
func (f *fakeCluster) WatchServices(o discovery.Options) (*discovery.Watcher, error) {
	if f.kube == nil {
		return nil, nil // no discovery
	}
	o.Client = f.kube
	return discovery.New(o)
}

func (f *fakeCluster) Apply(ctx context.Context, sb *spec.Sandbox, o cluster.Options, progress func(cluster.Event)) (*cluster.Result, error) {
	key := o.RoutingKey
	f.mu.Lock()
	f.applies = append(f.applies, key)
	f.opts = append(f.opts, o)
	err := f.applyErr
	f.mu.Unlock()
	progress(cluster.Event{Action: cluster.ActionCreated, Kind: "Deployment", Namespace: sb.Namespaces()[0], Name: "sbx-" + key})
	if err != nil {
		return nil, err
	}
	return &cluster.Result{
		Ref:      cluster.Ref{Name: sb.Name, RoutingKey: key, Namespace: sb.Namespaces()[0], Namespaces: sb.Namespaces(), TokenVerifier: o.TokenVerifier},
		Services: map[cluster.Mapping][]string{{Workload: "route", Port: 8083}: {"route.hotrod"}},
	}, nil
}

func (f *fakeCluster) WaitRelay(ctx context.Context, t cluster.Ref, progress func(cluster.Event)) error {
	f.mu.Lock()
	f.waits = append(f.waits, t)
	block, err := f.waitBlock, f.waitErr
	f.mu.Unlock()
	progress(cluster.Event{Action: cluster.ActionWaiting, Message: "relay pod sbx-" + t.RoutingKey + "-abc is Running"})
	if block != nil {
		select {
		case <-block:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	return err
}

func (f *fakeCluster) DialRelay(ctx context.Context, t cluster.Ref) (net.Conn, error) {
	f.mu.Lock()
	dial := f.dial
	f.mu.Unlock()
	if dial == nil {
		return nil, errors.New("no relay in this test")
	}
	return dial(ctx, t)
}

func (f *fakeCluster) RenewLease(ctx context.Context, t cluster.Ref) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.renews++
	return f.renewErr
}

// hung waits for ctx when f.hang is set and returns why it ended.
func (f *fakeCluster) hung(ctx context.Context) error {
	f.mu.Lock()
	hang := f.hang
	if hang {
		f.hangs++
	}
	f.mu.Unlock()
	if !hang {
		return nil
	}
	<-ctx.Done()
	return fmt.Errorf("fake cluster: %w", ctx.Err())
}

func (f *fakeCluster) Delete(ctx context.Context, t cluster.Ref) error {
	if err := f.hung(ctx); err != nil {
		return err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.deleteErr != nil {
		return f.deleteErr
	}
	f.deletes = append(f.deletes, t.Name+"/"+t.RoutingKey)
	return nil
}

func (f *fakeCluster) List(ctx context.Context, ns string) ([]cluster.SandboxInfo, error) {
	if err := f.hung(ctx); err != nil {
		return nil, err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]cluster.SandboxInfo(nil), f.listed...), nil
}

func (f *fakeCluster) GC(ctx context.Context, ns string, dryRun bool) (*cluster.GCReport, error) {
	if err := f.hung(ctx); err != nil {
		return nil, err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	return &cluster.GCReport{Deleted: f.gcDeleted, Waiting: f.gcWaiting, Grace: 10 * time.Minute, DryRun: dryRun}, nil
}

func (f *fakeCluster) appliedKeys() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]string(nil), f.applies...)
}

// appliedOptions returns the options of every Apply so far, in order.
func (f *fakeCluster) appliedOptions() []cluster.Options {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]cluster.Options(nil), f.opts...)
}

func (f *fakeCluster) provider() ClusterProvider {
	return func(context.Context, api.KubeconfigSource, string) (Cluster, error) { return f, nil }
}

// fakeLink is a link the test can break.
type fakeLink struct {
	done chan struct{}
	once sync.Once
	err  error
}

func newFakeLink() *fakeLink { return &fakeLink{done: make(chan struct{})} }

func (l *fakeLink) Done() <-chan struct{} { return l.done }
func (l *fakeLink) Err() error            { return l.err }
func (l *fakeLink) Stats() linkStats {
	return linkStats{Sessions: 2, RTT: time.Millisecond, BytesIn: 10, BytesOut: 20}
}
func (l *fakeLink) Close() error { l.kill(errors.New("closed")); return nil }
func (l *fakeLink) DialOutbound(ctx context.Context, target, source string) (net.Conn, error) {
	return nil, errors.New("fake link: no outbound")
}
func (l *fakeLink) kill(err error) {
	l.once.Do(func() { l.err = err; close(l.done) })
}

// fakeLinker hands out fakeLinks and remembers them.
type fakeLinker struct {
	mu     sync.Mutex
	links  []*fakeLink
	params []linkParams // of each link handed out
	err    error
}

func (f *fakeLinker) link(ctx context.Context, p linkParams) (link, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.err != nil {
		return nil, f.err
	}
	l := newFakeLink()
	f.links = append(f.links, l)
	f.params = append(f.params, p)
	return l, nil
}

// lastParams returns what the last link was built with.
func (f *fakeLinker) lastParams() linkParams {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.params[len(f.params)-1]
}

// tokenSeq mints the given tokens in turn, then fails.
func tokenSeq(tokens ...string) func() (string, error) {
	var mu sync.Mutex
	return func() (string, error) {
		mu.Lock()
		defer mu.Unlock()
		if len(tokens) == 0 {
			return "", errors.New("tokenSeq: no more tokens")
		}
		t := tokens[0]
		tokens = tokens[1:]
		return t, nil
	}
}

func (f *fakeLinker) last() *fakeLink {
	f.mu.Lock()
	defer f.mu.Unlock()
	if len(f.links) == 0 {
		return nil
	}
	return f.links[len(f.links)-1]
}

func (f *fakeLinker) count() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return len(f.links)
}

// testDaemon is a daemon running in-process.
type testDaemon struct {
	d      *Daemon
	client *client.Client
	paths  api.Paths
	cancel context.CancelFunc
	done   chan error
}

func fastBackoff() Backoff {
	return Backoff{Min: 5 * time.Millisecond, Max: 50 * time.Millisecond}
}

// configNamesHostsFile reports whether the config file at path sets
// outbound.hostsFile to something other than the machine's hosts file.
func configNamesHostsFile(path string) bool {
	if path == "" {
		return false
	}
	c, err := config.Load(path)
	return err == nil && c.Outbound.HostsFile != "" && c.Outbound.HostsFile != config.DefaultHostsFile
}

// startDaemon runs a daemon with opts (Paths, Clusters and link filled
// in when empty) and waits until it answers.
func startDaemon(t *testing.T, opts Options) *testDaemon {
	t.Helper()
	if opts.Paths.RuntimeDir == "" {
		opts.Paths = testPaths(t)
	}
	if opts.Logger == nil {
		opts.Logger = testLogger(t)
	}
	if opts.Backoff.Min == 0 {
		opts.Backoff = fastBackoff()
	}
	if opts.StatsInterval == 0 {
		opts.StatsInterval = 20 * time.Millisecond
	}
	if opts.HostsFile == "" && !configNamesHostsFile(opts.ConfigPath) {
		// Hosts mode on a private hosts file, which most tests expect
		// (without one, outbound access is proxy mode: see
		// startDaemonAsIs).
		opts.HostsFile = tempHostsFile(t, "127.0.0.1 localhost\n")
		// A range of this package's own: test binaries of other packages
		// run in parallel and would get the same Service addresses from
		// the default range.
		if !opts.HostsRange.IsValid() {
			opts.HostsRange = netip.MustParsePrefix("127.247.0.0/16")
		}
	}
	return startDaemonAsIs(t, opts)
}

// startDaemonAsIs is startDaemon without a hosts file of its own.
func startDaemonAsIs(t *testing.T, opts Options) *testDaemon {
	t.Helper()
	if opts.Paths.RuntimeDir == "" {
		opts.Paths = testPaths(t)
	}
	if opts.Logger == nil {
		opts.Logger = testLogger(t)
	}
	opts.Version = "test"
	d, err := New(opts)
	require.NoError(t, err)
	ctx, cancel := context.WithCancel(context.Background())
	td := &testDaemon{d: d, client: &client.Client{Socket: opts.Paths.Socket()}, paths: opts.Paths, cancel: cancel, done: make(chan error, 1)}
	go func() { td.done <- d.Run(ctx) }()
	t.Cleanup(td.stop)
	require.Eventually(t, func() bool {
		_, err := td.client.LogPath(context.Background())
		var ae *api.APIError
		return err == nil || errors.As(err, &ae) // it answered
	}, 10*time.Second, 5*time.Millisecond, "daemon did not answer on its socket")
	return td
}

// stop stops the daemon and waits for it; safe to call twice.
func (td *testDaemon) stop() {
	td.cancel()
	<-td.done
	td.done <- nil // let a second stop return at once
	td.client.Close()
}

func testSpec(name string, toLocal string) spec.Sandbox {
	return spec.Sandbox{Name: name, Spec: spec.Spec{Local: []spec.Local{{
		Name:     "route",
		From:     spec.Workload{Kind: spec.KindDeployment, Namespace: "hotrod", Name: "route"},
		Mappings: []spec.Mapping{{Port: 8083, ToLocal: toLocal}},
	}}}}
}

func waitPhase(t *testing.T, c *client.Client, name string, ph api.Phase) api.SandboxStatus {
	t.Helper()
	var st api.SandboxStatus
	require.Eventually(t, func() bool {
		var err error
		st, err = c.Sandbox(context.Background(), name)
		return err == nil && st.Phase == ph
	}, 10*time.Second, 5*time.Millisecond, "sandbox %s never reached %s (last %+v)", name, ph, st)
	return st
}

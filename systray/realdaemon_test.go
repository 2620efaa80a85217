//go:build !windows

package systray

import (
	"context"
	"errors"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/sbx-dev/sbx/cluster"
	"github.com/sbx-dev/sbx/cluster/spec"
	"github.com/sbx-dev/sbx/daemon"
	"github.com/sbx-dev/sbx/daemon/api"
	"github.com/sbx-dev/sbx/daemon/client"
	"github.com/stretchr/testify/require"
)

// holdCluster is a daemon.Cluster whose relay never becomes ready: a
// connected sandbox stays in waiting-relay until it is disconnected, which
// gives the tray a stable, real sandbox to show and disconnect.
type holdCluster struct {
	mu      sync.Mutex
	deleted []string
}

func (c *holdCluster) Apply(ctx context.Context, sb *spec.Sandbox, o cluster.Options, progress func(cluster.Event)) (*cluster.Result, error) {
	return &cluster.Result{Ref: cluster.Ref{Name: sb.Name, RoutingKey: o.RoutingKey, Namespace: "hotrod", Namespaces: []string{"hotrod"}}}, nil
}

func (c *holdCluster) WaitRelay(ctx context.Context, t cluster.Ref, progress func(cluster.Event)) error {
	<-ctx.Done()
	return ctx.Err()
}

func (c *holdCluster) DialRelay(ctx context.Context, t cluster.Ref) (net.Conn, error) {
	return nil, errors.New("no relay in this test")
}

func (c *holdCluster) RenewLease(ctx context.Context, t cluster.Ref) error { return nil }

func (c *holdCluster) Delete(ctx context.Context, t cluster.Ref) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.deleted = append(c.deleted, t.Name)
	return nil
}

func (c *holdCluster) List(ctx context.Context, namespace string) ([]cluster.SandboxInfo, error) {
	return nil, nil
}

func (c *holdCluster) GC(ctx context.Context, namespace string, dryRun bool) (*cluster.GCReport, error) {
	return &cluster.GCReport{}, nil
}

func (c *holdCluster) Deleted() []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]string(nil), c.deleted...)
}

// realDaemon runs the real daemon in-process on private paths; stop and
// start simulate a daemon restart on the same socket.
type realDaemon struct {
	t       *testing.T
	paths   api.Paths
	cluster *holdCluster
	config  string // user config file; "" for none
	hosts   string // the hosts file outbound access edits (a temp file)
	cancel  context.CancelFunc
	done    chan error
}

func newRealDaemon(t *testing.T) *realDaemon { return newRealDaemonWithConfig(t, "") }

func newRealDaemonWithConfig(t *testing.T, config string) *realDaemon {
	// Short paths: unix socket paths are limited to 108 bytes.
	dir, err := os.MkdirTemp("", "sbx-d-")
	require.NoError(t, err)
	t.Cleanup(func() { _ = os.RemoveAll(dir) })
	// Tests run as root in CI: without a hosts file of its own, a daemon
	// with a sandbox would put its outbound block in the machine's
	// /etc/hosts (outbound mode auto picks a writable hosts file).
	hosts := filepath.Join(dir, "hosts")
	require.NoError(t, os.WriteFile(hosts, []byte("127.0.0.1 localhost\n"), 0o644))
	r := &realDaemon{t: t, paths: api.Paths{RuntimeDir: dir + "/run", StateDir: dir + "/state"}, cluster: &holdCluster{}, config: config, hosts: hosts}
	t.Cleanup(r.stop)
	r.start()
	return r
}

func (r *realDaemon) client() *client.Client { return &client.Client{Socket: r.paths.Socket()} }

func (r *realDaemon) start() {
	d, err := daemon.New(daemon.Options{
		Paths: r.paths, Version: "test", ConfigPath: r.config, HostsFile: r.hosts,
		// Its own range: other packages' tests run in parallel.
		HostsRange: netip.MustParsePrefix("127.248.0.0/16"),
		Clusters:   func(context.Context, api.KubeconfigSource, string) (daemon.Cluster, error) { return r.cluster, nil },
	})
	require.NoError(r.t, err)
	ctx, cancel := context.WithCancel(context.Background())
	r.cancel, r.done = cancel, make(chan error, 1)
	go func() { r.done <- d.Run(ctx) }()
	c := r.client()
	defer c.Close()
	require.Eventually(r.t, func() bool { _, err := c.Status(context.Background()); return err == nil },
		10*time.Second, 5*time.Millisecond, "the daemon did not answer")
}

func (r *realDaemon) stop() {
	if r.cancel == nil {
		return
	}
	r.cancel()
	r.cancel = nil
	select {
	case err := <-r.done:
		require.NoError(r.t, err)
	case <-time.After(20 * time.Second):
		r.t.Error("the daemon did not stop")
	}
}

// connect asks the daemon for sandbox name with one mapped workload.
func (r *realDaemon) connect(name string) {
	c := r.client()
	defer c.Close()
	sb := spec.Sandbox{Name: name, Spec: spec.Spec{Local: []spec.Local{{
		Name:     "route",
		From:     spec.Workload{Kind: "Deployment", Namespace: "hotrod", Name: "route"},
		Mappings: []spec.Mapping{{Port: 8083, ToLocal: "localhost:1"}},
	}}}}
	_, err := c.Connect(context.Background(), api.ConnectRequest{Spec: sb}, nil)
	require.NoError(r.t, err)
}

func (r *realDaemon) status() api.Status {
	c := r.client()
	defer c.Close()
	st, err := c.Status(context.Background())
	require.NoError(r.t, err)
	return st
}

// TestLoopWithRealDaemon drives the event loop (without a desktop) against
// the real daemon and its Go client: the snapshot, a connect, a Disconnect
// click, and a daemon restart.
func TestLoopWithRealDaemon(t *testing.T) {
	verifyNoLeaks(t)
	r := newRealDaemon(t)
	c := r.client()
	t.Cleanup(c.Close)
	h := startLoopWith(t, DaemonClient{C: c, Start: func(context.Context) error { r.start(); return nil }})

	h.ui.waitView(t, "empty daemon", tooltipIs("sbx: no sandboxes"))
	r.connect("alice")
	v := h.ui.waitView(t, "alice", func(v View) bool { _, ok := findItem(v.Items, "alice — connecting", labelDisconnect); return ok })
	require.Equal(t, IconDegraded, v.Icon)
	key := r.status().Sandboxes[0].RoutingKey
	require.Len(t, key, 13)
	// Outbound access starts with the sandbox; it must edit the test's
	// hosts file, never the machine's.
	require.Eventually(t, func() bool {
		ob := r.status().Outbound
		return ob != nil && ob.HostsFile != ""
	}, 10*time.Second, 10*time.Millisecond, "outbound access did not start in hosts mode")
	require.Equal(t, r.hosts, r.status().Outbound.HostsFile)
	it, ok := findItem(v.Items, "alice — connecting", labelCopyBaggage)
	require.True(t, ok)
	require.Equal(t, "baggage: sbx-routing-key="+key, it.Action.Text)
	_, ok = findItem(v.Items, "alice — connecting", "route :8083 → localhost:1 ○")
	require.True(t, ok, renderMenu(v.Items))

	h.ui.click(t, "alice — connecting", labelDisconnect)
	h.ui.waitView(t, "disconnected", tooltipIs("sbx: no sandboxes"))
	require.Equal(t, []string{"alice"}, r.cluster.Deleted())

	r.stop()
	h.ui.waitView(t, "daemon down", tooltipIs("sbx: daemon not running"))
	h.ui.click(t, labelStartDaemon)
	h.ui.waitView(t, "daemon back", tooltipIs("sbx: no sandboxes"))
}

// TestLoopRealDaemonConfigError follows the daemon's live config: a broken
// config file turns the icon to error with the reason in the menu, and
// fixing the file clears it without restarting anything.
func TestLoopRealDaemonConfigError(t *testing.T) {
	verifyNoLeaks(t)
	cfg := filepath.Join(t.TempDir(), "config.yaml")
	require.NoError(t, os.WriteFile(cfg, []byte("poolSize: [not a number\n"), 0o600))
	r := newRealDaemonWithConfig(t, cfg)
	c := r.client()
	t.Cleanup(c.Close)
	h := startLoopWith(t, DaemonClient{C: c})

	v := h.ui.waitView(t, "config error", tooltipIs("sbx: no sandboxes · config error"))
	require.Equal(t, IconError, v.Icon)
	require.True(t, strings.HasPrefix(v.Items[1].Label, "Config error: "), renderMenu(v.Items))
	require.Contains(t, v.Items[1].Tooltip, cfg)

	require.NoError(t, os.WriteFile(cfg, []byte("{}\n"), 0o600))
	v = h.ui.waitView(t, "config fixed", tooltipIs("sbx: no sandboxes"))
	require.Equal(t, IconDisconnected, v.Icon)
}

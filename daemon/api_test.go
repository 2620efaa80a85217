package daemon

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/sbx-dev/sbx/cluster"
	"github.com/sbx-dev/sbx/cluster/spec"
	"github.com/sbx-dev/sbx/daemon/api"
	"github.com/sbx-dev/sbx/daemon/client"
)

func TestSocketAndDirModes(t *testing.T) {
	td := startDaemon(t, Options{Clusters: (&fakeCluster{}).provider(), link: (&fakeLinker{}).link})
	fi, err := os.Stat(td.paths.RuntimeDir)
	require.NoError(t, err)
	require.Equal(t, os.FileMode(0o700), fi.Mode().Perm())
	fi, err = os.Stat(td.paths.Socket())
	require.NoError(t, err)
	require.Equal(t, os.ModeSocket, fi.Mode().Type())
	require.Equal(t, os.FileMode(0o600), fi.Mode().Perm())
}

func TestLooseRuntimeDirIsTightened(t *testing.T) {
	p := testPaths(t)
	require.NoError(t, os.MkdirAll(p.RuntimeDir, 0o755))
	require.NoError(t, os.Chmod(p.RuntimeDir, 0o755))
	startDaemon(t, Options{Paths: p, Clusters: (&fakeCluster{}).provider(), link: (&fakeLinker{}).link})
	fi, err := os.Stat(p.RuntimeDir)
	require.NoError(t, err)
	require.Equal(t, os.FileMode(0o700), fi.Mode().Perm())
}

func TestSecondDaemonRefused(t *testing.T) {
	td := startDaemon(t, Options{Clusters: (&fakeCluster{}).provider(), link: (&fakeLinker{}).link})
	d2, err := New(Options{Paths: td.paths, Clusters: (&fakeCluster{}).provider(), link: (&fakeLinker{}).link})
	require.NoError(t, err)
	err = d2.Run(context.Background())
	require.ErrorIs(t, err, ErrAlreadyRunning)
	require.Contains(t, err.Error(), fmt.Sprintf("pid %d", os.Getpid()))
	require.Contains(t, err.Error(), "sbx daemon stop")
	// The first daemon is unharmed.
	_, err = td.client.Status(context.Background())
	require.NoError(t, err)
}

func TestStaleSocketTakenOver(t *testing.T) {
	p := testPaths(t)
	require.NoError(t, os.MkdirAll(p.RuntimeDir, 0o700))
	// A crashed daemon leaves its socket file behind.
	ln, err := net.Listen("unix", p.Socket())
	require.NoError(t, err)
	ln.(*net.UnixListener).SetUnlinkOnClose(false)
	require.NoError(t, ln.Close())
	_, err = os.Stat(p.Socket())
	require.NoError(t, err)

	td := startDaemon(t, Options{Paths: p, Clusters: (&fakeCluster{}).provider(), link: (&fakeLinker{}).link})
	st, err := td.client.Status(context.Background())
	require.NoError(t, err)
	require.Equal(t, os.Getpid(), st.PID)
}

// rawRequest sends a hand-made request over the socket.
func rawRequest(t *testing.T, sock string, req *http.Request) (int, string) {
	t.Helper()
	tr := &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
		var d net.Dialer
		return d.DialContext(ctx, "unix", sock)
	}}
	defer tr.CloseIdleConnections()
	resp, err := (&http.Client{Transport: tr}).Do(req)
	require.NoError(t, err)
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	return resp.StatusCode, string(b)
}

func TestBrowserRequestsRefused(t *testing.T) {
	td := startDaemon(t, Options{Clusters: (&fakeCluster{}).provider(), link: (&fakeLinker{}).link})
	cases := []struct {
		name   string
		host   string
		header string
		value  string
		want   int
	}{
		{"plain", "local.sbx", "", "", http.StatusOK},
		{"curl host", "localhost", "", "", http.StatusOK},
		{"origin", "local.sbx", "Origin", "https://evil.example", http.StatusForbidden},
		{"referer", "local.sbx", "Referer", "https://evil.example/page", http.StatusForbidden},
		{"opaque origin", "local.sbx", "Origin", "null", http.StatusForbidden},
		{"empty origin", "local.sbx", "Origin", "", http.StatusForbidden},
		{"empty referer", "local.sbx", "Referer", "", http.StatusForbidden},
		{"foreign host", "evil.example", "", "", http.StatusForbidden},
		{"rebinding host with port", "evil.example:80", "", "", http.StatusForbidden},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			req, err := http.NewRequest(http.MethodGet, "http://"+tc.host+"/v1/status", nil)
			require.NoError(t, err)
			if tc.header != "" {
				req.Header[tc.header] = []string{tc.value}
			}
			code, body := rawRequest(t, td.paths.Socket(), req)
			require.Equal(t, tc.want, code, body)
			if tc.want != http.StatusOK {
				var e map[string]string
				require.NoError(t, json.Unmarshal([]byte(body), &e))
				require.Contains(t, e["error"], "local clients only")
			}
		})
	}
}

func TestTypedErrors(t *testing.T) {
	td := startDaemon(t, Options{Clusters: (&fakeCluster{}).provider(), link: (&fakeLinker{}).link})
	ctx := context.Background()

	_, err := td.client.Sandbox(ctx, "nope")
	var ae *api.APIError
	require.ErrorAs(t, err, &ae)
	require.Equal(t, http.StatusNotFound, ae.StatusCode)
	require.Equal(t, api.KindUser, ae.Kind)
	require.True(t, api.IsNotFound(err))
	require.Contains(t, err.Error(), "sbx status")

	_, err = td.client.Disconnect(ctx, "nope")
	require.True(t, api.IsNotFound(err))

	bad := testSpec("Not_A_Label", "localhost:1")
	_, err = td.client.Connect(ctx, api.ConnectRequest{Spec: bad}, nil)
	require.ErrorAs(t, err, &ae)
	require.Equal(t, http.StatusBadRequest, ae.StatusCode)
	require.Equal(t, api.KindUser, ae.Kind)
	require.Contains(t, err.Error(), "DNS-1123")

	// No daemon at all.
	c := &client.Client{Socket: td.paths.Socket() + ".none"}
	defer c.Close()
	_, err = c.Status(ctx)
	var nr *api.NotRunningError
	require.ErrorAs(t, err, &nr)
	require.True(t, api.IsNotRunning(err))
	require.Contains(t, err.Error(), "sbx daemon")
}

func TestZeroClientUsesDefaultSocket(t *testing.T) {
	dir := shortTempDir(t)
	t.Setenv("XDG_RUNTIME_DIR", dir)
	t.Setenv("XDG_STATE_HOME", dir+"/state")
	startDaemon(t, Options{Paths: api.DefaultPaths(nil), Clusters: (&fakeCluster{}).provider(), link: (&fakeLinker{}).link})
	var c client.Client
	defer c.Close()
	st, err := c.Status(context.Background())
	require.NoError(t, err)
	require.Equal(t, "test", st.Version)
	require.Equal(t, dir+"/state/sbx/daemon.log", st.LogPath)
}

func TestRequestsWaitForReadiness(t *testing.T) {
	release := make(chan struct{})
	td := startDaemon(t, Options{
		Clusters:    (&fakeCluster{}).provider(),
		link:        (&fakeLinker{}).link,
		beforeReady: func() { <-release },
	})
	got := make(chan error, 1)
	go func() {
		_, err := td.client.Status(context.Background())
		got <- err
	}()
	// The socket answers early endpoints while Status waits.
	_, err := td.client.LogPath(context.Background())
	require.NoError(t, err)
	select {
	case err := <-got:
		t.Fatalf("status answered before the daemon was ready: %v", err)
	default:
	}
	close(release)
	require.NoError(t, <-got)
}

func TestWatchSnapshotFirstThenChanges(t *testing.T) {
	fc := &fakeCluster{}
	td := startDaemon(t, Options{Clusters: fc.provider(), link: (&fakeLinker{}).link})
	ctx := context.Background()
	_, err := td.client.Connect(ctx, api.ConnectRequest{Spec: testSpec("alice", "localhost:1"), Wait: true}, nil)
	require.NoError(t, err)

	w, err := td.client.Watch(ctx)
	require.NoError(t, err)
	defer w.Close()
	ev, err := w.Next()
	require.NoError(t, err)
	require.NotNil(t, ev.Snapshot, "first event must be the snapshot")
	require.Len(t, ev.Snapshot.Sandboxes, 1)
	require.Equal(t, "alice", ev.Snapshot.Sandboxes[0].Name)
	require.Equal(t, api.PhaseReady, ev.Snapshot.Sandboxes[0].Phase)

	_, err = td.client.Connect(ctx, api.ConnectRequest{Spec: testSpec("bob", "localhost:1")}, nil)
	require.NoError(t, err)
	sawBob := false
	for !sawBob {
		ev, err := w.Next()
		require.NoError(t, err)
		require.Nil(t, ev.Snapshot, "only the first event is a snapshot")
		if ev.Sandbox != nil && ev.Sandbox.Name == "bob" {
			sawBob = true
		}
	}
	_, err = td.client.Disconnect(ctx, "alice")
	require.NoError(t, err)
	for {
		ev, err := w.Next()
		require.NoError(t, err)
		if ev.Removed == "alice" {
			break
		}
	}
}

func TestSlowWatcherDroppedOverSocket(t *testing.T) {
	td := startDaemon(t, Options{Clusters: (&fakeCluster{}).provider(), link: (&fakeLinker{}).link, watchQueue: 4})
	ctx := context.Background()
	w, err := td.client.Watch(ctx)
	require.NoError(t, err)
	defer w.Close()
	ev, err := w.Next()
	require.NoError(t, err)
	require.NotNil(t, ev.Snapshot)

	// Publish far more than the socket buffers and the queue hold while
	// the watcher does not read; publishing must never block.
	d := td.d
	d.store.SetSandbox(api.SandboxStatus{Name: "x", Phase: api.PhaseReady})
	big := strings.Repeat("e", 4096)
	publishDone := make(chan struct{})
	go func() {
		defer close(publishDone)
		for i := 0; i < 5000 && !d.store.dropAny(); i++ {
			d.store.UpdateSandbox("x", func(st *api.SandboxStatus) { st.LastError = fmt.Sprint(big, i) })
		}
	}()
	select {
	case <-publishDone:
	case <-time.After(30 * time.Second):
		t.Fatal("publishing blocked on a slow watcher")
	}
	// Now read: some events, then the drop notice.
	for {
		_, err := w.Next()
		if err != nil {
			require.ErrorIs(t, err, api.ErrWatchDropped)
			break
		}
	}
	// The daemon is fine and a new watcher gets a fresh snapshot.
	w2, err := td.client.Watch(ctx)
	require.NoError(t, err)
	defer w2.Close()
	ev, err = w2.Next()
	require.NoError(t, err)
	require.NotNil(t, ev.Snapshot)
}

func TestStoreDropsSlowWatcherWithoutBlocking(t *testing.T) {
	s := newStore(api.Status{Version: "v"}, 2)
	slow := s.Subscribe()
	fast := s.Subscribe()
	s.SetSandbox(api.SandboxStatus{Name: "a"})
	// fast reads everything it is sent.
	<-fast.C
	<-fast.C
	for i := range 10 {
		s.UpdateSandbox("a", func(st *api.SandboxStatus) { st.Streams = i + 1 })
		<-fast.C
	}
	require.True(t, s.Dropped(slow))
	require.False(t, s.Dropped(fast))
	n := 0
	for range slow.C { // closed after what it had queued
		n++
	}
	require.Equal(t, 3, n, "snapshot + queue of 2")
	s.Unsubscribe(slow) // twice is fine
	s.Unsubscribe(fast)
	_, ok := <-fast.C
	require.False(t, ok)
}

func TestStoreSkipsUnchanged(t *testing.T) {
	s := newStore(api.Status{}, 8)
	w := s.Subscribe()
	<-w.C
	s.SetSandbox(api.SandboxStatus{Name: "a", Phase: api.PhaseReady})
	s.SetSandbox(api.SandboxStatus{Name: "a", Phase: api.PhaseReady})
	s.UpdateSandbox("a", func(st *api.SandboxStatus) {})
	s.RemoveSandbox("nope")
	s.RemoveSandbox("a")
	ev := <-w.C
	require.Equal(t, "a", ev.Sandbox.Name)
	ev = <-w.C
	require.Equal(t, "a", ev.Removed)
	require.Empty(t, w.C)
	s.SetConfigError("bad yaml")
	ev = <-w.C
	require.Equal(t, "bad yaml", *ev.Config)
	s.CloseAll()
	_, ok := <-w.C
	require.False(t, ok)
}

// TestStoreCopiesSandbox: what the store hands out (Sandbox, events) and
// what UpdateSandbox's fn edits share no memory with the stored status, so
// a reader cannot change it and an in-place edit is seen as a change.
func TestStoreCopiesSandbox(t *testing.T) {
	s := newStore(api.Status{}, 8)
	w := s.Subscribe()
	<-w.C
	src := api.NewKubeconfigSource("", []string{"/home/a/.kube/config", "/home/a/.kube/extra"})
	s.SetSandbox(api.SandboxStatus{Name: "a", Kubeconfig: src,
		Mappings: []api.MappingStatus{{Workload: "route", From: &spec.Workload{Name: "route"}}}})
	ev := <-w.C

	got, ok := s.Sandbox("a")
	require.True(t, ok)
	got.Kubeconfig.KubeconfigEnv[0] = "/elsewhere"
	got.Kubeconfig.KubeconfigFile = "/elsewhere"
	got.Mappings[0].From.Name = "elsewhere"
	ev.Sandbox.Kubeconfig.KubeconfigEnv[1] = "/elsewhere"
	again, _ := s.Sandbox("a")
	require.Equal(t, api.NewKubeconfigSource("", []string{"/home/a/.kube/config", "/home/a/.kube/extra"}), again.Kubeconfig)
	require.Equal(t, "route", again.Mappings[0].From.Name)

	s.UpdateSandbox("a", func(st *api.SandboxStatus) { st.Kubeconfig.KubeconfigEnv[0] = "/moved" })
	require.Len(t, w.C, 1, "an in-place edit is a change")
	ev = <-w.C
	require.Equal(t, "/moved", ev.Sandbox.Kubeconfig.KubeconfigEnv[0])
	again, _ = s.Sandbox("a")
	require.Equal(t, "/moved", again.Kubeconfig.KubeconfigEnv[0])
}

func TestShutdownEndpoint(t *testing.T) {
	td := startDaemon(t, Options{Clusters: (&fakeCluster{}).provider(), link: (&fakeLinker{}).link})
	require.NoError(t, td.client.Shutdown(context.Background()))
	select {
	case err := <-td.done:
		require.NoError(t, err)
		td.done <- nil
	case <-time.After(10 * time.Second):
		t.Fatal("daemon did not stop")
	}
	_, err := os.Stat(td.paths.Socket())
	require.True(t, errors.Is(err, os.ErrNotExist), "socket removed on exit")
	// A new daemon can start on the same paths.
	startDaemon(t, Options{Paths: td.paths, Clusters: (&fakeCluster{}).provider(), link: (&fakeLinker{}).link})
}

func TestUnknownEndpoint(t *testing.T) {
	td := startDaemon(t, Options{Clusters: (&fakeCluster{}).provider(), link: (&fakeLinker{}).link})
	req, _ := http.NewRequest(http.MethodGet, "http://local.sbx/v9/nothing", nil)
	code, body := rawRequest(t, td.paths.Socket(), req)
	require.Equal(t, http.StatusNotFound, code)
	require.Contains(t, body, "no such endpoint")
}

func TestDeleteOrphan(t *testing.T) {
	fc := &fakeCluster{listed: []cluster.SandboxInfo{
		{Name: "ghost", RoutingKey: "aaaaaaaaaaaaa", Namespace: "hotrod", Expired: true},
		{Name: "twin", RoutingKey: "bbbbbbbbbbbbb", Namespace: "a", Expired: true},
		{Name: "twin", RoutingKey: "ccccccccccccc", Namespace: "b", Expired: true},
		{Name: "bobs", RoutingKey: "ddddddddddddd", Namespace: "hotrod", Holder: "bob@laptop", Expires: time.Now().Add(20 * time.Second)},
	}}
	td := startDaemon(t, Options{Clusters: fc.provider(), link: (&fakeLinker{}).link})
	ctx := context.Background()
	_, err := td.client.Connect(ctx, api.ConnectRequest{Spec: testSpec("alice", "localhost:1"), Wait: true}, nil)
	require.NoError(t, err)

	res, err := td.client.DeleteOrphan(ctx, "ghost", api.ClusterRequest{}, false)
	require.NoError(t, err)
	require.Equal(t, []string{"ghost"}, res.Disconnected)
	require.Equal(t, []string{"ghost/aaaaaaaaaaaaa"}, fc.deletes)

	_, err = td.client.DeleteOrphan(ctx, "twin", api.ClusterRequest{}, false)
	var ae *api.APIError
	require.ErrorAs(t, err, &ae)
	require.Equal(t, http.StatusConflict, ae.StatusCode)
	require.Contains(t, err.Error(), "pass -n NAMESPACE")

	_, err = td.client.DeleteOrphan(ctx, "alice", api.ClusterRequest{}, false)
	require.ErrorAs(t, err, &ae)
	require.Equal(t, http.StatusConflict, ae.StatusCode, "a sandbox this daemon owns is disconnected normally")

	_, err = td.client.DeleteOrphan(ctx, "nobody", api.ClusterRequest{}, false)
	require.True(t, api.IsNotFound(err))

	// Another daemon renews bobs's Lease: deleting it would only make
	// that daemon recreate it, and it may be a colleague's.
	_, err = td.client.DeleteOrphan(ctx, "bobs", api.ClusterRequest{}, false)
	require.ErrorAs(t, err, &ae)
	require.Equal(t, http.StatusConflict, ae.StatusCode)
	require.Contains(t, err.Error(), "sandbox bobs in namespace hotrod is no orphan: bob@laptop renews its Lease")
	require.Contains(t, err.Error(), "--force deletes it anyway")
	require.Equal(t, []string{"ghost/aaaaaaaaaaaaa"}, fc.deletes, "nothing deleted")
	_, err = td.client.DeleteOrphan(ctx, "bobs", api.ClusterRequest{}, true)
	require.NoError(t, err)
	require.Equal(t, []string{"ghost/aaaaaaaaaaaaa", "bobs/ddddddddddddd"}, fc.deletes)
}

func TestOtherUsersRefused(t *testing.T) {
	// The real SO_PEERCRED sees this process's own uid.
	ln, err := net.Listen("unix", shortTempDir(t)+"/p.sock")
	require.NoError(t, err)
	defer ln.Close()
	go func() {
		c, err := ln.Accept()
		if err == nil {
			defer c.Close()
			_, _ = io.Copy(io.Discard, c)
		}
	}()
	c, err := net.Dial("unix", ln.Addr().String())
	require.NoError(t, err)
	defer c.Close()
	if uid, ok := peerUID(c); ok {
		require.Equal(t, os.Getuid(), uid)
	}

	// A client of another user is refused.
	td := startDaemon(t, Options{Clusters: (&fakeCluster{}).provider(), link: (&fakeLinker{}).link,
		peerUID: func(net.Conn) (int, bool) { return os.Getuid() + 1000, true }})
	_, err = td.client.Status(context.Background())
	var ae *api.APIError
	require.ErrorAs(t, err, &ae)
	require.Equal(t, http.StatusForbidden, ae.StatusCode)
	require.Contains(t, err.Error(), "may not use the sbx daemon")
}

// TestStopDuringClusterCalls: requests the daemon's shutdown breaks off
// (`sbx daemon stop` during a disconnect, list or gc) are answered 503
// with what is left to do, not a 502 "context canceled".
func TestStopDuringClusterCalls(t *testing.T) {
	cases := []struct {
		name string
		call func(ctx context.Context, c *client.Client) error
		want []string
	}{
		{"disconnect", func(ctx context.Context, c *client.Client) error { _, err := c.Disconnect(ctx, "alice"); return err },
			[]string{"the sbx daemon is stopping, so sandbox alice was not disconnected", "run `sbx disconnect alice` again", "sbx gc"}},
		{"disconnect all", func(ctx context.Context, c *client.Client) error { _, err := c.DisconnectAll(ctx); return err },
			[]string{"the sbx daemon is stopping, so sandbox alice was not disconnected"}},
		{"orphan", func(ctx context.Context, c *client.Client) error {
			_, err := c.DeleteOrphan(ctx, "ghost", api.ClusterRequest{}, false)
			return err
		},
			[]string{"the sbx daemon is stopping", "run the command again"}},
		{"list", func(ctx context.Context, c *client.Client) error {
			_, err := c.List(ctx, api.ClusterRequest{}, true)
			return err
		},
			[]string{"the sbx daemon is stopping", "run the command again"}},
		{"gc", func(ctx context.Context, c *client.Client) error {
			_, err := c.GC(ctx, api.GCRequest{})
			return err
		},
			[]string{"the sbx daemon is stopping and broke off gc", "run `sbx gc` again"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			fc := &fakeCluster{}
			td := startDaemon(t, Options{Clusters: fc.provider(), link: (&fakeLinker{}).link})
			ctx := context.Background()
			_, err := td.client.Connect(ctx, api.ConnectRequest{Spec: testSpec("alice", "localhost:1"), Wait: true}, nil)
			require.NoError(t, err)
			fc.mu.Lock()
			fc.hang = true
			fc.mu.Unlock()

			res := make(chan error, 1)
			go func() { res <- tc.call(ctx, td.client) }()
			// Stop once the request waits for the cluster.
			require.Eventually(t, func() bool {
				fc.mu.Lock()
				defer fc.mu.Unlock()
				return fc.hangs > 0
			}, 10*time.Second, time.Millisecond, "the request never reached the cluster")
			stopper := &client.Client{Socket: td.paths.Socket()}
			defer stopper.Close()
			require.NoError(t, stopper.Shutdown(ctx))

			var err2 error
			select {
			case err2 = <-res:
			case <-time.After(10 * time.Second):
				t.Fatal("the request was not answered after the stop")
			}
			var ae *api.APIError
			require.ErrorAs(t, err2, &ae)
			require.Equal(t, http.StatusServiceUnavailable, ae.StatusCode, "%v", err2)
			require.Equal(t, api.KindStopping, ae.Kind)
			for _, w := range tc.want {
				require.Contains(t, ae.Message, w)
			}
			require.NotContains(t, ae.Message, "context canceled")
		})
	}
}

// TestRequestDuringStopIsAnswered: a request the stop catches before its
// handler runs gets the 503, never an empty 200 (which the CLI could not
// decode). The wrapper picks among ready cases at random, so it is asked
// many times.
func TestRequestDuringStopIsAnswered(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	ready, stopping := make(chan struct{}), make(chan struct{})
	close(ready)
	close(stopping)
	d := &Daemon{ready: ready, stopping: stopping, mgr: &manager{ctx: ctx}}
	h := d.wrap(apiRoute{pattern: "GET /v1/list", handler: func(w http.ResponseWriter, r *http.Request) error {
		return fmt.Errorf("list: %w", r.Context().Err())
	}})
	for range 100 {
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/v1/list", nil).WithContext(ctx))
		require.Equal(t, http.StatusServiceUnavailable, rec.Code)
		require.Contains(t, rec.Body.String(), "the sbx daemon is stopping")
		require.NotContains(t, rec.Body.String(), "context canceled")
	}
}

// TestStopDuringConnect: a connect waiting for its sandbox when the daemon
// stops gets an answer saying so, rather than a stream that just ends
// (which the CLI can only guess about).
func TestStopDuringConnect(t *testing.T) {
	fc := &fakeCluster{waitBlock: make(chan struct{})} // the relay never gets ready
	td := startDaemon(t, Options{Clusters: fc.provider(), link: (&fakeLinker{}).link})
	ctx := context.Background()
	res := make(chan error, 1)
	waiting := make(chan struct{})
	var once sync.Once
	go func() {
		_, err := td.client.Connect(ctx, api.ConnectRequest{Spec: testSpec("alice", "localhost:1"), Wait: true}, func(p api.Progress) {
			if p.Phase == api.PhaseWaitingRelay {
				once.Do(func() { close(waiting) })
			}
		})
		res <- err
	}()
	select {
	case <-waiting:
	case <-time.After(10 * time.Second):
		t.Fatal("the connect never waited for the relay")
	}
	stopper := &client.Client{Socket: td.paths.Socket()}
	defer stopper.Close()
	require.NoError(t, stopper.Shutdown(ctx))
	var err error
	select {
	case err = <-res:
	case <-time.After(10 * time.Second):
		t.Fatal("the connect was not answered after the stop")
	}
	var ce *api.ConnectError
	require.ErrorAs(t, err, &ce)
	require.True(t, ce.DaemonStopping, "%v", err)
	require.Contains(t, ce.Message, "the sbx daemon is stopping, so it stopped connecting sandbox alice: connect again")
}

// TestStatusSaysManager: a daemon that a service manager runs says which
// one in its status and in the watch snapshot; one that does not leaves
// the field out of the JSON, so older clients see the status they knew.
func TestStatusSaysManager(t *testing.T) {
	td := startDaemon(t, Options{Clusters: (&fakeCluster{}).provider(), link: (&fakeLinker{}).link, Manager: "systemd"})
	ctx := context.Background()
	st, err := td.client.Status(ctx)
	require.NoError(t, err)
	require.Equal(t, "systemd", st.Managed)
	w, err := td.client.Watch(ctx)
	require.NoError(t, err)
	defer w.Close()
	ev, err := w.Next()
	require.NoError(t, err)
	require.NotNil(t, ev.Snapshot)
	require.Equal(t, "systemd", ev.Snapshot.Managed)

	b, err := json.Marshal(api.Status{Version: "v"})
	require.NoError(t, err)
	require.NotContains(t, string(b), "managed")
}

//go:build linux && !race

package systray

import (
	"context"
	"log/slog"
	"sync"
	"testing"
	"time"

	"github.com/sbx-dev/sbx/daemon/api"
	"github.com/stretchr/testify/require"
)

// TestTrayOverDBus runs the real tray (fyne.io/systray) on a private session
// bus against the daemon double, and checks everything a panel would see and
// do: the StatusNotifierItem's properties, the dbusmenu layout, clicks, the
// fallback notification, daemon restarts, a panel restart and quitting; then
// the same tray against the real daemon through its Go client.
//
// fyne.io/systray keeps its state in package globals and starts once per
// process, so this is the one test in the package that runs the real tray.
// It is left out of -race builds: fyne.io/systray v1.12.2 itself races
// (refresh writes menuVersion under one lock while GetLayout reads it under
// another), which the detector reports although our code is not involved.
func TestTrayOverDBus(t *testing.T) {
	if started.Load() {
		t.Skip("fyne.io/systray starts once per process; this test ran already (-count > 1)")
	}
	addr := startSessionBus(t)
	t.Setenv("DBUS_SESSION_BUS_ADDRESS", addr)
	w := startWatcher(t, addr)

	d := newFakeDaemon(sampleStatus())
	sw := &switchClient{c: d}
	var mu sync.Mutex
	var copied []string
	var clipErr error
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	runErr := make(chan error, 1)
	go func() {
		runErr <- Run(ctx, Options{
			Client:  sw,
			Logger:  slog.New(slog.NewTextHandler(testWriter{t}, &slog.HandlerOptions{Level: slog.LevelDebug})),
			LogPath: "/default/daemon.log",
			Clipboard: func(_ context.Context, text string) error {
				mu.Lock()
				defer mu.Unlock()
				if clipErr != nil {
					return clipErr
				}
				copied = append(copied, text)
				return nil
			},
			// Notify is the real one: it must reach the Notifications
			// service on the bus.
			RetryMin: 10 * time.Millisecond, RetryMax: 50 * time.Millisecond,
		})
	}()
	stopped := false
	defer func() {
		if !stopped {
			cancel()
			<-runErr
		}
	}()

	// The item registers with the watcher, as with a real panel.
	require.Eventually(t, func() bool { return len(w.Items()) == 1 }, 15*time.Second, 10*time.Millisecond)
	h := newTrayHost(t, addr, w.Items()[0])
	require.Equal(t, "Active", h.str("Status"))
	require.Equal(t, "ApplicationStatus", h.str("Category"))

	// expect waits until the item shows the state of snap.
	expect := func(what string, snap Snapshot) menuNode {
		t.Helper()
		v := BuildView(snap)
		require.True(t, poll(15*time.Second, func() bool { return h.tooltip() == v.Tooltip }),
			"%s: tooltip is %q, want %q", what, h.tooltip(), v.Tooltip)
		require.Equal(t, "sbx", h.str("Title"))
		px := h.pixmaps()
		require.Len(t, px, 1)
		require.Equal(t, int32(32), px[0].W)
		require.Equal(t, int32(32), px[0].H)
		// The ring's top is drawn opaque in the state's colour.
		c := IconColor(v.Icon)
		require.Equal(t, [4]byte{c.R, c.G, c.B, 0xff}, iconPixel(px[0], 16, 1), "%s: icon colour", what)
		return h.waitMenu(renderView(v))
	}
	running := func() Snapshot {
		st, err := d.Status(context.Background())
		require.NoError(t, err)
		return Snapshot{Daemon: DaemonRunning, Status: st}
	}

	// Connected.
	root := expect("ready", running())
	require.Equal(t, "sbx: 1 sandbox · ready", h.tooltip())
	_, ok := root.find("alice — ready", "route :8083 → localhost:8083 ●")
	require.True(t, ok)

	// Degraded, and the icon pixels change with it.
	before := h.pixmaps()[0].Pix
	d.update("alice", func(sb *api.SandboxStatus) { sb.Phase = api.PhaseReconnecting })
	root = expect("reconnecting", running())
	require.NotEqual(t, before, h.pixmaps()[0].Pix)
	d.update("alice", func(sb *api.SandboxStatus) { sb.Phase = api.PhaseReady; sb.Mappings[0].Listening = false })
	root = expect("target down", running())
	_, ok = root.find("alice — ready, 1 target not listening", "route :8083 → localhost:8083 ○")
	require.True(t, ok)

	// Error.
	d.update("alice", func(sb *api.SandboxStatus) {
		sb.Phase = api.PhaseFailed
		sb.LastError = "relay pod not ready: IMAGE_PULL_BACKOFF"
	})
	// The underscores reach the panel escaped, so it shows them literally.
	root = expect("failed", running())
	_, ok = root.find("alice — failed", "Last error: relay pod not ready: IMAGE_PULL_BACKOFF")
	require.True(t, ok)
	d.update("alice", func(sb *api.SandboxStatus) {
		sb.Phase = api.PhaseReady
		sb.Mappings[0].Listening = true
		sb.LastError = ""
	})
	root = expect("ready again", running())

	// Clicks arrive as dbusmenu Events.
	h.click(root, "alice — ready", labelCopyBaggage)
	require.Eventually(t, func() bool { mu.Lock(); defer mu.Unlock(); return len(copied) == 1 }, 15*time.Second, 10*time.Millisecond)
	mu.Lock()
	first := copied[0]
	clipErr = ErrNoClipboard
	mu.Unlock()
	require.Equal(t, "baggage: sbx-routing-key=k3x9a0b1c2d3e", first)
	// Without a clipboard the text comes as a desktop notification.
	h.click(root, "alice — ready", labelCopyKey)
	require.Eventually(t, func() bool { return len(w.Notes()) == 1 }, 15*time.Second, 10*time.Millisecond)
	require.Equal(t, "sbx: could not copy the routing key\nno clipboard tool found\nk3x9a0b1c2d3e", w.Notes()[0])

	h.click(root, "alice — ready", labelDisconnect)
	require.Eventually(t, func() bool { return len(d.Disconnects()) == 1 }, 15*time.Second, 10*time.Millisecond)
	require.Equal(t, []string{"alice"}, d.Disconnects())
	root = expect("no sandboxes", running())
	require.Equal(t, IconDisconnected, BuildView(running()).Icon)

	// The daemon goes away and comes back: the tray says so, then recovers.
	d.set(sampleStatus())
	expect("reconnected sandbox", running())
	d.stop()
	root = expect("daemon down", Snapshot{Daemon: DaemonDown, DownReason: errDaemonDown.Error(), LogPath: "/default/daemon.log"})
	d.start()
	expect("daemon back", running())

	// "Start daemon" reaches the client.
	d.stop()
	root = expect("daemon down again", Snapshot{Daemon: DaemonDown, DownReason: errDaemonDown.Error(), LogPath: "/default/daemon.log"})
	h.click(root, labelStartDaemon)
	require.Eventually(t, func() bool { return d.Starts() == 1 }, 15*time.Second, 10*time.Millisecond)
	expect("started", running())

	// The panel restarts: the item registers with the new watcher.
	require.NoError(t, w.conn.Close())
	w2 := startWatcher(t, addr)
	require.Eventually(t, func() bool { return len(w2.Items()) == 1 }, 15*time.Second, 10*time.Millisecond)
	require.Equal(t, w.Items()[0], w2.Items()[0])

	// The real daemon takes over: the double goes away, and the tray, still
	// the same process, reconnects to a real daemon through its Go client.
	r := newRealDaemon(t)
	rc := r.client()
	t.Cleanup(rc.Close)
	sw.set(DaemonClient{C: rc, Start: func(context.Context) error { r.start(); return nil }})
	d.stop()
	real := func() Snapshot { return Snapshot{Daemon: DaemonRunning, Status: r.status()} }
	expect("real daemon", real())
	r.connect("carol")
	require.Eventually(t, func() bool {
		st := r.status()
		return len(st.Sandboxes) == 1 && st.Sandboxes[0].Phase == api.PhaseWaitingRelay
	}, 15*time.Second, 10*time.Millisecond)
	root = expect("real sandbox", real())
	h.click(root, "carol — connecting", labelDisconnect)
	require.Eventually(t, func() bool { return len(r.cluster.Deleted()) == 1 }, 15*time.Second, 10*time.Millisecond)
	require.Equal(t, []string{"carol"}, r.cluster.Deleted())
	require.Eventually(t, func() bool { return len(r.status().Sandboxes) == 0 }, 15*time.Second, 10*time.Millisecond)
	expect("real sandbox gone", real())
	r.stop()
	root = expect("real daemon down", Snapshot{Daemon: DaemonDown, LogPath: "/default/daemon.log"})
	h.click(root, labelStartDaemon)
	require.Eventually(t, func() bool { _, err := rc.Status(context.Background()); return err == nil },
		15*time.Second, 10*time.Millisecond, "Start daemon did not start the real daemon")
	expect("real daemon started", real())

	// "Quit tray" ends Run and takes the item off the bus.
	root, err := h.layout()
	require.NoError(t, err)
	h.clickQuit(root, labelQuit)
	select {
	case err := <-runErr:
		require.NoError(t, err)
		stopped = true
	case <-time.After(15 * time.Second):
		t.Fatal("Quit tray did not end Run")
	}
	var owned bool
	name := w.Items()[0][:len(w.Items()[0])-len("/StatusNotifierItem")]
	require.NoError(t, h.conn.BusObject().Call("org.freedesktop.DBus.NameHasOwner", 0, name).Store(&owned))
	require.False(t, owned, "the tray's connection is closed")

	// A second tray in the same process is refused rather than half-working.
	require.ErrorContains(t, Run(context.Background(), Options{Client: d}), "once per process")
	require.NoError(t, ctx.Err(), "the tray ended on its own, not by cancellation")
}

// switchClient lets the test hand the running tray over from the double to
// the real daemon.
type switchClient struct {
	mu sync.Mutex
	c  Client
}

func (s *switchClient) set(c Client) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.c = c
}

func (s *switchClient) get() Client {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.c
}

func (s *switchClient) Status(ctx context.Context) (api.Status, error) { return s.get().Status(ctx) }

func (s *switchClient) Watch(ctx context.Context, fn func(api.Event) error) error {
	return s.get().Watch(ctx, fn)
}

func (s *switchClient) Disconnect(ctx context.Context, name string) error {
	return s.get().Disconnect(ctx, name)
}

func (s *switchClient) StartDaemon(ctx context.Context) error { return s.get().StartDaemon(ctx) }

// testWriter sends log lines to t.Log.
type testWriter struct{ t *testing.T }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Log(string(p))
	return len(p), nil
}

package systray

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/sbx-dev/sbx/daemon/api"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"
)

// fakeUI records every view the loop applies and lets tests click entries
// of the last one.
type fakeUI struct {
	mu     sync.Mutex
	views  []View
	clicks chan Action
}

func newFakeUI() *fakeUI { return &fakeUI{clicks: make(chan Action)} }

func (u *fakeUI) Apply(v View) {
	u.mu.Lock()
	defer u.mu.Unlock()
	u.views = append(u.views, v)
}

func (u *fakeUI) Clicks() <-chan Action { return u.clicks }

func (u *fakeUI) last() View {
	u.mu.Lock()
	defer u.mu.Unlock()
	if len(u.views) == 0 {
		return View{}
	}
	return u.views[len(u.views)-1]
}

func (u *fakeUI) count() int {
	u.mu.Lock()
	defer u.mu.Unlock()
	return len(u.views)
}

func (u *fakeUI) all() []View {
	u.mu.Lock()
	defer u.mu.Unlock()
	return append([]View(nil), u.views...)
}

// click sends the action of the entry at path in the current view, as a
// user's click would.
func (u *fakeUI) click(t *testing.T, path ...string) {
	t.Helper()
	v := u.last()
	it, ok := findItem(v.Items, path...)
	require.True(t, ok, "no entry %q in\n%s", path, renderMenu(v.Items))
	require.False(t, it.Disabled, "entry %q is disabled", path)
	require.NotEqual(t, ActionNone, it.Action.Kind)
	select {
	case u.clicks <- it.Action:
	case <-time.After(10 * time.Second):
		t.Fatalf("the loop did not take the click on %q", path)
	}
}

// waitView waits until the shown view satisfies ok.
func (u *fakeUI) waitView(t *testing.T, what string, ok func(View) bool) View {
	t.Helper()
	if !poll(10*time.Second, func() bool { return ok(u.last()) }) {
		t.Fatalf("waiting for %s; last view: %q\n%s", what, u.last().Tooltip, renderMenu(u.last().Items))
	}
	return u.last()
}

// poll reports whether cond became true within timeout. Unlike
// require.Eventually it lets the caller report the state at the end.
func poll(timeout time.Duration, cond func() bool) bool {
	deadline := time.Now().Add(timeout)
	for {
		if cond() {
			return true
		}
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func tooltipIs(s string) func(View) bool { return func(v View) bool { return v.Tooltip == s } }

// harness runs the loop against a fake daemon and a fake UI.
type harness struct {
	d      *fakeDaemon
	ui     *fakeUI
	cancel context.CancelFunc
	done   chan error

	mu        sync.Mutex
	copied    []string
	notes     []string
	opened    []string
	clipErr   error
	startFail error
}

func startLoop(t *testing.T, d *fakeDaemon) *harness {
	t.Helper()
	h := startLoopWith(t, d)
	h.d = d
	return h
}

// startLoopWith runs the loop against any Client.
func startLoopWith(t *testing.T, c Client) *harness {
	t.Helper()
	h := &harness{ui: newFakeUI(), done: make(chan error, 1)}
	ctx, cancel := context.WithCancel(context.Background())
	h.cancel = cancel
	o := Options{
		Client:  c,
		LogPath: "/default/daemon.log",
		Clipboard: func(_ context.Context, text string) error {
			h.mu.Lock()
			defer h.mu.Unlock()
			if h.clipErr != nil {
				return h.clipErr
			}
			h.copied = append(h.copied, text)
			return nil
		},
		OpenFile: func(_ context.Context, path string) error {
			h.mu.Lock()
			defer h.mu.Unlock()
			h.opened = append(h.opened, path)
			return nil
		},
		Notify: func(_ context.Context, summary, body string) error {
			h.mu.Lock()
			defer h.mu.Unlock()
			h.notes = append(h.notes, summary+"\n"+body)
			return nil
		},
		RetryMin: 5 * time.Millisecond, RetryMax: 20 * time.Millisecond,
	}
	go func() { h.done <- runLoop(ctx, o, h.ui) }()
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-h.done:
			require.NoError(t, err)
		case <-time.After(10 * time.Second):
			t.Error("the loop did not stop")
		}
	})
	return h
}

func (h *harness) get(f func() []string) []string {
	h.mu.Lock()
	defer h.mu.Unlock()
	return append([]string(nil), f()...)
}

func TestLoopFollowsDaemon(t *testing.T) {
	verifyNoLeaks(t)
	d := newFakeDaemon(sampleStatus())
	h := startLoop(t, d)
	v := h.ui.waitView(t, "ready", tooltipIs("sbx: 1 sandbox · ready"))
	require.Equal(t, IconConnected, v.Icon)

	d.update("alice", func(sb *api.SandboxStatus) { sb.Phase = api.PhaseReconnecting })
	v = h.ui.waitView(t, "reconnecting", tooltipIs("sbx: 1 sandbox · 1 reconnecting"))
	require.Equal(t, IconDegraded, v.Icon)
	_, ok := findItem(v.Items, "alice — reconnecting", labelDisconnect)
	require.True(t, ok)

	d.update("alice", func(sb *api.SandboxStatus) {
		sb.Phase = api.PhaseReady
		sb.Mappings[0].Listening = false
	})
	v = h.ui.waitView(t, "target down", tooltipIs("sbx: 1 sandbox · 1 target not listening"))
	require.Equal(t, IconDegraded, v.Icon)

	d.update("alice", func(sb *api.SandboxStatus) { sb.Phase = api.PhaseFailed; sb.LastError = "gave up" })
	v = h.ui.waitView(t, "failed", tooltipIs("sbx: 1 sandbox · 1 failed · 1 target not listening"))
	require.Equal(t, IconError, v.Icon)

	// Changes the menu does not show (counters) do not rebuild it: a
	// rebuild would close a menu the user has open.
	n := h.ui.count()
	watches := d.Watches()
	for i := range 20 {
		d.update("alice", func(sb *api.SandboxStatus) { sb.BytesIn = int64(i); sb.RTT = time.Duration(i) })
	}
	d.update("alice", func(sb *api.SandboxStatus) { sb.Phase = api.PhaseReady; sb.Mappings[0].Listening = true })
	h.ui.waitView(t, "ready again", tooltipIs("sbx: 1 sandbox · ready"))
	require.Equal(t, n+1, h.ui.count(), "only the phase change rebuilt the menu")
	require.Equal(t, watches, d.Watches(), "one watch stream throughout")
}

func TestLoopDisconnectClick(t *testing.T) {
	verifyNoLeaks(t)
	d := newFakeDaemon(sampleStatus())
	d.keepOnDisconnect = true
	h := startLoop(t, d)
	h.ui.waitView(t, "ready", tooltipIs("sbx: 1 sandbox · ready"))
	h.ui.click(t, "alice — ready", labelDisconnect)
	v := h.ui.waitView(t, "disconnecting", tooltipIs("sbx: 1 sandbox · 1 disconnecting"))
	require.Equal(t, []string{"alice"}, d.Disconnects())
	it, ok := findItem(v.Items, "alice — disconnecting", labelDisconnecting)
	require.True(t, ok)
	require.True(t, it.Disabled)

	d.set(withSandboxes())
	v = h.ui.waitView(t, "gone", tooltipIs("sbx: no sandboxes"))
	require.Equal(t, IconDisconnected, v.Icon)
	require.Equal(t, labelNoSandboxes, v.Items[0].Label)
}

func TestLoopDisconnectFailureNotifies(t *testing.T) {
	verifyNoLeaks(t)
	d := newFakeDaemon(sampleStatus())
	h := startLoop(t, d)
	h.ui.waitView(t, "ready", tooltipIs("sbx: 1 sandbox · ready"))
	// The sandbox vanishes between the menu being built and the click.
	d.mu.Lock()
	d.st.Sandboxes = nil
	d.mu.Unlock()
	h.ui.click(t, "alice — ready", labelDisconnect)
	require.Eventually(t, func() bool { return len(h.get(func() []string { return h.notes })) == 1 }, 10*time.Second, 5*time.Millisecond)
	require.Equal(t, "sbx: could not disconnect alice\nsandbox alice not found", h.get(func() []string { return h.notes })[0])
}

func TestLoopCopyAndFallback(t *testing.T) {
	verifyNoLeaks(t)
	h := startLoop(t, newFakeDaemon(sampleStatus()))
	h.ui.waitView(t, "ready", tooltipIs("sbx: 1 sandbox · ready"))
	h.ui.click(t, "alice — ready", labelCopyKey)
	h.ui.click(t, "alice — ready", labelCopyBaggage)
	h.ui.click(t, "alice — ready", labelCopyCurl)
	want := []string{"k3x9a0b1c2d3e", "baggage: sbx-routing-key=k3x9a0b1c2d3e",
		"curl -H 'baggage: sbx-routing-key=k3x9a0b1c2d3e' http://route.hotrod:8083/"}
	require.Eventually(t, func() bool { return len(h.get(func() []string { return h.copied })) == 3 }, 10*time.Second, 5*time.Millisecond)
	require.ElementsMatch(t, want, h.get(func() []string { return h.copied }))

	// Without a clipboard tool the text still reaches the user.
	h.mu.Lock()
	h.clipErr = fmt.Errorf("%w (%s)", ErrNoClipboard, clipboardHint("linux"))
	h.mu.Unlock()
	h.ui.click(t, "alice — ready", labelCopyBaggage)
	require.Eventually(t, func() bool { return len(h.get(func() []string { return h.notes })) == 1 }, 10*time.Second, 5*time.Millisecond)
	note := h.get(func() []string { return h.notes })[0]
	require.Contains(t, note, "sbx: could not copy the baggage header")
	require.Contains(t, note, "install wl-clipboard")
	require.Contains(t, note, "baggage: sbx-routing-key=k3x9a0b1c2d3e")
}

func TestLoopOpenLog(t *testing.T) {
	verifyNoLeaks(t)
	d := newFakeDaemon(sampleStatus())
	d.up = false
	h := startLoop(t, d)
	// While the daemon is down the default location is offered.
	h.ui.waitView(t, "down", tooltipIs("sbx: daemon not running"))
	h.ui.click(t, labelOpenLog)
	d.start()
	h.ui.waitView(t, "ready", tooltipIs("sbx: 1 sandbox · ready"))
	h.ui.click(t, labelOpenLog)
	require.Eventually(t, func() bool { return len(h.get(func() []string { return h.opened })) == 2 }, 10*time.Second, 5*time.Millisecond)
	require.Equal(t, []string{"/default/daemon.log", sampleStatus().LogPath}, h.get(func() []string { return h.opened }))
}

func TestLoopReconnects(t *testing.T) {
	verifyNoLeaks(t)
	d := newFakeDaemon(sampleStatus())
	h := startLoop(t, d)
	h.ui.waitView(t, "ready", tooltipIs("sbx: 1 sandbox · ready"))

	for i := range 3 {
		d.stop()
		v := h.ui.waitView(t, "down", tooltipIs("sbx: daemon not running"))
		require.Equal(t, IconDisconnected, v.Icon)
		require.Equal(t, labelDaemonDown, v.Items[0].Label)
		require.Equal(t, errDaemonDown.Error(), v.Items[0].Tooltip)
		_, ok := findItem(v.Items, labelStartDaemon)
		require.True(t, ok)

		d.start()
		h.ui.waitView(t, "recovered", tooltipIs("sbx: 1 sandbox · ready"))
		// The view may recover from a Status answer just before the new
		// watch starts; the watch follows.
		require.Eventually(t, func() bool { return d.Watches() == i+2 }, 10*time.Second, time.Millisecond)
	}
}

// flakyDown is a stopped daemon whose errors differ on every attempt, as
// a real socket does while a daemon exits (refused, then gone).
type flakyDown struct {
	*fakeDaemon
	mu sync.Mutex
	n  int
}

func (f *flakyDown) Status(ctx context.Context) (api.Status, error) {
	st, err := f.fakeDaemon.Status(ctx)
	if err != nil {
		f.mu.Lock()
		f.n++
		err = fmt.Errorf("attempt %d: %w", f.n, err)
		f.mu.Unlock()
	}
	return st, err
}

func (f *flakyDown) attempts() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.n
}

func TestLoopDownMenuStaysPut(t *testing.T) {
	verifyNoLeaks(t)
	d := newFakeDaemon(sampleStatus())
	c := &flakyDown{fakeDaemon: d}
	h := startLoopWith(t, c)
	h.ui.waitView(t, "ready", tooltipIs("sbx: 1 sandbox · ready"))
	d.stop()
	h.ui.waitView(t, "down", tooltipIs("sbx: daemon not running"))
	n := h.ui.count()
	require.Eventually(t, func() bool { return c.attempts() >= 5 }, 10*time.Second, time.Millisecond)
	require.Equal(t, n, h.ui.count(), "retries with new errors must not rebuild the menu")
}

func TestLoopDroppedWatcherReconnectsQuietly(t *testing.T) {
	verifyNoLeaks(t)
	d := newFakeDaemon(sampleStatus())
	h := startLoop(t, d)
	h.ui.waitView(t, "ready", tooltipIs("sbx: 1 sandbox · ready"))
	d.drop()
	require.Eventually(t, func() bool { return d.Watches() == 2 }, 10*time.Second, 5*time.Millisecond)
	d.update("alice", func(sb *api.SandboxStatus) { sb.Phase = api.PhaseReconnecting })
	h.ui.waitView(t, "change after re-watch", tooltipIs("sbx: 1 sandbox · 1 reconnecting"))
	for _, v := range h.ui.all() {
		require.NotEqual(t, "sbx: daemon not running", v.Tooltip, "a dropped watcher is not a dead daemon")
	}
}

func TestLoopStartDaemon(t *testing.T) {
	verifyNoLeaks(t)
	d := newFakeDaemon(sampleStatus())
	d.up = false
	h := startLoop(t, d)
	h.ui.waitView(t, "down", tooltipIs("sbx: daemon not running"))
	h.ui.click(t, labelStartDaemon)
	h.ui.waitView(t, "started", tooltipIs("sbx: 1 sandbox · ready"))
	require.Equal(t, 1, d.Starts())
}

// slowStart is a client whose StartDaemon blocks until released, to see the
// "Starting daemon…" state and a failure.
type slowStart struct {
	*fakeDaemon
	release chan error
}

func (s slowStart) StartDaemon(ctx context.Context) error {
	select {
	case err := <-s.release:
		return err
	case <-ctx.Done():
		return ctx.Err()
	}
}

func TestLoopStartDaemonFails(t *testing.T) {
	verifyNoLeaks(t)
	d := newFakeDaemon(sampleStatus())
	d.up = false
	c := slowStart{fakeDaemon: d, release: make(chan error)}
	ui := newFakeUI()
	var mu sync.Mutex
	var notes []string
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		done <- runLoop(ctx, Options{Client: c, RetryMin: time.Hour, Notify: func(_ context.Context, s, b string) error {
			mu.Lock()
			defer mu.Unlock()
			notes = append(notes, s+": "+b)
			return nil
		}}, ui)
	}()
	ui.waitView(t, "down", tooltipIs("sbx: daemon not running"))
	ui.click(t, labelStartDaemon)
	v := ui.waitView(t, "starting", func(v View) bool { _, ok := findItem(v.Items, labelStarting); return ok })
	_, ok := findItem(v.Items, labelStartDaemon)
	require.False(t, ok, "no second start while one runs")
	c.release <- errors.New("sbx daemon exited at once: another sbx daemon is already running")
	ui.waitView(t, "start offered again", func(v View) bool { _, ok := findItem(v.Items, labelStartDaemon); return ok })
	require.Eventually(t, func() bool { mu.Lock(); defer mu.Unlock(); return len(notes) == 1 }, 10*time.Second, 5*time.Millisecond)
	mu.Lock()
	note := notes[0]
	mu.Unlock()
	require.True(t, strings.HasPrefix(note, "sbx: could not start the daemon: sbx daemon exited at once"), note)
	cancel()
	require.NoError(t, <-done)
}

func TestLoopQuit(t *testing.T) {
	verifyNoLeaks(t)
	ui := newFakeUI()
	done := make(chan error, 1)
	go func() { done <- runLoop(context.Background(), Options{Client: newFakeDaemon(sampleStatus())}, ui) }()
	ui.waitView(t, "ready", tooltipIs("sbx: 1 sandbox · ready"))
	ui.click(t, labelQuit)
	select {
	case err := <-done:
		require.NoError(t, err)
	case <-time.After(10 * time.Second):
		t.Fatal("Quit tray did not end the loop")
	}
}

func TestOptionsNeedClient(t *testing.T) {
	require.ErrorContains(t, runLoop(context.Background(), Options{}, newFakeUI()), "Client is nil")
}

// verifyNoLeaks checks, after the test's other cleanups stopped the loop,
// that every goroutine the loop started has ended.
func verifyNoLeaks(t *testing.T) {
	t.Cleanup(func() { goleak.VerifyNone(t) })
}

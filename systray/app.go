package systray

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"reflect"
	"sync"
	"time"

	"github.com/sbx-dev/sbx/daemon/api"
)

// Options configure the tray. Only Client is required.
type Options struct {
	// Client talks to the daemon.
	Client Client
	// Logger receives what the tray cannot show (failed clicks, reconnects).
	Logger *slog.Logger
	// LogPath is the daemon log's default location, offered by "Open log"
	// while the daemon is down (a running daemon reports its own).
	LogPath string

	// Clipboard puts text on the clipboard; default: the platform tool
	// (wl-copy, xclip, xsel, pbcopy, clip.exe).
	Clipboard func(ctx context.Context, text string) error
	// OpenFile opens a file in the user's default application; default:
	// xdg-open, open or the Windows shell.
	OpenFile func(ctx context.Context, path string) error
	// Notify shows a desktop notification; default: the freedesktop
	// Notifications service on Linux, osascript on macOS. The tray falls
	// back to it when a click cannot be carried out, and to the log when it
	// fails too.
	Notify func(ctx context.Context, summary, body string) error

	// RetryMin and RetryMax bound the back-off between attempts to reach a
	// daemon that is down (defaults 500ms and 5s).
	RetryMin, RetryMax time.Duration
	// StatusTimeout bounds one Status call (default 5s).
	StatusTimeout time.Duration
}

func (o Options) withDefaults() (Options, error) {
	if o.Client == nil {
		return o, errors.New("systray: Options.Client is nil")
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	if o.Clipboard == nil {
		o.Clipboard = copyToClipboard
	}
	if o.OpenFile == nil {
		o.OpenFile = openFile
	}
	if o.Notify == nil {
		o.Notify = notify
	}
	if o.RetryMin <= 0 {
		o.RetryMin = 500 * time.Millisecond
	}
	if o.RetryMax < o.RetryMin {
		o.RetryMax = max(5*time.Second, o.RetryMin)
	}
	if o.StatusTimeout <= 0 {
		o.StatusTimeout = 5 * time.Second
	}
	return o, nil
}

// ui is the surface the event loop drives: the platform tray in
// production, a recorder in tests. Apply is only ever called from the loop.
type ui interface {
	Apply(View)
	Clicks() <-chan Action
}

// taskResult is the outcome of a click carried out off the loop.
type taskResult struct {
	action Action
	err    error
}

// loop is the tray's single event loop: daemon changes, watch failures,
// retries, clicks and finished tasks all arrive in one select, and every
// change re-derives the whole view from a fresh status.
type loop struct {
	o     Options
	ui    ui
	log   *slog.Logger
	snap  Snapshot
	shown *View

	ctx     context.Context
	wg      sync.WaitGroup
	results chan taskResult
}

// runLoop runs the event loop until ctx ends (nil) or the user quits the
// tray (nil). Every goroutine it starts has ended when it returns.
func runLoop(ctx context.Context, o Options, u ui) error {
	o, err := o.withDefaults()
	if err != nil {
		return err
	}
	ctx, cancel := context.WithCancel(ctx)
	l := &loop{o: o, ui: u, log: o.Logger, ctx: ctx, results: make(chan taskResult),
		snap: Snapshot{Daemon: DaemonConnecting, LogPath: o.LogPath}}
	defer func() {
		cancel()
		l.wg.Wait()
	}()

	// changed coalesces bursts of events into one refresh: the view is
	// rebuilt from a fresh status, so only "something changed" matters.
	changed := make(chan struct{}, 1)
	watchDone := make(chan error, 1)
	watching := false
	startWatch := func() {
		watching = true
		l.wg.Add(1)
		go func() {
			defer l.wg.Done()
			err := o.Client.Watch(ctx, func(api.Event) error {
				select {
				case changed <- struct{}{}:
				default:
				}
				return nil
			})
			if err == nil {
				err = errors.New("the daemon ended the watch stream")
			}
			watchDone <- err // at most one watch runs, so this never blocks
		}()
	}

	retry := time.NewTimer(time.Hour)
	retry.Stop()
	defer retry.Stop()
	backoff := o.RetryMin

	l.show()
	startWatch()
	for {
		select {
		case <-ctx.Done():
			return nil

		case <-changed:
			if l.refresh() {
				backoff = o.RetryMin
			}

		case err := <-watchDone:
			watching = false
			if ctx.Err() != nil {
				return nil
			}
			// A dropped slow watcher and a restarting daemon look alike
			// on the stream; asking for the status tells them apart.
			delay := o.RetryMin
			if !l.refresh() {
				delay = backoff
				backoff = min(2*backoff, o.RetryMax)
				l.log.Debug("tray: daemon unreachable; retrying", "err", err, "in", delay)
			} else {
				l.log.Info("tray: watch stream ended; reconnecting", "err", err)
			}
			retry.Reset(delay)

		case <-retry.C:
			if !watching {
				startWatch()
			}

		case a := <-u.Clicks():
			if a.Kind == ActionQuit {
				return nil
			}
			l.start(a)

		case r := <-l.results:
			if r.action.Kind == ActionStartDaemon {
				l.snap.Starting = false
				if r.err == nil && !watching {
					retry.Stop()
					backoff = o.RetryMin
					startWatch()
				}
				l.show()
			}
			if r.err != nil {
				l.report(r.action, r.err)
			}
		}
	}
}

// refresh asks the daemon for its status and shows it. It reports whether
// the daemon answered; when it did not, the view says so.
func (l *loop) refresh() bool {
	ctx, cancel := context.WithTimeout(l.ctx, l.o.StatusTimeout)
	st, err := l.o.Client.Status(ctx)
	cancel()
	if err != nil {
		if l.ctx.Err() != nil {
			return false
		}
		// The first reason is kept while the daemon stays down: retries
		// fail with varying errors (socket gone, connection refused), and
		// a changed tooltip would rebuild the menu under the user's
		// pointer and drop a click on "Start daemon".
		if l.snap.Daemon != DaemonDown {
			l.snap.Daemon = DaemonDown
			l.snap.DownReason = err.Error()
		}
		l.show()
		return false
	}
	l.snap.Daemon = DaemonRunning
	l.snap.Status = st
	l.snap.DownReason = ""
	l.show()
	return true
}

// show applies the view derived from the current snapshot, unless it is
// what the tray shows already (rebuilding a menu that is open would close
// it under the user's pointer).
func (l *loop) show() {
	v := BuildView(l.snap)
	if l.shown != nil && reflect.DeepEqual(*l.shown, v) {
		return
	}
	l.shown = &v
	l.ui.Apply(v)
}

// start carries out a click off the loop, so a slow disconnect never
// freezes the menu; the result comes back through l.results.
func (l *loop) start(a Action) {
	var task func(ctx context.Context) error
	switch a.Kind {
	case ActionCopy:
		task = func(ctx context.Context) error { return l.o.Clipboard(ctx, a.Text) }
	case ActionDisconnect:
		task = func(ctx context.Context) error { return l.o.Client.Disconnect(ctx, a.Sandbox) }
	case ActionStartDaemon:
		if l.snap.Starting {
			return
		}
		l.snap.Starting = true
		l.show()
		task = l.o.Client.StartDaemon
	case ActionOpenLog:
		task = func(ctx context.Context) error { return l.o.OpenFile(ctx, a.Text) }
	default:
		return
	}
	l.log.Debug("tray: click", "action", a.Kind.String(), "sandbox", a.Sandbox)
	l.wg.Add(1)
	go func() {
		defer l.wg.Done()
		err := task(l.ctx)
		select {
		case l.results <- taskResult{action: a, err: err}:
		case <-l.ctx.Done():
		}
	}()
}

// report tells the user that a click failed: a desktop notification when
// possible, the log always. A failed copy puts the text itself in both so
// the user can still get at it.
func (l *loop) report(a Action, err error) {
	var summary, body string
	switch a.Kind {
	case ActionCopy:
		summary = "sbx: could not copy the " + a.What
		body = fmt.Sprintf("%v\n%s", err, a.Text)
	case ActionDisconnect:
		summary = "sbx: could not disconnect " + a.Sandbox
		body = err.Error()
	case ActionStartDaemon:
		summary = "sbx: could not start the daemon"
		body = err.Error()
	case ActionOpenLog:
		summary = "sbx: could not open the daemon log"
		body = err.Error()
	}
	attrs := []any{"action", a.Kind.String(), "err", err}
	if a.Sandbox != "" {
		attrs = append(attrs, "sandbox", a.Sandbox)
	}
	if a.Kind == ActionCopy {
		attrs = append(attrs, "text", a.Text)
	}
	l.log.Warn(summary, attrs...)
	l.wg.Add(1)
	go func() {
		defer l.wg.Done()
		ctx, cancel := context.WithTimeout(l.ctx, 5*time.Second)
		defer cancel()
		if nerr := l.o.Notify(ctx, summary, body); nerr != nil {
			l.log.Debug("tray: notification failed; the log has the message", "err", nerr)
		}
	}()
}

package client

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"slices"
	"strings"
	"time"

	"github.com/sbx-dev/sbx/daemon/api"
	"github.com/sbx-dev/sbx/daemon/service"
)

// AnswerTimeout bounds Probe: a daemon that accepts connections but does
// not answer (stopped with SIGSTOP, deadlocked, swapping) is reported
// rather than waited for silently forever.
const AnswerTimeout = 5 * time.Second

// StartTimeout bounds how long Ensure waits for a daemon it started, or
// asked the service manager to start, to answer.
const StartTimeout = 20 * time.Second

// MaxLogSize is the size past which the daemon log is started afresh, the
// old one kept as <log>.1 (OpenLog, and the daemon while it runs).
const MaxLogSize = 10 << 20

// HintError is an error of Probe or Ensure whose next step is apart from
// its message: the CLI prints Hint below the message; Error is the
// message alone.
type HintError struct {
	Err  error
	Hint string
}

func (e *HintError) Error() string { return e.Err.Error() }
func (e *HintError) Unwrap() error { return e.Err }

// Probe asks the daemon a cheap question, for at most AnswerTimeout. Its
// errors: ctx's own when ctx ended, a *HintError when the daemon accepts
// connections but does not answer (naming its pid, read from lock, the
// lock file it writes its pid into: api.Paths.Lock), or the client's
// (api.IsNotRunning when nothing listens).
func (c *Client) Probe(ctx context.Context, lock string) error {
	pctx, cancel := context.WithTimeout(ctx, AnswerTimeout)
	defer cancel()
	_, err := c.LogPath(pctx)
	switch {
	case err == nil:
		return nil
	case ctx.Err() != nil:
		return ctx.Err()
	case pctx.Err() != nil:
		who, kill := "", "kill it"
		if b, rerr := os.ReadFile(lock); rerr == nil {
			if pid := strings.TrimSpace(string(b)); pid != "" {
				who, kill = " (pid "+pid+")", "kill it (`kill "+pid+"`)"
			}
		}
		return &HintError{
			Err:  fmt.Errorf("the sbx daemon%s does not answer on %s within %s: it is stuck, stopped (SIGSTOP) or overloaded", who, c.socket(), AnswerTimeout),
			Hint: "`sbx logs` shows what it did last; " + kill + " and run the command again: a new daemon restores the sandboxes with their routing keys"}
	}
	return err
}

// Open returns a client of the daemon on paths' socket once it answers
// (Probe, whose errors it returns: api.IsNotRunning when nothing listens).
func Open(ctx context.Context, paths api.Paths) (*Client, error) {
	return open(ctx, paths, nil)
}

// StartOptions say how Ensure starts a daemon.
type StartOptions struct {
	// Paths are the daemon's socket, lock file and log.
	Paths api.Paths
	// Service is the OS's service manager: where the daemon is installed
	// as its service (service.Host.Installed), Ensure asks it to start the
	// daemon, since one started otherwise would hold the socket the
	// service's daemon needs. The zero Host has no service manager.
	Service service.Host
	// Verbosity is the number of -v flags a daemon Ensure starts itself
	// gets.
	Verbosity int
	// Progress is told what Ensure does ("starting the sbx daemon in the
	// background (log: …) ... ok"); nil discards it.
	Progress io.Writer
}

// Ensure returns a client of the daemon on o.Paths' socket, starting a
// daemon first when none answers: through the service manager where the
// daemon is installed as a service, else this program (the sbx binary) as
// `sbx daemon --background` in a session of its own, its output appended
// to the daemon log, which outlives the caller. Either way it waits up to
// StartTimeout for the daemon to answer. Errors name what failed and the
// next step, a *HintError where the step is apart from the message.
func Ensure(ctx context.Context, o StartOptions) (*Client, error) {
	if o.Progress == nil {
		o.Progress = io.Discard
	}
	return open(ctx, o.Paths, func(c *Client) error {
		if o.Service.Installed() {
			return startService(ctx, o.Service, c, o.Progress)
		}
		return start(ctx, o, c)
	})
}

// open probes the daemon on paths' socket and, when nothing listens and
// start is not nil, starts one with start.
func open(ctx context.Context, paths api.Paths, start func(*Client) error) (*Client, error) {
	c := &Client{Socket: paths.Socket()}
	err := c.Probe(ctx, paths.Lock())
	if err != nil && start != nil && api.IsNotRunning(err) {
		err = start(c)
	}
	if err != nil {
		c.Close()
		return nil, err
	}
	return c, nil
}

// start starts the daemon in the background and waits until c reaches it.
func start(ctx context.Context, o StartOptions, c *Client) error {
	paths := o.Paths
	fmt.Fprintf(o.Progress, "starting the sbx daemon in the background (log: %s) ", paths.Log())
	proc, err := spawn(paths, o.Verbosity)
	if err != nil {
		fmt.Fprintln(o.Progress)
		return err
	}
	// The waiter reports an early exit while we wait below. It stays
	// blocked for the daemon's life afterwards on purpose: in a
	// long-running caller (the tray) it reaps the daemon when it exits, so
	// no zombie is left; a CLI process simply exits before it.
	exited := make(chan error, 1)
	go func() { _, err := proc.Wait(); exited <- err }()
	var ee *exitedError
	switch err := waitAnswer(ctx, c, o.Progress, exited); {
	case err == nil:
		return nil
	case errors.As(err, &ee):
		// Another CLI may have started one first; ours then refused.
		if _, err := c.LogPath(ctx); err == nil {
			return nil
		}
		return fmt.Errorf("the sbx daemon exited while starting (%v): %s\n  see %s, or run `sbx daemon` in a terminal to see why",
			ee.err, lastLines(paths.Log(), 5), paths.Log())
	case errors.Is(err, errStartTimeout):
		return fmt.Errorf("the sbx daemon did not answer on %s within %s; see %s (`sbx logs`)", paths.Socket(), StartTimeout, paths.Log())
	default:
		return err
	}
}

// startService asks the service manager to start the daemon it runs,
// instead of starting one of our own: that one would hold the socket,
// and the service's daemon would wait for it.
func startService(ctx context.Context, svc service.Host, c *Client, progress io.Writer) error {
	m, err := svc.Manager()
	if err != nil {
		return err
	}
	fmt.Fprintf(progress, "starting the sbx daemon through %s (%s) ", m, m.Name())
	if err := svc.Start(ctx); err != nil {
		fmt.Fprintln(progress)
		return &HintError{
			Err:  fmt.Errorf("%s did not start the sbx daemon's service %s: %w", m, m.Name(), err),
			Hint: m.Diagnose() + "; `sbx daemon --uninstall` goes back to starting the daemon on demand"}
	}
	switch err := waitAnswer(ctx, c, progress, nil); {
	case err == nil:
		return nil
	case errors.Is(err, errStartTimeout):
		return &HintError{
			Err:  fmt.Errorf("%s started the sbx daemon's service %s, but nothing answered on %s within %s", m, m.Name(), c.socket(), StartTimeout),
			Hint: m.Diagnose() + "; `sbx logs` has the daemon's log"}
	default:
		return err
	}
}

// WaitGone polls until nothing listens on c's socket any more (nil) or
// ctx ends (ctx's error): a daemon that is shutting down may answer for a
// moment after it broke off a request or was asked to stop. Each poll
// dials afresh.
func (c *Client) WaitGone(ctx context.Context) error {
	for {
		_, err := c.LogPath(ctx)
		c.Close()
		if api.IsNotRunning(err) {
			return nil
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// errStartTimeout is waitAnswer's answer when StartTimeout passed.
var errStartTimeout = errors.New("the sbx daemon did not answer in time")

// exitedError is waitAnswer's answer when the daemon it waits for exited.
type exitedError struct{ err error }

func (e *exitedError) Error() string { return fmt.Sprintf("the sbx daemon exited: %v", e.err) }

// waitAnswer polls c until the daemon answers ("ok" on progress), ctx
// ends, exited reports the daemon's exit (*exitedError; a nil channel
// never does) or StartTimeout passes (errStartTimeout), printing a dot
// every half second.
func waitAnswer(ctx context.Context, c *Client, progress io.Writer, exited <-chan error) error {
	deadline := time.NewTimer(StartTimeout)
	defer deadline.Stop()
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	dots := 0
	for {
		_, err := c.LogPath(ctx)
		if err == nil {
			fmt.Fprintln(progress, "ok")
			return nil
		}
		select {
		case <-ctx.Done():
			fmt.Fprintln(progress)
			return ctx.Err()
		case werr := <-exited:
			fmt.Fprintln(progress)
			return &exitedError{werr}
		case <-deadline.C:
			fmt.Fprintln(progress)
			return errStartTimeout
		case <-tick.C:
			if dots++; dots%5 == 0 {
				fmt.Fprint(progress, ".")
			}
		}
	}
}

// spawn starts `sbx daemon --background` detached from this process
// (detachedProcAttr: its own session or process group, so closing the
// terminal does not stop it), with output appended to the daemon log.
func spawn(paths api.Paths, verbosity int) (*os.Process, error) {
	exe, err := os.Executable()
	if err != nil {
		return nil, fmt.Errorf("find the sbx binary to start the daemon: %w (start it by hand with `sbx daemon`)", err)
	}
	if err := os.MkdirAll(paths.StateDir, 0o700); err != nil {
		return nil, fmt.Errorf("create %s: %w", paths.StateDir, err)
	}
	logf, err := OpenLog(paths.Log())
	if err != nil {
		return nil, err
	}
	defer logf.Close()
	devnull, err := os.Open(os.DevNull)
	if err != nil {
		return nil, err
	}
	defer devnull.Close()
	args := []string{"daemon", "--background"}
	for range verbosity {
		args = append(args, "-v")
	}
	cmd := exec.Command(exe, args...)
	cmd.Stdin = devnull
	cmd.Stdout = logf
	cmd.Stderr = logf
	// A daemon a command starts is not one a service manager runs, even
	// where the command runs under one.
	cmd.Env = slices.DeleteFunc(os.Environ(), func(kv string) bool { return strings.HasPrefix(kv, service.ManagerEnv+"=") })
	cmd.SysProcAttr = detachedProcAttr()
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start the sbx daemon (%s daemon): %w (start it by hand with `sbx daemon`)", exe, err)
	}
	return cmd.Process, nil
}

// OpenLog opens the daemon log at path for appending (mode 0600),
// starting it afresh first when it is over MaxLogSize (the old one is
// kept as path.1).
func OpenLog(path string) (*os.File, error) {
	if fi, err := os.Stat(path); err == nil && fi.Size() > MaxLogSize {
		_ = os.Rename(path, path+".1")
	}
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o600)
	if err != nil {
		return nil, fmt.Errorf("open the daemon log %s: %w", path, err)
	}
	return f, nil
}

// lastLines returns the last n lines of a file, for error messages.
func lastLines(path string, n int) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return ""
	}
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n  ")
}

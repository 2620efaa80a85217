package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/sbx-dev/sbx/daemon/api"
	"github.com/sbx-dev/sbx/daemon/client"
	"github.com/sbx-dev/sbx/daemon/service"
)

// daemonStartTimeout bounds how long a command waits for a daemon it
// started to answer.
const daemonStartTimeout = 20 * time.Second

// daemonPaths are the daemon's paths for this user, from the environment.
func daemonPaths() api.Paths { return api.DefaultPaths(os.Getenv) }

// connectDaemon returns a client of the running daemon, or an error that
// says how to start one.
func connectDaemon(ctx context.Context) (*client.Client, error) {
	c := &client.Client{Socket: daemonPaths().Socket()}
	if err := probeDaemon(ctx, c); err != nil {
		c.Close()
		if api.IsNotRunning(err) {
			return nil, userError(errDaemonNotRunning,
				"start it with `sbx daemon` (or `sbx connect -f FILE`, which starts it for you)")
		}
		return nil, err
	}
	return c, nil
}

// errDaemonNotRunning is connectDaemon's answer when nothing listens on
// the socket (not when the daemon is stuck, or the command interrupted).
var errDaemonNotRunning = errors.New("the sbx daemon is not running")

// ensureDaemon returns a client of the running daemon, starting one first
// if none answers: through the service manager where the daemon is
// installed as a service (`sbx daemon --install`), else in the background.
// Progress goes to progress; g's verbosity (the CLI's -v count) is passed
// on to a daemon it starts.
func ensureDaemon(ctx context.Context, g *globalOptions, progress io.Writer) (*client.Client, error) {
	paths := daemonPaths()
	c := &client.Client{Socket: paths.Socket()}
	err := probeDaemon(ctx, c)
	if err == nil {
		return c, nil
	}
	if !api.IsNotRunning(err) {
		c.Close()
		return nil, err
	}
	if os.Getenv("SBX_DAEMON_AUTOSTART") == "0" {
		c.Close()
		return nil, userError(errors.New("the sbx daemon is not running and SBX_DAEMON_AUTOSTART=0 forbids starting it"),
			"start it with `sbx daemon` (or your service manager), or unset SBX_DAEMON_AUTOSTART")
	}
	if svc := g.services(); svc.Installed() {
		if err := startServiceDaemon(ctx, svc, c, progress); err != nil {
			c.Close()
			return nil, err
		}
		return c, nil
	}
	fmt.Fprintf(progress, "starting the sbx daemon in the background (log: %s) ", paths.Log())
	proc, err := spawnDaemon(paths, g.verbosity)
	if err != nil {
		fmt.Fprintln(progress)
		c.Close()
		return nil, err
	}
	// The waiter reports an early exit while we wait below. It stays
	// blocked for the daemon's life afterwards on purpose: in a
	// long-running caller (the tray) it reaps the daemon when it exits, so
	// no zombie is left; a CLI process simply exits before it.
	exited := make(chan error, 1)
	go func() { _, err := proc.Wait(); exited <- err }()
	var ee *exitedError
	switch err := waitAnswer(ctx, c, progress, exited); {
	case err == nil:
		return c, nil
	case errors.As(err, &ee):
		// Another CLI may have started one first; ours then refused.
		if _, err := c.LogPath(ctx); err == nil {
			return c, nil
		}
		c.Close()
		return nil, fmt.Errorf("the sbx daemon exited while starting (%v): %s\n  see %s, or run `sbx daemon` in a terminal to see why",
			ee.err, lastLines(paths.Log(), 5), paths.Log())
	case errors.Is(err, errStartTimeout):
		c.Close()
		return nil, fmt.Errorf("the sbx daemon did not answer on %s within %s; see %s (`sbx logs`)", paths.Socket(), daemonStartTimeout, paths.Log())
	default:
		c.Close()
		return nil, err
	}
}

// errStartTimeout is waitAnswer's answer when daemonStartTimeout passed.
var errStartTimeout = errors.New("the sbx daemon did not answer in time")

// exitedError is waitAnswer's answer when the daemon it waits for exited.
type exitedError struct{ err error }

func (e *exitedError) Error() string { return fmt.Sprintf("the sbx daemon exited: %v", e.err) }

// waitAnswer polls c until the daemon answers ("ok" on progress), ctx
// ends, exited reports the daemon's exit (*exitedError; a nil channel
// never does) or daemonStartTimeout passes (errStartTimeout), printing a
// dot every half second.
func waitAnswer(ctx context.Context, c *client.Client, progress io.Writer, exited <-chan error) error {
	deadline := time.NewTimer(daemonStartTimeout)
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

// daemonAnswerTimeout bounds the first request a command sends the
// daemon: one that accepts connections but does not answer (stopped with
// SIGSTOP, deadlocked, swapping) is reported rather than waited for
// silently forever.
const daemonAnswerTimeout = 5 * time.Second

// probeDaemon asks the daemon a cheap question. Its errors: ctx's own when
// the command was interrupted, a stuck daemon explained, or the client's
// (NotRunningError when nothing listens).
func probeDaemon(ctx context.Context, c *client.Client) error {
	pctx, cancel := context.WithTimeout(ctx, daemonAnswerTimeout)
	defer cancel()
	_, err := c.LogPath(pctx)
	switch {
	case err == nil:
		return nil
	case ctx.Err() != nil:
		return ctx.Err()
	case pctx.Err() != nil:
		// The daemon writes its pid into the lock file it holds.
		who, kill := "", "kill it"
		if b, rerr := os.ReadFile(daemonPaths().Lock()); rerr == nil {
			if pid := strings.TrimSpace(string(b)); pid != "" {
				who, kill = " (pid "+pid+")", "kill it (`kill "+pid+"`)"
			}
		}
		return &cliError{kind: kindUser, code: 1,
			err:  fmt.Errorf("the sbx daemon%s does not answer on %s within %s: it is stuck, stopped (SIGSTOP) or overloaded", who, c.Socket, daemonAnswerTimeout),
			hint: "`sbx logs` shows what it did last; " + kill + " and run the command again: a new daemon restores the sandboxes with their routing keys"}
	}
	return err
}

// spawnDaemon starts `sbx daemon --background` detached from this process
// (detachedProcAttr: its own session or process group, so closing the
// terminal does not stop it), with output appended to the daemon log.
func spawnDaemon(paths api.Paths, verbosity int) (*os.Process, error) {
	exe, err := os.Executable()
	if err != nil {
		return nil, fmt.Errorf("find the sbx binary to start the daemon: %w (start it by hand with `sbx daemon`)", err)
	}
	if err := os.MkdirAll(paths.StateDir, 0o700); err != nil {
		return nil, fmt.Errorf("create %s: %w", paths.StateDir, err)
	}
	logf, err := openDaemonLog(paths.Log())
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

// maxLogSize is where the daemon log is started afresh (the old one is kept
// as daemon.log.1).
const maxLogSize = 10 << 20

func openDaemonLog(path string) (*os.File, error) {
	if fi, err := os.Stat(path); err == nil && fi.Size() > maxLogSize {
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

// needDaemon is ensureDaemon for a command: progress on stderr, and a note
// when the running daemon is another version.
func needDaemon(ctx context.Context, g *globalOptions) (*client.Client, error) {
	c, err := ensureDaemon(ctx, g, g.stderr)
	if err != nil {
		return nil, err
	}
	warnVersionSkew(ctx, c, g)
	return c, nil
}

// kubeconfigSource is the kubeconfig the global flags and this shell
// select, as kubectl reads them: --kubeconfig is one file (never split,
// a directory name may contain the list separator), else $KUBECONFIG is
// a list of files, else ~/.kube/config. Every path that needs the cluster
// goes through it: the daemon's requests carry it (the daemon may have
// been started from another shell, and its working directory differs, so
// paths are absolute) and the CLI's own kube.Options come from its
// Options. Empty list elements are dropped, as kubectl ignores them: made
// absolute they would name the working directory (`export
// KUBECONFIG=$KUBECONFIG:~/.kube/b` with KUBECONFIG unset leaves a
// leading one).
func kubeconfigSource(g *globalOptions) api.KubeconfigSource {
	abs := func(p string) string {
		if a, err := filepath.Abs(p); err == nil {
			return a
		}
		return p
	}
	if g.kubeconfig != "" {
		return api.NewKubeconfigSource(abs(g.kubeconfig), nil)
	}
	var env []string
	for _, p := range filepath.SplitList(os.Getenv("KUBECONFIG")) {
		if p != "" {
			env = append(env, abs(p))
		}
	}
	return api.NewKubeconfigSource("", env)
}

// clusterRequest is the cluster the global flags select, as the daemon
// needs it (list, gc and disconnect --orphan ask the daemon about one).
func clusterRequest(g *globalOptions) api.ClusterRequest {
	return api.ClusterRequest{KubeconfigSource: kubeconfigSource(g), Context: g.context, Namespace: g.namespace}
}

// warnVersionSkew notes when the running daemon is another sbx version
// than this CLI (typically after an upgrade): the daemon keeps running the
// old code until restarted.
func warnVersionSkew(ctx context.Context, c *client.Client, g *globalOptions) {
	ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	st, err := c.Status(ctx)
	if err != nil || st.Version == "" || st.Version == g.build.Version {
		return
	}
	fmt.Fprintf(g.stderr, "note: the running daemon is sbx %s, this command is sbx %s; restart it with `sbx daemon stop` (sandboxes reconnect with their keys)\n", st.Version, g.build.Version)
}

// classify turns an error from the daemon's API into a categorised CLI
// error by the kind the daemon gave it (api.ErrorKind): the user's to fix
// (hint says how), a stopping daemon, the cluster's answer (its message
// carries the next step), a cluster that did not answer, or daemon
// trouble that points at `sbx logs`.
func classify(err error, hint string) error {
	return classifyStopped(err, hint, &cliError{kind: kindUser, code: 1,
		err:  errors.New("the sbx daemon stopped before it answered (killed, crashed or stopped)"),
		hint: "run the command again: a new daemon starts and restores the saved sandboxes with their routing keys; `sbx logs` shows why the old one stopped"})
}

// classifyStopped is classify with the command's own words (stopped) for
// a request that broke off because the daemon went away, so that the
// daemon is asked once whether it is gone (daemonStopped waits up to 2s).
func classifyStopped(err error, hint string, stopped error) error {
	var (
		ae *api.APIError
		ce *cliError
	)
	switch {
	case err == nil:
		return nil
	case errors.As(err, &ce), errors.Is(err, context.Canceled):
		return err
	case api.IsNotRunning(err):
		return userError(err, "start it with `sbx daemon`")
	case errors.As(err, &ae) && ae.Kind == api.KindUser:
		return userError(err, hint)
	case errors.As(err, &ae) && ae.Kind == api.KindStopping:
		// `sbx daemon stop` during the request: not a bug, and the
		// message says what is left to do.
		return &cliError{kind: kindUser, err: err, code: 1}
	case errors.As(err, &ae) && ae.Kind == api.KindCluster:
		// The daemon's message carries the next step its cause calls
		// for (RBAC, credentials, network); a guess here could
		// contradict it.
		return &cliError{kind: kindConfig, err: err, code: 1}
	case errors.As(err, &ae) && ae.Kind == api.KindClusterTimeout:
		return &cliError{kind: kindConfig, err: err, code: 1, hint: "check --kubeconfig/--context and that the cluster is reachable (`kubectl get pods`)"}
	case !errors.As(err, &ae) && daemonStopped(daemonPaths().Socket()):
		// The answer broke off because the daemon went away (kill -9,
		// a crash, `sbx daemon stop`): not a bug to report as one.
		return stopped
	}
	return &cliError{kind: kindBug, err: err, code: 1}
}

// daemonStopped reports whether the daemon on socket stops answering
// within a moment (a daemon shutting down may answer briefly after it
// broke off a request).
func daemonStopped(socket string) bool {
	c := &client.Client{Socket: socket}
	defer c.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	for {
		if _, err := c.LogPath(ctx); api.IsNotRunning(err) {
			return true
		}
		select {
		case <-ctx.Done():
			return false
		case <-time.After(50 * time.Millisecond):
		}
	}
}

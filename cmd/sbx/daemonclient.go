package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"time"

	"github.com/sbx-dev/sbx/daemon/api"
	"github.com/sbx-dev/sbx/daemon/client"
)

// daemonPaths are the daemon's paths for this user, from the environment.
func daemonPaths() api.Paths { return api.DefaultPaths(os.Getenv) }

// connectDaemon returns a client of the running daemon, or an error that
// says how to start one.
func connectDaemon(ctx context.Context) (*client.Client, error) {
	c, err := client.Open(ctx, daemonPaths())
	if api.IsNotRunning(err) {
		return nil, stateError(errDaemonNotRunning,
			"start it with `sbx daemon` (or `sbx connect -f FILE`, which starts it for you)")
	}
	return c, withHint(err)
}

// errDaemonNotRunning is connectDaemon's answer when nothing listens on
// the socket (not when the daemon is stuck, or the command interrupted).
var errDaemonNotRunning = errors.New("the sbx daemon is not running")

// ensureDaemon returns a client of the running daemon, starting one first
// if none answers (client.Ensure) unless SBX_DAEMON_AUTOSTART=0 forbids
// it. Progress goes to progress; g's verbosity (the CLI's -v count) is
// passed on to a daemon it starts.
func ensureDaemon(ctx context.Context, g *globalOptions, progress io.Writer) (*client.Client, error) {
	if os.Getenv("SBX_DAEMON_AUTOSTART") == "0" {
		c, err := client.Open(ctx, daemonPaths())
		if api.IsNotRunning(err) {
			return nil, userError(errors.New("the sbx daemon is not running and SBX_DAEMON_AUTOSTART=0 forbids starting it"),
				"start it with `sbx daemon` (or your service manager), or unset SBX_DAEMON_AUTOSTART")
		}
		return c, withHint(err)
	}
	c, err := client.Ensure(ctx, client.StartOptions{Paths: daemonPaths(), Service: g.services(), Verbosity: g.verbosity, Progress: progress})
	return c, withHint(err)
}

// probeDaemon asks the daemon a cheap question (client.Probe). Its
// errors: ctx's own when the command was interrupted, a stuck daemon
// explained, or the client's (NotRunningError when nothing listens).
func probeDaemon(ctx context.Context, c *client.Client) error {
	return withHint(c.Probe(ctx, daemonPaths().Lock()))
}

// withHint turns a *client.HintError into the CLI's error that prints
// its hint; other errors, and nil, it returns as they are.
func withHint(err error) error {
	var he *client.HintError
	if errors.As(err, &he) {
		return &cliError{kind: kindConfig, code: 1, err: err, hint: he.Hint}
	}
	return err
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
	return c.WaitGone(ctx) == nil
}

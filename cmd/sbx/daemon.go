package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"runtime"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/sbx-dev/sbx/cluster/kube"
	"github.com/sbx-dev/sbx/cluster/live"
	"github.com/sbx-dev/sbx/daemon"
	"github.com/sbx-dev/sbx/daemon/api"
	"github.com/sbx-dev/sbx/daemon/client"
	"github.com/sbx-dev/sbx/daemon/config"
	"github.com/sbx-dev/sbx/daemon/service"
)

func newDaemonCmd(g *globalOptions) *cobra.Command {
	var (
		background, managed, install, uninstall bool
		env                                     []string
	)
	cmd := &cobra.Command{
		Use:   "daemon",
		Short: "Run the sbx daemon in the foreground, or install it as a service that keeps it running",
		Long: `Run the sbx daemon in the foreground.

The daemon keeps your sandboxes connected: it applies their cluster objects,
holds the tunnels to their relays, reconnects after sleep or network changes,
and serves the CLI and the tray on a private unix socket
($XDG_RUNTIME_DIR/sbx/sbx.sock, or ~/.sbx/sbx.sock). Commands that need it
start it in the background for you; run it by hand to watch its log.

--install makes your service manager run it instead (a systemd user unit on
Linux, a launchd agent on macOS, a Task Scheduler logon task on Windows): it
starts at login and again within seconds when it crashes or is killed, so
keyed requests and the hosts file never wait for your next command. The
unit copies PATH, KUBECONFIG and the XDG variables from this shell (service
managers start with a minimal environment; exec credential plugins such as
gke-gcloud-auth-plugin need PATH); --env NAME copies more. Run --install
again after changing them or moving sbx. --uninstall stops and removes it;
commands start the daemon on demand again.

Stopping the daemon keeps the sandboxes' cluster objects; the next daemon
reconnects them with the same routing keys. ` + "`sbx disconnect`" + ` removes them.`,
		Example: `  sbx daemon            # foreground, log to the terminal and the log file
  sbx daemon --install  # keep it running: start at login, restart when it fails
  sbx daemon --install --env AWS_PROFILE
  sbx daemon --uninstall
  sbx daemon stop       # ask a running daemon to stop`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			switch {
			case install && uninstall:
				return userError(errors.New("--install and --uninstall exclude each other"), "pass one of them")
			case uninstall && len(env) > 0:
				return userError(errors.New("--env goes with --install, not --uninstall"), "`sbx daemon --uninstall` removes the service with whatever it carried")
			case install:
				return installDaemonService(cmd.Context(), g, env)
			case uninstall:
				return uninstallDaemonService(cmd.Context(), g)
			case len(env) > 0:
				return userError(errors.New("--env goes with --install"), "`sbx daemon --install --env NAME` copies NAME into the service")
			case g.output != "":
				return noOutputError(cmd, g)
			}
			manager, err := daemonManager(managed, os.Getenv(service.ManagerEnv))
			if err != nil {
				return err
			}
			return runDaemon(cmd.Context(), g, background, manager)
		},
	}
	cmd.Flags().BoolVar(&install, "install", false, "install the daemon as a per-user service that starts it at login and restarts it when it fails, and start it")
	cmd.Flags().BoolVar(&uninstall, "uninstall", false, "stop and remove the service that --install added")
	cmd.Flags().StringSliceVar(&env, "env", nil, "with --install: also copy this variable from this shell into the service (repeatable)")
	cmd.Flags().BoolVar(&background, "background", false, "log only to the log file (set when a command starts the daemon)")
	_ = cmd.Flags().MarkHidden("background")
	cmd.Flags().BoolVar(&managed, "managed", false, "started by a service manager: log only to the log file and report the manager ($"+service.ManagerEnv+", else the platform's) in the status")
	_ = cmd.Flags().MarkHidden("managed")
	cmd.AddCommand(newDaemonStopCmd(g))
	return cmd
}

// daemonManager is the service manager a daemon reports (empty when none
// runs it): --managed or the variable a service definition sets, which
// names it; --managed alone is the platform's (a Windows task cannot set
// variables).
func daemonManager(managed bool, env string) (string, error) {
	if env == "" && !managed {
		return "", nil
	}
	if env == "" {
		m, err := service.ForGOOS(runtime.GOOS)
		if err != nil {
			return "service manager", nil
		}
		return string(m), nil
	}
	if len(env) > 32 || strings.Trim(env, "abcdefghijklmnopqrstuvwxyz0123456789._-") != "" {
		return "", userError(fmt.Errorf("%s=%q is not the name of a service manager", service.ManagerEnv, env),
			"set it to the manager that runs the daemon (systemd, launchd, schtasks, supervisord…) or unset it")
	}
	return env, nil
}

func newDaemonStopCmd(g *globalOptions) *cobra.Command {
	return &cobra.Command{
		Use:   "stop",
		Short: "Stop the running sbx daemon (sandboxes stay in the cluster and reconnect when it starts again)",
		Long: `Stop the running sbx daemon. Sandboxes stay in the cluster and reconnect
with their routing keys when it starts again.

When the daemon is installed as a service (` + "`sbx daemon --install`" + `), stop asks the
service manager to stop it (` + "`systemctl --user stop sbx-daemon.service`" + ` and the
like), so that it is not restarted; it stays installed, and the next
command that needs it, or the next login, starts it again.
` + "`sbx daemon --uninstall`" + ` removes the service.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			ctx := cmd.Context()
			c := &client.Client{Socket: daemonPaths().Socket()}
			defer c.Close()
			// A stuck daemon would never answer the shutdown either.
			perr := probeDaemon(ctx, c)
			if svc := g.services(); svc.Installed() {
				return stopServiceDaemon(ctx, g, svc, c, perr)
			}
			if perr != nil && !api.IsNotRunning(perr) {
				return perr
			}
			if err := c.Shutdown(ctx); err != nil {
				if api.IsNotRunning(err) {
					fmt.Fprintln(g.stdout, "the sbx daemon is not running")
					return nil
				}
				return err
			}
			if err := waitDaemonGone(ctx); err != nil {
				return err
			}
			fmt.Fprintln(g.stdout, "the sbx daemon stopped")
			return nil
		},
	}
}

// daemonStopTimeout bounds how long `sbx daemon stop` waits for the daemon
// to stop answering (the systemd unit's TimeoutStopSec matches it).
const daemonStopTimeout = 15 * time.Second

// waitDaemonGone waits until the socket stops answering, so that a
// following `sbx daemon` does not race the old one.
func waitDaemonGone(ctx context.Context) error {
	c := &client.Client{Socket: daemonPaths().Socket()}
	defer c.Close()
	wctx, cancel := context.WithTimeout(ctx, daemonStopTimeout)
	defer cancel()
	switch err := c.WaitGone(wctx); {
	case err == nil:
		return nil
	case ctx.Err() != nil:
		return ctx.Err()
	}
	return fmt.Errorf("the sbx daemon did not stop within %s; see `sbx logs`", daemonStopTimeout)
}

// stderrOnto is the fd the log's rotations should carry along: the
// process's stderr when it is the log file (a daemon a command started in
// the background, whose panics must land in the current log), else -1.
func stderrOnto(log string) int {
	se, err1 := os.Stderr.Stat()
	lf, err2 := os.Stat(log)
	if err1 != nil || err2 != nil || !os.SameFile(se, lf) {
		return -1
	}
	return int(os.Stderr.Fd())
}

// runDaemon runs the daemon until ctx ends or a client asks it to stop.
// manager, when set, is the service manager that runs it: the daemon then
// logs only to its log file (the manager keeps stderr, where a panic would
// go) and reports the manager in its status.
func runDaemon(ctx context.Context, g *globalOptions, background bool, manager string) error {
	paths := daemonPaths()
	if err := os.MkdirAll(paths.StateDir, 0o700); err != nil {
		return fmt.Errorf("create %s: %w", paths.StateDir, err)
	}
	// The daemon writes its log file itself, so that it can start it
	// afresh while running (a managed daemon runs for weeks); a background
	// daemon's stderr, where a panic goes, follows the current file.
	lf, err := openRotatingLog(paths.Log(), client.MaxLogSize, stderrOnto(paths.Log()))
	if err != nil {
		return err
	}
	defer lf.Close()
	var out io.Writer = lf
	if !background && manager == "" {
		// In the foreground the log goes to the terminal too.
		out = io.MultiWriter(g.stderr, lf)
	}
	logger := g.logger(out)
	defer kube.RouteKlog(logger.With("component", "client-go"))()
	cfgPath, err := config.DefaultPath(os.Getenv)
	if err != nil {
		return userError(err, "set HOME or XDG_CONFIG_HOME")
	}
	clusters := live.NewClusters(live.Options{
		Logger:            logger,
		DefaultRelayImage: relayImageFor(g.build.Version),
	})
	defer clusters.Close()
	for {
		if manager != "" && !awaitSocket(ctx, paths, logger) {
			return nil
		}
		d, err := daemon.New(daemon.Options{
			Paths:      paths,
			Logger:     logger,
			Version:    g.build.Version,
			LogPath:    paths.Log(),
			ConfigPath: cfgPath,
			// The product, and only it, edits the machine's hosts file by default.
			SystemHostsFile: config.DefaultHostsFile,
			Clusters:        daemon.LiveClusters(clusters),
			Manager:         manager,
		})
		if err != nil {
			return err
		}
		err = d.Run(ctx)
		if err == nil {
			if ctx.Err() != nil && !background && manager == "" {
				// Ctrl-C on a daemon run by hand: 130 as the README
				// says (143 after SIGTERM). One a command or a
				// service manager started exits 0 when told to stop.
				return exitError(exitInterrupted)
			}
			return nil
		}
		if errors.Is(err, daemon.ErrAlreadyRunning) {
			if manager != "" {
				// Another daemon took the lock between the probe and
				// the listen, or holds it without answering yet.
				logger.Info("another sbx daemon holds the socket; retrying", "err", err)
				select {
				case <-ctx.Done():
					return nil
				case <-time.After(time.Second):
				}
				continue
			}
			return userError(err, "`sbx status` talks to the running daemon")
		}
		logger.Error("daemon failed", "err", err)
		return err
	}
}

// awaitSocket waits while another daemon answers on the socket, and
// reports false when ctx ended first. A managed daemon that starts while
// one a command started still runs (`sbx daemon --install` stops that one
// once the service is registered; a command may win the race at login)
// takes over when it stops, instead of exiting and being restarted until
// the manager gives up on it.
func awaitSocket(ctx context.Context, paths api.Paths, logger *slog.Logger) bool {
	c := &client.Client{Socket: paths.Socket()}
	defer c.Close()
	logged := false
	for {
		pctx, cancel := context.WithTimeout(ctx, client.AnswerTimeout)
		_, err := c.LogPath(pctx)
		cancel()
		switch {
		case ctx.Err() != nil:
			return false
		case api.IsNotRunning(err):
			return true
		case !logged:
			logger.Info("another sbx daemon serves the socket; this one, run by the service manager, takes over when it stops", "socket", paths.Socket())
			logged = true
		}
		select {
		case <-ctx.Done():
			return false
		case <-time.After(time.Second):
		}
	}
}

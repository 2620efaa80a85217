package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"time"

	"github.com/spf13/cobra"

	"github.com/sbx-dev/sbx/cluster"
	"github.com/sbx-dev/sbx/daemon"
	"github.com/sbx-dev/sbx/daemon/config"
)

func newDaemonCmd(g *globalOptions) *cobra.Command {
	var background bool
	cmd := &cobra.Command{
		Use:   "daemon",
		Short: "Run the sbx daemon in the foreground",
		Long: `Run the sbx daemon in the foreground.

The daemon keeps your sandboxes connected: it applies their cluster objects,
holds the tunnels to their relays, reconnects after sleep or network changes,
and serves the CLI and the tray on a private unix socket
($XDG_RUNTIME_DIR/sbx/sbx.sock, or ~/.sbx/sbx.sock). Commands that need it
start it in the background for you; run it by hand to watch its log.

Stopping the daemon keeps the sandboxes' cluster objects; the next daemon
reconnects them with the same routing keys. ` + "`sbx disconnect`" + ` removes them.`,
		Example: `  sbx daemon            # foreground, log to the terminal and the log file
  sbx daemon stop       # ask a running daemon to stop`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return runDaemon(cmd.Context(), g, background)
		},
	}
	cmd.Flags().BoolVar(&background, "background", false, "log only to the log file (set when a command starts the daemon)")
	_ = cmd.Flags().MarkHidden("background")
	cmd.AddCommand(newDaemonStopCmd(g))
	return cmd
}

func newDaemonStopCmd(g *globalOptions) *cobra.Command {
	return &cobra.Command{
		Use:   "stop",
		Short: "Stop the running sbx daemon (sandboxes stay in the cluster and reconnect when it starts again)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			ctx := cmd.Context()
			c := &daemon.Client{Socket: daemonPaths().Socket()}
			defer c.Close()
			// A stuck daemon would never answer the shutdown either.
			if err := probeDaemon(ctx, c); err != nil && !daemon.IsNotRunning(err) {
				return err
			}
			if err := c.Shutdown(ctx); err != nil {
				if daemon.IsNotRunning(err) {
					fmt.Fprintln(g.stdout, "the sbx daemon is not running")
					return nil
				}
				return err
			}
			// Wait until the socket stops answering so that a following
			// `sbx daemon` does not race the old one.
			deadline := time.Now().Add(15 * time.Second)
			for time.Now().Before(deadline) {
				probe := &daemon.Client{Socket: daemonPaths().Socket()}
				_, err := probe.LogPath(ctx)
				probe.Close()
				if daemon.IsNotRunning(err) {
					fmt.Fprintln(g.stdout, "the sbx daemon stopped")
					return nil
				}
				select {
				case <-ctx.Done():
					return ctx.Err()
				case <-time.After(50 * time.Millisecond):
				}
			}
			return fmt.Errorf("the sbx daemon did not stop within 15s; see `sbx logs`")
		},
	}
}

// runDaemon runs the daemon until ctx ends or a client asks it to stop.
func runDaemon(ctx context.Context, g *globalOptions, background bool) error {
	paths := daemonPaths()
	if err := os.MkdirAll(paths.StateDir, 0o700); err != nil {
		return fmt.Errorf("create %s: %w", paths.StateDir, err)
	}
	var out io.Writer = g.stderr
	if !background {
		// In the foreground the log goes to the terminal and to the
		// log file, so `sbx logs` always has it.
		f, err := openDaemonLog(paths.Log())
		if err != nil {
			return err
		}
		defer f.Close()
		out = io.MultiWriter(g.stderr, f)
	}
	logger := g.logger(out)
	defer routeKlog(logger.With("component", "client-go"))()
	cfgPath, err := config.DefaultPath(os.Getenv)
	if err != nil {
		return userError(err, "set HOME or XDG_CONFIG_HOME")
	}
	clusters := daemon.NewKubeClusters(daemon.KubeOptions{
		Logger:            logger,
		DefaultRelayImage: cluster.DefaultRelayImageRepo + ":" + g.build.Version,
	})
	defer clusters.Close()
	d, err := daemon.New(daemon.Options{
		Paths:      paths,
		Logger:     logger,
		Version:    g.build.Version,
		LogPath:    paths.Log(),
		ConfigPath: cfgPath,
		Clusters:   clusters.Open,
	})
	if err != nil {
		return err
	}
	if err := d.Run(ctx); err != nil {
		if errors.Is(err, daemon.ErrAlreadyRunning) {
			return userError(err, "`sbx status` talks to the running daemon")
		}
		logger.Error("daemon failed", "err", err)
		return err
	}
	return nil
}

package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"

	"github.com/sbx-dev/sbx/daemon/client"
	"github.com/sbx-dev/sbx/systray"
	"github.com/spf13/cobra"
)

func newTrayCmd(g *globalOptions) *cobra.Command {
	var install, uninstall bool
	cmd := &cobra.Command{
		Use:   "tray",
		Short: "Show your sandboxes' state in the system tray",
		Long: `Show an icon in the system tray (the notification area) that tells at a
glance whether your sandboxes are connected, with a menu to copy a
sandbox's routing key, baggage header or a ready-to-paste curl line, to
disconnect it, and to open the daemon log.

The tray talks to the sbx daemon and follows it: while the daemon is not
running the icon is grey and the menu offers to start it. On Linux the tray
is a StatusNotifierItem on the session bus (KDE, Xfce, waybar, GNOME with
the AppIndicator extension).

--install adds a login entry so the tray starts with your desktop session
(an XDG autostart file on Linux, a LaunchAgent on macOS, the Run key on
Windows); --uninstall removes it.`,
		Example: `  sbx tray &
  sbx tray --install
  sbx tray --uninstall`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			switch {
			case install && uninstall:
				return userError(errors.New("--install and --uninstall exclude each other"), "pass one of them")
			case install:
				return installTray(g)
			case uninstall:
				where, removed, err := systray.UninstallAutostart()
				if err != nil {
					return err
				}
				if !removed {
					fmt.Fprintf(g.stdout, "no tray login entry at %s; nothing to remove\n", where)
					return nil
				}
				fmt.Fprintf(g.stdout, "removed the tray login entry %s\n", where)
				return nil
			}

			level := slog.LevelWarn
			if g.verbosity > 0 {
				level = slog.LevelDebug
			}
			logger := slog.New(slog.NewTextHandler(g.stderr, &slog.HandlerOptions{Level: level}))
			paths := daemonPaths()
			c := &client.Client{Socket: paths.Socket()}
			defer c.Close()
			return systray.Run(cmd.Context(), systray.Options{
				Client: systray.DaemonClient{C: c, Start: func(ctx context.Context) error {
					started, err := ensureDaemon(ctx, g, io.Discard)
					if err != nil {
						return err
					}
					started.Close()
					return nil
				}},
				Logger:  logger,
				LogPath: paths.Log(),
			})
		},
	}
	cmd.Flags().BoolVar(&install, "install", false, "start the tray at every login (XDG autostart, LaunchAgent or Run key)")
	cmd.Flags().BoolVar(&uninstall, "uninstall", false, "remove the login entry that --install added")
	return cmd
}

// installTray writes the login entry for this binary. A `go run` build
// lives in a temporary directory that is gone by the next login, so it is
// refused.
func installTray(g *globalOptions) error {
	exe, err := g.executable()
	if err != nil {
		return err
	}
	where, err := systray.InstallAutostart(exe)
	if err != nil {
		return err
	}
	fmt.Fprintf(g.stdout, "installed the tray login entry %s\nthe tray starts at your next login; run `%s tray &` to start it now\n", where, exe)
	return nil
}

// installedExecutable is the sbx binary for a login entry or a service
// to run, symlinks resolved, and never a `go run` build, which lives in a
// temporary directory that is gone by the next login.
func installedExecutable() (string, error) {
	exe, err := os.Executable()
	if err != nil {
		return "", fmt.Errorf("find the sbx binary: %w", err)
	}
	if resolved, err := filepath.EvalSymlinks(exe); err == nil {
		exe = resolved
	}
	if isTemporaryBuild(exe) {
		return "", userError(fmt.Errorf("%s is a temporary `go run` build", exe),
			"install sbx first (`make build` or `go install ./cmd/sbx`) and run --install with that binary")
	}
	return exe, nil
}

// isTemporaryBuild reports whether exe is a binary the go tool built in its
// temporary directory (`go run`, `go test`).
func isTemporaryBuild(exe string) bool {
	return strings.Contains(exe, string(filepath.Separator)+"go-build")
}

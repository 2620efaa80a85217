package main

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"strings"
	"time"

	"github.com/sbx-dev/sbx/daemon"
	"github.com/sbx-dev/sbx/daemon/api"
	"github.com/sbx-dev/sbx/daemon/client"
	"github.com/sbx-dev/sbx/daemon/service"
)

// serviceReport is what `sbx daemon --install` and `--uninstall` print.
type serviceReport struct {
	// Action is "installed", "reinstalled", "uninstalled" or "none"
	// (--uninstall found nothing).
	Action string `json:"action"`
	*service.Result
	// PID is the daemon the service runs (--install).
	PID int `json:"pid,omitempty"`
	// StoppedPID is the daemon a command had started, which --install
	// stopped so that the service's daemon takes over its socket.
	StoppedPID int `json:"stoppedPid,omitempty"`
	// Saved are the sandboxes that reconnect when a daemon starts again
	// (--uninstall).
	Saved []string `json:"saved,omitempty"`
}

// managerWords say, per manager, what the service is and how it restarts
// the daemon.
func managerWords(m service.Manager) (what, restarts string) {
	switch m {
	case service.Launchd:
		return "launchd agent", "when it fails (launchd waits up to 10s between starts), and at login"
	case service.Schtasks:
		return "Task Scheduler task", "when it fails (after 1 minute, the Task Scheduler's shortest wait), and at logon"
	}
	return "systemd user service", "1s after it fails, and at login"
}

// serviceHint is the next step when the service manager cannot be used.
const serviceHint = "run `sbx daemon` from your login session (or let commands start it on demand), or use `sbx tray --install`"

// installDaemonService installs the daemon as a service of the OS's
// manager and waits until the daemon it runs answers. A daemon a command
// started is stopped once the service is registered (not before: where
// the manager is not available it keeps running); the service's daemon
// waits for the socket meanwhile (awaitSocket).
func installDaemonService(ctx context.Context, g *globalOptions, extraEnv []string) error {
	format, err := g.outputFormat("text", "json", "yaml")
	if err != nil {
		return err
	}
	svc := g.services()
	m, err := svc.Manager()
	if err != nil {
		return userError(err, serviceHint)
	}
	exe, err := g.executable()
	if err != nil {
		return err
	}
	env, err := service.Environment(svc.GOOS, svc.Getenv, extraEnv, filepath.Abs)
	if err != nil {
		return userError(err, "pass --env only for variables set in this shell")
	}
	c := &client.Client{Socket: daemonPaths().Socket()}
	defer c.Close()
	var before api.Status
	switch err := probeDaemon(ctx, c); {
	case err == nil:
		if before, err = c.Status(ctx); err != nil {
			return classify(err, "")
		}
	case !api.IsNotRunning(err):
		return err // stuck: it would keep the socket from the service's daemon
	}

	res, err := svc.Install(ctx, exe, env)
	var ue *service.UnavailableError
	switch {
	case errors.As(err, &ue):
		return &cliError{kind: kindConfig, code: 1, err: fmt.Errorf("cannot install the sbx daemon as a service: %w", err), hint: serviceHint}
	case err != nil && res != nil:
		return &cliError{kind: kindConfig, code: 1,
			err:  fmt.Errorf("installed the sbx daemon's %s %s, but %s did not start it: %w", serviceKind(m), res.Path, m, err),
			hint: m.Diagnose() + "; `sbx daemon --uninstall` goes back to starting the daemon on demand"}
	case err != nil:
		return err
	}
	rep := serviceReport{Action: "installed", Result: res}
	if res.Existed {
		rep.Action = "reinstalled"
	}
	if before.PID != 0 && before.Managed == "" {
		if err := c.Shutdown(ctx); err != nil && !api.IsNotRunning(err) {
			return fmt.Errorf("stop the daemon a command had started (pid %d), so that the service's takes over: %w", before.PID, err)
		}
		rep.StoppedPID = before.PID
	}
	st, err := waitManagedDaemon(ctx, c, string(m))
	if err != nil {
		return &cliError{kind: kindConfig, code: 1,
			err:  fmt.Errorf("installed the sbx daemon's %s %s, but no daemon run by %s answered on %s within %s (%v)", serviceKind(m), res.Path, m, c.Socket, client.StartTimeout, err),
			hint: m.Diagnose() + "; `sbx logs` has the daemon's log"}
	}
	rep.PID = st.PID
	return printValue(g.stdout, format, rep, func() string { return renderInstall(rep) })
}

// serviceKind is what the service is under m ("systemd user service").
func serviceKind(m service.Manager) string { what, _ := managerWords(m); return what }

// waitManagedDaemon waits until a daemon run by manager answers.
func waitManagedDaemon(ctx context.Context, c *client.Client, manager string) (api.Status, error) {
	ctx, cancel := context.WithTimeout(ctx, client.StartTimeout)
	defer cancel()
	var last error
	for {
		st, err := c.Status(ctx)
		switch {
		case err == nil && st.Managed == manager:
			return st, nil
		case err == nil:
			last = fmt.Errorf("the daemon answering (pid %d) is not the service's", st.PID)
		default:
			last = err
		}
		select {
		case <-ctx.Done():
			return st, last
		case <-time.After(100 * time.Millisecond):
		}
	}
}

func renderInstall(rep serviceReport) string {
	var b strings.Builder
	what, restarts := managerWords(rep.Manager)
	fmt.Fprintf(&b, "%s the sbx daemon as a %s: %s\n", rep.Action, what, rep.Path)
	fmt.Fprintf(&b, "  runs:     %s\n", strings.Join(rep.Command, " "))
	fmt.Fprintf(&b, "  restarts: %s\n", restarts)
	if rep.Manager == service.Schtasks {
		b.WriteString("  env:      none written: the task runs with your user environment\n")
	} else {
		names := make([]string, len(rep.Env))
		for i, e := range rep.Env {
			names[i] = e.Name
		}
		fmt.Fprintf(&b, "  env:      %s, copied from this shell (service managers start with a minimal environment: run --install again after changing them; --env NAME adds one)\n", strings.Join(names, ", "))
	}
	fmt.Fprintf(&b, "  ran:      %s\n", strings.Join(rep.Ran, "; "))
	if rep.StoppedPID != 0 {
		fmt.Fprintf(&b, "stopped the daemon a command had started (pid %d); the service's daemon took over its socket and sandboxes\n", rep.StoppedPID)
	}
	fmt.Fprintf(&b, "the daemon is running (pid %d), managed by %s; `sbx status` shows it, `sbx daemon --uninstall` removes the service", rep.PID, rep.Manager)
	return b.String()
}

// uninstallDaemonService stops the service's daemon and removes the
// service; saying so when there was none.
func uninstallDaemonService(ctx context.Context, g *globalOptions) error {
	format, err := g.outputFormat("text", "json", "yaml")
	if err != nil {
		return err
	}
	svc := g.services()
	if _, err := svc.Manager(); err != nil {
		return userError(err, "there is no sbx daemon service to remove here")
	}
	res, err := svc.Uninstall(ctx)
	if err != nil {
		return err
	}
	rep := serviceReport{Action: "none", Result: res}
	if res.Existed {
		rep.Action = "uninstalled"
		rep.Saved, _ = daemon.SavedSandboxes(daemonPaths())
	}
	if err := printValue(g.stdout, format, rep, func() string { return renderUninstall(rep) }); err != nil {
		return err
	}
	if format == "text" {
		for _, n := range res.Notes {
			fmt.Fprintf(g.stderr, "note: %s\n", n)
		}
	}
	return nil
}

func renderUninstall(rep serviceReport) string {
	what, _ := managerWords(rep.Manager)
	if !rep.Existed {
		return fmt.Sprintf("no sbx daemon %s installed (no %s); nothing to remove", what, rep.Path)
	}
	var b strings.Builder
	fmt.Fprintf(&b, "removed the sbx daemon's %s %s\n", what, rep.Path)
	fmt.Fprintf(&b, "  ran: %s\n", strings.Join(rep.Ran, "; "))
	b.WriteString("its daemon stopped; commands start the daemon on demand again")
	if len(rep.Saved) > 0 {
		fmt.Fprintf(&b, ", and sandboxes %s reconnect with their routing keys then (or run `sbx daemon`)", strings.Join(rep.Saved, ", "))
	}
	return b.String()
}

// stopServiceDaemon is `sbx daemon stop` where the daemon is installed as
// a service: the manager stops it, so that it does not restart it (the
// definitions restart only a failed daemon, but a manager that stopped it
// itself also stops a daemon waiting for the socket, and one that does
// not answer). A daemon the manager does not run, and any daemon on
// Windows, where the manager's stop is a kill, is first asked over its
// API, to shut down cleanly. probeErr is the probe's answer.
func stopServiceDaemon(ctx context.Context, g *globalOptions, svc service.Host, c *client.Client, probeErr error) error {
	m, err := svc.Manager()
	if err != nil {
		return err
	}
	running := probeErr == nil
	if running {
		st, err := c.Status(ctx)
		if err == nil && (st.Managed == "" || m == service.Schtasks) {
			_ = c.Shutdown(ctx) // the wait below tells whether it went
		}
	}
	stopErr := svc.Stop(ctx)
	if !running && api.IsNotRunning(probeErr) {
		// Stop cancelled a pending restart, if any; it fails when
		// nothing runs (launchctl kill, schtasks /End).
		fmt.Fprintf(g.stdout, "the sbx daemon is not running (its %s %s is installed: the next command that needs it starts it)\n", serviceKind(m), m.Name())
		return nil
	}
	if err := waitDaemonGone(ctx); err != nil {
		if stopErr != nil {
			return &cliError{kind: kindConfig, code: 1, err: fmt.Errorf("%s did not stop the sbx daemon: %w", m, stopErr), hint: m.Diagnose()}
		}
		return err
	}
	fmt.Fprintf(g.stdout, "stopped the sbx daemon through %s (`%s`); its service stays installed: the next command that needs it, or your next login, starts it again (`sbx daemon --uninstall` removes the service)\n", m, svc.StopCommand())
	return nil
}

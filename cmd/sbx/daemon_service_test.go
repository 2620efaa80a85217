package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/sbx-dev/sbx/daemon/api"
	"github.com/sbx-dev/sbx/daemon/client"
	"github.com/sbx-dev/sbx/daemon/service"
)

// fakeSystemd is a service.Runner that records the commands it is given,
// fails those whose command line starts with a key of fail, and plays the
// systemd user instance: start and restart run `sbx daemon --managed`
// in-process, stop and disable --now stop it.
type fakeSystemd struct {
	t    *testing.T
	mu   sync.Mutex
	ran  []string
	fail map[string]error
	stop func() // stops the managed daemon; nil when none runs
	log  lockedBuffer
}

func newFakeSystemd(t *testing.T) *fakeSystemd {
	f := &fakeSystemd{t: t, fail: map[string]error{}}
	t.Cleanup(f.stopDaemon)
	return f
}

func (f *fakeSystemd) Run(_ context.Context, name string, args ...string) ([]byte, error) {
	line := strings.Join(append([]string{name}, args...), " ")
	f.mu.Lock()
	f.ran = append(f.ran, line)
	for prefix, err := range f.fail {
		if strings.HasPrefix(line, prefix) {
			f.mu.Unlock()
			return nil, err
		}
	}
	f.mu.Unlock()
	switch line {
	case "systemctl --user restart " + service.UnitName:
		f.stopDaemon()
		f.startDaemon()
	case "systemctl --user start " + service.UnitName:
		f.startDaemon()
	case "systemctl --user stop " + service.UnitName, "systemctl --user disable --now " + service.UnitName:
		f.stopDaemon()
	}
	return nil, nil
}

// startDaemon starts the managed daemon unless it runs, returning at once
// as systemctl does for a simple service.
func (f *fakeSystemd) startDaemon() {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.stop != nil {
		return
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan int, 1)
	go func() {
		done <- run(ctx, []string{"daemon", "--managed"}, strings.NewReader(""), &f.log, &f.log)
	}()
	f.stop = func() {
		cancel()
		require.Equal(f.t, 0, <-done, "the managed daemon's exit code; its output:\n%s", f.log.String())
	}
}

func (f *fakeSystemd) stopDaemon() {
	f.mu.Lock()
	stop := f.stop
	f.stop = nil
	f.mu.Unlock()
	if stop != nil {
		stop()
	}
}

// commands returns the commands run since the last call.
func (f *fakeSystemd) commands() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	ran := f.ran
	f.ran = nil
	return ran
}

// fakeExe is the sbx binary the tests' services run.
const fakeExe = "/opt/sbx tools/bin/sbx"

// withServices makes the CLI use a linux host with runner and fakeExe.
func withServices(runner service.Runner) func(*globalOptions) {
	return func(g *globalOptions) {
		g.services = func() service.Host {
			return service.Host{GOOS: "linux", Getenv: os.Getenv, UID: os.Getuid(), Runner: runner}
		}
		g.executable = func() (string, error) { return fakeExe, nil }
	}
}

// runCLIWith is runCLI with global options changed by opt.
func runCLIWith(t *testing.T, opt func(*globalOptions), args ...string) (int, string, string) {
	t.Helper()
	var out, errb bytes.Buffer
	code := run(context.Background(), args, strings.NewReader(""), &out, &errb, opt)
	return code, out.String(), errb.String()
}

func daemonStatus(t *testing.T) (api.Status, error) {
	c := &client.Client{}
	defer c.Close()
	return c.Status(context.Background())
}

// TestDaemonInstallSystemd goes through the life of the service with a
// fake systemd: --install writes the unit, registers and starts it, stops
// the daemon a command had started and waits for the service's daemon to
// take over; status says the daemon is managed; a second --install
// rewrites and restarts; `daemon stop` goes through systemctl; a command
// that finds no daemon asks systemd to start it instead of starting its
// own; --uninstall removes it, twice without harm.
func TestDaemonInstallSystemd(t *testing.T) {
	dir := cliEnv(t)
	t.Setenv("SBX_DAEMON_AUTOSTART", "1")
	t.Setenv(service.ManagerEnv, "systemd") // for the in-process daemon, as the unit sets it
	sd := newFakeSystemd(t)
	svc := withServices(sd)
	startInProcessDaemon(t, &cliCluster{ready: make(chan struct{})})
	st, err := daemonStatus(t)
	require.NoError(t, err)
	require.Empty(t, st.Managed)
	code, out, errOut := runCLIWith(t, svc, "status")
	require.Equal(t, 0, code, errOut)
	require.Contains(t, out, "daemon: started on demand or by hand, nothing restarts it if it stops; `sbx daemon --install` keeps it running")

	unit := filepath.Join(dir, "config", "systemd", "user", "sbx-daemon.service")
	code, out, errOut = runCLIWith(t, svc, "daemon", "--install")
	require.Equal(t, 0, code, errOut)
	require.Equal(t, []string{
		"systemctl --user daemon-reload",
		"systemctl --user enable sbx-daemon.service",
		"systemctl --user restart sbx-daemon.service",
	}, sd.commands())
	require.Contains(t, out, "installed the sbx daemon as a systemd user service: "+unit+"\n")
	require.Contains(t, out, "runs:     "+fakeExe+" daemon --managed\n")
	require.Contains(t, out, "env:      PATH, KUBECONFIG, XDG_CONFIG_HOME, XDG_STATE_HOME, XDG_RUNTIME_DIR, copied from this shell")
	require.Contains(t, out, "stopped the daemon a command had started (pid ")
	require.Contains(t, out, "managed by systemd")
	b, err := os.ReadFile(unit)
	require.NoError(t, err)
	require.Contains(t, string(b), "\nExecStart=\""+fakeExe+"\" daemon --managed\n")
	require.Contains(t, string(b), "\nEnvironment=KUBECONFIG="+filepath.Join(dir, "kubeconfig")+"\n")
	require.Contains(t, string(b), "\nEnvironment=XDG_RUNTIME_DIR="+filepath.Join(dir, "run")+"\n")
	require.Contains(t, string(b), "\nRestart=on-failure\n")
	require.Empty(t, sd.log.String(), "a managed daemon logs only to its log file")

	code, out, errOut = runCLIWith(t, svc, "status")
	require.Equal(t, 0, code, errOut)
	require.Contains(t, out, "\ndaemon: managed by systemd (restarts on failure)\n")
	code, out, _ = runCLIWith(t, svc, "status", "-o", "json")
	require.Equal(t, 0, code)
	require.Contains(t, out, `"managed": "systemd"`)

	// Twice: the unit is rewritten and the daemon restarted.
	code, out, errOut = runCLIWith(t, svc, "daemon", "--install", "-o", "json")
	require.Equal(t, 0, code, errOut)
	var rep struct {
		Action, Manager, Path string
		Command, Ran          []string
		PID, StoppedPID       int
	}
	require.NoError(t, json.Unmarshal([]byte(out), &rep), out)
	require.Equal(t, "reinstalled", rep.Action)
	require.Equal(t, "systemd", rep.Manager)
	require.Equal(t, unit, rep.Path)
	require.Equal(t, []string{fakeExe, "daemon", "--managed"}, rep.Command)
	require.Len(t, rep.Ran, 3)
	require.NotZero(t, rep.PID)
	require.Zero(t, rep.StoppedPID, "the running daemon was the service's")
	sd.commands()

	// stop goes through systemd, which then does not restart it.
	code, out, errOut = runCLIWith(t, svc, "daemon", "stop")
	require.Equal(t, 0, code, errOut)
	require.Equal(t, []string{"systemctl --user stop sbx-daemon.service"}, sd.commands())
	require.Contains(t, out, "stopped the sbx daemon through systemd (`systemctl --user stop sbx-daemon.service`)")
	_, err = daemonStatus(t)
	require.True(t, api.IsNotRunning(err), "%v", err)
	code, out, _ = runCLIWith(t, svc, "daemon", "stop")
	require.Equal(t, 0, code)
	require.Contains(t, out, "not running (its systemd user service sbx-daemon.service is installed")
	sd.commands()
	code, _, errOut = runCLIWith(t, svc, "status")
	require.Equal(t, 1, code)
	require.Contains(t, errOut, "journalctl --user -u sbx-daemon.service")

	// A command that needs the daemon asks systemd to start it.
	code, _, errOut = runCLIWith(t, svc, "list", "--local")
	require.Equal(t, 0, code, errOut)
	require.Contains(t, errOut, "starting the sbx daemon through systemd (sbx-daemon.service) ")
	require.Equal(t, []string{"systemctl --user start sbx-daemon.service"}, sd.commands())
	st, err = daemonStatus(t)
	require.NoError(t, err)
	require.Equal(t, "systemd", st.Managed)

	code, out, errOut = runCLIWith(t, svc, "daemon", "--uninstall")
	require.Equal(t, 0, code, errOut)
	require.Equal(t, []string{"systemctl --user disable --now sbx-daemon.service", "systemctl --user daemon-reload"}, sd.commands())
	require.Contains(t, out, "removed the sbx daemon's systemd user service "+unit)
	require.Contains(t, out, "commands start the daemon on demand again")
	require.NoFileExists(t, unit)
	_, err = daemonStatus(t)
	require.True(t, api.IsNotRunning(err), "%v", err)

	code, out, errOut = runCLIWith(t, svc, "daemon", "--uninstall")
	require.Equal(t, 0, code, errOut)
	require.Contains(t, out, "no sbx daemon systemd user service installed (no "+unit+"); nothing to remove")
	require.Empty(t, sd.commands())
	code, out, _ = runCLIWith(t, svc, "daemon", "--uninstall", "-o", "json")
	require.Equal(t, 0, code)
	require.Contains(t, out, `"action": "none"`)
}

// TestManagedDaemonWaitsForTheSocket: a managed daemon that starts while
// another daemon serves the socket waits, and takes over when that one
// stops, instead of exiting (and being restarted until its manager gives
// up).
func TestManagedDaemonWaitsForTheSocket(t *testing.T) {
	dir := cliEnv(t)
	t.Setenv(service.ManagerEnv, "systemd") // for the in-process daemon, as the unit sets it
	stopFirst := startInProcessDaemon(t, &cliCluster{ready: make(chan struct{})})
	sd := newFakeSystemd(t)
	sd.startDaemon()
	logPath := filepath.Join(dir, "state", "sbx", "daemon.log")
	require.Eventually(t, func() bool {
		b, _ := os.ReadFile(logPath)
		return strings.Contains(string(b), "takes over when it stops")
	}, 10*time.Second, 10*time.Millisecond)
	st, err := daemonStatus(t)
	require.NoError(t, err)
	require.Empty(t, st.Managed, "the first daemon still serves")
	stopFirst()
	require.Eventually(t, func() bool {
		st, err := daemonStatus(t)
		return err == nil && st.Managed == "systemd"
	}, 10*time.Second, 10*time.Millisecond)
	require.Empty(t, sd.log.String(), "a managed daemon logs only to its log file")
}

// TestDaemonInstallWithoutSystemd: no user instance (an SSH session
// without one, a container): the error names it, its cause and the next
// step, no unit is left behind, and the daemon a command started keeps
// running.
func TestDaemonInstallWithoutSystemd(t *testing.T) {
	dir := cliEnv(t)
	sd := newFakeSystemd(t)
	sd.fail["systemctl --user daemon-reload"] = &service.CommandError{
		Args: []string{"systemctl", "--user", "daemon-reload"}, Err: errors.New("exit status 1"),
		Output: "Failed to connect to bus: No medium found\n"}
	startInProcessDaemon(t, &cliCluster{ready: make(chan struct{})})
	code, _, errOut := runCLIWith(t, withServices(sd), "daemon", "--install")
	require.Equal(t, 1, code)
	require.Contains(t, errOut, "cannot install the sbx daemon as a service: systemd user instance not available (systemctl --user daemon-reload: exit status 1: Failed to connect to bus: No medium found)")
	require.Contains(t, errOut, "hint: run `sbx daemon` from your login session (or let commands start it on demand), or use `sbx tray --install`")
	require.NoFileExists(t, filepath.Join(dir, "config", "systemd", "user", "sbx-daemon.service"))
	st, err := daemonStatus(t)
	require.NoError(t, err, "the running daemon is left alone")
	require.Empty(t, st.Managed)
}

// TestDaemonServiceDoesNotStart: with the unit installed, a command that
// finds no daemon asks systemd and reports its refusal rather than start
// a daemon of its own, which would hold the socket.
func TestDaemonServiceDoesNotStart(t *testing.T) {
	cliEnv(t)
	t.Setenv("SBX_DAEMON_AUTOSTART", "1")
	sd := newFakeSystemd(t)
	svc := withServices(sd)
	_, err := service.Host{GOOS: "linux", Getenv: os.Getenv, Runner: &fakeSystemd{t: t, fail: map[string]error{"systemctl --user restart": errors.New("no")}}}.Install(context.Background(), fakeExe, nil)
	require.Error(t, err, "installed, not started")
	sd.fail["systemctl --user start"] = &service.CommandError{Args: []string{"systemctl", "--user", "start", "sbx-daemon.service"},
		Err: errors.New("exit status 1"), Output: "Job for sbx-daemon.service failed because the control process exited with error code.\n"}
	code, _, errOut := runCLIWith(t, svc, "list", "--local")
	require.Equal(t, 1, code)
	require.Contains(t, errOut, "systemd did not start the sbx daemon's service sbx-daemon.service: systemctl --user start sbx-daemon.service: exit status 1: Job for")
	require.Contains(t, errOut, "`sbx daemon --uninstall` goes back to starting the daemon on demand")
	require.NotContains(t, errOut, "in the background")
	_, err = daemonStatus(t)
	require.True(t, api.IsNotRunning(err))
}

func TestDaemonServiceFlags(t *testing.T) {
	cliEnv(t)
	svc := withServices(newFakeSystemd(t))
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"daemon", "--install", "--uninstall"}, "--install and --uninstall exclude each other"},
		{[]string{"daemon", "--env", "AWS_PROFILE"}, "--env goes with --install"},
		{[]string{"daemon", "--uninstall", "--env", "AWS_PROFILE"}, "--env goes with --install, not --uninstall"},
		{[]string{"daemon", "-o", "json"}, "sbx daemon prints no state"},
		{[]string{"daemon", "--install", "-o", "xml"}, `output format "xml" is not supported here`},
		{[]string{"daemon", "--install", "--env", "SBX_NOT_SET_ANYWHERE"}, "SBX_NOT_SET_ANYWHERE is not set in this shell"},
	} {
		code, _, errOut := runCLIWith(t, svc, tc.args...)
		require.Equal(t, 2, code, tc.args)
		require.Contains(t, errOut, tc.want, tc.args)
	}
}

func TestDaemonManager(t *testing.T) {
	for _, tc := range []struct {
		managed bool
		env     string
		want    string
		err     string
	}{
		{false, "", "", ""},
		{true, "launchd", "launchd", ""},
		{false, "supervisord", "supervisord", ""},
		{true, "Not A Name", "", "is not the name of a service manager"},
	} {
		got, err := daemonManager(tc.managed, tc.env)
		if tc.err != "" {
			require.ErrorContains(t, err, tc.err)
			continue
		}
		require.NoError(t, err)
		require.Equal(t, tc.want, got)
	}
	got, err := daemonManager(true, "")
	require.NoError(t, err)
	require.NotEmpty(t, got, "--managed alone names the platform's manager")
}

func TestRenderManaged(t *testing.T) {
	require.Equal(t, "daemon: managed by launchd (restarts on failure)", renderManaged("launchd"))
	require.Equal(t, "daemon: managed by supervisord", renderManaged("supervisord"))
	require.Contains(t, renderManaged(""), "`sbx daemon --install` keeps it running")
}

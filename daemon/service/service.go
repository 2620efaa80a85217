// Package service installs the sbx daemon as a per-user service of the
// operating system's service manager (a systemd user unit, a launchd
// agent, a Task Scheduler logon task), which starts it at login and
// restarts it when it fails. The definitions are pure functions of their
// inputs; every command the managers need goes through a Runner, so tests
// record them instead of running them.
package service

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
)

// Manager names a service manager. It is what a daemon it runs reports in
// its status (api.Status.Managed).
type Manager string

// The managers sbx installs the daemon with.
const (
	Systemd  Manager = "systemd"
	Launchd  Manager = "launchd"
	Schtasks Manager = "schtasks"
)

// RestartsOnFailure reports whether m is one of the managers whose service
// definition restarts the daemon when it fails (every one this package
// writes); a daemon run by another manager (SBX_DAEMON_MANAGER set by hand)
// may or may not be.
func (m Manager) RestartsOnFailure() bool {
	return m == Systemd || m == Launchd || m == Schtasks
}

// ManagerEnv is the variable a service definition sets to tell the daemon
// which manager runs it; `sbx daemon --managed` without it assumes the
// platform's (ForGOOS).
const ManagerEnv = "SBX_DAEMON_MANAGER"

// Names of the service in each manager.
const (
	UnitName   = "sbx-daemon.service" // systemd
	AgentLabel = "dev.sbx.daemon"     // launchd
	TaskName   = "sbx daemon"         // Task Scheduler
)

// DaemonArgs are the arguments every definition runs the sbx binary with.
var DaemonArgs = []string{"daemon", "--managed"}

// ForGOOS is the service manager sbx uses on goos, or an error that says
// there is none.
func ForGOOS(goos string) (Manager, error) {
	switch goos {
	case "linux":
		return Systemd, nil
	case "darwin":
		return Launchd, nil
	case "windows":
		return Schtasks, nil
	}
	return "", fmt.Errorf("sbx knows no per-user service manager on %s", goos)
}

// Runner runs an OS command and returns its combined output.
type Runner interface {
	Run(ctx context.Context, name string, args ...string) ([]byte, error)
}

// ExecRunner runs commands with os/exec. Its errors are *CommandError.
type ExecRunner struct{}

// Run runs name with args and returns what it printed.
func (ExecRunner) Run(ctx context.Context, name string, args ...string) ([]byte, error) {
	out, err := exec.CommandContext(ctx, name, args...).CombinedOutput()
	if err != nil {
		return out, &CommandError{Args: append([]string{name}, args...), Output: string(out), Err: err}
	}
	return out, nil
}

// CommandError is a command that failed, with what it printed.
type CommandError struct {
	Args   []string
	Output string
	Err    error
}

func (e *CommandError) Error() string {
	msg := strings.Join(e.Args, " ") + ": " + e.Err.Error()
	if out := lastLine(e.Output); out != "" {
		msg += ": " + out
	}
	return msg
}

func (e *CommandError) Unwrap() error { return e.Err }

// lastLine is the last non-empty line of a command's output: where
// systemctl and launchctl put the reason.
func lastLine(s string) string {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	return strings.TrimSpace(lines[len(lines)-1])
}

// UnavailableError says the service manager cannot be used from here
// (no systemctl, no user instance or session bus, no GUI session).
type UnavailableError struct {
	Manager Manager
	Err     error
}

func (e *UnavailableError) Error() string {
	what := map[Manager]string{
		Systemd:  "systemd user instance",
		Launchd:  "launchd GUI session",
		Schtasks: "Windows Task Scheduler",
	}[e.Manager]
	return fmt.Sprintf("%s not available (%v)", what, e.Err)
}

func (e *UnavailableError) Unwrap() error { return e.Err }

// Env is one environment variable a definition passes to the daemon.
type Env struct {
	Name  string `json:"name"`
	Value string `json:"value"`
}

// Host is where the service is installed: the OS, its environment, the
// user and how commands run. Local() is this machine.
type Host struct {
	GOOS   string
	Getenv func(string) string
	// UID is the user's uid: launchd's domain is gui/<uid>.
	UID int
	// User is DOMAIN\name on Windows, the user whose logon starts the task.
	User   string
	Runner Runner
}

// Local is the host sbx runs on, running commands for real.
func Local() Host {
	user := os.Getenv("USERNAME")
	if d := os.Getenv("USERDOMAIN"); d != "" && user != "" {
		user = d + `\` + user
	}
	return Host{GOOS: runtime.GOOS, Getenv: os.Getenv, UID: os.Getuid(), User: user, Runner: ExecRunner{}}
}

// Manager is the host's service manager.
func (h Host) Manager() (Manager, error) { return ForGOOS(h.GOOS) }

// Path is the file that defines the service: the systemd unit, the launchd
// plist, or (Windows keeps tasks in its own store) the task XML that
// schtasks was given, kept so that sbx can tell the task is installed.
func (h Host) Path() (string, error) {
	m, err := h.Manager()
	if err != nil {
		return "", err
	}
	home := h.Getenv("HOME")
	switch m {
	case Launchd:
		if home == "" {
			return "", errors.New("HOME is not set; cannot find ~/Library/LaunchAgents")
		}
		return filepath.Join(home, "Library", "LaunchAgents", AgentLabel+".plist"), nil
	case Schtasks:
		appData := h.Getenv("APPDATA")
		if appData == "" {
			return "", errors.New("APPDATA is not set; cannot find the sbx settings folder")
		}
		return filepath.Join(appData, "sbx", "sbx-daemon-task.xml"), nil
	}
	dir := h.Getenv("XDG_CONFIG_HOME")
	if dir == "" || !filepath.IsAbs(dir) { // the XDG spec says to ignore a relative value
		if home == "" {
			return "", errors.New("neither XDG_CONFIG_HOME nor HOME is set; cannot find ~/.config/systemd/user")
		}
		dir = filepath.Join(home, ".config")
	}
	return filepath.Join(dir, "systemd", "user", UnitName), nil
}

// Installed reports whether the service's definition file exists: then a
// command that finds no daemon asks the manager to start it rather than
// start one of its own, which would hold the socket the service needs.
func (h Host) Installed() bool {
	p, err := h.Path()
	if err != nil {
		return false
	}
	_, err = os.Stat(p)
	return err == nil
}

// Name is how the service is known to its manager, for messages.
func (m Manager) Name() string {
	switch m {
	case Launchd:
		return AgentLabel
	case Schtasks:
		return TaskName
	}
	return UnitName
}

// Diagnose says where to look when the service does not start or stop.
func (m Manager) Diagnose() string {
	switch m {
	case Launchd:
		return "`launchctl print gui/$(id -u)/" + AgentLabel + "` and ~/Library/Logs/sbx-daemon.log say why"
	case Schtasks:
		return "`schtasks /Query /TN \"" + TaskName + "\" /V /FO LIST` says why"
	}
	return "`systemctl --user status " + UnitName + "` and `journalctl --user -u " + UnitName + "` say why"
}

// Result is what Install or Uninstall did, for the user to read.
type Result struct {
	Manager Manager `json:"manager"`
	// Name is the unit, agent label or task name.
	Name string `json:"name"`
	// Path is the definition file written or removed.
	Path string `json:"path"`
	// Command is what the service runs; Env what it passes (Install).
	Command []string `json:"command,omitempty"`
	Env     []Env    `json:"env,omitempty"`
	// Existed: Install replaced an earlier definition; Uninstall found one.
	Existed bool `json:"existed"`
	// Ran are the manager's commands, in order.
	Ran []string `json:"ran"`
	// Notes are what went wrong without stopping the operation.
	Notes []string `json:"notes,omitempty"`
}

// run runs one manager command and records it.
func (h Host) run(ctx context.Context, res *Result, name string, args ...string) error {
	res.Ran = append(res.Ran, strings.Join(append([]string{name}, args...), " "))
	_, err := h.Runner.Run(ctx, name, args...)
	return err
}

// Install writes the service definition that runs `exe daemon --managed`
// with env, registers it with the manager and (re)starts it, so a second
// Install replaces the definition and restarts the daemon. A manager that
// cannot register it leaves things as they were (the old definition, or
// none) and returns an *UnavailableError or the command's error; one that
// registered it but failed to start it returns the Result and the error.
func (h Host) Install(ctx context.Context, exe string, env []Env) (*Result, error) {
	m, err := h.Manager()
	if err != nil {
		return nil, err
	}
	path, err := h.Path()
	if err != nil {
		return nil, err
	}
	if !filepath.IsAbs(exe) {
		return nil, fmt.Errorf("the service needs the absolute path of sbx, got %q", exe)
	}
	if m == Systemd && strings.ContainsAny(exe, "\"'\\\n\r\t") {
		return nil, fmt.Errorf("systemd does not run an executable whose path has quotes, backslashes or control characters (%q); move sbx to a plainer path", exe)
	}
	res := &Result{Manager: m, Name: m.Name(), Path: path, Command: append([]string{exe}, DaemonArgs...), Env: env}
	var content []byte
	switch m {
	case Systemd:
		content = SystemdUnit(exe, env)
	case Launchd:
		content = LaunchdPlist(exe, env, h.launchdLog())
	case Schtasks:
		if len(env) > 0 {
			return nil, fmt.Errorf("a Windows task cannot set environment variables (%s); the task runs with your user environment: set them with `setx`", envNames(env))
		}
		content = utf16File(TaskXML(exe, h.User))
	}
	old, rerr := os.ReadFile(path)
	res.Existed = rerr == nil
	if err := WriteFileAtomic(path, content, definitionWhat); err != nil {
		return nil, err
	}
	// Undo the write when the manager refuses the service: a definition
	// left behind would make commands wait for a manager that never
	// starts the daemon.
	rollback := func() {
		if res.Existed {
			_ = WriteFileAtomic(path, old, definitionWhat)
		} else {
			_ = os.Remove(path)
		}
	}
	switch m {
	case Systemd:
		err = h.installSystemd(ctx, res, rollback)
	case Launchd:
		err = h.installLaunchd(ctx, res, rollback)
	case Schtasks:
		err = h.installTask(ctx, res, rollback)
	}
	return res, err
}

// Uninstall stops the service and removes its definition. With no
// definition file there is nothing to undo: Existed is false and no
// command runs.
func (h Host) Uninstall(ctx context.Context) (*Result, error) {
	m, err := h.Manager()
	if err != nil {
		return nil, err
	}
	path, err := h.Path()
	if err != nil {
		return nil, err
	}
	res := &Result{Manager: m, Name: m.Name(), Path: path, Ran: []string{}}
	if _, err := os.Stat(path); errors.Is(err, fs.ErrNotExist) {
		return res, nil
	}
	res.Existed = true
	switch m {
	case Systemd:
		if err := h.run(ctx, res, "systemctl", "--user", "disable", "--now", UnitName); err != nil {
			res.Notes = append(res.Notes, fmt.Sprintf("systemd was not told (%v): a running %s keeps running until you log out or run `systemctl --user stop %s`", err, UnitName, UnitName))
		}
	case Launchd:
		if err := h.run(ctx, res, "launchctl", "bootout", h.launchdTarget()); err != nil {
			if err2 := h.run(ctx, res, "launchctl", "unload", "-w", path); err2 != nil {
				res.Notes = append(res.Notes, fmt.Sprintf("launchd did not unload %s (%v; %v): it was probably not loaded", AgentLabel, err, err2))
			}
		}
	case Schtasks:
		_ = h.run(ctx, res, "schtasks", "/End", "/TN", TaskName) // fails when it is not running
		if err := h.run(ctx, res, "schtasks", "/Delete", "/TN", TaskName, "/F"); err != nil {
			res.Notes = append(res.Notes, fmt.Sprintf("the Task Scheduler did not delete the task %q (%v); `schtasks /Delete /TN \"%s\" /F` removes it", TaskName, err, TaskName))
		}
	}
	if err := os.Remove(path); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return res, fmt.Errorf("remove the sbx daemon's service definition %s: %w", path, err)
	}
	if m == Systemd {
		if err := h.run(ctx, res, "systemctl", "--user", "daemon-reload"); err != nil {
			res.Notes = append(res.Notes, fmt.Sprintf("systemctl --user daemon-reload failed (%v); systemd forgets the unit at its next reload", err))
		}
	}
	return res, nil
}

// Start asks the manager to start the daemon now (a no-op for it when the
// daemon runs, or is about to be restarted).
func (h Host) Start(ctx context.Context) error {
	m, err := h.Manager()
	if err != nil {
		return err
	}
	res := &Result{}
	switch m {
	case Launchd:
		if err := h.run(ctx, res, "launchctl", "kickstart", h.launchdTarget()); err != nil {
			// Not loaded (booted out by hand, or installed from
			// another session): load it, which starts it (RunAtLoad).
			path, perr := h.Path()
			if perr != nil {
				return perr
			}
			if err2 := h.run(ctx, res, "launchctl", "bootstrap", h.launchdDomain(), path); err2 != nil {
				return fmt.Errorf("%w; %w", err, err2)
			}
		}
		return nil
	case Schtasks:
		return h.run(ctx, res, "schtasks", "/Run", "/TN", TaskName)
	}
	return h.run(ctx, res, "systemctl", "--user", "start", UnitName)
}

// Stop asks the manager to stop the daemon without restarting it; it stays
// installed and starts again at the next login or Start. systemd and
// launchd send SIGTERM, so the daemon shuts down cleanly (and exits 0,
// which none of the definitions restart); the Task Scheduler terminates
// it, so callers ask the daemon to shut down over its API first there.
func (h Host) Stop(ctx context.Context) error {
	m, err := h.Manager()
	if err != nil {
		return err
	}
	res := &Result{}
	switch m {
	case Launchd:
		return h.run(ctx, res, "launchctl", "kill", "SIGTERM", h.launchdTarget())
	case Schtasks:
		return h.run(ctx, res, "schtasks", "/End", "/TN", TaskName)
	}
	return h.run(ctx, res, "systemctl", "--user", "stop", UnitName)
}

// StopCommand is the manager's own command that Stop runs, for messages.
func (h Host) StopCommand() string {
	m, _ := h.Manager()
	switch m {
	case Launchd:
		return "launchctl kill SIGTERM " + h.launchdTarget()
	case Schtasks:
		return `schtasks /End /TN "` + TaskName + `"`
	}
	return "systemctl --user stop " + UnitName
}

func envNames(env []Env) string {
	names := make([]string, len(env))
	for i, e := range env {
		names[i] = e.Name
	}
	return strings.Join(names, ", ")
}

// definitionWhat names the service definition in WriteFileAtomic's errors.
const definitionWhat = "the sbx daemon's service definition"

// WriteFileAtomic writes content to path (mode 0644, directories created)
// through a temporary file in the same directory, so a crash never leaves
// a half-written definition that a service or session manager would choke
// on. what names the file in errors ("the sbx daemon's service
// definition"). The tray's login entry is written with it too.
func WriteFileAtomic(path string, content []byte, what string) error {
	dir := filepath.Dir(path)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return fmt.Errorf("create %s for %s: %w", dir, what, err)
	}
	f, err := os.CreateTemp(dir, ".sbx-*")
	if err != nil {
		return fmt.Errorf("write %s in %s: %w", what, dir, err)
	}
	tmp := f.Name()
	_, werr := f.Write(content)
	cerr := f.Close()
	if err := errors.Join(werr, cerr, os.Chmod(tmp, 0o644)); err != nil {
		_ = os.Remove(tmp)
		return fmt.Errorf("write %s (%s): %w", what, tmp, err)
	}
	if err := os.Rename(tmp, path); err != nil {
		_ = os.Remove(tmp)
		return fmt.Errorf("install %s at %s: %w", what, path, err)
	}
	return nil
}

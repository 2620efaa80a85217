package service

import (
	"bytes"
	"context"
	"encoding/binary"
	"encoding/xml"
	"errors"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"unicode/utf16"

	"github.com/stretchr/testify/require"
)

func envMap(m map[string]string) func(string) string { return func(k string) string { return m[k] } }

func TestPaths(t *testing.T) {
	cases := []struct {
		name, goos string
		env        map[string]string
		want, err  string
	}{
		{"xdg", "linux", map[string]string{"XDG_CONFIG_HOME": "/cfg", "HOME": "/home/a"}, "/cfg/systemd/user/sbx-daemon.service", ""},
		{"home", "linux", map[string]string{"HOME": "/home/a"}, "/home/a/.config/systemd/user/sbx-daemon.service", ""},
		{"relative xdg ignored", "linux", map[string]string{"XDG_CONFIG_HOME": "cfg", "HOME": "/home/a"}, "/home/a/.config/systemd/user/sbx-daemon.service", ""},
		{"no home", "linux", map[string]string{}, "", "neither XDG_CONFIG_HOME nor HOME"},
		{"macos", "darwin", map[string]string{"HOME": "/Users/a", "XDG_CONFIG_HOME": "/cfg"}, "/Users/a/Library/LaunchAgents/dev.sbx.daemon.plist", ""},
		{"macos no home", "darwin", map[string]string{}, "", "HOME is not set"},
		{"windows", "windows", map[string]string{"APPDATA": "/appdata"}, "/appdata/sbx/sbx-daemon-task.xml", ""},
		{"windows no appdata", "windows", map[string]string{}, "", "APPDATA is not set"},
		{"bsd", "freebsd", map[string]string{"HOME": "/home/a"}, "", "no per-user service manager on freebsd"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			p, err := Host{GOOS: tc.goos, Getenv: envMap(tc.env)}.Path()
			if tc.err != "" {
				require.ErrorContains(t, err, tc.err)
				return
			}
			require.NoError(t, err)
			require.Equal(t, filepath.FromSlash(tc.want), p)
		})
	}
}

// unitValues returns the values of key in a unit file, in order.
func unitValues(unit, key string) []string {
	var vals []string
	for _, line := range strings.Split(unit, "\n") {
		if v, ok := strings.CutPrefix(line, key+"="); ok {
			vals = append(vals, v)
		}
	}
	return vals
}

// splitSystemd undoes systemdArg as systemd reads a setting: words split
// at blanks, double quotes with C escapes, "%%" and (exec, in arguments
// after the executable) "$$" undoubled.
func splitSystemd(t *testing.T, v string, exec bool) []string {
	t.Helper()
	var words []string
	for len(v) > 0 {
		v = strings.TrimLeft(v, " ")
		if v == "" {
			break
		}
		var w strings.Builder
		if v[0] == '"' {
			i := 1
			for ; i < len(v) && v[i] != '"'; i++ {
				if v[i] == '\\' {
					i++
					switch v[i] {
					case 'n':
						w.WriteByte('\n')
					case 't':
						w.WriteByte('\t')
					case 'r':
						w.WriteByte('\r')
					default:
						w.WriteByte(v[i])
					}
					continue
				}
				w.WriteByte(v[i])
			}
			require.Less(t, i, len(v), "unterminated quote in %q", v)
			v = v[i+1:]
		} else {
			end := strings.IndexByte(v, ' ')
			if end < 0 {
				end = len(v)
			}
			require.NotContains(t, v[:end], `"`)
			require.NotContains(t, v[:end], `\`)
			w.WriteString(v[:end])
			v = v[end:]
		}
		s := w.String()
		require.NotContains(t, strings.ReplaceAll(s, "%%", ""), "%", "a lone %% starts a specifier")
		s = strings.ReplaceAll(s, "%%", "%")
		if exec && len(words) > 0 { // the executable's path has no variables
			require.NotContains(t, strings.ReplaceAll(s, "$$", ""), "$", "a lone $ starts a variable")
			s = strings.ReplaceAll(s, "$$", "$")
		}
		words = append(words, s)
	}
	return words
}

func TestSystemdUnit(t *testing.T) {
	for _, exe := range []string{
		"/usr/local/bin/sbx",
		"/home/a b/My Tools/sbx",
		`/opt/50%$HOME;/sbx`,
	} {
		t.Run(exe, func(t *testing.T) {
			unit := string(SystemdUnit(exe, []Env{
				{"PATH", "/usr/bin:/home/a b/bin:/opt/100%"},
				{"KUBECONFIG", "/home/a/.kube/con fig"},
			}))
			exec := unitValues(unit, "ExecStart")
			require.Len(t, exec, 1)
			require.Equal(t, []string{exe, "daemon", "--managed"}, splitSystemd(t, exec[0], true))
			var env []string
			for _, v := range unitValues(unit, "Environment") {
				words := splitSystemd(t, v, false)
				require.Len(t, words, 1, v)
				env = append(env, words[0])
			}
			require.Equal(t, []string{"SBX_DAEMON_MANAGER=systemd", "PATH=/usr/bin:/home/a b/bin:/opt/100%", "KUBECONFIG=/home/a/.kube/con fig"}, env)
			require.Equal(t, []string{"on-failure"}, unitValues(unit, "Restart"))
			require.Equal(t, []string{"1"}, unitValues(unit, "RestartSec"))
			require.Equal(t, []string{"default.target"}, unitValues(unit, "WantedBy"))
			require.Equal(t, []string{"simple"}, unitValues(unit, "Type"))
		})
	}
	// A plain path stays unquoted, as a person would write it.
	require.Contains(t, string(SystemdUnit("/usr/bin/sbx", nil)), "\nExecStart=/usr/bin/sbx daemon --managed\n")
}

// plistDict is the part of a launchd plist the tests read: a dict as
// alternating keys and values.
type plistDict struct {
	Items []plistItem `xml:",any"`
}

type plistItem struct {
	XMLName xml.Name
	Text    string      `xml:",chardata"`
	Items   []plistItem `xml:",any"`
}

func parsePlist(t *testing.T, b []byte) map[string]plistItem {
	t.Helper()
	var doc struct {
		Dict plistDict `xml:"dict"`
	}
	dec := xml.NewDecoder(bytes.NewReader(b))
	dec.Strict = true
	require.NoError(t, dec.Decode(&doc))
	return pairs(t, doc.Dict.Items)
}

func pairs(t *testing.T, items []plistItem) map[string]plistItem {
	m := map[string]plistItem{}
	require.Zero(t, len(items)%2)
	for i := 0; i < len(items); i += 2 {
		require.Equal(t, "key", items[i].XMLName.Local)
		m[items[i].Text] = items[i+1]
	}
	return m
}

func TestLaunchdPlist(t *testing.T) {
	exe := "/Users/a b/bin/sbx & <co>"
	d := parsePlist(t, LaunchdPlist(exe, []Env{{"PATH", "/opt/homebrew/bin:/usr/bin"}, {"KUBECONFIG", "/Users/a/.kube/x&y"}}, "/Users/a/Library/Logs/sbx-daemon.log"))
	require.Equal(t, AgentLabel, d["Label"].Text)
	var args []string
	for _, a := range d["ProgramArguments"].Items {
		require.Equal(t, "string", a.XMLName.Local)
		args = append(args, a.Text)
	}
	require.Equal(t, []string{exe, "daemon", "--managed"}, args)
	env := pairs(t, d["EnvironmentVariables"].Items)
	require.Equal(t, "launchd", env["SBX_DAEMON_MANAGER"].Text)
	require.Equal(t, "/opt/homebrew/bin:/usr/bin", env["PATH"].Text)
	require.Equal(t, "/Users/a/.kube/x&y", env["KUBECONFIG"].Text)
	require.Equal(t, "true", d["RunAtLoad"].XMLName.Local)
	keep := pairs(t, d["KeepAlive"].Items)
	require.Equal(t, "false", keep["SuccessfulExit"].XMLName.Local, "restarted after a failure, not after a clean stop")
	require.Equal(t, "/Users/a/Library/Logs/sbx-daemon.log", d["StandardErrorPath"].Text)
}

// decodeUTF16 undoes utf16File.
func decodeUTF16(t *testing.T, b []byte) string {
	t.Helper()
	require.Equal(t, []byte{0xFF, 0xFE}, b[:2], "UTF-16LE byte-order mark")
	units := make([]uint16, (len(b)-2)/2)
	for i := range units {
		units[i] = binary.LittleEndian.Uint16(b[2+2*i:])
	}
	return string(utf16.Decode(units))
}

func TestTaskXML(t *testing.T) {
	exe := `C:\Program Files\sbx & co\sbx.exe`
	s := decodeUTF16(t, utf16File(TaskXML(exe, `CORP\ann`)))
	require.Contains(t, s, "\r\n")
	var task struct {
		Trigger  struct{ UserId string } `xml:"Triggers>LogonTrigger"`
		Settings struct {
			ExecutionTimeLimit         string
			MultipleInstancesPolicy    string
			DisallowStartIfOnBatteries bool
			RestartOnFailure           struct {
				Interval string
				Count    int
			}
		}
		Principal struct{ UserId, LogonType string }  `xml:"Principals>Principal"`
		Exec      struct{ Command, Arguments string } `xml:"Actions>Exec"`
	}
	dec := xml.NewDecoder(strings.NewReader(s))
	dec.CharsetReader = func(_ string, r io.Reader) (io.Reader, error) { return r, nil } // already decoded
	require.NoError(t, dec.Decode(&task))
	require.Equal(t, exe, task.Exec.Command)
	require.Equal(t, "daemon --managed", task.Exec.Arguments)
	require.Equal(t, `CORP\ann`, task.Trigger.UserId)
	require.Equal(t, `CORP\ann`, task.Principal.UserId)
	require.Equal(t, "InteractiveToken", task.Principal.LogonType)
	require.Equal(t, "PT0S", task.Settings.ExecutionTimeLimit, "no time limit: the default ends a task after 3 days")
	require.Equal(t, "PT1M", task.Settings.RestartOnFailure.Interval)
	require.Equal(t, 999, task.Settings.RestartOnFailure.Count)
	require.Equal(t, "IgnoreNew", task.Settings.MultipleInstancesPolicy)
	require.False(t, task.Settings.DisallowStartIfOnBatteries)

	require.NotContains(t, TaskXML(exe, ""), "UserId", "without a user: the creating user's task")
}

func TestEnvironment(t *testing.T) {
	abs := func(p string) (string, error) {
		if filepath.IsAbs(p) {
			return p, nil
		}
		return filepath.Join("/work", p), nil
	}
	sep := string(filepath.ListSeparator)
	env := envMap(map[string]string{
		"PATH":            "/usr/bin:/opt/bin",
		"KUBECONFIG":      sep + "rel/kc" + sep + "/abs/kc",
		"XDG_RUNTIME_DIR": "/run/user/1000",
		"AWS_PROFILE":     "dev",
		"HOME":            "/home/a",
	})
	got, err := Environment("linux", env, []string{"AWS_PROFILE", "PATH"}, abs)
	require.NoError(t, err)
	require.Equal(t, []Env{
		{"PATH", "/usr/bin:/opt/bin"},
		{"KUBECONFIG", "/work/rel/kc" + sep + "/abs/kc"},
		{"XDG_RUNTIME_DIR", "/run/user/1000"},
		{"AWS_PROFILE", "dev"},
	}, got)

	_, err = Environment("linux", env, []string{"GOOGLE_APPLICATION_CREDENTIALS"}, abs)
	require.ErrorContains(t, err, "GOOGLE_APPLICATION_CREDENTIALS is not set in this shell")
	_, err = Environment("darwin", env, []string{"A=B"}, abs)
	require.ErrorContains(t, err, "not a variable name")

	got, err = Environment("windows", env, nil, abs)
	require.NoError(t, err)
	require.Empty(t, got, "a task runs with the user's environment")
	_, err = Environment("windows", env, []string{"AWS_PROFILE"}, abs)
	require.ErrorContains(t, err, "setx")
}

// testHost is a host of goos whose HOME, XDG_CONFIG_HOME and APPDATA are
// under a temp dir, running commands with a fake runner.
func testHost(t *testing.T, goos string) (Host, *fakeRunner) {
	dir := t.TempDir()
	r := &fakeRunner{fail: map[string]error{}}
	return Host{
		GOOS:   goos,
		Getenv: envMap(map[string]string{"HOME": dir, "XDG_CONFIG_HOME": filepath.Join(dir, "cfg"), "APPDATA": filepath.Join(dir, "appdata")}),
		UID:    501,
		User:   `CORP\ann`,
		Runner: r,
	}, r
}

func TestInstallUninstall(t *testing.T) {
	const exe = "/opt/sbx/bin/sbx"
	cases := []struct {
		goos      string
		install   []string
		uninstall []string
	}{
		{"linux",
			[]string{"systemctl --user daemon-reload", "systemctl --user enable sbx-daemon.service", "systemctl --user restart sbx-daemon.service"},
			[]string{"systemctl --user disable --now sbx-daemon.service", "systemctl --user daemon-reload"}},
		{"darwin",
			[]string{"launchctl bootout gui/501/dev.sbx.daemon", "launchctl bootstrap gui/501 PATH"},
			[]string{"launchctl bootout gui/501/dev.sbx.daemon"}},
		{"windows",
			[]string{`schtasks /Create /TN sbx daemon /XML PATH /F`, "schtasks /End /TN sbx daemon", "schtasks /Run /TN sbx daemon"},
			[]string{"schtasks /End /TN sbx daemon", "schtasks /Delete /TN sbx daemon /F"}},
	}
	for _, tc := range cases {
		t.Run(tc.goos, func(t *testing.T) {
			h, r := testHost(t, tc.goos)
			ctx := context.Background()
			path, err := h.Path()
			require.NoError(t, err)
			with := func(cmds []string) []string {
				out := make([]string, len(cmds))
				for i, c := range cmds {
					out[i] = strings.ReplaceAll(c, "PATH", path)
				}
				return out
			}
			require.False(t, h.Installed())

			// Uninstall with nothing installed: nothing to do.
			res, err := h.Uninstall(ctx)
			require.NoError(t, err)
			require.False(t, res.Existed)
			require.Empty(t, r.commands())

			var env []Env
			if tc.goos != "windows" {
				env = []Env{{"PATH", "/usr/bin"}}
			}
			res, err = h.Install(ctx, exe, env)
			require.NoError(t, err)
			require.False(t, res.Existed)
			require.Equal(t, path, res.Path)
			require.Equal(t, []string{exe, "daemon", "--managed"}, res.Command)
			require.Equal(t, with(tc.install), r.commands())
			require.Equal(t, res.Ran, r.commands())
			require.True(t, h.Installed())
			first, err := os.ReadFile(path)
			require.NoError(t, err)
			require.Contains(t, string(first)+decodeMaybe(first), exe)

			// Twice: the same commands again, over the earlier file.
			r.ran = nil
			res, err = h.Install(ctx, exe, env)
			require.NoError(t, err)
			require.True(t, res.Existed)
			require.Equal(t, with(tc.install), r.commands())

			r.ran = nil
			res, err = h.Uninstall(ctx)
			require.NoError(t, err)
			require.True(t, res.Existed)
			require.Empty(t, res.Notes)
			require.Equal(t, with(tc.uninstall), r.commands())
			require.False(t, h.Installed())
			_, err = os.Stat(path)
			require.True(t, errors.Is(err, os.ErrNotExist))

			r.ran = nil
			res, err = h.Uninstall(ctx)
			require.NoError(t, err)
			require.False(t, res.Existed)
			require.Empty(t, r.commands())
		})
	}
}

// decodeMaybe is a file's text when it is UTF-16 (the task XML).
func decodeMaybe(b []byte) string {
	if len(b) < 2 || b[0] != 0xFF || b[1] != 0xFE {
		return ""
	}
	units := make([]uint16, (len(b)-2)/2)
	for i := range units {
		units[i] = binary.LittleEndian.Uint16(b[2+2*i:])
	}
	return string(utf16.Decode(units))
}

// TestInstallWithoutManager: where the manager cannot take the service
// (no systemctl, no user bus, no GUI session) the error says which and
// why, and the file system is as it was: no new definition, or the
// earlier one back.
func TestInstallWithoutManager(t *testing.T) {
	cases := []struct {
		goos, fail, want string
	}{
		{"linux", "systemctl --user daemon-reload", "systemd user instance not available"},
		{"darwin", "launchctl bootstrap", "launchd GUI session not available"},
		{"windows", "schtasks /Create", "Windows Task Scheduler not available"},
	}
	for _, tc := range cases {
		t.Run(tc.goos, func(t *testing.T) {
			h, r := testHost(t, tc.goos)
			r.fail[tc.fail] = errExit
			if tc.goos == "darwin" {
				r.fail["launchctl load"] = errExit
			}
			ctx := context.Background()
			_, err := h.Install(ctx, "/bin/sbx", nil)
			var ue *UnavailableError
			require.ErrorAs(t, err, &ue)
			require.ErrorContains(t, err, tc.want)
			require.False(t, h.Installed(), "no definition left behind")

			path, _ := h.Path()
			require.NoError(t, os.MkdirAll(filepath.Dir(path), 0o755))
			require.NoError(t, os.WriteFile(path, []byte("earlier"), 0o644))
			_, err = h.Install(ctx, "/bin/sbx", nil)
			require.ErrorAs(t, err, &ue)
			b, err := os.ReadFile(path)
			require.NoError(t, err)
			require.Equal(t, "earlier", string(b), "the earlier definition is back")
		})
	}

	// systemctl missing altogether.
	h, r := testHost(t, "linux")
	r.fail["systemctl"] = &CommandError{Args: []string{"systemctl", "--user", "daemon-reload"}, Err: errors.New(`exec: "systemctl": executable file not found in $PATH`)}
	_, err := h.Install(context.Background(), "/bin/sbx", nil)
	require.ErrorContains(t, err, `systemd user instance not available (systemctl --user daemon-reload: exec: "systemctl": executable file not found`)
}

// TestInstallFallsBackToLoad: where bootstrap refuses the agent, the
// legacy load -w is tried.
func TestInstallFallsBackToLoad(t *testing.T) {
	h, r := testHost(t, "darwin")
	r.fail["launchctl bootstrap"] = errExit
	_, err := h.Install(context.Background(), "/bin/sbx", nil)
	require.NoError(t, err)
	path, _ := h.Path()
	require.Equal(t, []string{"launchctl bootout gui/501/dev.sbx.daemon", "launchctl bootstrap gui/501 " + path, "launchctl load -w " + path}, r.commands())
}

// TestInstallStartFails: a unit systemd took but could not start stays
// installed (it is enabled; the next login or command starts it), and the
// error says so.
func TestInstallStartFails(t *testing.T) {
	h, r := testHost(t, "linux")
	r.fail["systemctl --user restart"] = &CommandError{Args: []string{"systemctl", "--user", "restart", UnitName}, Err: errExit, Output: "Job for sbx-daemon.service failed.\n"}
	res, err := h.Install(context.Background(), "/bin/sbx", nil)
	require.ErrorContains(t, err, "systemctl --user restart sbx-daemon.service: exit status 1: Job for sbx-daemon.service failed.")
	require.NotNil(t, res)
	require.True(t, h.Installed())
}

func TestInstallRefusesExe(t *testing.T) {
	h, _ := testHost(t, "linux")
	_, err := h.Install(context.Background(), "sbx", nil)
	require.ErrorContains(t, err, "absolute path")
	require.False(t, h.Installed())
	// systemd refuses such paths ("Executable name contains special
	// characters", systemd-analyze verify).
	_, err = h.Install(context.Background(), `/opt/it's/sbx`, nil)
	require.ErrorContains(t, err, "quotes, backslashes")
	require.False(t, h.Installed())
}

func TestUninstallNotes(t *testing.T) {
	h, r := testHost(t, "linux")
	ctx := context.Background()
	_, err := h.Install(ctx, "/bin/sbx", nil)
	require.NoError(t, err)
	r.fail["systemctl --user disable"] = errExit
	res, err := h.Uninstall(ctx)
	require.NoError(t, err)
	require.True(t, res.Existed)
	require.False(t, h.Installed(), "the file goes even when systemd cannot be told")
	require.Len(t, res.Notes, 1)
	require.Contains(t, res.Notes[0], "systemctl --user stop sbx-daemon.service")
}

func TestStartStop(t *testing.T) {
	cases := []struct {
		goos, start, stop string
	}{
		{"linux", "systemctl --user start sbx-daemon.service", "systemctl --user stop sbx-daemon.service"},
		{"darwin", "launchctl kickstart gui/501/dev.sbx.daemon", "launchctl kill SIGTERM gui/501/dev.sbx.daemon"},
		{"windows", "schtasks /Run /TN sbx daemon", "schtasks /End /TN sbx daemon"},
	}
	for _, tc := range cases {
		t.Run(tc.goos, func(t *testing.T) {
			h, r := testHost(t, tc.goos)
			ctx := context.Background()
			require.NoError(t, h.Start(ctx))
			require.NoError(t, h.Stop(ctx))
			require.Equal(t, []string{tc.start, tc.stop}, r.commands())
			require.Equal(t, tc.stop, strings.ReplaceAll(h.StopCommand(), `"`, ""))
		})
	}
	// An agent that is not loaded is bootstrapped, which starts it.
	h, r := testHost(t, "darwin")
	r.fail["launchctl kickstart"] = errExit
	require.NoError(t, h.Start(context.Background()))
	path, _ := h.Path()
	require.Equal(t, []string{"launchctl kickstart gui/501/dev.sbx.daemon", "launchctl bootstrap gui/501 " + path}, r.commands())
}

// TestSystemdUnitVerifies: systemd's own parser (systemd-analyze verify,
// where installed) takes the unit without a complaint, with an executable
// path that needs quoting and escaping, and finds that executable.
func TestSystemdUnitVerifies(t *testing.T) {
	analyze, err := exec.LookPath("systemd-analyze")
	if err != nil {
		t.Skip("systemd-analyze is not installed")
	}
	dir := t.TempDir()
	exe := filepath.Join(dir, "my tools", "sb%x$y;z")
	require.NoError(t, os.MkdirAll(filepath.Dir(exe), 0o755))
	require.NoError(t, os.WriteFile(exe, []byte("#!/bin/sh\n"), 0o755))
	unit := filepath.Join(dir, UnitName)
	require.NoError(t, os.WriteFile(unit, SystemdUnit(exe, []Env{{"PATH", "/usr/bin:/a b/%p$x"}, {"KUBECONFIG", `/k/"q"\y`}}), 0o644))
	out, _ := exec.Command(analyze, "verify", "--man=no", unit).CombinedOutput()
	for _, line := range strings.Split(string(out), "\n") {
		require.NotContains(t, line, UnitName, "systemd-analyze verify:\n%s", out)
	}
}

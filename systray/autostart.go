package systray

import (
	"encoding/xml"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"runtime"
	"strings"

	"github.com/sbx-dev/sbx/daemon/service"
)

// autostartName is the file name (without extension) of the login entry.
const (
	desktopFileName = "sbx-tray.desktop"
	launchAgentName = "dev.sbx.tray"
)

// AutostartFile is the login entry that starts `exe tray` on goos: its path
// (from getenv's XDG_CONFIG_HOME or HOME) and content. Windows keeps its
// entry in the registry instead, so it has no file.
func AutostartFile(goos string, getenv func(string) string, exe string) (path string, content []byte, err error) {
	home := getenv("HOME")
	switch goos {
	case "windows":
		return "", nil, errors.New("windows keeps the tray's login entry in the registry, not in a file")
	case "darwin":
		if home == "" {
			return "", nil, errors.New("HOME is not set; cannot find ~/Library/LaunchAgents")
		}
		return filepath.Join(home, "Library", "LaunchAgents", launchAgentName+".plist"), launchAgentPlist(exe, home), nil
	}
	dir := getenv("XDG_CONFIG_HOME")
	if dir == "" || !filepath.IsAbs(dir) { // the spec says to ignore a relative value
		if home == "" {
			return "", nil, errors.New("neither XDG_CONFIG_HOME nor HOME is set; cannot find the autostart directory")
		}
		dir = filepath.Join(home, ".config")
	}
	return filepath.Join(dir, "autostart", desktopFileName), desktopEntry(exe), nil
}

// InstallAutostart makes the tray start at login for the current user and
// returns where the entry went.
func InstallAutostart(exe string) (string, error) {
	if runtime.GOOS == "windows" {
		return installRunKey(exe)
	}
	path, content, err := AutostartFile(runtime.GOOS, os.Getenv, exe)
	if err != nil {
		return "", err
	}
	return path, service.WriteFileAtomic(path, content, "the tray's login entry")
}

// UninstallAutostart removes the login entry. removed is false when there
// was none.
func UninstallAutostart() (path string, removed bool, err error) {
	if runtime.GOOS == "windows" {
		return uninstallRunKey()
	}
	path, _, err = AutostartFile(runtime.GOOS, os.Getenv, "")
	if err != nil {
		return "", false, err
	}
	return removeFile(path)
}

// removeFile removes path and says whether it existed.
func removeFile(path string) (string, bool, error) {
	err := os.Remove(path)
	if errors.Is(err, fs.ErrNotExist) {
		return path, false, nil
	}
	if err != nil {
		return path, false, fmt.Errorf("remove the tray's login entry %s: %w", path, err)
	}
	return path, true, nil
}

// desktopEntry is the XDG autostart entry (Desktop Entry Specification 1.5)
// that runs `exe tray` at login.
func desktopEntry(exe string) []byte {
	var b strings.Builder
	line := func(k, v string) { b.WriteString(k + "=" + v + "\n") }
	b.WriteString("[Desktop Entry]\n")
	line("Type", "Application")
	line("Version", "1.5")
	line("Name", "sbx tray")
	line("Comment", "Shows whether your sbx sandboxes are connected")
	line("Exec", desktopEscape(desktopExecArg(exe))+" tray")
	line("TryExec", desktopEscape(exe))
	line("Terminal", "false")
	line("Categories", "Development;Network;")
	line("X-GNOME-Autostart-enabled", "true")
	return []byte(b.String())
}

// desktopExecArg quotes one argument of an Exec key: arguments with
// reserved characters are double-quoted with `"`, "`", `$` and `\`
// backslash-escaped inside; `%` is doubled everywhere since it starts field
// codes.
func desktopExecArg(arg string) string {
	arg = strings.ReplaceAll(arg, "%", "%%")
	if arg != "" && !strings.ContainsAny(arg, " \t\n\"'\\><~|&;$*?#()`") {
		return arg
	}
	var b strings.Builder
	b.WriteByte('"')
	for _, r := range arg {
		if strings.ContainsRune("\"`$\\", r) {
			b.WriteByte('\\')
		}
		b.WriteRune(r)
	}
	b.WriteByte('"')
	return b.String()
}

// desktopEscape applies the string-value escapes of desktop files, which
// come on top of Exec's own quoting: backslash, newline, tab, carriage
// return.
func desktopEscape(s string) string {
	return strings.NewReplacer(`\`, `\\`, "\n", `\n`, "\t", `\t`, "\r", `\r`).Replace(s)
}

// launchAgentPlist is the macOS LaunchAgent that runs `exe tray` when the
// user logs in to the GUI session (Aqua).
func launchAgentPlist(exe, home string) []byte {
	esc := func(s string) string {
		var b strings.Builder
		_ = xml.EscapeText(&b, []byte(s))
		return b.String()
	}
	logPath := filepath.Join(home, "Library", "Logs", "sbx-tray.log")
	return []byte(`<?xml version="1.0" encoding="UTF-8"?>
<!DOCTYPE plist PUBLIC "-//Apple//DTD PLIST 1.0//EN" "http://www.apple.com/DTDs/PropertyList-1.0.dtd">
<plist version="1.0">
<dict>
	<key>Label</key>
	<string>` + launchAgentName + `</string>
	<key>ProgramArguments</key>
	<array>
		<string>` + esc(exe) + `</string>
		<string>tray</string>
	</array>
	<key>RunAtLoad</key>
	<true/>
	<key>LimitLoadToSessionType</key>
	<string>Aqua</string>
	<key>ProcessType</key>
	<string>Interactive</string>
	<key>StandardErrorPath</key>
	<string>` + esc(logPath) + `</string>
</dict>
</plist>
`)
}

package service

import (
	"context"
	"encoding/xml"
	"fmt"
	"path/filepath"
	"strings"
)

// LaunchdPlist is the launchd agent that runs `exe daemon --managed` with
// env when the user logs in (RunAtLoad) and again whenever it exits with a
// failure (KeepAlive, SuccessfulExit false: a crash, a kill, an exit code
// other than 0; `sbx daemon stop` exits 0 and stays stopped). launchd
// waits ThrottleInterval (10 s by default) between starts. What the daemon
// writes to stderr before its log is open, such as a panic, goes to
// stderrPath.
func LaunchdPlist(exe string, env []Env, stderrPath string) []byte {
	esc := func(s string) string {
		var b strings.Builder
		_ = xml.EscapeText(&b, []byte(s))
		return b.String()
	}
	var b strings.Builder
	b.WriteString(`<?xml version="1.0" encoding="UTF-8"?>
<!DOCTYPE plist PUBLIC "-//Apple//DTD PLIST 1.0//EN" "http://www.apple.com/DTDs/PropertyList-1.0.dtd">
<!-- Written by sbx daemon (its install flag); its uninstall flag removes it. -->
<plist version="1.0">
<dict>
	<key>Label</key>
	<string>` + AgentLabel + `</string>
	<key>ProgramArguments</key>
	<array>
		<string>` + esc(exe) + `</string>
`)
	for _, a := range DaemonArgs {
		b.WriteString("\t\t<string>" + esc(a) + "</string>\n")
	}
	b.WriteString("\t</array>\n\t<key>EnvironmentVariables</key>\n\t<dict>\n")
	for _, e := range append([]Env{{ManagerEnv, string(Launchd)}}, env...) {
		b.WriteString("\t\t<key>" + esc(e.Name) + "</key>\n\t\t<string>" + esc(e.Value) + "</string>\n")
	}
	b.WriteString(`	</dict>
	<key>RunAtLoad</key>
	<true/>
	<key>KeepAlive</key>
	<dict>
		<key>SuccessfulExit</key>
		<false/>
	</dict>
	<key>StandardErrorPath</key>
	<string>` + esc(stderrPath) + `</string>
</dict>
</plist>
`)
	return []byte(b.String())
}

// launchdDomain is the user's GUI login session, where agents run.
func (h Host) launchdDomain() string { return fmt.Sprintf("gui/%d", h.UID) }

// launchdTarget is the agent in that domain.
func (h Host) launchdTarget() string { return h.launchdDomain() + "/" + AgentLabel }

// launchdLog is where the agent's stderr goes.
func (h Host) launchdLog() string {
	return filepath.Join(h.Getenv("HOME"), "Library", "Logs", "sbx-daemon.log")
}

// installLaunchd (re)loads the agent: an agent already loaded is booted
// out first so that the new plist takes effect, then bootstrapped, which
// starts it (RunAtLoad). Where bootstrap fails (older macOS, an agent
// still being booted out), the legacy `launchctl load -w` is tried.
func (h Host) installLaunchd(ctx context.Context, res *Result, rollback func()) error {
	_ = h.run(ctx, res, "launchctl", "bootout", h.launchdTarget()) // fails when not loaded
	err := h.run(ctx, res, "launchctl", "bootstrap", h.launchdDomain(), res.Path)
	if err == nil {
		return nil
	}
	err2 := h.run(ctx, res, "launchctl", "load", "-w", res.Path)
	if err2 == nil {
		return nil
	}
	rollback()
	if res.Existed {
		// Put the earlier agent back where it was.
		_ = h.run(ctx, res, "launchctl", "bootstrap", h.launchdDomain(), res.Path)
	}
	return &UnavailableError{Manager: Launchd, Err: fmt.Errorf("%w; %w", err, err2)}
}

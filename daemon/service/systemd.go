package service

import (
	"context"
	"strings"
)

// SystemdUnit is the systemd user unit that runs `exe daemon --managed`
// with env, restarts it a second after it fails (a crash, a kill, an exit
// code other than 0; `sbx daemon stop` and a shutdown over the API exit 0
// and stay stopped), and starts it with the user's manager at login.
func SystemdUnit(exe string, env []Env) []byte {
	var b strings.Builder
	b.WriteString(`# Written by ` + "`sbx daemon --install`" + `; ` + "`sbx daemon --uninstall`" + ` removes it.
# Running it again rewrites this file: put your own settings in a drop-in
# (` + "`systemctl --user edit " + UnitName + "`" + `), which it keeps.
[Unit]
Description=sbx daemon: keeps your sbx sandboxes connected
Documentation=https://github.com/sbx-dev/sbx

[Service]
Type=simple
ExecStart=`)
	// The executable's path is taken literally (no "$" variables; checked
	// with systemd-analyze verify), its arguments are not.
	b.WriteString(systemdArg(exe, false))
	for _, a := range DaemonArgs {
		b.WriteString(" " + systemdArg(a, true))
	}
	b.WriteString("\n")
	for _, e := range append([]Env{{ManagerEnv, string(Systemd)}}, env...) {
		b.WriteString("Environment=" + systemdArg(e.Name+"="+e.Value, false) + "\n")
	}
	b.WriteString(`Restart=on-failure
RestartSec=1
# As long as ` + "`sbx daemon stop`" + ` waits for the daemon.
TimeoutStopSec=15

[Install]
WantedBy=default.target
`)
	return []byte(b.String())
}

// systemdArg quotes one word of a unit setting (systemd.syntax(7)):
// double-quoted when it holds anything but plain characters, with C-style
// escapes for backslash, quote and control characters; "%" starts a
// specifier everywhere and is doubled, "$" starts a variable in the
// arguments of Exec lines (exec) and is doubled there.
func systemdArg(s string, exec bool) string {
	var b strings.Builder
	quote := s == "" || strings.ContainsAny(s, " \t\n\r\"'\\;")
	for _, r := range s {
		switch r {
		case '%':
			b.WriteString("%%")
		case '$':
			if exec {
				b.WriteString("$$")
			} else {
				b.WriteRune(r)
			}
		case '\\':
			b.WriteString(`\\`)
		case '"':
			b.WriteString(`\"`)
		case '\n':
			b.WriteString(`\n`)
		case '\t':
			b.WriteString(`\t`)
		case '\r':
			b.WriteString(`\r`)
		default:
			b.WriteRune(r)
		}
	}
	if quote {
		return `"` + b.String() + `"`
	}
	return b.String()
}

func (h Host) installSystemd(ctx context.Context, res *Result, rollback func()) error {
	if err := h.run(ctx, res, "systemctl", "--user", "daemon-reload"); err != nil {
		rollback()
		return &UnavailableError{Manager: Systemd, Err: err}
	}
	if err := h.run(ctx, res, "systemctl", "--user", "enable", UnitName); err != nil {
		rollback()
		_ = h.run(ctx, res, "systemctl", "--user", "daemon-reload")
		return err
	}
	// restart, not `enable --now`: a second install must run the new
	// definition (and binary), and restart starts a stopped unit too.
	return h.run(ctx, res, "systemctl", "--user", "restart", UnitName)
}

package api

import (
	"os"
	"path/filepath"
)

// Paths are the files the daemon and its clients agree on. The zero value is
// not useful; use DefaultPaths.
type Paths struct {
	// RuntimeDir holds the socket and the lock file. It is created 0700.
	RuntimeDir string
	// StateDir holds state.json, daemon.log and the outbound proxy's
	// credential (mode 0600).
	StateDir string
}

// DefaultPaths resolves the XDG locations from the environment, as read by
// getenv (os.Getenv when nil):
//
//	socket: $XDG_RUNTIME_DIR/sbx/sbx.sock, or ~/.sbx/sbx.sock without it
//	state:  $XDG_STATE_HOME/sbx/state.json, or ~/.local/state/sbx/state.json
//	log:    next to the state file, daemon.log
//
// On Windows the fallbacks (without the XDG variables) are
// %LOCALAPPDATA%\sbx\sbx.sock and %LOCALAPPDATA%\sbx\state\state.json:
// the per-user profile directory is what keeps other users off the socket
// there (see socket_windows.go).
func DefaultPaths(getenv func(string) string) Paths {
	if getenv == nil {
		getenv = os.Getenv
	}
	home := getenv("HOME")
	if home == "" {
		if h, err := os.UserHomeDir(); err == nil {
			home = h
		}
	}
	p := defaultDirs(getenv, home)
	if rt := getenv("XDG_RUNTIME_DIR"); rt != "" {
		p.RuntimeDir = filepath.Join(rt, "sbx")
	}
	if st := getenv("XDG_STATE_HOME"); st != "" {
		p.StateDir = filepath.Join(st, "sbx")
	}
	return p
}

// Socket is the path of the local API's unix socket.
func (p Paths) Socket() string { return filepath.Join(p.RuntimeDir, "sbx.sock") }

// Lock is the path of the file a running daemon holds a lock on (flock on
// Unix, LockFileEx on Windows).
func (p Paths) Lock() string { return filepath.Join(p.RuntimeDir, "sbx.lock") }

// State is the path of the daemon's state file.
func (p Paths) State() string { return filepath.Join(p.StateDir, "state.json") }

// Log is the path the daemon logs to when it runs in the background.
func (p Paths) Log() string { return filepath.Join(p.StateDir, "daemon.log") }

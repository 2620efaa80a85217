//go:build !windows

package api

import "path/filepath"

// defaultDirs are the directories used when the XDG variables are unset:
// ~/.sbx for the socket and ~/.local/state/sbx for state and log.
func defaultDirs(_ func(string) string, home string) Paths {
	return Paths{
		RuntimeDir: filepath.Join(home, ".sbx"),
		StateDir:   filepath.Join(home, ".local", "state", "sbx"),
	}
}

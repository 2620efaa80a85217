//go:build windows

package api

import "path/filepath"

// defaultDirs are the directories used when the XDG variables are unset:
// %LOCALAPPDATA%\sbx for the socket and lock, %LOCALAPPDATA%\sbx\state for
// state and log. LOCALAPPDATA is inside the user's profile, which only that
// user (and SYSTEM and Administrators) may open; it is local, not roaming,
// because a socket and a pid mean nothing on another machine.
func defaultDirs(getenv func(string) string, home string) Paths {
	base := getenv("LOCALAPPDATA")
	if base == "" {
		base = filepath.Join(home, "AppData", "Local")
	}
	dir := filepath.Join(base, "sbx")
	return Paths{RuntimeDir: dir, StateDir: filepath.Join(dir, "state")}
}

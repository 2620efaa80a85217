//go:build windows

package daemon

import (
	"errors"
	"fmt"
	"os"

	"golang.org/x/sys/windows"
)

// What protects the socket on Windows: file modes mean nothing there (Go
// maps them to the read-only attribute), and AF_UNIX sockets (Windows 10
// 1803 and later) have no SO_PEERCRED. Instead, connecting to an AF_UNIX
// socket needs write access to the socket file, and the file inherits the
// ACL of its directory. The default runtime directory is
// %LOCALAPPDATA%\sbx (DefaultPaths), inside the user's profile, whose ACL
// grants access only to that user, SYSTEM and Administrators, the
// equivalent of the 0700 directory on Unix. A runtime directory set by hand
// (XDG_RUNTIME_DIR) keeps whatever ACL its parent gives it.

// lockRegion is where the daemon's byte-range lock sits: 1 GiB into the
// lock file, far past the pid written at offset 0. Windows byte-range locks
// are mandatory, so a lock over the pid would stop a second daemon (and the
// CLI) from reading who holds it; locking past the end of a file is allowed
// (SQLite places its lock bytes the same way).
const lockRegion = 1 << 30

// lockFile takes an exclusive LockFileEx lock on the daemon's lock file
// without waiting. Windows drops it when the daemon's process ends, so a
// crash never leaves a stale lock behind.
func lockFile(f *os.File) error {
	ol := windows.Overlapped{Offset: lockRegion}
	return windows.LockFileEx(windows.Handle(f.Fd()),
		windows.LOCKFILE_EXCLUSIVE_LOCK|windows.LOCKFILE_FAIL_IMMEDIATELY, 0, 1, 0, &ol)
}

// lockHeld reports whether lockFile failed because another process holds
// the lock.
func lockHeld(err error) bool { return errors.Is(err, windows.ERROR_LOCK_VIOLATION) }

// unlockFile releases the lock before the file is closed: Windows releases
// a closed handle's locks only "when resources allow", and a daemon started
// right after `sbx daemon stop` must not find it still held.
func unlockFile(f *os.File) {
	ol := windows.Overlapped{Offset: lockRegion}
	_ = windows.UnlockFileEx(windows.Handle(f.Fd()), 0, 1, 0, &ol)
}

// restrictSocket does nothing: the socket file inherits its directory's ACL
// (see the top of this file), and a chmod would only toggle the read-only
// attribute.
func restrictSocket(string) error { return nil }

// ensurePrivateDir creates dir. Its privacy comes from where it is (the
// user's profile, see the top of this file), not from a mode.
func ensurePrivateDir(dir string) error {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("create %s: %w", dir, err)
	}
	return nil
}

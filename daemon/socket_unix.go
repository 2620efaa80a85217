//go:build unix

package daemon

import (
	"errors"
	"fmt"
	"os"
	"syscall"
)

// lockFile takes an exclusive flock on the daemon's lock file without
// waiting. The kernel drops it when the daemon dies, however it dies, so a
// crash never leaves a stale lock behind.
func lockFile(f *os.File) error {
	return syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB)
}

// lockHeld reports whether lockFile failed because another process holds
// the lock (as opposed to, say, a file system without locks).
func lockHeld(err error) bool { return errors.Is(err, syscall.EWOULDBLOCK) }

// unlockFile does nothing: closing the file releases the flock at once.
func unlockFile(*os.File) {}

// restrictSocket makes the socket 0600. The directory is already 0700; the
// chmod closes the window in which the umask decided the socket's mode.
func restrictSocket(path string) error {
	if err := os.Chmod(path, 0o600); err != nil {
		return fmt.Errorf("chmod %s: %w", path, err)
	}
	return nil
}

// ensurePrivateDir creates dir with mode 0700, or tightens an existing one
// that belongs to us. A directory owned by someone else is refused: another
// user could otherwise read our socket.
func ensurePrivateDir(dir string) error {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("create %s: %w", dir, err)
	}
	fi, err := os.Stat(dir)
	if err != nil {
		return fmt.Errorf("stat %s: %w", dir, err)
	}
	if st, ok := fi.Sys().(*syscall.Stat_t); ok && int(st.Uid) != os.Getuid() {
		return fmt.Errorf("%s belongs to uid %d, not to you (uid %d); remove it or set XDG_RUNTIME_DIR", dir, st.Uid, os.Getuid())
	}
	if fi.Mode().Perm() != 0o700 {
		if err := os.Chmod(dir, 0o700); err != nil {
			return fmt.Errorf("chmod 0700 %s: %w", dir, err)
		}
	}
	return nil
}

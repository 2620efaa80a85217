//go:build unix

package hostsfile

import (
	"errors"
	"io/fs"
	"os"
	"syscall"
)

// errLocked means another open file description holds the lock.
var errLocked = errors.New("locked")

// lockFile opens (creating, 0600) and exclusively flocks path without
// waiting. The lock lives as long as the returned file is open, and the
// kernel drops it when the process dies however it dies, which is what
// makes crash recovery safe: a lock that can be taken has no live owner.
func lockFile(path string) (*os.File, error) {
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, err
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		_ = f.Close()
		if errors.Is(err, syscall.EWOULDBLOCK) {
			return nil, errLocked
		}
		return nil, err
	}
	return f, nil
}

// lockHeld reports whether some process holds the flock on path. A missing
// file is not held. The probe takes and drops the lock when it is free.
func lockHeld(path string) (bool, error) {
	f, err := os.Open(path)
	if errors.Is(err, fs.ErrNotExist) {
		return false, nil
	}
	if err != nil {
		return false, err
	}
	defer f.Close()
	err = syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB)
	if errors.Is(err, syscall.EWOULDBLOCK) {
		return true, nil
	}
	if err != nil {
		return false, err
	}
	_ = syscall.Flock(int(f.Fd()), syscall.LOCK_UN)
	return false, nil
}

// pidAlive reports whether a process with this pid exists (it may belong to
// another user: EPERM still means it exists).
func pidAlive(pid int) bool {
	if pid <= 0 {
		return false
	}
	err := syscall.Kill(pid, 0)
	return err == nil || errors.Is(err, syscall.EPERM)
}

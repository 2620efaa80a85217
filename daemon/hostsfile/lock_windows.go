//go:build windows

package hostsfile

import (
	"errors"
	"io/fs"
	"os"

	"golang.org/x/sys/windows"
)

// errLocked means another handle holds the lock.
var errLocked = errors.New("locked")

// lockRegion is the byte the lock covers, 1 GiB into the lock file: Windows
// byte-range locks are mandatory, and the pid written at offset 0 must stay
// readable for error messages (readLockPID). Locking past the end of a
// file is allowed.
const lockRegion = 1 << 30

func lockRange(f *os.File) error {
	ol := windows.Overlapped{Offset: lockRegion}
	return windows.LockFileEx(windows.Handle(f.Fd()),
		windows.LOCKFILE_EXCLUSIVE_LOCK|windows.LOCKFILE_FAIL_IMMEDIATELY, 0, 1, 0, &ol)
}

func unlockRange(f *os.File) {
	ol := windows.Overlapped{Offset: lockRegion}
	_ = windows.UnlockFileEx(windows.Handle(f.Fd()), 0, 1, 0, &ol)
}

// lockFile opens (creating) and exclusively locks path without waiting
// (LockFileEx). The lock lives as long as the returned file is open, and
// Windows drops it when the process ends however it ends, which is what
// makes crash recovery safe: a lock that can be taken has no live owner.
func lockFile(path string) (*os.File, error) {
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, err
	}
	if err := lockRange(f); err != nil {
		_ = f.Close()
		if errors.Is(err, windows.ERROR_LOCK_VIOLATION) {
			return nil, errLocked
		}
		return nil, err
	}
	return f, nil
}

// lockHeld reports whether some process holds the lock on path. A missing
// file is not held. The probe takes and drops the lock when it is free.
func lockHeld(path string) (bool, error) {
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if errors.Is(err, fs.ErrNotExist) {
		return false, nil
	}
	if err != nil {
		return false, err
	}
	defer f.Close()
	err = lockRange(f)
	if errors.Is(err, windows.ERROR_LOCK_VIOLATION) {
		return true, nil
	}
	if err != nil {
		return false, err
	}
	unlockRange(f)
	return false, nil
}

// pidAlive reports whether a process with this pid is running. Access
// denied (another user's process) still means it exists.
func pidAlive(pid int) bool {
	if pid <= 0 {
		return false
	}
	h, err := windows.OpenProcess(windows.PROCESS_QUERY_LIMITED_INFORMATION, false, uint32(pid))
	if errors.Is(err, windows.ERROR_ACCESS_DENIED) {
		return true
	}
	if err != nil {
		return false
	}
	defer windows.CloseHandle(h)
	var code uint32
	if err := windows.GetExitCodeProcess(h, &code); err != nil {
		return true
	}
	return code == stillActive
}

// stillActive is the exit code GetExitCodeProcess reports for a running
// process (STILL_ACTIVE in the Windows headers).
const stillActive = 259

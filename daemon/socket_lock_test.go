package daemon

import (
	"os"
	"path/filepath"
	"strconv"
	"testing"

	"github.com/stretchr/testify/require"
)

// TestLockFileExclusive checks the per-OS lock (flock on Unix, LockFileEx on
// Windows) the way listenSocket uses it: a second handle is refused with
// lockHeld, can still read the holder's pid (Windows locks are mandatory,
// hence the lock sits past the pid), and gets the lock once it is released.
func TestLockFileExclusive(t *testing.T) {
	path := filepath.Join(t.TempDir(), "sbx.lock")
	open := func() *os.File {
		f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o600)
		require.NoError(t, err)
		t.Cleanup(func() { _ = f.Close() })
		return f
	}
	first, second := open(), open()

	require.NoError(t, lockFile(first))
	_, err := first.WriteAt([]byte(strconv.Itoa(os.Getpid())+"\n"), 0)
	require.NoError(t, err)

	err = lockFile(second)
	require.Error(t, err, "a second handle must not get the lock")
	require.True(t, lockHeld(err), "lockHeld(%v)", err)
	require.Equal(t, os.Getpid(), readPID(second), "the holder's pid stays readable")

	unlockFile(first)
	require.NoError(t, first.Close())
	require.NoError(t, lockFile(second), "the lock is free once its holder lets go")
	unlockFile(second)
}

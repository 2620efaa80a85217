//go:build unix

package hostsfile

// Ownership and inode checks: Unix only (Windows has no uid/gid or inode
// in os.FileInfo.Sys; see owner_windows.go).

import (
	"os"
	"path/filepath"
	"syscall"
	"testing"

	"github.com/stretchr/testify/require"
)

func TestAtomicReplaceNewInodeAndOwnership(t *testing.T) {
	p := newHosts(t, "127.0.0.1 localhost\n", 0o644)
	if os.Geteuid() == 0 {
		require.NoError(t, os.Chown(p, 4242, 4343))
	}
	before, err := os.Stat(p)
	require.NoError(t, err)
	// Holding the original open keeps its inode number from being reused.
	f, err := os.Open(p)
	require.NoError(t, err)
	defer f.Close()
	held, err := f.Stat()
	require.NoError(t, err)
	o, err := Acquire(Options{Path: p, LockPath: lockIn(t)})
	require.NoError(t, err)
	defer o.Close()
	require.NoError(t, o.Set(entriesAB()))
	after, err := os.Stat(p)
	require.NoError(t, err)
	bs, as := before.Sys().(*syscall.Stat_t), after.Sys().(*syscall.Stat_t)
	require.False(t, os.SameFile(held, after), "written through a temp file and rename")
	require.Equal(t, bs.Uid, as.Uid)
	require.Equal(t, bs.Gid, as.Gid)
	require.Equal(t, before.Mode(), after.Mode())
	left, err := filepath.Glob(filepath.Join(filepath.Dir(p), ".hosts.sbx-*"))
	require.NoError(t, err)
	require.Empty(t, left, "no temp files left behind")
}

// A bind-mounted /etc/hosts (containers) cannot be renamed over: the write
// falls back to rewriting the same inode.
func TestInPlaceFallbackOnEBUSY(t *testing.T) {
	orig := "127.0.0.1 localhost\n172.17.0.2 container"
	p := newHosts(t, orig, 0o644)
	o, err := Acquire(Options{Path: p, LockPath: lockIn(t)})
	require.NoError(t, err)
	renames := 0
	o.rename = func(oldpath, newpath string) error {
		renames++
		return &os.LinkError{Op: "rename", Old: oldpath, New: newpath, Err: syscall.EBUSY}
	}
	before, err := os.Stat(p)
	require.NoError(t, err)
	require.NoError(t, o.Set(entriesAB()))
	require.Contains(t, read(t, p), "driver.hotrod.svc.cluster.local")
	after, err := os.Stat(p)
	require.NoError(t, err)
	require.Equal(t, before.Sys().(*syscall.Stat_t).Ino, after.Sys().(*syscall.Stat_t).Ino)
	require.NoError(t, o.Set(entriesAB()[:1]), "shrinking in place truncates")
	require.NotContains(t, read(t, p), "redis")
	require.NoError(t, o.Close())
	require.Equal(t, orig, read(t, p))
	require.Positive(t, renames)
	left, _ := filepath.Glob(filepath.Join(filepath.Dir(p), ".hosts.sbx-*"))
	require.Empty(t, left)
}

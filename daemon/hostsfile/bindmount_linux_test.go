//go:build linux

package hostsfile

import (
	"os"
	"path/filepath"
	"syscall"
	"testing"

	"github.com/stretchr/testify/require"
)

func init() {
	bindMount = func(src, dst string) (func(), error) {
		if err := syscall.Mount(src, dst, "", syscall.MS_BIND, ""); err != nil {
			return nil, err
		}
		return func() { _ = syscall.Unmount(dst, 0) }, nil
	}
}

// TestRealBindMount reproduces a container's /etc/hosts: a file bind
// mounted over another, where rename(2) onto it fails with EBUSY. Needs
// root (or CAP_SYS_ADMIN); skipped otherwise.
func TestRealBindMount(t *testing.T) {
	dir := t.TempDir()
	src := filepath.Join(dir, "hosts.src")
	dst := filepath.Join(dir, "hosts")
	orig := "127.0.0.1 localhost\n172.17.0.5 this-container\n"
	require.NoError(t, os.WriteFile(src, []byte(orig), 0o644))
	require.NoError(t, os.WriteFile(dst, []byte("placeholder\n"), 0o644))
	if err := syscall.Mount(src, dst, "", syscall.MS_BIND, ""); err != nil {
		t.Skipf("cannot bind mount here (%v)", err)
	}
	t.Cleanup(func() { _ = syscall.Unmount(dst, 0) })

	o, err := Acquire(Options{Path: dst, LockPath: filepath.Join(dir, "state", "hosts.lock")})
	require.NoError(t, err)
	require.NoError(t, o.Set(entriesAB()))
	got, err := os.ReadFile(src)
	require.NoError(t, err)
	require.Contains(t, string(got), "driver.hotrod.svc.cluster.local", "written through the mount to the real file")
	require.Equal(t, orig, outside(t, string(got)))
	require.NoError(t, o.Close())
	got, err = os.ReadFile(src)
	require.NoError(t, err)
	require.Equal(t, orig, string(got))
	left, _ := filepath.Glob(filepath.Join(dir, ".hosts.sbx-*"))
	require.Empty(t, left, "the temp file of the failed rename is removed")
}

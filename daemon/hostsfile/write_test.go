package hostsfile

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// deadPID returns the pid of a process that has exited.
func deadPID(t *testing.T) int {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), "GORACE=atexit_sleep_ms=0")
	require.NoError(t, cmd.Run())
	require.False(t, pidAlive(cmd.Process.Pid))
	return cmd.Process.Pid
}

// tempLitter creates, next to the hosts file p, the files a sweep must
// remove and those it must keep.
func tempLitter(t *testing.T, p string) (gone, kept []string) {
	t.Helper()
	dir := filepath.Dir(p)
	old := time.Now().Add(-tempMaxAge - time.Minute)
	dead, live := deadPID(t), os.Getpid()
	file := func(name string, mtime time.Time) string {
		f := filepath.Join(dir, name)
		require.NoError(t, os.WriteFile(f, []byte("10.0.0.1 x\n"), 0o600))
		require.NoError(t, os.Chtimes(f, mtime, mtime))
		return name
	}
	gone = []string{
		file(fmt.Sprintf(".hosts.sbx-%d-123456", dead), time.Now()), // writer gone
		file(fmt.Sprintf(".hosts.sbx-%d-42", live), old),            // pid reused, or stuck for minutes
		file(".hosts.sbx-3752248440", old),                          // an older sbx's name, abandoned
	}
	kept = []string{
		file(fmt.Sprintf(".hosts.sbx-%d-123456", live), time.Now()), // a live writer's
		file(".hosts.sbx-3752248440-", old),                         // not sbx's name
		file(".hosts.sbx-3752248441", time.Now()),                   // an older sbx's, maybe live
		file(".hosts.sbx-abc", old),
		file(fmt.Sprintf(".hosts.sbx-%d-1-2", dead), old),
		file(fmt.Sprintf(".hosts.sbx-%d-x", dead), old),
		file(fmt.Sprintf(".other.sbx-%d-1", dead), old), // another file's
		file(fmt.Sprintf("hosts.sbx-%d-1", dead), old),
		file(fmt.Sprintf(".hosts.sbx-%d-1.bak", dead), old),
	}
	d := fmt.Sprintf(".hosts.sbx-%d-77", dead)
	require.NoError(t, os.Mkdir(filepath.Join(dir, d), 0o700))
	kept = append(kept, d)
	return gone, kept
}

func requireSwept(t *testing.T, dir string, gone, kept []string) {
	t.Helper()
	for _, n := range gone {
		require.NoFileExists(t, filepath.Join(dir, n))
	}
	for _, n := range kept {
		_, err := os.Lstat(filepath.Join(dir, n))
		require.NoError(t, err, "%s kept", n)
	}
}

func TestSweepTemps(t *testing.T) {
	p := newHosts(t, "127.0.0.1 localhost\n", 0o644)
	gone, kept := tempLitter(t, p)
	removed, err := sweepTemps(p, time.Now())
	require.NoError(t, err)
	require.ElementsMatch(t, gone, removed)
	requireSwept(t, filepath.Dir(p), gone, kept)

	_, err = sweepTemps(filepath.Join(t.TempDir(), "missing", "hosts"), time.Now())
	require.Error(t, err)
}

func TestParseTempSuffix(t *testing.T) {
	for s, want := range map[string]int{"12-34": 12, "1-0": 1, "34": 0, "0": 0} {
		pid, ok := parseTempSuffix(s)
		require.True(t, ok, s)
		require.Equal(t, want, pid, s)
	}
	for _, s := range []string{"", "-", "12-", "-34", "0-34", "a-1", "1-a", "1-2-3", "12 34", "+1-2",
		strings.Repeat("9", 21), strconv.Itoa(1<<30) + "0000000000000-1"} {
		_, ok := parseTempSuffix(s)
		require.False(t, ok, s)
	}
}

func TestAcquireSweepsTemps(t *testing.T) {
	p := newHosts(t, "127.0.0.1 localhost\n", 0o644)
	gone, kept := tempLitter(t, p)
	o, err := Acquire(Options{Path: p, LockPath: lockIn(t)})
	require.NoError(t, err)
	defer o.Close()
	requireSwept(t, filepath.Dir(p), gone, kept)
}

func TestFailedRenameSweepsTemps(t *testing.T) {
	p := newHosts(t, "127.0.0.1 localhost\n", 0o644)
	o, err := Acquire(Options{Path: p, LockPath: lockIn(t)})
	require.NoError(t, err)
	defer o.Close()
	o.rename = func(oldpath, newpath string) error {
		return &os.LinkError{Op: "rename", Old: oldpath, New: newpath, Err: syscall.EBUSY}
	}
	gone, kept := tempLitter(t, p)
	require.NoError(t, o.Set(entriesAB()))
	requireSwept(t, filepath.Dir(p), gone, kept)
	left, err := filepath.Glob(filepath.Join(filepath.Dir(p), fmt.Sprintf(".hosts.sbx-%d-*", os.Getpid())))
	require.NoError(t, err)
	require.Len(t, left, 1, "only the live pid's planted file: the write's own temp file is gone")
}

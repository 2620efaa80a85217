package main

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

// TestDaemonLogRotatesWhileRunning: a daemon that runs for weeks (under a
// service manager) keeps at most two files of about the limit, and no
// record is split or lost across a rotation.
func TestDaemonLogRotatesWhileRunning(t *testing.T) {
	path := filepath.Join(t.TempDir(), "daemon.log")
	l, err := openRotatingLog(path, 1000, -1)
	require.NoError(t, err)
	defer l.Close()
	var all []string
	for i := range 60 {
		rec := fmt.Sprintf("level=INFO msg=record n=%03d padding=%s\n", i, strings.Repeat("x", 20))
		all = append(all, rec)
		n, err := l.Write([]byte(rec))
		require.NoError(t, err)
		require.Equal(t, len(rec), n)
	}
	cur, err := os.ReadFile(path)
	require.NoError(t, err)
	old, err := os.ReadFile(path + ".1")
	require.NoError(t, err)
	require.LessOrEqual(t, len(cur), 1000)
	require.LessOrEqual(t, len(old), 1000)
	// The two files hold the newest records, whole and in order.
	got := string(old) + string(cur)
	require.True(t, strings.HasSuffix(strings.Join(all, ""), got), "the files are not the tail of what was written:\n%s", got)
	require.True(t, strings.HasPrefix(string(cur), "level=INFO"), "the current file starts mid-record")
	fi, err := os.Stat(path)
	require.NoError(t, err)
	require.Equal(t, os.FileMode(0o600), fi.Mode().Perm())
}

// TestDaemonLogCarriesStderrAlong: a background daemon's stderr (where a
// Go panic is written) points at the current log file after a rotation.
func TestDaemonLogCarriesStderrAlong(t *testing.T) {
	if os.PathSeparator == '\\' {
		t.Skip("Windows keeps the daemon's standard handles on the file they were opened with")
	}
	dir := t.TempDir()
	path := filepath.Join(dir, "daemon.log")
	// A stand-in for fd 2: a descriptor of our own pointing at the log.
	stand, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o600)
	require.NoError(t, err)
	defer stand.Close()
	l, err := openRotatingLog(path, 100, int(stand.Fd()))
	require.NoError(t, err)
	defer l.Close()
	for range 5 {
		_, err := l.Write([]byte(strings.Repeat("y", 40) + "\n"))
		require.NoError(t, err)
	}
	_, err = stand.WriteString("panic: the daemon crashed\n")
	require.NoError(t, err)
	cur, err := os.ReadFile(path)
	require.NoError(t, err)
	require.Contains(t, string(cur), "panic: the daemon crashed", "stderr still writes to the rotated-away file")
}

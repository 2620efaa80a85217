package main

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// openUnder counts this process's open files under dir (Linux only: it
// reads /proc/self/fd, which also keeps other tests' files out of it).
func openUnder(t *testing.T, dir string) int {
	t.Helper()
	fds, err := os.ReadDir("/proc/self/fd")
	require.NoError(t, err)
	n := 0
	for _, fd := range fds {
		target, err := os.Readlink(filepath.Join("/proc/self/fd", fd.Name()))
		if err == nil && strings.HasPrefix(target, dir+string(filepath.Separator)) {
			n++
		}
	}
	return n
}

// TestFollowFileAcrossRotations follows a log that is rotated (renamed
// away, a new file created in its place) several times: every line is
// printed once and in order, including those written to the old file
// just before its rotation, and only the current file stays open.
func TestFollowFileAcrossRotations(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "daemon.log")
	w, err := os.Create(path)
	require.NoError(t, err)
	defer func() { _ = w.Close() }()
	var want strings.Builder
	next := 0
	write := func(lines int) {
		for range lines {
			line := fmt.Sprintf("line %d\n", next)
			next++
			_, err := w.WriteString(line)
			require.NoError(t, err)
			want.WriteString(line)
		}
	}
	write(5)

	f, err := os.Open(path)
	require.NoError(t, err)
	var out lockedBuffer
	require.NoError(t, printLog(f, 0, &out))
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- followFile(ctx, f, path, &out, time.Millisecond) }()

	onLinux := runtime.GOOS == "linux"
	for round := range 6 {
		write(20) // to the file about to be rotated, right before it is
		require.NoError(t, w.Close())
		require.NoError(t, os.Rename(path, fmt.Sprintf("%s.%d", path, round)))
		w, err = os.Create(path)
		require.NoError(t, err)
		write(3)
		require.Eventually(t, func() bool { return strings.HasSuffix(out.String(), fmt.Sprintf("line %d\n", next-1)) },
			10*time.Second, time.Millisecond, "round %d: the new file's lines never showed", round)
		if onLinux {
			require.Equal(t, 2, openUnder(t, dir), "round %d: only the writer's and the follower's current file are open", round)
		}
	}
	cancel()
	require.NoError(t, <-done)
	require.Equal(t, want.String(), out.String())
	if onLinux {
		require.Equal(t, 1, openUnder(t, dir), "followFile closes its file when it returns")
	}
}

func TestCLILogsNegativeTail(t *testing.T) {
	cliEnv(t)
	code, out, errOut := runCLI(t, "logs", "--tail", "-5")
	require.Equal(t, 2, code, errOut)
	require.Empty(t, out)
	require.Contains(t, errOut, "sbx: --tail -5 is negative\n  hint: pass the number of last lines to print, or 0 (the default) for all")
}

//go:build unix

package main

// sbx run's signal forwarding: Unix only (on Windows a Ctrl-C reaches the
// child through the console; see daemon/runenv/tty_windows.go).

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// A signal sent to sbx reaches the child: the test process is sbx here.
func TestCLIRunForwardsSignals(t *testing.T) {
	connectAlice(t)
	dir := t.TempDir()
	ready := filepath.Join(dir, "ready")
	script := `trap 'echo got-USR1; exit 9' USR1; : > "$1"; while :; do sleep 0.05; done`
	type result struct {
		code int
		out  string
	}
	done := make(chan result, 1)
	go func() {
		var out, errb bytes.Buffer
		code := run(context.Background(), []string{"run", "alice", "--", "sh", "-c", script, "sh", ready}, strings.NewReader(""), &out, &errb)
		done <- result{code, out.String()}
	}()
	// The child creates the file after sbx subscribed to signals (it
	// subscribes before starting the child), so SIGUSR1 cannot kill the
	// test binary.
	require.Eventually(t, func() bool { _, err := os.Stat(ready); return err == nil }, 30*time.Second, 5*time.Millisecond)
	require.NoError(t, syscall.Kill(os.Getpid(), syscall.SIGUSR1))
	select {
	case r := <-done:
		require.Equal(t, 9, r.code)
		require.Equal(t, "got-USR1\n", r.out)
	case <-time.After(time.Minute):
		t.Fatal("sbx run did not return after the child handled the signal")
	}
}

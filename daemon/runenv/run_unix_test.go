//go:build unix

package runenv

// Signal forwarding, tested with sh and trap: Unix only (Windows has no
// signals to forward; see tty_windows.go).

import (
	"context"
	"os"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// trapScript reports each signal it receives and exits on TERM.
const trapScript = `trap 'echo got-INT' INT; trap 'echo got-USR1' USR1; trap 'echo got-TERM; exit 7' TERM
echo ready
while :; do sleep 0.05; done`

func startTrap(t *testing.T, o RunOptions) (*syncBuffer, chan os.Signal, <-chan int) {
	t.Helper()
	var out syncBuffer
	sigs := make(chan os.Signal, 4)
	o.Args = []string{"sh", "-c", trapScript}
	o.Env = []string{"PATH=" + os.Getenv("PATH")}
	o.Stdout, o.Stderr, o.Signals = &out, &out, sigs
	done := make(chan int, 1)
	go func() {
		code, err := Run(context.Background(), o)
		if err != nil {
			code = -1
		}
		done <- code
	}()
	require.Eventually(t, func() bool { return strings.Contains(out.String(), "ready") }, 30*time.Second, 5*time.Millisecond)
	return &out, sigs, done
}

func TestRunForwardsSignals(t *testing.T) {
	out, sigs, done := startTrap(t, RunOptions{})
	sigs <- syscall.SIGUSR1
	require.Eventually(t, func() bool { return strings.Contains(out.String(), "got-USR1") }, 30*time.Second, 5*time.Millisecond)
	sigs <- syscall.SIGINT
	require.Eventually(t, func() bool { return strings.Contains(out.String(), "got-INT") }, 30*time.Second, 5*time.Millisecond)
	sigs <- syscall.SIGTERM
	require.Equal(t, 7, <-done)
	require.Equal(t, "ready\ngot-USR1\ngot-INT\ngot-TERM\n", out.String())
}

func TestRunSkipsTerminalSignalsInForeground(t *testing.T) {
	out, sigs, done := startTrap(t, RunOptions{SkipTerminalSignals: true})
	sigs <- syscall.SIGINT // the terminal already delivered it to the child
	sigs <- syscall.SIGTERM
	require.Equal(t, 7, <-done)
	require.Equal(t, "ready\ngot-TERM\n", out.String())
}

func TestRunContextCancelTerminates(t *testing.T) {
	var out syncBuffer
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan int, 1)
	go func() {
		code, _ := Run(ctx, RunOptions{Args: []string{"sh", "-c", trapScript}, Env: []string{"PATH=" + os.Getenv("PATH")}, Stdout: &out})
		done <- code
	}()
	require.Eventually(t, func() bool { return strings.Contains(out.String(), "ready") }, 30*time.Second, 5*time.Millisecond)
	cancel()
	require.Equal(t, 7, <-done)
}

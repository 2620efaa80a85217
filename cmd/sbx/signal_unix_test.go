//go:build unix

package main

import (
	"context"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// TestSignalExitCode: a command ended by a signal exits 128+N as in a
// shell: 143 after SIGTERM, 130 after Ctrl-C or when the signal is not
// known.
func TestSignalExitCode(t *testing.T) {
	ctx, stop := signalContext(syscall.SIGTERM)
	require.NoError(t, syscall.Kill(syscall.Getpid(), syscall.SIGTERM))
	select {
	case <-ctx.Done():
	case <-time.After(30 * time.Second):
		t.Fatal("SIGTERM did not end the context")
	}
	stop()
	require.Equal(t, 143, signalExitCode(ctx))

	ctx, cancel := context.WithCancelCause(context.Background())
	cancel(signalCause{syscall.SIGINT})
	require.Equal(t, 130, signalExitCode(ctx))
	ctx, cancelPlain := context.WithCancel(context.Background())
	cancelPlain()
	require.Equal(t, exitInterrupted, signalExitCode(ctx))

	// stop without a signal ends the watcher and cancels the context.
	ctx, stop = signalContext(syscall.SIGTERM)
	stop()
	require.Error(t, ctx.Err())
	require.Equal(t, exitInterrupted, signalExitCode(ctx))
}

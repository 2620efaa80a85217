//go:build windows

package tunnel

import (
	"net"
	"os"
	"syscall"
	"testing"

	"github.com/stretchr/testify/require"
)

func TestReasonOfWinsock(t *testing.T) {
	dialErr := func(errno syscall.Errno) error {
		return &net.OpError{Op: "dial", Net: "tcp", Err: os.NewSyscallError("connectex", errno)}
	}
	tests := []struct {
		err  error
		want Reason
	}{
		{dialErr(wsaeConnRefused), ReasonRefused},
		{dialErr(wsaeHostUnreach), ReasonUnreachable},
		{dialErr(wsaeNetUnreach), ReasonUnreachable},
		{dialErr(syscall.WSAEACCES), ReasonDenied},
		{dialErr(wsaeTimedOut), ReasonTimeout},
		{dialErr(syscall.WSAECONNRESET), ReasonOther},
	}
	for _, tt := range tests {
		require.Equal(t, tt.want, ReasonOf(tt.err), "%v", tt.err)
	}
}

// TestReasonOfRealRefusal dials a loopback port nobody listens on, so the
// mapping is checked against what Windows really returns.
func TestReasonOfRealRefusal(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	addr := ln.Addr().String()
	require.NoError(t, ln.Close())
	_, err = net.Dial("tcp", addr)
	require.Error(t, err)
	require.Equal(t, ReasonRefused, ReasonOf(err), "%v", err)
}

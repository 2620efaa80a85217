//go:build windows

package tunnel

import (
	"errors"
	"syscall"
)

// Winsock's error numbers. A failed dial on Windows carries these
// (WSAECONNREFUSED, not the syscall.ECONNREFUSED that ReasonOf matches,
// which Go invents for Windows and no dial returns), so without this a
// local service that is not listening would be reported as ReasonOther.
// The values are Winsock's (winerror.h); syscall does not name them all.
const (
	wsaeNetUnreach  syscall.Errno = 10051
	wsaeTimedOut    syscall.Errno = 10060
	wsaeConnRefused syscall.Errno = 10061
	wsaeHostUnreach syscall.Errno = 10065
)

// platformReason classifies Winsock's dial errors.
func platformReason(err error) Reason {
	switch {
	case errors.Is(err, wsaeConnRefused):
		return ReasonRefused
	case errors.Is(err, wsaeHostUnreach), errors.Is(err, wsaeNetUnreach):
		return ReasonUnreachable
	case errors.Is(err, syscall.WSAEACCES):
		return ReasonDenied
	case errors.Is(err, wsaeTimedOut):
		return ReasonTimeout
	}
	return ReasonOther
}

package tunnel

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"syscall"
)

// Sentinel errors. Match them with errors.Is; a *HandshakeError matches the
// sentinel of its code.
var (
	// ErrBadToken: the relay refused the Hello's token.
	ErrBadToken = errors.New("tunnel: bad token")
	// ErrVersionMismatch: the two ends speak different protocol versions.
	ErrVersionMismatch = errors.New("tunnel: protocol version mismatch")
	// ErrSandboxMismatch: the relay serves another sandbox than the Hello names.
	ErrSandboxMismatch = errors.New("tunnel: sandbox mismatch")
	// ErrReplaced: the peer replaced this session by a newer one.
	ErrReplaced = errors.New("tunnel: session replaced")
	// ErrHandshakeInternal: the relay failed internally during the handshake.
	ErrHandshakeInternal = errors.New("tunnel: relay internal error")
	// ErrProtocol: the peer sent bytes that do not follow PROTOCOL.md.
	ErrProtocol = errors.New("tunnel: protocol violation")
	// ErrSessionClosed: the session was closed by this end.
	ErrSessionClosed = errors.New("tunnel: session closed")
	// ErrPeerDead: nothing was received from the peer within
	// Config.DeadPeerTimeout.
	ErrPeerDead = errors.New("tunnel: peer stopped responding")
	// ErrNoSession: a Pool has no live session to open a stream on.
	ErrNoSession = errors.New("tunnel: no live session in the pool")
	// ErrNotAccepted: Write on an accepted stream before Accept was called.
	ErrNotAccepted = errors.New("tunnel: stream not accepted yet (call Accept before writing)")
)

// HandshakeCode says why a handshake was refused. It travels on the wire.
type HandshakeCode uint8

// Handshake refusal codes (wire values, see PROTOCOL.md).
const (
	CodeBadToken        HandshakeCode = 1
	CodeVersionMismatch HandshakeCode = 2
	CodeSandboxMismatch HandshakeCode = 3
	CodeReplaced        HandshakeCode = 4
	CodeInternal        HandshakeCode = 5
)

func (c HandshakeCode) String() string {
	switch c {
	case CodeBadToken:
		return "bad token"
	case CodeVersionMismatch:
		return "version mismatch"
	case CodeSandboxMismatch:
		return "sandbox mismatch"
	case CodeReplaced:
		return "replaced"
	case CodeInternal:
		return "internal error"
	}
	return fmt.Sprintf("code %d", uint8(c))
}

// HandshakeError is a refused handshake: the code says why, the message is
// the refusing side's explanation (never containing the token).
type HandshakeError struct {
	Code    HandshakeCode
	Message string
}

func (e *HandshakeError) Error() string {
	if e.Message == "" {
		return "tunnel handshake refused: " + e.Code.String()
	}
	return "tunnel handshake refused (" + e.Code.String() + "): " + e.Message
}

// Is makes errors.Is(err, ErrBadToken) and friends work.
func (e *HandshakeError) Is(target error) bool {
	switch e.Code {
	case CodeBadToken:
		return target == ErrBadToken
	case CodeVersionMismatch:
		return target == ErrVersionMismatch
	case CodeSandboxMismatch:
		return target == ErrSandboxMismatch
	case CodeReplaced:
		return target == ErrReplaced
	case CodeInternal:
		return target == ErrHandshakeInternal
	}
	return false
}

// Reason classifies why the receiver of a data stream could not serve it.
// It travels in the reply frame; 0 on the wire means success.
type Reason uint8

// Reasons (wire values, see PROTOCOL.md).
const (
	ReasonRefused     Reason = 1 // connection refused: nothing listens there
	ReasonTimeout     Reason = 2 // the dial timed out
	ReasonDNS         Reason = 3 // the name did not resolve
	ReasonDenied      Reason = 4 // denied by policy (not allowed, permission)
	ReasonUnreachable Reason = 5 // no route to host or network
	ReasonOther       Reason = 6 // anything else
	ReasonProtocol    Reason = 7 // the stream header was malformed or unsupported
)

func (r Reason) String() string {
	switch r {
	case ReasonRefused:
		return "refused"
	case ReasonTimeout:
		return "timeout"
	case ReasonDNS:
		return "dns"
	case ReasonDenied:
		return "denied"
	case ReasonUnreachable:
		return "unreachable"
	case ReasonOther:
		return "other"
	case ReasonProtocol:
		return "protocol"
	}
	return fmt.Sprintf("reason(%d)", uint8(r))
}

// DialError is the peer's answer that it could not serve a stream (usually a
// failed dial). Open returns it wrapped; use errors.As.
type DialError struct {
	Reason  Reason
	Message string
}

func (e *DialError) Error() string {
	if e.Message == "" {
		return "peer could not connect (" + e.Reason.String() + ")"
	}
	return "peer could not connect (" + e.Reason.String() + "): " + e.Message
}

// ReasonOf classifies a dial error for a reply frame.
func ReasonOf(err error) Reason {
	var de *DialError
	var dnsErr *net.DNSError
	var netErr net.Error
	switch {
	case err == nil:
		return ReasonOther
	case errors.As(err, &de):
		return de.Reason
	case errors.As(err, &dnsErr):
		if dnsErr.IsTimeout {
			return ReasonTimeout
		}
		return ReasonDNS
	case errors.Is(err, syscall.ECONNREFUSED):
		return ReasonRefused
	case errors.Is(err, syscall.EHOSTUNREACH), errors.Is(err, syscall.ENETUNREACH):
		return ReasonUnreachable
	case errors.Is(err, syscall.EACCES), errors.Is(err, syscall.EPERM), errors.Is(err, os.ErrPermission):
		return ReasonDenied
	case errors.Is(err, context.DeadlineExceeded), errors.Is(err, os.ErrDeadlineExceeded):
		return ReasonTimeout
	case errors.As(err, &netErr) && netErr.Timeout():
		return ReasonTimeout
	}
	return platformReason(err)
}

// PeerClosedError is a session's end when the peer closed it and said why
// (Session.CloseWithReason or CloseWithCode on the other side). With
// CodeReplaced, errors.Is(err, ErrReplaced) holds, and so on for the other
// codes; Code is 0 when the peer gave none.
type PeerClosedError struct {
	Code   HandshakeCode
	Reason string
}

func (e *PeerClosedError) Error() string {
	msg := "tunnel: peer closed the session"
	if e.Code != 0 {
		msg += " (" + e.Code.String() + ")"
	}
	if e.Reason != "" {
		msg += ": " + e.Reason
	}
	return msg
}

// Is matches the sentinel of the peer's code, like HandshakeError.
func (e *PeerClosedError) Is(target error) bool {
	return (&HandshakeError{Code: e.Code}).Is(target)
}

package tunnel

import (
	"errors"
	"fmt"
	"io"
	"net"
	"strconv"
)

// headerVersion is the version byte that starts every data-stream header and
// reply frame. It changes when their layout changes.
const headerVersion = 1

const (
	// headerPrefix is version (1) + payload length (2).
	headerPrefix = 3
	// maxNameLen bounds workload names and host names (DNS limit).
	maxNameLen = 253
	// maxTargetLen bounds an outbound host:port.
	maxTargetLen = maxNameLen + 8
	// maxSourceLen bounds the source address.
	maxSourceLen = 256
	// maxReplyMessage bounds the message of a reply frame.
	maxReplyMessage = 1024
	// replyPrefix is version (1) + code (1) + message length (2).
	replyPrefix = 4
)

// Kind says which way a data stream goes.
type Kind uint8

const (
	// KindInbound: a request from the cluster for a local workload; the
	// receiver (the daemon) dials Workload's Port locally.
	KindInbound Kind = 1
	// KindOutbound: a local process's connection to a cluster address; the
	// receiver (the relay) dials Target.
	KindOutbound Kind = 2
	// KindBench: a benchmark connection (`sbx bench cluster`); the
	// receiver (a relay announcing the "bench" capability) serves the
	// bench protocol on it (ServeBench, bench.go). It carries no
	// workload, port or target.
	KindBench Kind = 3
)

func (k Kind) String() string {
	switch k {
	case KindInbound:
		return "inbound"
	case KindOutbound:
		return "outbound"
	case KindBench:
		return "bench"
	}
	return fmt.Sprintf("kind(%d)", uint8(k))
}

// Header is the first thing on every data stream: what the receiver should
// connect the stream to.
type Header struct {
	Kind Kind
	// Workload names the local workload (inbound).
	Workload string
	// Port is the workload's port (inbound).
	Port uint16
	// Target is host:port to dial (outbound).
	Target string
	// Source is the address the connection came from, for logs (optional).
	Source string
}

func (h Header) String() string {
	var s string
	switch h.Kind {
	case KindInbound:
		s = "inbound " + net.JoinHostPort(h.Workload, strconv.Itoa(int(h.Port)))
	case KindOutbound:
		s = "outbound " + h.Target
	default:
		s = h.Kind.String()
	}
	if h.Source != "" {
		s += " from " + h.Source
	}
	return s
}

// Validate reports what is wrong with h, if anything.
func (h Header) Validate() error {
	if err := h.validate(); err != nil {
		return fmt.Errorf("tunnel stream header %q: %w", h.String(), err)
	}
	return nil
}

func (h Header) validate() error {
	for _, f := range []struct {
		name, v string
		max     int
	}{{"workload", h.Workload, maxNameLen}, {"target", h.Target, maxTargetLen}, {"source", h.Source, maxSourceLen}} {
		if len(f.v) > f.max {
			return fmt.Errorf("%s is %d bytes, limit %d", f.name, len(f.v), f.max)
		}
		if err := checkText(f.name, f.v); err != nil {
			return err
		}
	}
	switch h.Kind {
	case KindInbound:
		if h.Workload == "" {
			return errors.New("inbound stream needs a workload")
		}
		if h.Port == 0 {
			return errors.New("inbound stream needs a port")
		}
		if h.Target != "" {
			return errors.New("inbound stream must not carry a target")
		}
	case KindOutbound:
		host, port, err := net.SplitHostPort(h.Target)
		if err != nil {
			return fmt.Errorf("outbound target must be host:port: %w", err)
		}
		if host == "" {
			return errors.New("outbound target has an empty host")
		}
		if p, err := strconv.ParseUint(port, 10, 16); err != nil || p == 0 {
			return fmt.Errorf("outbound target port %q is not in 1-65535", port)
		}
		if h.Workload != "" || h.Port != 0 {
			return errors.New("outbound stream must not carry a workload or port")
		}
	case KindBench:
		if h.Workload != "" || h.Port != 0 || h.Target != "" {
			return errors.New("bench stream must not carry a workload, port or target")
		}
	default:
		return fmt.Errorf("unknown kind %d", uint8(h.Kind))
	}
	return nil
}

// appendHeader encodes h (validated by the caller) as a header frame.
func appendHeader(b []byte, h Header) []byte {
	e := encoder{b: b}
	e.u8(headerVersion)
	e.u16(0) // length, patched below
	start := len(e.b)
	e.u8(uint8(h.Kind))
	e.u16(h.Port)
	e.str(h.Workload)
	e.str(h.Target)
	e.str(h.Source)
	n := len(e.b) - start
	e.b[start-2] = byte(n >> 8)
	e.b[start-1] = byte(n)
	return e.b
}

// headerError is a malformed or unsupported header. The receiver answers it
// with a ReasonProtocol reply and closes only that stream.
type headerError struct{ msg string }

func (e *headerError) Error() string { return "bad stream header: " + e.msg }

// readHeader reads and validates one header frame of at most max bytes.
// Errors are *headerError for bad bytes or the reader's error (EOF, timeout).
func readHeader(r io.Reader, max int) (Header, error) {
	var pre [headerPrefix]byte
	if err := readFull(r, pre[:]); err != nil {
		return Header{}, err
	}
	if pre[0] != headerVersion {
		return Header{}, &headerError{fmt.Sprintf("unsupported header version %d (this end speaks %d)", pre[0], headerVersion)}
	}
	n := int(pre[1])<<8 | int(pre[2])
	if n+headerPrefix > max {
		return Header{}, &headerError{fmt.Sprintf("header is %d bytes, limit %d", n+headerPrefix, max)}
	}
	buf := make([]byte, n)
	if err := readFull(r, buf); err != nil {
		return Header{}, err
	}
	return decodeHeaderPayload(buf)
}

// decodeHeaderPayload decodes the bytes after the prefix. Trailing bytes are
// rejected: a later header version adds fields by bumping the version.
func decodeHeaderPayload(b []byte) (Header, error) {
	d := decoder{b: b}
	var h Header
	h.Kind = Kind(d.u8())
	h.Port = d.u16()
	h.Workload = d.str("workload", maxNameLen)
	h.Target = d.str("target", maxTargetLen)
	h.Source = d.str("source", maxSourceLen)
	if d.err != nil {
		return Header{}, &headerError{d.err.Error()}
	}
	if len(d.b) != 0 {
		return Header{}, &headerError{fmt.Sprintf("%d unexpected trailing bytes", len(d.b))}
	}
	if err := h.validate(); err != nil {
		return Header{}, &headerError{err.Error()}
	}
	return h, nil
}

// reply is the receiver's answer to a header: ok (code 0) or a DialError.
type reply struct {
	code    uint8
	message string
}

func (r reply) err() error {
	if r.code == 0 {
		return nil
	}
	return &DialError{Reason: Reason(r.code), Message: r.message}
}

func appendReply(b []byte, r reply) []byte {
	msg := truncateText(r.message, maxReplyMessage)
	e := encoder{b: b}
	e.u8(headerVersion)
	e.u8(r.code)
	e.str(msg)
	return e.b
}

// readReply reads one reply frame.
func readReply(r io.Reader) (reply, error) {
	var pre [replyPrefix]byte
	if err := readFull(r, pre[:]); err != nil {
		return reply{}, err
	}
	if pre[0] != headerVersion {
		return reply{}, fmt.Errorf("%w: reply frame version %d, this end speaks %d", ErrProtocol, pre[0], headerVersion)
	}
	n := int(pre[2])<<8 | int(pre[3])
	if n > maxReplyMessage {
		return reply{}, fmt.Errorf("%w: reply message is %d bytes, limit %d", ErrProtocol, n, maxReplyMessage)
	}
	buf := make([]byte, n)
	if err := readFull(r, buf); err != nil {
		return reply{}, err
	}
	return decodeReply(pre, buf)
}

func decodeReply(pre [replyPrefix]byte, msg []byte) (reply, error) {
	if pre[1] == 0 && len(msg) != 0 {
		return reply{}, fmt.Errorf("%w: ok reply carries a message", ErrProtocol)
	}
	if err := checkText("reply message", string(msg)); err != nil {
		return reply{}, fmt.Errorf("%w: %v", ErrProtocol, err)
	}
	return reply{code: pre[1], message: string(msg)}, nil
}

// truncateText cuts s to at most max bytes on a rune boundary and replaces
// control characters, so any local error text can go into a frame.
func truncateText(s string, max int) string {
	out := make([]rune, 0, len(s))
	size := 0
	for _, r := range s {
		if r < 0x20 || r == 0x7f || (r >= 0x80 && r < 0xa0) || r == 0xfffd {
			r = ' '
		}
		n := len(string(r))
		if size+n > max {
			break
		}
		size += n
		out = append(out, r)
	}
	return string(out)
}

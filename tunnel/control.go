package tunnel

import (
	"errors"
	"fmt"
	"io"
	"log/slog"
)

// Control-stream frame types (wire values, see PROTOCOL.md).
const (
	frameHello   uint8 = 1
	frameWelcome uint8 = 2
	frameRefuse  uint8 = 3
	framePing    uint8 = 4
	framePong    uint8 = 5
	frameGoodbye uint8 = 6
	// frameDraining: the sender is shutting down and serves only what it
	// has; the peer should move new work to a session of another
	// instance. Payload: reason string.
	frameDraining uint8 = 7
	// frameBenchHello: a Hello (same payload) whose sender asks for the
	// bare connection for the bench protocol instead of a multiplexed
	// session (ClientBench, ServerOrBench).
	frameBenchHello uint8 = 8
)

// controlPrefix is type (1) + payload length (2).
const controlPrefix = 3

// Field limits of the handshake messages.
const (
	maxTokenLen      = 1024
	maxIDLen         = 256
	maxVersionLen    = 128
	maxCapabilities  = 32
	maxCapabilityLen = 64
	maxMessageLen    = 1024
)

// Hello is the first message of a session, sent by the daemon.
type Hello struct {
	// Version is the sender's ProtocolVersion (0 means "this package's").
	Version uint32
	// Token authenticates the sender. It is never printed: String, GoString
	// and LogValue redact it.
	Token string
	// ClientID identifies the daemon instance (stable across reconnects).
	ClientID string
	// Sandbox names the sandbox the daemon wants to serve.
	Sandbox string
	// User is user@host of the developer, for the relay's logs.
	User string
	// Bench is set on a Hello that asks for a bare bench connection
	// (ClientBench): it travels as the frame type (Hello (bench), 8), not
	// in the payload, whose layout is the Hello's.
	Bench bool
}

func (h Hello) String() string {
	bench := ""
	if h.Bench {
		bench = " Bench:true"
	}
	return fmt.Sprintf("Hello{Version:%d Token:%s ClientID:%q Sandbox:%q User:%q%s}",
		h.Version, redacted(h.Token), h.ClientID, h.Sandbox, h.User, bench)
}

// GoString keeps %#v from printing the token.
func (h Hello) GoString() string { return "tunnel." + h.String() }

// LogValue keeps slog from printing the token.
func (h Hello) LogValue() slog.Value {
	return slog.GroupValue(
		slog.Any("version", h.Version),
		slog.String("token", redacted(h.Token)),
		slog.String("clientID", h.ClientID),
		slog.String("sandbox", h.Sandbox),
		slog.String("user", h.User),
		slog.Bool("bench", h.Bench),
	)
}

func redacted(tok string) string {
	if tok == "" {
		return "<none>"
	}
	return "<redacted>"
}

// Welcome is the relay's acceptance of a Hello.
type Welcome struct {
	// RelayVersion is the relay's build version, for status output.
	RelayVersion string
	// Capabilities lists optional features the relay supports.
	Capabilities []string
}

func appendControl(b []byte, typ uint8, payload []byte) []byte {
	e := encoder{b: b}
	e.u8(typ)
	e.u16(uint16(len(payload)))
	e.b = append(e.b, payload...)
	return e.b
}

// readControl reads one control frame. The payload limit is fixed so a peer
// cannot make us allocate more than maxControlPayload.
func readControl(r io.Reader) (uint8, []byte, error) {
	var pre [controlPrefix]byte
	if err := readFull(r, pre[:]); err != nil {
		return 0, nil, err
	}
	n := int(pre[1])<<8 | int(pre[2])
	if n > maxControlPayload {
		return 0, nil, fmt.Errorf("%w: control frame type %d is %d bytes, limit %d", ErrProtocol, pre[0], n, maxControlPayload)
	}
	buf := make([]byte, n)
	if err := readFull(r, buf); err != nil {
		return 0, nil, err
	}
	return pre[0], buf, nil
}

func (h Hello) validate() error {
	switch {
	case len(h.Token) > maxTokenLen:
		return fmt.Errorf("token is %d bytes, limit %d", len(h.Token), maxTokenLen)
	case len(h.ClientID) > maxIDLen:
		return fmt.Errorf("client id is %d bytes, limit %d", len(h.ClientID), maxIDLen)
	case len(h.Sandbox) > maxNameLen:
		return fmt.Errorf("sandbox is %d bytes, limit %d", len(h.Sandbox), maxNameLen)
	case len(h.User) > maxIDLen:
		return fmt.Errorf("user is %d bytes, limit %d", len(h.User), maxIDLen)
	}
	for _, f := range [][2]string{{"client id", h.ClientID}, {"sandbox", h.Sandbox}, {"user", h.User}} {
		if err := checkText(f[0], f[1]); err != nil {
			return err
		}
	}
	return nil
}

func encodeHello(h Hello) []byte {
	e := encoder{}
	e.u32(h.Version)
	e.str(h.Token)
	e.str(h.ClientID)
	e.str(h.Sandbox)
	e.str(h.User)
	return e.b
}

// errHelloVersion carries the version of a Hello that this end does not
// speak; the rest of such a Hello is not decoded.
type errHelloVersion struct{ version uint32 }

func (e errHelloVersion) Error() string {
	return fmt.Sprintf("peer speaks protocol version %d, this end speaks %d", e.version, ProtocolVersion)
}

// decodeHello decodes a Hello payload. The version comes first so a Hello of
// another version is recognised as such even if its layout differs.
func decodeHello(b []byte) (Hello, error) {
	d := decoder{b: b}
	var h Hello
	h.Version = d.u32()
	if d.err != nil {
		return Hello{}, fmt.Errorf("%w: hello: %v", ErrProtocol, d.err)
	}
	if h.Version != ProtocolVersion {
		return Hello{Version: h.Version}, errHelloVersion{h.Version}
	}
	h.Token = d.secret("token", maxTokenLen)
	h.ClientID = d.str("client id", maxIDLen)
	h.Sandbox = d.str("sandbox", maxNameLen)
	h.User = d.str("user", maxIDLen)
	if d.err == nil && len(d.b) != 0 {
		d.err = fmt.Errorf("%d unexpected trailing bytes", len(d.b))
	}
	if d.err != nil {
		return Hello{}, fmt.Errorf("%w: hello: %v", ErrProtocol, d.err)
	}
	return h, nil
}

func (w Welcome) validate() error {
	if len(w.RelayVersion) > maxVersionLen {
		return fmt.Errorf("relay version is %d bytes, limit %d", len(w.RelayVersion), maxVersionLen)
	}
	if err := checkText("relay version", w.RelayVersion); err != nil {
		return err
	}
	if len(w.Capabilities) > maxCapabilities {
		return fmt.Errorf("%d capabilities, limit %d", len(w.Capabilities), maxCapabilities)
	}
	for _, c := range w.Capabilities {
		if len(c) > maxCapabilityLen {
			return fmt.Errorf("capability %q is %d bytes, limit %d", c, len(c), maxCapabilityLen)
		}
		if err := checkText("capability", c); err != nil {
			return err
		}
	}
	return nil
}

func encodeWelcome(w Welcome) []byte {
	e := encoder{}
	e.str(w.RelayVersion)
	e.u16(uint16(len(w.Capabilities)))
	for _, c := range w.Capabilities {
		e.str(c)
	}
	return e.b
}

func decodeWelcome(b []byte) (Welcome, error) {
	d := decoder{b: b}
	var w Welcome
	w.RelayVersion = d.str("relay version", maxVersionLen)
	n := int(d.u16())
	if d.err == nil && n > maxCapabilities {
		d.err = fmt.Errorf("%d capabilities, limit %d", n, maxCapabilities)
	}
	for i := 0; i < n && d.err == nil; i++ {
		c := d.str("capability", maxCapabilityLen)
		if d.err == nil {
			w.Capabilities = append(w.Capabilities, c)
		}
	}
	if d.err == nil && len(d.b) != 0 {
		d.err = fmt.Errorf("%d unexpected trailing bytes", len(d.b))
	}
	if d.err != nil {
		return Welcome{}, fmt.Errorf("%w: welcome: %v", ErrProtocol, d.err)
	}
	return w, nil
}

func encodeRefuse(e *HandshakeError) []byte {
	enc := encoder{}
	enc.u8(uint8(e.Code))
	enc.str(truncateText(e.Message, maxMessageLen))
	return enc.b
}

func decodeRefuse(b []byte) (*HandshakeError, error) {
	d := decoder{b: b}
	code := HandshakeCode(d.u8())
	msg := d.str("message", maxMessageLen)
	if d.err == nil && code == 0 {
		d.err = errors.New("code 0")
	}
	if d.err == nil && len(d.b) != 0 {
		d.err = fmt.Errorf("%d unexpected trailing bytes", len(d.b))
	}
	if d.err != nil {
		return nil, fmt.Errorf("%w: refusal: %v", ErrProtocol, d.err)
	}
	return &HandshakeError{Code: code, Message: msg}, nil
}

func encodeNonce(n uint64) []byte {
	e := encoder{}
	e.u64(n)
	return e.b
}

func decodeNonce(b []byte) (uint64, error) {
	if len(b) != 8 {
		return 0, fmt.Errorf("%w: ping/pong payload is %d bytes, want 8", ErrProtocol, len(b))
	}
	d := decoder{b: b}
	return d.u64(), nil
}

func encodeDraining(reason string) []byte {
	e := encoder{}
	e.str(truncateText(reason, maxMessageLen))
	return e.b
}

func decodeDraining(b []byte) (string, error) {
	d := decoder{b: b}
	r := d.str("reason", maxMessageLen)
	if d.err == nil && len(d.b) != 0 {
		d.err = fmt.Errorf("%d unexpected trailing bytes", len(d.b))
	}
	if d.err != nil {
		return "", fmt.Errorf("%w: draining: %v", ErrProtocol, d.err)
	}
	return r, nil
}

func encodeGoodbye(g goodbye) []byte {
	e := encoder{}
	e.u8(uint8(g.code))
	e.str(truncateText(g.reason, maxMessageLen))
	return e.b
}

// goodbye is the payload of a Goodbye frame: an optional code (0 = none)
// and the reason text.
type goodbye struct {
	code   HandshakeCode
	reason string
}

func decodeGoodbye(b []byte) (goodbye, error) {
	d := decoder{b: b}
	code := HandshakeCode(d.u8())
	r := d.str("reason", maxMessageLen)
	if d.err == nil && len(d.b) != 0 {
		d.err = fmt.Errorf("%d unexpected trailing bytes", len(d.b))
	}
	if d.err != nil {
		return goodbye{}, fmt.Errorf("%w: goodbye: %v", ErrProtocol, d.err)
	}
	return goodbye{code: code, reason: r}, nil
}

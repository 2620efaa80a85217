package tunnel

import (
	"fmt"
	"log/slog"
	"time"

	"github.com/hashicorp/yamux"
)

// ProtocolVersion is the version of the sbx tunnel protocol this package
// speaks. It is sent in Hello; a peer that speaks another version is refused
// with a version-mismatch error. See PROTOCOL.md.
const ProtocolVersion = 2

// Hard bounds that no configuration may exceed. They keep a hostile or broken
// peer from making us allocate more than a few KiB per frame we decode.
const (
	// maxControlPayload bounds every control-stream frame payload.
	maxControlPayload = 4096
	// maxHeaderLimit bounds Config.MaxHeaderSize.
	maxHeaderLimit = 4096
	// minHeaderLimit is the smallest MaxHeaderSize that still fits a
	// maximal outbound target (253-byte host name, port) and a source.
	minHeaderLimit = 512
	// yamuxInitialWindow is yamux's fixed initial stream window; the
	// configured window may only be larger.
	yamuxInitialWindow = 256 * 1024
	// maxStreamWindowLimit bounds Config.MaxStreamWindow (yamux's
	// window, twice that, must fit in 32 bits).
	maxStreamWindowLimit = 256 << 20
)

// Window defaults (PROTOCOL.md, "Tuning").
const (
	// DefaultMaxStreamWindow lets one stream fill 1 Gbit/s at ~100 ms
	// (the window needs 4/3 of the bandwidth-delay product, 12.5 MB).
	DefaultMaxStreamWindow = 32 << 20
	// DefaultWindowBudget is a session's growth budget: two streams at
	// the largest window.
	DefaultWindowBudget = 64 << 20
)

// MuxRole selects which yamux role (client: odd stream ids, server: even)
// this end of a session takes. It is independent of who sends Hello, so a
// deployment where the relay dials the daemon works without a second
// implementation. Both ends must end up with different roles.
type MuxRole uint8

const (
	// MuxRoleAuto makes the Hello sender the yamux client and the Hello
	// receiver the yamux server.
	MuxRoleAuto MuxRole = iota
	// MuxRoleClient forces the yamux client role.
	MuxRoleClient
	// MuxRoleServer forces the yamux server role.
	MuxRoleServer
)

func (r MuxRole) String() string {
	switch r {
	case MuxRoleAuto:
		return "auto"
	case MuxRoleClient:
		return "client"
	case MuxRoleServer:
		return "server"
	}
	return fmt.Sprintf("MuxRole(%d)", uint8(r))
}

// Config tunes a session. Start from DefaultConfig and change fields; the
// zero value is not valid. Both ends may use different values except for
// MuxRole, which must resolve to different roles.
type Config struct {
	// MuxRole selects the yamux role; see MuxRole.
	MuxRole MuxRole

	// MinStreamWindow is the receive window every stream starts at (the
	// credit beyond yamux's initial 256 KiB goes out with its SYN or ACK
	// and comes from the budgets, as growth does): from 256 KiB to
	// MaxStreamWindow. Windows grow from here only on sessions with a
	// round trip of 1 ms or more (flow.go), so this is what a stream gets
	// on loopback and a LAN.
	MinStreamWindow uint32

	// MaxStreamWindow is the most a stream's receive window may grow to,
	// in bytes: from yamux's initial 256 KiB, each stream's window grows
	// toward twice the bandwidth-delay product its reads show (flow.go).
	// It caps one stream's throughput at MaxStreamWindow / round trip.
	// 256 KiB fixes every window at yamux's initial one.
	MaxStreamWindow uint32

	// WindowBudget bounds the growth the session's streams may hold at
	// once, in bytes beyond their initial 256 KiB windows: with it, a
	// session buffers at most streams × 256 KiB + WindowBudget however
	// its readers behave. 0 turns growth off.
	WindowBudget int64

	// SharedWindowBudget, if set, also bounds growth across every session
	// that shares it (a relay's, a daemon's), on top of WindowBudget.
	SharedWindowBudget *WindowBudget

	// MaxFrameSize bounds the payload of one yamux data frame: a larger
	// Write is split into frames of at most this size so that small
	// frames of other streams (and keepalives) interleave with a bulk
	// transfer instead of queueing behind a multi-megabyte frame.
	MaxFrameSize int

	// WriteTimeout is yamux's connection write timeout: how long one frame
	// may wait to be written to the connection before the write fails.
	// Long enough for slow links.
	WriteTimeout time.Duration

	// KeepAliveInterval is how often a heartbeat is sent on the control
	// stream when the session is otherwise idle enough to need one.
	KeepAliveInterval time.Duration

	// DeadPeerTimeout bounds how long a dead peer goes unnoticed: the
	// session is closed with ErrPeerDead once nothing at all was received
	// for 7/8 of it (checked every 1/8). At least twice
	// KeepAliveInterval, so a live idle peer always answers in time.
	DeadPeerTimeout time.Duration

	// HandshakeTimeout bounds the Hello/Welcome exchange (in addition to
	// the context passed to Client or Server).
	HandshakeTimeout time.Duration

	// HeaderTimeout bounds how long an accepted data stream may take to
	// deliver its header.
	HeaderTimeout time.Duration

	// StreamCloseTimeout is how long a stream we closed (or half-closed)
	// waits for the peer to close its side before it is reset.
	StreamCloseTimeout time.Duration

	// MaxHeaderSize bounds a data-stream header (512 to 4096 bytes).
	MaxHeaderSize int

	// AcceptBacklog is how many incoming streams may wait for Accept
	// (and for their header) before new ones are refused.
	AcceptBacklog int

	// SplitHeaderWrites turns off joining each yamux data frame's 12-byte
	// header to its body: they go out in two writes, as yamux sends them.
	// It exists to measure what the join gains (sbx bench tunnel and
	// portforward, --ab); see PROTOCOL.md, "One write per frame".
	SplitHeaderWrites bool

	// Logger receives session events. Nil discards them.
	Logger *slog.Logger
}

// PortForwardConfig returns DefaultConfig tuned for a session carried by a
// Kubernetes port-forward, which is how the daemon reaches the relay. There
// every yamux frame becomes a SPDY frame, three WebSocket messages and
// writes on each hop through the API server and the kubelet, so a frame
// costs several times what it costs on raw TCP: it uses 256 KiB frames. A
// frame is never interrupted, so a small request on the session may wait
// behind one frame per busy stream: 256 KiB is where larger frames stop
// paying. In sbx bench portforward --ab (five runs, medians), a pool of
// sessions took 1.07x the CPU per byte with 128 KiB frames and 1.02x with
// 512 KiB (PROTOCOL.md, "Over a port-forward"). Streams start at 1 MiB:
// where windows do not grow (a port-forward under 1 ms, as on loopback),
// 256 KiB took the pool from 1.08 to 0.85 of kubectl's throughput and
// one stream from 0.85 to 0.69 (sbx bench portforward, same session);
// beyond, windows grow as on any session.
func PortForwardConfig() Config {
	c := DefaultConfig()
	c.MaxFrameSize = 256 << 10
	c.MinStreamWindow = 1 << 20
	return c
}

// DefaultConfig returns the tuned defaults described in PROTOCOL.md
// ("Tuning").
func DefaultConfig() Config {
	return Config{
		MuxRole:            MuxRoleAuto,
		MinStreamWindow:    yamuxInitialWindow,
		MaxStreamWindow:    DefaultMaxStreamWindow,
		WindowBudget:       DefaultWindowBudget,
		MaxFrameSize:       32 << 10,
		WriteTimeout:       30 * time.Second,
		KeepAliveInterval:  5 * time.Second,
		DeadPeerTimeout:    15 * time.Second,
		HandshakeTimeout:   15 * time.Second,
		HeaderTimeout:      10 * time.Second,
		StreamCloseTimeout: 5 * time.Minute,
		MaxHeaderSize:      1024,
		AcceptBacklog:      1024,
	}
}

// Verify reports the first invalid field, naming it and the allowed range.
func (c Config) Verify() error {
	bad := func(field string, v any, want string) error {
		return fmt.Errorf("tunnel config: %s = %v is invalid: %s", field, v, want)
	}
	switch {
	case c.MuxRole > MuxRoleServer:
		return bad("MuxRole", c.MuxRole, "use MuxRoleAuto, MuxRoleClient or MuxRoleServer")
	case c.MaxStreamWindow < yamuxInitialWindow || c.MaxStreamWindow > maxStreamWindowLimit:
		return bad("MaxStreamWindow", c.MaxStreamWindow, "must be between 262144 (256 KiB, yamux's initial window) and 268435456 (256 MiB)")
	case c.MinStreamWindow < yamuxInitialWindow || c.MinStreamWindow > c.MaxStreamWindow:
		return bad("MinStreamWindow", c.MinStreamWindow, fmt.Sprintf("must be between 262144 (256 KiB, yamux's initial window) and MaxStreamWindow (%d)", c.MaxStreamWindow))
	case c.WindowBudget < 0:
		return bad("WindowBudget", c.WindowBudget, "must not be negative (0 turns window growth off)")
	case c.MaxFrameSize < 1024 || c.MaxFrameSize > 16<<20:
		return bad("MaxFrameSize", c.MaxFrameSize, "must be between 1 KiB and 16 MiB")
	case c.WriteTimeout <= 0:
		return bad("WriteTimeout", c.WriteTimeout, "must be positive")
	case c.KeepAliveInterval <= 0:
		return bad("KeepAliveInterval", c.KeepAliveInterval, "must be positive")
	case c.DeadPeerTimeout < 2*c.KeepAliveInterval:
		return bad("DeadPeerTimeout", c.DeadPeerTimeout, "must be at least twice KeepAliveInterval ("+c.KeepAliveInterval.String()+")")
	case c.HandshakeTimeout <= 0:
		return bad("HandshakeTimeout", c.HandshakeTimeout, "must be positive")
	case c.HeaderTimeout <= 0:
		return bad("HeaderTimeout", c.HeaderTimeout, "must be positive")
	case c.StreamCloseTimeout < 0:
		return bad("StreamCloseTimeout", c.StreamCloseTimeout, "must not be negative (0 disables the reset)")
	case c.MaxHeaderSize < minHeaderLimit || c.MaxHeaderSize > maxHeaderLimit:
		return bad("MaxHeaderSize", c.MaxHeaderSize, "must be between 512 and 4096")
	case c.AcceptBacklog <= 0:
		return bad("AcceptBacklog", c.AcceptBacklog, "must be positive")
	}
	return nil
}

func (c Config) logger() *slog.Logger {
	if c.Logger != nil {
		return c.Logger
	}
	return slog.New(slog.DiscardHandler)
}

// yamuxConfig maps Config onto yamux. yamux's own keepalive is off: its ping
// waits only WriteTimeout, which must be long for slow links, so it could not
// also meet the dead-peer bound. The session's heartbeat does that instead.
func (c Config) yamuxConfig() *yamux.Config {
	return &yamux.Config{
		AcceptBacklog:          c.AcceptBacklog,
		EnableKeepAlive:        false,
		KeepAliveInterval:      c.KeepAliveInterval, // yamux verifies it is non-zero
		ConnectionWriteTimeout: c.WriteTimeout,
		// yamux keeps accounting for its own window, but flowControl
		// grants the peer; twice the largest window keeps yamux's
		// accounting from ever refusing what flowControl granted.
		MaxStreamWindowSize: 2 * c.MaxStreamWindow,
		// Opens are bounded by the caller's context and the reply
		// timeout; yamux's open timeout would close the whole session.
		StreamOpenTimeout:  0,
		StreamCloseTimeout: c.StreamCloseTimeout,
		Logger:             yamuxLogger{c.logger()},
	}
}

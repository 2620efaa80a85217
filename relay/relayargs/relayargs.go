// Package relayargs is the relay's command-line contract: the flags of
// `sbx relay`, the defaults and ranges both sides rely on, and the one
// encoding of each flag value. Package cluster renders a relay
// Deployment's arguments with Args.Encode; package relay registers its
// flags under these names and parses their values with ParseInbound and
// ParseDeny; the sbx config (package daemon/config) reads relayMaxStreams
// and outbound.deny by the same rules.
//
// It imports only the standard library: package cluster must not import
// the relay, and package daemon/config must not import the Kubernetes
// libraries. Defaults of flags sbx never sets (--drain-delay,
// --idle-timeout, --dial-timeout, --max-held) are the relay's alone and
// live there.
package relayargs

import (
	"fmt"
	"net/netip"
	"strconv"
	"time"
)

// Flag names of `sbx relay` (without the leading "--").
const (
	FlagSandbox      = "sandbox"
	FlagTokenSHA256  = "token-sha256"
	FlagListen       = "listen"
	FlagHealthListen = "health-listen"
	FlagInbound      = "inbound"
	FlagGrace        = "grace"
	FlagDrainTimeout = "drain-timeout"
	FlagDrainDelay   = "drain-delay"
	FlagIdleTimeout  = "idle-timeout"
	FlagDialTimeout  = "dial-timeout"
	FlagMaxHeld      = "max-held"
	FlagMaxStreams   = "max-streams"
	FlagDeny         = "deny"
)

// Ports of the relay container.
const (
	// TunnelPort is the relay's tunnel listener, bound to 127.0.0.1 so it
	// is reachable only through a port-forward.
	TunnelPort = 7000
	// HealthPort serves /healthz, /readyz and /metrics on all interfaces,
	// for the kubelet's probes on the pod IP.
	HealthPort = 7001
)

// DefaultListen is --listen: the tunnel listener, TunnelPort on loopback.
func DefaultListen() string { return "127.0.0.1:" + strconv.Itoa(TunnelPort) }

// DefaultHealthListen is --health-listen: HealthPort on all interfaces.
func DefaultHealthListen() string { return ":" + strconv.Itoa(HealthPort) }

// Defaults of the relay's timing flags that sbx sets.
const (
	// DefaultGrace is --grace: how long an inbound connection waits for
	// the laptop before HTTP ports answer 503 and TCP ports close.
	DefaultGrace = 10 * time.Second
	// DefaultDrainTimeout is --drain-timeout: on SIGTERM, how long open
	// streams may finish.
	DefaultDrainTimeout = 20 * time.Second
)

// The relay's stream cap, --max-streams, and the memory it implies.
const (
	// DefaultMaxStreams bounds the streams the relay serves at once. Each
	// may buffer up to its tunnel receive window when its reader stalls:
	// yamux's initial 256 KiB, in a buffer of up to twice that (it grows
	// by doubling), plus up to 512 KiB of copy buffers (2 × 256 KiB while
	// bulk data flows, 32 KiB for a direction that carries only
	// requests): StreamMiB a stream. What windows grow beyond 256 KiB
	// comes out of WindowBudget, shared by all the relay's sessions
	// (tunnel/flow.go): twice that in buffer capacity at most. With the
	// default cap: 128 + 192 MiB in the worst case, which leaves the rest
	// of the process room under GOMEMLIMIT (460 MiB) and the relay
	// container's 512 Mi limit. A developer raises (or lowers) the cap
	// with relayMaxStreams in the sbx config (1 to MaxStreamsLimit); sbx
	// then passes --max-streams and sizes the pod's memory for it
	// (cluster.relayMemory: max(512Mi, N × 1 MiB + 2 × 96 MiB + 64 MiB)).
	// For the default sbx passes no --max-streams.
	DefaultMaxStreams = 128
	// MaxStreamsLimit bounds what a user may configure. The relay's
	// memory grows by StreamMiB a stream, so 4096 streams already take a
	// 4352Mi limit and a 544Mi request: more would not be scheduled on
	// the nodes of a typical staging cluster, and a developer's app that
	// needs more than 4096 concurrent connections through one laptop is
	// better served by smaller connection pools. The relay itself takes
	// any positive --max-streams given by hand.
	MaxStreamsLimit = 4096
	// StreamMiB is what one stream may hold at most, in MiB (above).
	StreamMiB = 1
	// WindowBudget bounds the growth of the tunnel's receive windows
	// beyond 256 KiB a stream, across all the relay's sessions: a few
	// uploads at a long link's bandwidth-delay product (12.5 MB at 100 ms
	// and 1 Gbit/s needs a ~26 MB window).
	WindowBudget = 96 << 20
)

// ValidateMaxStreams checks a configured stream cap: 0 means the default,
// otherwise 1-MaxStreamsLimit.
func ValidateMaxStreams(n int) error {
	if n < 0 || n > MaxStreamsLimit {
		return fmt.Errorf("relay stream cap %d is out of range; allowed 1-%d (0 or unset: the relay's default %d; each stream adds ~%d MiB to the relay pod's memory)",
			n, MaxStreamsLimit, DefaultMaxStreams, StreamMiB)
	}
	return nil
}

// Args are the settings sbx runs a relay with.
type Args struct {
	Sandbox string
	// TokenSHA256 is the tunnel token's verifier: its SHA-256, hex.
	TokenSHA256  string
	Listen       string
	HealthListen string
	Inbound      []Inbound
	Grace        time.Duration
	DrainTimeout time.Duration
	// MaxStreams is the stream cap; 0 or DefaultMaxStreams adds no flag,
	// so relays at the default keep their exact args.
	MaxStreams int
	// Deny adds one --deny per range, in order, after the other flags
	// (none when empty, again keeping existing relays' args).
	Deny []netip.Prefix
}

// Encode returns the `sbx relay` arguments (without the command words)
// for a: each flag whose value is set, in a fixed order, so that equal
// Args give equal args and a relay Deployment changes only when a setting
// does.
func (a Args) Encode() []string {
	var args []string
	add := func(flag, v string) {
		if v != "" {
			args = append(args, "--"+flag, v)
		}
	}
	add(FlagSandbox, a.Sandbox)
	add(FlagTokenSHA256, a.TokenSHA256)
	add(FlagListen, a.Listen)
	add(FlagHealthListen, a.HealthListen)
	for _, in := range a.Inbound {
		add(FlagInbound, in.String())
	}
	// Zero durations are left out: the relay's defaults apply.
	if a.Grace != 0 {
		add(FlagGrace, a.Grace.String())
	}
	if a.DrainTimeout != 0 {
		add(FlagDrainTimeout, a.DrainTimeout.String())
	}
	if a.MaxStreams > 0 && a.MaxStreams != DefaultMaxStreams {
		add(FlagMaxStreams, strconv.Itoa(a.MaxStreams))
	}
	for _, p := range a.Deny {
		add(FlagDeny, p.String())
	}
	return args
}

package relay

import (
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/pflag"

	"github.com/sbx-dev/sbx/relay/relayargs"
	"github.com/sbx-dev/sbx/tunnel"
)

// Defaults of the relay flags that sbx never sets; the others are part of
// the command-line contract (package relayargs).
const (
	// DefaultDrainDelay is how long a relay told to stop keeps accepting
	// inbound connections while a laptop is connected: the time the mesh
	// takes to learn that the pod is going (endpoint removal reaches the
	// proxies asynchronously, usually within a second or two).
	DefaultDrainDelay = 5 * time.Second
	// DefaultIdleTimeout: when more than half the stream slots are in use,
	// an inbound connection that has had its answer and sent nothing since
	// for this long is closed (idle.go). The mesh keeps connections open for
	// an hour (Envoy's upstream idle timeout), each holding a stream slot;
	// closing them frees the slots of callers that stopped calling, at the
	// cost of one in-cluster reconnect for a caller that comes back. With
	// slots to spare nothing is closed: a response streaming with long gaps
	// looks the same and Istio keeps it open.
	DefaultIdleTimeout = 2 * time.Minute
	DefaultDialTimeout = 10 * time.Second
	DefaultMaxHeld     = 1024
)

// Options configure a relay. ParseArgs builds them from the command line
// package cluster writes into the relay Deployment (relayargs.Args).
type Options struct {
	// Sandbox is the sandbox's name; a daemon whose Hello names another
	// sandbox is refused, and 503 answers name it.
	Sandbox string
	// Listen is the tunnel listener address; always a loopback address, since
	// in the pod it must be reachable only through a port-forward.
	Listen string
	// HealthListen serves /healthz, /readyz and /metrics (all interfaces by
	// default, for kubelet probes on the pod IP).
	HealthListen string
	// Inbound lists the ports the relay listens on for the sandbox Services.
	Inbound []relayargs.Inbound
	// Grace is how long an inbound connection is held while no laptop is
	// connected before it is answered 503 (HTTP) or closed (TCP).
	Grace time.Duration
	// DrainTimeout bounds how long open streams may finish after SIGTERM.
	DrainTimeout time.Duration
	// DrainDelay is how long, after SIGTERM, inbound connections are
	// still accepted while a laptop is connected (within DrainTimeout).
	DrainDelay time.Duration
	// IdleTimeout closes an inbound connection that has waited this long
	// for its caller (its last bytes were an answer); 0 never does. See
	// idle.go.
	IdleTimeout time.Duration
	// DialTimeout bounds each outbound dial, DNS included.
	DialTimeout time.Duration
	// MaxHeld bounds the connections held while offline; beyond it new ones
	// are answered at once.
	MaxHeld int
	// MaxStreams bounds the inbound and outbound streams served at once
	// (0: relayargs.DefaultMaxStreams); beyond it inbound HTTP is answered 503,
	// inbound TCP closed and outbound streams refused, all saying why.
	MaxStreams int
	// Deny adds address ranges to the outbound dial policy's built-in ones.
	Deny []netip.Prefix
	// TokenVerifier authenticates the daemon: the SHA-256 of the tunnel
	// token, which only the daemon holds. A Hello is accepted when its
	// token hashes to it (tunnel.TokenVerifier.Verify).
	TokenVerifier tunnel.TokenVerifier
}

// Flags holds the raw command-line values of `sbx relay`. ParseArgs uses it,
// and the cobra wrapper binds the same flags so `sbx relay --help` documents
// exactly what ParseArgs accepts.
type Flags struct {
	sandbox      string
	listen       string
	healthListen string
	inbound      inboundFlag
	grace        time.Duration
	drainTimeout time.Duration
	drainDelay   time.Duration
	idleTimeout  time.Duration
	dialTimeout  time.Duration
	maxHeld      int
	maxStreams   int
	deny         denyFlag
	tokenSHA256  string
}

// NewFlags returns flags holding the defaults.
func NewFlags() *Flags {
	return &Flags{
		listen:       relayargs.DefaultListen(),
		healthListen: relayargs.DefaultHealthListen(),
		grace:        relayargs.DefaultGrace,
		drainTimeout: relayargs.DefaultDrainTimeout,
		drainDelay:   DefaultDrainDelay,
		idleTimeout:  DefaultIdleTimeout,
		dialTimeout:  DefaultDialTimeout,
		maxHeld:      DefaultMaxHeld,
		maxStreams:   relayargs.DefaultMaxStreams,
	}
}

// AddFlags registers the relay flags on fs.
func (f *Flags) AddFlags(fs *pflag.FlagSet) {
	fs.StringVar(&f.sandbox, relayargs.FlagSandbox, f.sandbox, "name of the sandbox this relay serves (required), e.g. --sandbox alice")
	fs.StringVar(&f.listen, relayargs.FlagListen, f.listen, "tunnel listener; must be a loopback address, reached only through a port-forward, e.g. --listen 127.0.0.1:7000")
	fs.StringVar(&f.healthListen, relayargs.FlagHealthListen, f.healthListen, "address for /healthz, /readyz and /metrics, e.g. --health-listen :7001")
	fs.Var(&f.inbound, relayargs.FlagInbound, "inbound port, repeatable: containerPort=workload/port[/appProtocol] with appProtocol tcp (default), http, http2 or grpc, e.g. --inbound 20001=route/8083/http")
	fs.DurationVar(&f.grace, relayargs.FlagGrace, f.grace, "how long an inbound connection waits for the laptop before HTTP ports answer 503 and TCP ports close, e.g. --grace 10s")
	fs.DurationVar(&f.drainTimeout, relayargs.FlagDrainTimeout, f.drainTimeout, "on SIGTERM, how long open streams may finish before they are cut, e.g. --drain-timeout 20s")
	fs.DurationVar(&f.drainDelay, relayargs.FlagDrainDelay, f.drainDelay, "on SIGTERM, how long inbound connections are still accepted while the laptop is connected, for the mesh to learn the pod is going (part of --drain-timeout), e.g. --drain-delay 5s")
	fs.DurationVar(&f.idleTimeout, relayargs.FlagIdleTimeout, f.idleTimeout, "when more than half of --max-streams are in use, close inbound connections that have had their answer and sent nothing since for this long, longest-quiet first (mesh keep-alive connections otherwise hold a stream slot for Envoy's 1h); with slots to spare nothing is closed (a response streaming with long gaps looks the same); a request waiting for the laptop is never idle; 0 disables, e.g. --idle-timeout 5m")
	fs.DurationVar(&f.dialTimeout, relayargs.FlagDialTimeout, f.dialTimeout, "bound on each outbound dial including DNS, e.g. --dial-timeout 5s")
	fs.IntVar(&f.maxHeld, relayargs.FlagMaxHeld, f.maxHeld, "most inbound connections held while the laptop is offline; more are answered at once, e.g. --max-held 256")
	fs.IntVar(&f.maxStreams, relayargs.FlagMaxStreams, f.maxStreams, "most inbound and outbound streams served at once, bounding the relay's memory (each may buffer ~1 MiB when its reader stalls, all together 192 MiB more as tunnel windows grow); more are refused with a 503 or a reason; 0 means the default. "+
		"sbx sets it from relayMaxStreams in the sbx config (1-"+strconv.Itoa(relayargs.MaxStreamsLimit)+"; sbx render --relay-max-streams shows the result) and sizes the pod's memory limit to match, "+
		"max(512Mi, streams × 1 MiB + 256 MiB), e.g. --max-streams 512")
	fs.Var(&f.deny, relayargs.FlagDeny, "address or CIDR the relay must never dial, repeatable, on top of its built-in list (link-local, the cloud metadata services, 0.0.0.0/8, loopback, multicast, its own pod); "+
		"an IPv4 range also refuses its IPv6 forms (NAT64, 6to4, IPv4-compatible), an IPv6 range applies as written. "+
		"sbx sets it from outbound.deny in the sbx config (sbx render --relay-deny shows the result), e.g. --deny 10.0.0.0/24")
	fs.StringVar(&f.tokenSHA256, relayargs.FlagTokenSHA256, f.tokenSHA256, "the SHA-256 of the tunnel token, 64 hex digits (required): a daemon whose Hello carries a token with this hash is accepted. "+
		"The relay never holds the token itself, so anyone who can read the relay Deployment learns only the hash. "+
		"sbx sets it from the token the sbx daemon minted and keeps; by hand, e.g. --token-sha256 \"$(printf %s \"$TOKEN\" | sha256sum | cut -d' ' -f1)\"")
}

// Options validates the flag values.
func (f *Flags) Options() (Options, error) {
	o := Options{
		Sandbox:      f.sandbox,
		Listen:       f.listen,
		HealthListen: f.healthListen,
		Inbound:      append([]relayargs.Inbound(nil), f.inbound...),
		Grace:        f.grace,
		DrainTimeout: f.drainTimeout,
		DrainDelay:   f.drainDelay,
		IdleTimeout:  f.idleTimeout,
		DialTimeout:  f.dialTimeout,
		MaxHeld:      f.maxHeld,
		MaxStreams:   f.maxStreams,
		Deny:         append([]netip.Prefix(nil), f.deny...),
	}
	if f.tokenSHA256 != "" {
		v, err := tunnel.ParseTokenVerifier(f.tokenSHA256)
		if err != nil {
			return Options{}, fmt.Errorf("--token-sha256: %w", err)
		}
		o.TokenVerifier = v
	}
	if err := o.Validate(); err != nil {
		return Options{}, err
	}
	return o, nil
}

// ParseArgs parses the `sbx relay` command line (without the command words):
// flags only, no positional arguments, and nothing from the environment, so
// the Deployment's args say everything the relay does.
func ParseArgs(args []string) (Options, error) {
	f := NewFlags()
	fs := pflag.NewFlagSet("relay", pflag.ContinueOnError)
	fs.SetOutput(io.Discard)
	f.AddFlags(fs)
	if err := fs.Parse(args); err != nil {
		return Options{}, fmt.Errorf("relay flags: %w", err)
	}
	if fs.NArg() > 0 {
		return Options{}, fmt.Errorf("relay takes no arguments, got %q (every setting is a --flag; see sbx relay --help)", fs.Args())
	}
	return f.Options()
}

// Validate checks options built by hand (ParseArgs already calls it).
func (o Options) Validate() error {
	var errs []error
	if o.Sandbox == "" {
		errs = append(errs, errors.New("--sandbox is required"))
	} else if err := relayargs.CheckName(o.Sandbox); err != nil {
		errs = append(errs, fmt.Errorf("--sandbox: %w", err))
	}
	if o.TokenVerifier.IsZero() {
		errs = append(errs, errors.New("--token-sha256 is required: the SHA-256 of the tunnel token the sbx daemon minted (sbx writes it into the relay Deployment)"))
	}
	listenPort, err := checkLoopback(o.Listen)
	if err != nil {
		errs = append(errs, fmt.Errorf("--listen: %w", err))
	}
	healthPort, err := checkHostPort(o.HealthListen)
	if err != nil {
		errs = append(errs, fmt.Errorf("--health-listen: %w", err))
	}
	if healthPort != 0 && healthPort == listenPort {
		errs = append(errs, fmt.Errorf("--health-listen and --listen both use port %d", healthPort))
	}
	seen := map[uint16]bool{}
	for _, in := range o.Inbound {
		switch p := in.ContainerPort; {
		case seen[p]:
			errs = append(errs, fmt.Errorf("--inbound: container port %d is given twice", p))
		case p == listenPort:
			errs = append(errs, fmt.Errorf("--inbound %s: container port %d is the tunnel --listen port", in, p))
		case p == healthPort:
			errs = append(errs, fmt.Errorf("--inbound %s: container port %d is the --health-listen port", in, p))
		}
		seen[in.ContainerPort] = true
	}
	if o.Grace < 0 {
		errs = append(errs, fmt.Errorf("--grace %v is negative (0 answers at once)", o.Grace))
	}
	if o.DrainTimeout < 0 {
		errs = append(errs, fmt.Errorf("--drain-timeout %v is negative", o.DrainTimeout))
	}
	if o.DrainDelay < 0 {
		errs = append(errs, fmt.Errorf("--drain-delay %v is negative (0 closes the inbound ports at once)", o.DrainDelay))
	}
	if o.IdleTimeout < 0 {
		errs = append(errs, fmt.Errorf("--idle-timeout %v is negative (0 disables it)", o.IdleTimeout))
	}
	if o.DialTimeout <= 0 {
		errs = append(errs, fmt.Errorf("--dial-timeout %v must be positive", o.DialTimeout))
	}
	if o.MaxHeld < 0 {
		errs = append(errs, fmt.Errorf("--max-held %d is negative (0 holds nothing)", o.MaxHeld))
	}
	if o.MaxStreams < 0 {
		errs = append(errs, fmt.Errorf("--max-streams %d is negative (give at least 1, or leave it out for %d)", o.MaxStreams, relayargs.DefaultMaxStreams))
	}
	return errors.Join(errs...)
}

// checkLoopback accepts host:port with a loopback IP literal and returns the
// port. Names are refused: "localhost" may resolve to anything.
func checkLoopback(addr string) (uint16, error) {
	host, port, err := splitListen(addr)
	if err != nil {
		return 0, err
	}
	ip, err := netip.ParseAddr(host)
	if err != nil || !ip.Unmap().IsLoopback() {
		return 0, fmt.Errorf("%q is not a loopback address: the tunnel listener must only be reachable through a port-forward (use 127.0.0.1:%d)", addr, port)
	}
	return port, nil
}

// checkHostPort accepts [host]:port with a numeric port (0 picks a free one).
func checkHostPort(addr string) (uint16, error) {
	_, port, err := splitListen(addr)
	return port, err
}

func splitListen(addr string) (string, uint16, error) {
	host, p, err := net.SplitHostPort(addr)
	if err != nil {
		return "", 0, fmt.Errorf("%q is not host:port: %w", addr, err)
	}
	n, err := strconv.ParseUint(p, 10, 16)
	if err != nil {
		return "", 0, fmt.Errorf("%q: port %q is not a number in 0-65535", addr, p)
	}
	return host, uint16(n), nil
}

// inboundFlag is the repeatable --inbound value; one flag may also carry a
// comma-separated list.
type inboundFlag []relayargs.Inbound

func (f *inboundFlag) String() string {
	parts := make([]string, len(*f))
	for i, s := range *f {
		parts[i] = s.String()
	}
	return strings.Join(parts, ",")
}

func (f *inboundFlag) Set(v string) error {
	for _, item := range strings.Split(v, ",") {
		spec, err := relayargs.ParseInbound(strings.TrimSpace(item))
		if err != nil {
			return err
		}
		*f = append(*f, spec)
	}
	return nil
}

func (f *inboundFlag) Type() string { return "spec" }

// denyFlag is the repeatable --deny value: CIDRs or single addresses.
type denyFlag []netip.Prefix

func (f *denyFlag) String() string {
	parts := make([]string, len(*f))
	for i, p := range *f {
		parts[i] = p.String()
	}
	return strings.Join(parts, ",")
}

func (f *denyFlag) Set(v string) error {
	for _, item := range strings.Split(v, ",") {
		item = strings.TrimSpace(item)
		p, err := relayargs.ParseDeny(item)
		if err != nil {
			return err
		}
		*f = append(*f, p)
	}
	return nil
}

func (f *denyFlag) Type() string { return "cidr" }

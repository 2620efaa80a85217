package relay

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/sbx-dev/sbx/relay/relayargs"
	"github.com/sbx-dev/sbx/tunnel"
)

// shutdownReason is what connected daemons hear when the relay pod stops.
const shutdownReason = "relay shutting down (pod terminating); the daemon reconnects when the new relay is up"

// Deps are the relay's collaborators. Every field is optional.
type Deps struct {
	// Logger receives the relay's logs (never the token). Default: discard.
	Logger *slog.Logger
	// Dialer dials outbound destinations after the dial policy approved the
	// resolved address. Default: a net.Dialer.
	Dialer Dialer
	// Resolver resolves outbound host names (cluster DNS in the pod).
	// Default: net.DefaultResolver.
	Resolver Resolver
	// Listen binds the tunnel, health and inbound listeners. The simulator
	// remaps ports here and reads the results from Addrs. Default: net.Listen.
	Listen func(network, addr string) (net.Listener, error)
	// Registry receives the relay's metrics and is served on /metrics.
	// Default: a new registry with Go and process collectors.
	Registry *prometheus.Registry
	// Now is the clock for "offline since" times. Default: time.Now.
	Now func() time.Time
	// LocalAddrs lists the pod's own addresses, which outbound streams may
	// not dial. Default: the network interfaces' addresses, listed once.
	LocalAddrs func() ([]netip.Addr, error)
	// AllowLoopback lets outbound streams dial loopback addresses (never the
	// relay's own ports). Only for simulated clusters whose stand-in
	// services listen on loopback; a real pod must not allow it.
	AllowLoopback bool
	// Tunnel configures the sessions. Default: tunnel.PortForwardConfig(),
	// since the daemon's sessions arrive through a port-forward.
	Tunnel *tunnel.Config
	// Version is reported to daemons in the Welcome.
	Version string
}

// Addrs are the addresses a relay is bound to (after any remapping).
type Addrs struct {
	Tunnel net.Addr
	Health net.Addr
	// Inbound maps each --inbound container port to its bound address.
	Inbound map[uint16]net.Addr
}

// Relay is the in-cluster end of one sandbox. New binds its listeners, Run
// serves them until the context ends, then drains.
type Relay struct {
	opts   Options
	log    *slog.Logger
	now    func() time.Time
	reg    *prometheus.Registry
	m      *metrics
	tcfg   tunnel.Config
	ver    string
	dialer *dialer

	tunnelL net.Listener
	healthL net.Listener
	inbound []inboundListener

	sessions *sessionSet
	active   tracker      // inbound and outbound streams being served (for draining)
	quiet    quietConns   // inbound connections being piped (idle.go)
	heldN    atomic.Int64 // inbound connections currently held while offline
	streamsN atomic.Int64 // streams being served, bounded by MaxStreams
	benchN   atomic.Int32 // bench connections being served (benchserve.go)
	ready    atomic.Bool
	draining atomic.Bool
	ran      atomic.Bool
	// noEarlyData sends no request bytes with a stream's open (a
	// benchmark compares; inbound.go).
	noEarlyData atomic.Bool

	// serveCtx ends when Run's context ends: stop accepting, answer held
	// connections. pipeCtx ends when draining is over: cut what is left.
	serveCtx  context.Context
	stopServe context.CancelFunc
	pipeCtx   context.Context
	stopPipes context.CancelFunc
	wg        sync.WaitGroup
	closeOnce sync.Once
	closeErr  error
}

type inboundListener struct {
	spec relayargs.Inbound
	l    net.Listener
}

// New validates opts, binds every listener (so a port conflict fails here,
// naming the port) and returns a relay ready to Run. Call Close instead of
// Run to release the listeners.
func New(opts Options, deps Deps) (*Relay, error) {
	if err := opts.Validate(); err != nil {
		return nil, err
	}
	if opts.MaxStreams == 0 {
		opts.MaxStreams = relayargs.DefaultMaxStreams
	}
	if deps.Logger == nil {
		deps.Logger = slog.New(slog.DiscardHandler)
	}
	if deps.Dialer == nil {
		deps.Dialer = &net.Dialer{KeepAlive: 30 * time.Second}
	}
	if deps.Resolver == nil {
		deps.Resolver = net.DefaultResolver
	}
	if deps.Listen == nil {
		deps.Listen = net.Listen
	}
	if deps.Now == nil {
		deps.Now = time.Now
	}
	if deps.LocalAddrs == nil {
		// A pod's addresses do not change while it runs: list them once.
		addrs, err := interfaceAddrs()
		deps.LocalAddrs = func() ([]netip.Addr, error) { return addrs, err }
	}
	if deps.Registry == nil {
		deps.Registry = prometheus.NewRegistry()
		deps.Registry.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	}
	tcfg := tunnel.PortForwardConfig()
	if deps.Tunnel != nil {
		tcfg = *deps.Tunnel
	}
	if tcfg.SharedWindowBudget == nil {
		// All the laptop's sessions share one: the relay's memory sizing
		// counts it once (relayargs.WindowBudget).
		tcfg.SharedWindowBudget = tunnel.NewWindowBudget(relayargs.WindowBudget)
	}
	log := deps.Logger.With("sandbox", opts.Sandbox)
	if tcfg.Logger == nil {
		tcfg.Logger = log.With("component", "tunnel")
	}
	if err := tcfg.Verify(); err != nil {
		return nil, fmt.Errorf("relay: %w", err)
	}
	m, err := newMetrics(deps.Registry)
	if err != nil {
		return nil, err
	}
	r := &Relay{
		opts: opts, log: log, now: deps.Now, reg: deps.Registry, m: m, tcfg: tcfg, ver: deps.Version,
		sessions: newSessionSet(log, m, deps.Now),
	}
	r.serveCtx, r.stopServe = context.WithCancel(context.Background())
	r.pipeCtx, r.stopPipes = context.WithCancel(context.Background())

	listen := func(what, addr string) (net.Listener, error) {
		l, err := deps.Listen("tcp", addr)
		if err != nil {
			r.closeListeners()
			return nil, fmt.Errorf("relay: binding the %s listener on %s: %w (is another process using the port?)", what, addr, err)
		}
		return l, nil
	}
	if r.tunnelL, err = listen("tunnel", opts.Listen); err != nil {
		return nil, err
	}
	if r.healthL, err = listen("health", opts.HealthListen); err != nil {
		return nil, err
	}
	for _, spec := range opts.Inbound {
		l, err := listen("inbound "+spec.String(), ":"+strconv.Itoa(int(spec.ContainerPort)))
		if err != nil {
			return nil, err
		}
		r.inbound = append(r.inbound, inboundListener{spec: spec, l: l})
	}

	own := map[uint16]bool{}
	for _, a := range r.boundPorts() {
		own[a] = true
	}
	r.dialer = &dialer{
		policy: &policy{
			deny: opts.Deny, allowLoopback: deps.AllowLoopback, ownPorts: own, localAddrs: deps.LocalAddrs,
		},
		resolver: deps.Resolver,
		dial:     deps.Dialer,
		timeout:  opts.DialTimeout,
	}
	return r, nil
}

// boundPorts lists the configured and the actually bound ports of every
// listener: both are "the relay's own" for the dial policy.
func (r *Relay) boundPorts() []uint16 {
	var ports []uint16
	add := func(l net.Listener, configured string) {
		if ap, err := netip.ParseAddrPort(l.Addr().String()); err == nil {
			ports = append(ports, ap.Port())
		}
		if _, p, err := splitListen(configured); err == nil && p != 0 {
			ports = append(ports, p)
		}
	}
	add(r.tunnelL, r.opts.Listen)
	add(r.healthL, r.opts.HealthListen)
	for _, in := range r.inbound {
		add(in.l, ":"+strconv.Itoa(int(in.spec.ContainerPort)))
	}
	return ports
}

// Addrs returns the bound listener addresses.
func (r *Relay) Addrs() Addrs {
	a := Addrs{Tunnel: r.tunnelL.Addr(), Health: r.healthL.Addr(), Inbound: map[uint16]net.Addr{}}
	for _, in := range r.inbound {
		a.Inbound[in.spec.ContainerPort] = in.l.Addr()
	}
	return a
}

// Run serves until ctx ends, then shuts down gracefully: it stops accepting
// connections and sessions, answers held connections, lets open streams
// finish for up to Options.DrainTimeout, closes the sessions telling the
// daemon why, and returns nil once every goroutine has ended. Run may be
// called once; a second call returns an error.
func (r *Relay) Run(ctx context.Context) error {
	if !r.ran.CompareAndSwap(false, true) {
		return errors.New("relay: Run called twice or after Close (create a new relay with New)")
	}
	health := &http.Server{
		Handler:           r.healthHandler(),
		ReadHeaderTimeout: 10 * time.Second,
		ErrorLog:          slog.NewLogLogger(r.log.Handler(), slog.LevelDebug),
	}
	r.wg.Add(1)
	go func() {
		defer r.wg.Done()
		if err := health.Serve(r.healthL); err != nil && !errors.Is(err, http.ErrServerClosed) {
			r.log.Error("health listener stopped", "addr", r.healthL.Addr(), "err", err)
		}
	}()
	r.wg.Add(1)
	go func() {
		defer r.wg.Done()
		r.acceptTunnel()
	}()
	for _, in := range r.inbound {
		r.wg.Add(1)
		go func() {
			defer r.wg.Done()
			r.acceptInbound(in)
		}()
	}
	r.wg.Add(1)
	go func() {
		defer r.wg.Done()
		r.closeQuiet()
	}()
	r.ready.Store(true)
	r.m.ready.Set(1)
	addrs := r.Addrs()
	inbound := make([]string, len(r.inbound))
	for i, in := range r.inbound {
		inbound[i] = in.spec.String() + "@" + in.l.Addr().String()
	}
	r.log.Info("relay serving", "version", r.ver, "tunnel", addrs.Tunnel, "health", addrs.Health, "inbound", inbound,
		"grace", r.opts.Grace, "drainTimeout", r.opts.DrainTimeout, "tokenSHA256", r.opts.TokenVerifier.String()[:12]+"…")

	<-ctx.Done()
	r.shutdown()
	_ = health.Close()
	r.wg.Wait()
	return nil
}

// shutdown drains: stop taking sessions, tell the laptop, keep accepting
// inbound connections for DrainDelay while the laptop is connected, then
// wait for the open streams (all within DrainTimeout), close the sessions
// and cut what is left.
func (r *Relay) shutdown() {
	start := time.Now()
	deadline := time.NewTimer(r.opts.DrainTimeout)
	defer deadline.Stop()
	r.stopServe()
	if r.tunnelL != nil {
		_ = r.tunnelL.Close()
	}
	r.draining.Store(true)
	r.ready.Store(false)
	r.m.ready.Set(0)
	// Tell the laptop at once, so it connects to the pod that replaces
	// this one (a rollout starts it before stopping this one) while this
	// one finishes what it serves.
	r.sessions.notifyDraining(shutdownReason)
	r.log.Info("draining", "openStreams", r.active.count(), "sessions", r.sessions.describe(),
		"drainDelay", r.opts.DrainDelay, "drainTimeout", r.opts.DrainTimeout)
	// Endpoint removal is asynchronous: for a while after SIGTERM the mesh
	// still sends new connections here. Closing the port at once failed
	// those whose proxy knew no other endpoint yet (a retry goes to the
	// same endpoint list); they are served through the laptop's session
	// instead. Without a laptop they could only be answered 503, so the
	// port closes as soon as none is connected.
	timedOut := false
	delay := time.NewTimer(min(r.opts.DrainDelay, r.opts.DrainTimeout))
	select {
	case <-delay.C:
	case <-r.sessions.whenOffline():
	case <-deadline.C:
		timedOut = true
	}
	delay.Stop()
	for _, in := range r.inbound {
		_ = in.l.Close()
	}
	if !timedOut {
		select {
		case <-r.active.idle():
		case <-deadline.C:
			timedOut = true
		}
	}
	if timedOut {
		r.log.Warn("drain timeout: cutting open streams", "left", r.active.count(), "sessions", r.sessions.describe(), "drainTimeout", r.opts.DrainTimeout)
	} else {
		r.log.Info("drained", "took", time.Since(start).Round(time.Millisecond))
	}
	r.sessions.closeAll(shutdownReason)
	r.stopPipes()
}

// closeQuiet closes inbound connections that wait for their caller: after
// IdleTimeout while serving and more than half the stream slots are in
// use, after drainQuiet once draining (idle.go). It returns when the pipes
// are cut.
func (r *Relay) closeQuiet() {
	every := time.Second
	if r.opts.IdleTimeout > 0 {
		every = min(every, r.opts.IdleTimeout/4)
	}
	t := time.NewTicker(every)
	defer t.Stop()
	serving := r.serveCtx.Done()
	for {
		select {
		case <-r.pipeCtx.Done():
			return
		case <-serving:
			// Draining: look often, so the drain ends soon after the
			// last caller has had its answer.
			serving = nil
			t.Reset(drainQuiet / 10)
		case <-t.C:
		}
		if serving == nil {
			if n := r.quiet.closeWaiting(drainQuiet, -1); n > 0 {
				r.m.quietClosed.WithLabelValues("drain").Add(float64(n))
				r.log.Debug("draining: closed connections waiting for their caller", "n", n, "quiet", drainQuiet)
			}
		} else if excess := r.streamsN.Load() - int64(r.opts.MaxStreams/2); r.opts.IdleTimeout > 0 && excess > 0 {
			if n := r.quiet.closeWaiting(r.opts.IdleTimeout, int(excess)); n > 0 {
				r.m.quietClosed.WithLabelValues("idle").Add(float64(n))
				r.log.Debug("stream slots run short: closed idle inbound connections", "n", n, "idleTimeout", r.opts.IdleTimeout)
			}
		}
	}
}

// Close releases the listeners of a relay that was never Run. After Run it
// is a no-op.
func (r *Relay) Close() error {
	if !r.ran.CompareAndSwap(false, true) {
		return nil
	}
	r.stopServe()
	r.stopPipes()
	r.closeListeners()
	return r.closeErr
}

// closeListeners closes every listener, health included (New's failure
// path and Close).
func (r *Relay) closeListeners() {
	r.closeOnce.Do(func() {
		var errs []error
		for _, l := range []net.Listener{r.tunnelL, r.healthL} {
			if l != nil {
				errs = append(errs, ignoreClosed(l.Close()))
			}
		}
		for _, in := range r.inbound {
			errs = append(errs, ignoreClosed(in.l.Close()))
		}
		r.closeErr = errors.Join(errs...)
	})
}

func ignoreClosed(err error) error {
	if errors.Is(err, net.ErrClosed) {
		return nil
	}
	return err
}

func (r *Relay) healthHandler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		fmt.Fprintln(w, "ok")
	})
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		switch {
		case r.draining.Load():
			w.WriteHeader(http.StatusServiceUnavailable)
			fmt.Fprintln(w, "draining: the relay is shutting down")
		case !r.ready.Load():
			w.WriteHeader(http.StatusServiceUnavailable)
			fmt.Fprintln(w, "starting: listeners not serving yet")
		default:
			// Ready means "listeners up"; an offline laptop is not a reason
			// to take the relay out of the Service, it answers 503 itself.
			fmt.Fprintf(w, "ready; laptop %s\n", r.sessions.describe())
		}
	})
	mux.Handle("GET /metrics", promhttp.HandlerFor(r.reg, promhttp.HandlerOpts{ErrorLog: slog.NewLogLogger(r.log.Handler(), slog.LevelWarn)}))
	return mux
}

// interfaceAddrs returns the addresses of the pod's network interfaces.
func interfaceAddrs() ([]netip.Addr, error) {
	as, err := net.InterfaceAddrs()
	if err != nil {
		return nil, err
	}
	var out []netip.Addr
	for _, a := range as {
		if p, err := netip.ParsePrefix(a.String()); err == nil {
			out = append(out, p.Addr().Unmap())
		}
	}
	return out, nil
}

// tracker counts the streams being served and tells the drain when none is.
type tracker struct {
	mu      sync.Mutex
	n       int
	waiters []chan struct{}
}

func (t *tracker) add() {
	t.mu.Lock()
	t.n++
	t.mu.Unlock()
}

func (t *tracker) done() {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.n--
	if t.n == 0 {
		for _, w := range t.waiters {
			close(w)
		}
		t.waiters = nil
	}
}

func (t *tracker) count() int {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.n
}

// idle returns a channel closed when no stream is being served.
func (t *tracker) idle() <-chan struct{} {
	t.mu.Lock()
	defer t.mu.Unlock()
	ch := make(chan struct{})
	if t.n == 0 {
		close(ch)
	} else {
		t.waiters = append(t.waiters, ch)
	}
	return ch
}

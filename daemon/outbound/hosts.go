package outbound

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"slices"
	"strconv"
	"sync"
	"time"

	"github.com/sbx-dev/sbx/cluster/discovery"
	"github.com/sbx-dev/sbx/daemon/api"
	"github.com/sbx-dev/sbx/daemon/hostsfile"
	"github.com/sbx-dev/sbx/daemon/peeruid"
	"github.com/sbx-dev/sbx/daemon/proxy"
	"github.com/sbx-dev/sbx/tunnel"
)

const (
	// dialTimeout bounds the Dial of one forwarded connection (not its
	// lifetime).
	dialTimeout = 30 * time.Second
	// listenRetry is how soon a port that could not be bound is tried
	// again (it may be taken by a process that goes away).
	listenRetry = 10 * time.Second
)

// HostsOptions configure hosts mode.
type HostsOptions struct {
	// Catalog supplies the Services and their names. Required.
	Catalog *Catalog
	// Dial forwards each accepted connection. Required.
	Dial Dialer
	// HostsFile is the hosts file to edit and LockPath the ownership lock
	// (see hostsfile.Options). Required.
	HostsFile, LockPath string
	// Range is where Service IPs come from (config outbound.hostsRange).
	Range netip.Prefix
	// StatePath persists IP assignments so they survive restarts even
	// after collisions; "" keeps them in memory only.
	StatePath string
	// Baggage, when set, turns on baggage injection for HTTP/1.x ports
	// (appProtocol http, or a port named http/http-…): requests that
	// carry no member with the key get key=value (config
	// outbound.injectBaggage). Called per request.
	Baggage func() (key, value string)
	Logger  *slog.Logger
}

// Hosts runs hosts mode: it keeps the hosts block, the IP assignments and
// one listener per Service port in step with the Catalog, and forwards
// each accepted connection through the Dialer.
type Hosts struct {
	opts  HostsOptions
	log   *slog.Logger
	file  *hostsfile.Owner
	alloc *allocator
	peers *peeruid.Guard

	// connCtx ends every forwarded connection on shutdown.
	connCtx    context.Context
	cancelConn context.CancelFunc
	wg         sync.WaitGroup // accept loops and connections

	refusals refusalLog

	mu        sync.Mutex
	listeners map[netip.AddrPort]*portListener
	allowed   map[netip.Addr]allowedHosts // the names each address answers to
	status    []api.HostsEntry
	running   bool
	closed    bool
	closeErr  error
}

type portListener struct {
	ln net.Listener
	listenSpec
}

// listenSpec is what a listener forwards to.
type listenSpec struct {
	target string
	http   bool // inject baggage into HTTP/1.x requests
}

// NewHosts takes ownership of the hosts file (failing with an error
// matching hostsfile.ErrOwned when another daemon has it, and removing a
// block a crashed daemon left). Call Run to serve, or Close to give up.
func NewHosts(opts HostsOptions) (*Hosts, error) {
	if opts.Catalog == nil || opts.Dial == nil {
		return nil, errors.New("outbound: HostsOptions.Catalog and Dial are required")
	}
	log := opts.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	alloc, err := newAllocator(opts.Range, opts.StatePath)
	if err != nil {
		return nil, err
	}
	file, err := hostsfile.Acquire(hostsfile.Options{Path: opts.HostsFile, LockPath: opts.LockPath, Logger: log})
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithCancel(context.Background())
	return &Hosts{opts: opts, log: log, file: file, alloc: alloc, connCtx: ctx, cancelConn: cancel,
		peers:     peeruid.NewGuard("hosts-mode listeners", log),
		listeners: map[netip.AddrPort]*portListener{}}, nil
}

// Run follows the Catalog until ctx ends, then undoes everything: closes
// the listeners and the forwarded connections, waits for their goroutines
// and removes the hosts block. Call it once.
func (h *Hosts) Run(ctx context.Context) error {
	h.mu.Lock()
	if h.running || h.closed {
		h.mu.Unlock()
		return errors.New("outbound: Hosts.Run called twice or after Close")
	}
	h.running = true
	h.mu.Unlock()

	changed, unsubscribe := h.opts.Catalog.Subscribe()
	defer unsubscribe()
	retry := time.NewTimer(time.Hour)
	retry.Stop()
	defer retry.Stop()
	for {
		if h.reconcile() {
			retry.Reset(listenRetry)
		}
		select {
		case <-ctx.Done():
			return h.Close()
		case <-changed:
		case <-retry.C:
		}
	}
}

// reconcile makes listeners and the hosts block match the Catalog. It
// reports whether some port could not be bound (worth a retry).
func (h *Hosts) reconcile() (failed bool) {
	services := h.opts.Catalog.Services()
	var reachable []Named
	for _, s := range services {
		if len(tcpPorts(s)) > 0 {
			reachable = append(reachable, s)
		}
	}
	keys := make([]string, len(reachable))
	for i, s := range reachable {
		keys[i] = s.Key()
	}

	h.mu.Lock()
	defer h.mu.Unlock()
	if h.closed {
		return false
	}
	var want map[netip.AddrPort]listenSpec
	var listenErr map[netip.AddrPort]error
	// A port another process holds on a Service's address would send
	// the Service's name to that process: the Service moves to another
	// address, and the listeners are made again (a few rounds at most:
	// each round gives up at least one address).
	for round := 0; ; round++ {
		if err := h.alloc.assign(keys); err != nil {
			h.log.Error("cannot give every cluster Service a loopback IP", "err", err)
		}
		want = map[netip.AddrPort]listenSpec{}
		owner := map[netip.Addr]string{}
		for _, s := range reachable {
			ip, ok := h.alloc.byKey[s.Key()]
			if !ok {
				continue
			}
			owner[ip] = s.Key()
			for _, p := range tcpPorts(s) {
				want[netip.AddrPortFrom(ip, uint16(p.Port))] = listenSpec{
					target: net.JoinHostPort(s.FQDN(), strconv.Itoa(int(p.Port))),
					http:   h.opts.Baggage != nil && isHTTPPort(p),
				}
			}
		}
		h.closeUnwantedLocked(want)
		listenErr = map[netip.AddrPort]error{}
		moved := false
		for ap, spec := range want {
			if _, ok := h.listeners[ap]; ok {
				continue
			}
			ln, err := net.Listen("tcp", ap.String())
			if err == nil {
				pl := &portListener{ln: ln, listenSpec: spec}
				h.listeners[ap] = pl
				h.wg.Add(1)
				go h.acceptLoop(pl)
				continue
			}
			if addrInUse(err) && round < maxMoveRounds && h.alloc.moveAway(owner[ap.Addr()]) {
				h.log.Warn("another process holds a cluster Service's port on its loopback address; moving the Service to another address",
					"addr", ap, "target", spec.target)
				moved = true
				continue
			}
			listenErr[ap] = err
			failed = true
			h.log.Warn("cannot listen for a cluster Service port; retrying", "addr", ap, "target", spec.target, "err", err)
		}
		if !moved {
			break
		}
	}
	if err := h.alloc.save(); err != nil {
		h.log.Warn("cannot save hosts-mode IP assignments; they may change after a restart", "path", h.opts.StatePath, "err", err)
	}

	var entries []hostsfile.Entry
	status := make([]api.HostsEntry, 0, len(reachable))
	h.allowed = make(map[netip.Addr]allowedHosts, len(reachable))
	for _, s := range reachable {
		ip, ok := h.alloc.byKey[s.Key()]
		if !ok {
			continue
		}
		entries = append(entries, hostsfile.Entry{IP: ip, Names: s.Names})
		h.allowed[ip] = newAllowedHosts(ip, s.Names)
		e := api.HostsEntry{Service: s.Key(), IP: ip, Names: s.Names}
		for _, p := range tcpPorts(s) {
			ap := netip.AddrPortFrom(ip, uint16(p.Port))
			ps := api.OutboundPort{Port: p.Port, Target: want[ap].target, InjectBaggage: want[ap].http}
			if _, ok := h.listeners[ap]; ok {
				ps.Listening = true
			} else if err := listenErr[ap]; err != nil {
				ps.Error = err.Error()
			}
			e.Ports = append(e.Ports, ps)
		}
		status = append(status, e)
	}
	slices.SortFunc(entries, func(a, b hostsfile.Entry) int { return a.IP.Compare(b.IP) })
	h.status = status
	if err := h.file.Set(entries); err != nil {
		h.log.Error("cannot update the hosts file", "path", h.file.Path(), "err", err)
		failed = true
	}
	return failed
}

// maxMoveRounds bounds how many times one reconcile moves Services away
// from addresses other processes hold.
const maxMoveRounds = 16

// closeUnwantedLocked closes the listeners want has no use for (or
// another use for). Connections already accepted keep running; only new ones stop
// arriving.
func (h *Hosts) closeUnwantedLocked(want map[netip.AddrPort]listenSpec) {
	for ap, pl := range h.listeners {
		if spec, ok := want[ap]; !ok || spec != pl.listenSpec {
			_ = pl.ln.Close()
			delete(h.listeners, ap)
		}
	}
}

func tcpPorts(s Named) []discovery.Port {
	var out []discovery.Port
	for _, p := range s.Ports {
		dup := slices.ContainsFunc(out, func(o discovery.Port) bool { return o.Port == p.Port })
		if (p.Protocol == "" || p.Protocol == "TCP") && p.Port > 0 && p.Port <= 65535 && !dup {
			out = append(out, p)
		}
	}
	return out
}

func (h *Hosts) acceptLoop(pl *portListener) {
	defer h.wg.Done()
	for {
		c, err := pl.ln.Accept()
		if err != nil {
			if !errors.Is(err, net.ErrClosed) {
				h.log.Warn("hosts-mode listener failed", "addr", pl.ln.Addr(), "err", err)
			}
			return
		}
		h.wg.Add(1)
		go h.forward(c, pl.listenSpec)
	}
}

// forward dials spec's target and pipes local to it until both directions
// end (half-close passed on) or the Hosts closes; local is always closed.
// A failed dial is logged with its reason and closes local, so the client
// sees the connection end as soon as the relay says so: the tunnel stream
// opens early (WithEarlyOpen), so local's first bytes go out with its
// header and a refusal shows on its first Read.
//
// The target's bytes flow to local from the start; local's first bytes
// are held until they are known not to be an HTTP request from a web
// page (see hostcheck.go), which gets a 403 instead and never reaches the
// target.
func (h *Hosts) forward(local net.Conn, spec listenSpec) {
	defer h.wg.Done()
	// The listeners have no credential: on Linux, the peer's user is what
	// keeps other users out of the tunnel.
	if !h.peers.Allow(local) {
		_ = local.Close()
		return
	}
	ctx := WithSource(h.connCtx, local.RemoteAddr().String())
	dctx, cancel := context.WithTimeout(WithEarlyOpen(ctx), dialTimeout)
	remote, err := h.opts.Dial(dctx, spec.target)
	cancel()
	if err != nil {
		_ = local.Close()
		h.log.Warn("outbound connection failed", "target", spec.target, "from", local.RemoteAddr(), "err", err)
		return
	}
	var inject func() (string, string)
	if spec.http {
		inject = h.opts.Baggage
	}
	err = tunnel.PipeWith(ctx, local, remote, func(dst, src net.Conn) error {
		prefix, ref, err := readFirst(src, func() allowedHosts { return h.allowedFor(src) })
		if err != nil {
			return err
		}
		if ref != nil {
			h.refusals.log(h.log, src, spec.target, ref)
			refuse(src, ref)
			return ref
		}
		src = newPrefixConn(src, prefix)
		if inject != nil {
			return forwardRequests(src, dst, inject)
		}
		_, err = io.Copy(dst, src)
		return err
	})
	var ref *refusal
	var de *tunnel.DialError
	switch {
	case err == nil || ctx.Err() != nil || errors.As(err, &ref):
	case errors.As(err, &de): // the relay could not connect the target (the stream opened early)
		h.log.Warn("outbound connection failed", "target", spec.target, "from", local.RemoteAddr(), "err", err)
	default:
		h.log.Debug("outbound connection ended with an error", "target", spec.target, "err", err)
	}
}

// allowedFor is what the address c was accepted on answers to: the names
// the hosts block gives it, and itself.
func (h *Hosts) allowedFor(c net.Conn) allowedHosts {
	var ip netip.Addr
	if a, ok := c.LocalAddr().(*net.TCPAddr); ok {
		ip = a.AddrPort().Addr().Unmap()
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	if a, ok := h.allowed[ip]; ok {
		return a
	}
	return allowedHosts{ip: ip}
}

// refusalLog logs refused requests: at most one line every 10 s, with
// the number of refusals since the line before.
type refusalLog struct {
	mu       sync.Mutex
	last     time.Time
	unlogged int
}

func (r *refusalLog) log(log *slog.Logger, c net.Conn, target string, ref *refusal) {
	r.mu.Lock()
	now := time.Now()
	if !r.last.IsZero() && now.Sub(r.last) < 10*time.Second {
		r.unlogged++
		r.mu.Unlock()
		return
	}
	r.last = now
	more := r.unlogged
	r.unlogged = 0
	r.mu.Unlock()
	args := []any{"target", target, "from", c.RemoteAddr().String(), "status", ref.status, "reason", ref.reason}
	if more > 0 {
		args = append(args, "alsoRefusedSinceLastLine", more)
	}
	log.Warn("hosts-mode request refused", args...)
}

// Status returns each Service's IP, names and ports.
func (h *Hosts) Status() []api.HostsEntry {
	h.mu.Lock()
	defer h.mu.Unlock()
	return slices.Clone(h.status)
}

// HostsFile is the hosts file being edited.
func (h *Hosts) HostsFile() string { return h.file.Path() }

// Close stops listening, ends forwarded connections, waits for them, and
// removes the hosts block. It is idempotent; Run calls it on exit.
func (h *Hosts) Close() error {
	h.mu.Lock()
	if h.closed {
		h.mu.Unlock()
		return h.closeErr
	}
	h.closed = true
	for ap, pl := range h.listeners {
		_ = pl.ln.Close()
		delete(h.listeners, ap)
	}
	h.status = nil
	h.mu.Unlock()
	h.cancelConn()
	h.wg.Wait()
	err := h.file.Close()
	if err != nil {
		err = fmt.Errorf("removing the sbx block from the hosts file: %w", err)
	}
	h.mu.Lock()
	h.closeErr = err
	h.mu.Unlock()
	return err
}

// WithSource records the local client's address for the Dialer (the
// daemon puts it in the tunnel header's Source, which the relay logs).
func WithSource(ctx context.Context, addr string) context.Context {
	return proxy.WithSource(ctx, addr)
}

// SourceFromContext returns the address WithSource (here or in the proxy)
// recorded, or "".
func SourceFromContext(ctx context.Context) string { return proxy.SourceFromContext(ctx) }

type earlyOpenKey struct{}

// WithEarlyOpen marks a dial whose caller needs no answer before its
// first bytes go out and reports a failed dial by closing its connection
// (hosts mode): the tunnel stream may then open early (tunnel.OpenEarly),
// and a failed dial shows on the connection's first Read.
func WithEarlyOpen(ctx context.Context) context.Context {
	return context.WithValue(ctx, earlyOpenKey{}, true)
}

// EarlyOpen reports whether ctx was marked with WithEarlyOpen.
func EarlyOpen(ctx context.Context) bool {
	v, _ := ctx.Value(earlyOpenKey{}).(bool)
	return v
}

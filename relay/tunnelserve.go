package relay

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"slices"
	"sync"
	"time"

	"github.com/sbx-dev/sbx/tunnel"
)

// capabilities are announced in the Welcome.
// "bench": the relay serves `sbx bench cluster` (benchserve.go); the daemon
// checks for it before it opens a bench stream or connection.
var capabilities = []string{"inbound", "outbound", "pool", "grace", "bench"}

// Before its token is checked, a connection to the tunnel port costs the
// relay a goroutine and one bounded read (tunnel.Server starts no
// multiplexer before that): at most maxPendingHandshakes of them at once,
// each with helloTimeout to send its Hello (the daemon sends it at once).
// Anyone who may port-forward to the pod reaches the port, so without
// these bounds a few connections that never authenticate could hold the
// relay's memory or its goroutines.
//
// When all slots are taken, a new connection closes the oldest pending one
// rather than being turned away: refusing new ones let 64 idle connections,
// renewed every helloTimeout, lock the laptop out for good, while a daemon
// sends its Hello within a round trip of connecting, usually long before 64
// newer connections can push it out. A flood fast enough to do that
// anyway (loopback on a loaded machine) costs the daemon a retry, not
// its place: each attempt has the same chance.
const (
	maxPendingHandshakes = 64
	helloTimeout         = 5 * time.Second
)

// pendingHandshakes holds the connections that have not finished their
// handshake, oldest first.
type pendingHandshakes struct {
	mu    sync.Mutex
	conns []net.Conn
}

// add makes conn pending and returns the oldest pending connection it
// displaces (nil while there is room), which the caller closes, and the
// func that ends conn's pending state.
func (p *pendingHandshakes) add(conn net.Conn) (evicted net.Conn, done func()) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if len(p.conns) >= maxPendingHandshakes {
		evicted = p.conns[0]
		p.conns = p.conns[1:]
	}
	p.conns = append(p.conns, conn)
	return evicted, func() {
		p.mu.Lock()
		defer p.mu.Unlock()
		if i := slices.Index(p.conns, conn); i >= 0 {
			p.conns = slices.Delete(p.conns, i, i+1)
		}
	}
}

// acceptTunnel accepts port-forwarded connections from the daemon and runs
// the handshake on each.
func (r *Relay) acceptTunnel() {
	var pending pendingHandshakes
	for {
		conn, err := r.tunnelL.Accept()
		if err != nil {
			if r.serveCtx.Err() == nil && !errors.Is(err, net.ErrClosed) {
				r.log.Error("tunnel listener failed; no new sessions can connect", "addr", r.tunnelL.Addr(), "err", err)
			}
			return
		}
		evicted, done := pending.add(conn)
		if evicted != nil {
			r.m.handshakes.WithLabelValues("too_many_pending").Inc()
			r.log.Warn("too many tunnel connections waiting for their handshake; closing the oldest", "remote", evicted.RemoteAddr(), "limit", maxPendingHandshakes)
			_ = evicted.Close()
		}
		r.wg.Add(1)
		go func() {
			defer r.wg.Done()
			r.serveSession(conn, done)
		}()
	}
}

// checkHello validates a daemon's Hello: the token against the verifier
// (constant time, an empty token never matches) first, then the sandbox.
// Messages never contain the token.
func (r *Relay) checkHello(h tunnel.Hello) (tunnel.Welcome, error) {
	if !r.opts.TokenVerifier.Verify(h.Token) {
		return tunnel.Welcome{}, &tunnel.HandshakeError{Code: tunnel.CodeBadToken,
			Message: "the token's SHA-256 is not this relay's --token-sha256 " + r.opts.TokenVerifier.String()[:12] + "…"}
	}
	if h.Sandbox != r.opts.Sandbox {
		other := "the Hello names none"
		if h.Sandbox != "" {
			other = "not " + h.Sandbox
		}
		return tunnel.Welcome{}, &tunnel.HandshakeError{Code: tunnel.CodeSandboxMismatch,
			Message: "this relay serves sandbox " + r.opts.Sandbox + ", " + other}
	}
	if r.draining.Load() {
		return tunnel.Welcome{}, &tunnel.HandshakeError{Code: tunnel.CodeInternal, Message: shutdownReason}
	}
	return tunnel.Welcome{RelayVersion: r.ver, Capabilities: capabilities}, nil
}

// serveSession handshakes on conn and, if the daemon is accepted, serves the
// session's outbound streams until it ends, or the bench connection a
// Hello (bench) asked for; handshaken is called once the Hello is accepted
// or the handshake has failed (calling it twice is harmless).
func (r *Relay) serveSession(conn net.Conn, handshaken func()) {
	// tunnel.Server bounds the handshake by r.tcfg.HandshakeTimeout, clears
	// this deadline once the Hello is in, and closes conn when it fails.
	_ = conn.SetReadDeadline(time.Now().Add(helloTimeout))
	// The pending state ends once the Hello is accepted, before the Welcome
	// is written: a connection evicted after that would leave the daemon
	// believing it is in while the relay has already closed it (seen when a
	// flood evicted it between the Welcome and the end of tunnel.Server).
	check := func(h tunnel.Hello) (tunnel.Welcome, error) {
		w, err := r.checkHello(h)
		if err == nil {
			handshaken()
		}
		return w, err
	}
	s, bench, hello, err := tunnel.ServerOrBench(r.serveCtx, conn, r.tcfg, check)
	handshaken()
	if err != nil {
		r.m.handshakes.WithLabelValues(handshakeResult(err)).Inc()
		r.log.Warn("tunnel handshake failed", "remote", conn.RemoteAddr(), "err", err)
		return
	}
	r.m.handshakes.WithLabelValues("ok").Inc()
	if bench != nil {
		r.serveBench(r.log.With("clientID", hello.ClientID, "user", hello.User), bench, "bare connection")
		return
	}
	done, err := r.sessions.add(s, hello)
	if err != nil {
		_ = s.CloseWithReason(shutdownReason)
		return
	}
	defer done()
	log := r.log.With("clientID", hello.ClientID, "user", hello.User)
	log.Info("laptop connected", "remote", conn.RemoteAddr())

	// Streams are accepted until the session ends; Accept returns then.
	for {
		st, err := s.Accept(r.pipeCtx)
		if err != nil {
			select {
			case <-s.Done():
				log.Info("tunnel session ended", "why", s.Err())
			default:
				log.Info("tunnel session closing", "err", err)
				_ = s.Close()
			}
			return
		}
		r.wg.Add(1)
		go func() {
			defer r.wg.Done()
			r.serveStream(log, st)
		}()
	}
}

func handshakeResult(err error) string {
	switch {
	case errors.Is(err, tunnel.ErrBadToken):
		return "bad_token"
	case errors.Is(err, tunnel.ErrVersionMismatch):
		return "version_mismatch"
	case errors.Is(err, tunnel.ErrSandboxMismatch):
		return "sandbox_mismatch"
	case errors.Is(err, context.DeadlineExceeded):
		return "timeout"
	}
	return "error"
}

// serveStream handles one stream the daemon opened: an outbound connection
// to dial in the cluster. Inbound streams only go the other way.
func (r *Relay) serveStream(log *slog.Logger, st *tunnel.Stream) {
	h := st.Header()
	if h.Kind == tunnel.KindBench {
		// Its own caps, not --max-streams' (benchserve.go).
		if err := st.Accept(); err != nil {
			log.Debug("bench stream gone before accept", "err", err)
			return
		}
		r.serveBench(log, st, "tunnel stream")
		return
	}
	if h.Kind != tunnel.KindOutbound {
		_ = st.Reject(tunnel.ReasonProtocol, "the relay only accepts outbound streams from the laptop (and bench streams, for sbx bench cluster)")
		return
	}
	// A draining relay still serves the laptop's calls: the daemon moves
	// new ones to the replacement pod as soon as it has a session there,
	// and until then this session is all it has.
	if !r.takeStream(kindOutbound) {
		log.Info("relay at its stream limit; refusing an outbound stream", "target", h.Target, "maxStreams", r.opts.MaxStreams)
		_ = st.Reject(tunnel.ReasonOther, fmt.Sprintf("the relay of sandbox %s is serving its limit of %d streams at once "+
			"(the limit bounds its memory); close idle connections (e.g. use smaller connection pools), retry, "+
			"or raise relayMaxStreams in the sbx config",
			r.opts.Sandbox, r.opts.MaxStreams))
		return
	}
	defer r.releaseStream()
	r.active.add()
	defer r.active.done()

	start := time.Now()
	// pipeCtx: a dial under way when SIGTERM arrives is part of the drain.
	conn, err := r.dialer.dialTarget(r.pipeCtx, h.Target)
	if err != nil {
		reason := dialReason(err)
		r.m.dialErrors.WithLabelValues(reason.String()).Inc()
		log.Info("outbound dial failed", "target", h.Target, "source", h.Source, "reason", reason, "err", err)
		_ = st.Reject(reason, err.Error())
		return
	}
	defer conn.Close()
	if err := st.Accept(); err != nil {
		log.Debug("outbound stream gone before accept", "target", h.Target, "err", err)
		return
	}
	end := r.m.streamOpened(kindOutbound) // counted once connected: dial errors have their own metric
	defer end()
	log.Debug("outbound connected", "target", h.Target, "remote", conn.RemoteAddr(), "dial", time.Since(start).Round(time.Millisecond))
	if err := tunnel.Pipe(r.pipeCtx, st, r.m.count(conn)); err != nil {
		log.Debug("outbound stream ended", "target", h.Target, "err", err)
	}
}

// dialReason maps a relay dial failure to the reason the daemon is told.
func dialReason(err error) tunnel.Reason {
	var pe *PolicyError
	var de *dnsError
	switch {
	case errors.As(err, &pe):
		return tunnel.ReasonDenied
	case errors.As(err, &de):
		if r := tunnel.ReasonOf(de.err); r == tunnel.ReasonTimeout {
			return r
		}
		return tunnel.ReasonDNS
	}
	return tunnel.ReasonOf(err)
}

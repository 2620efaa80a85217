package daemon

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"sync"
	"time"

	"github.com/sbx-dev/sbx/cluster"
	"github.com/sbx-dev/sbx/daemon/outbound"
	"github.com/sbx-dev/sbx/tunnel"
)

// inboundDialTimeout bounds the local dial of an inbound stream. It is a
// dial timeout only: once connected, streams have no idle timeout, so a
// request paused in a debugger completes whenever it resumes.
const inboundDialTimeout = 10 * time.Second

// replaceDelay is the pause before re-dialing a pool session that died
// while others stayed up.
const replaceDelay = time.Second

// windowBudget bounds the receive-window growth of all the daemon's
// tunnel sessions together (every sandbox's pool), beyond each stream's
// initial 256 KiB: two downloads at the largest window (tunnel/flow.go).
// It is a bound, not an allocation: an idle daemon holds none of it.
const windowBudget = 64 << 20

// newTunnelLinker returns a linker that speaks the tunnel protocol with
// cfg (nil: tunnel.PortForwardConfig, since the daemon reaches the relay
// through a port-forward). Its sessions share one window budget unless
// cfg brings its own.
func newTunnelLinker(cfg *tunnel.Config) linker {
	budget := tunnel.NewWindowBudget(windowBudget)
	return func(ctx context.Context, p linkParams) (link, error) {
		c := tunnel.PortForwardConfig()
		if cfg != nil {
			c = *cfg
		}
		if c.SharedWindowBudget == nil {
			c.SharedWindowBudget = budget
		}
		if c.Logger == nil {
			c.Logger = p.Logger
		}
		return dialTunnelLink(ctx, c, p)
	}
}

// tunnelLink is a pool of tunnel sessions to one relay plus the loops that
// serve their inbound streams. It is done when its last session is gone;
// a session that dies while others live is replaced in the background.
type tunnelLink struct {
	p    linkParams
	cfg  tunnel.Config
	log  *slog.Logger
	pool *tunnel.Pool

	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup

	mu       sync.Mutex
	live     int
	welcomes map[*tunnel.Session]tunnel.Welcome // each live session's relay (bench checks its capabilities)
	base     tunnel.Stats                       // counters of sessions that are gone
	err      error
	done     chan struct{}
	doneOnce sync.Once
}

func dialTunnelLink(ctx context.Context, cfg tunnel.Config, p linkParams) (*tunnelLink, error) {
	lctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	l := &tunnelLink{p: p, cfg: cfg, log: p.Logger, ctx: lctx, cancel: cancel, done: make(chan struct{}),
		welcomes: map[*tunnel.Session]tunnel.Welcome{}}
	if l.log == nil {
		l.log = slog.New(slog.DiscardHandler)
	}
	l.pool = tunnel.NewPool(l.log, nil)
	// The link outlives ctx (the caller's connect step); it is bounded by
	// Close. ctx only bounds the dials here.
	var firstErr error
	for i := 0; i < p.PoolSize; i++ {
		if err := l.addSession(ctx); err != nil {
			if firstErr == nil {
				firstErr = err
			}
			l.log.Warn("tunnel session not established", "n", i+1, "err", err)
		}
	}
	l.mu.Lock()
	live := l.live
	l.mu.Unlock()
	if live == 0 {
		_ = l.Close()
		return nil, firstErr
	}
	return l, nil
}

// addSession dials one connection, handshakes and starts serving it.
func (l *tunnelLink) addSession(ctx context.Context) error {
	conn, err := l.p.Dial(ctx)
	if err != nil {
		return fmt.Errorf("dial relay: %w", err)
	}
	sess, w, err := tunnel.Client(ctx, conn, l.cfg, l.hello())
	if err != nil {
		_ = conn.Close()
		return l.handshakeError(err)
	}
	l.mu.Lock()
	if l.ctx.Err() != nil {
		l.mu.Unlock()
		_ = sess.Close()
		return l.ctx.Err()
	}
	l.live++
	l.welcomes[sess] = w
	l.mu.Unlock()
	l.pool.Add(sess)
	l.wg.Add(2)
	go func() {
		defer l.wg.Done()
		l.acceptLoop(sess)
	}()
	go func() {
		defer l.wg.Done()
		l.watch(sess)
	}()
	return nil
}

// hello is the Hello every connection to the relay starts with.
func (l *tunnelLink) hello() tunnel.Hello {
	return tunnel.Hello{
		Version:  tunnel.ProtocolVersion,
		Token:    l.p.Token(),
		ClientID: l.p.ClientID,
		Sandbox:  l.p.Ref.Name,
		User:     l.p.User,
	}
}

// handshakeError explains a refused or failed handshake.
func (l *tunnelLink) handshakeError(err error) error {
	if errors.Is(err, tunnel.ErrVersionMismatch) || errors.Is(err, tunnel.ErrSandboxMismatch) {
		return &PermanentError{fmt.Errorf("tunnel handshake: %w (use the same sbx version for the relay image and the CLI)", err)}
	}
	if errors.Is(err, tunnel.ErrBadToken) {
		// Not permanent: the supervisor re-applies, which either
		// restores this daemon's verifier or finds another daemon's
		// there and stops (verifierConflict).
		sb := l.p.Ref.Name
		return &nextStepError{fmt.Errorf("%w (%w)", cluster.ErrVerifierMismatch, err), // the caller names the sandbox
			fmt.Sprintf("sbx re-applies and retries; to make this daemon's token the relay's now, run `sbx connect %s --rotate-token` or reconnect", sb)}
	}
	return fmt.Errorf("tunnel handshake: %w", err)
}

// benchSessions lists the live sessions that are not draining, with
// their relay's Welcome (bench.go).
func (l *tunnelLink) benchSessions() []benchSession {
	var out []benchSession
	for _, s := range l.pool.Sessions() {
		select {
		case <-s.Done():
			continue
		case <-s.Draining():
			continue
		default:
		}
		l.mu.Lock()
		w, ok := l.welcomes[s]
		l.mu.Unlock()
		if ok {
			out = append(out, benchSession{s: s, welcome: w})
		}
	}
	return out
}

// dialBench opens a new port-forward connection to the relay and
// handshakes it as a bench connection (bench.go's bare path).
func (l *tunnelLink) dialBench(ctx context.Context) (net.Conn, tunnel.Welcome, error) {
	conn, err := l.p.Dial(ctx)
	if err != nil {
		return nil, tunnel.Welcome{}, fmt.Errorf("dial relay: %w", err)
	}
	bc, w, err := tunnel.ClientBench(ctx, conn, l.cfg, l.hello())
	if err != nil {
		return nil, tunnel.Welcome{}, l.handshakeError(err)
	}
	return bc, w, nil
}

// watch waits for sess to end, keeps its counters, and replaces it while
// other sessions live; the link ends with its last session. A session
// whose relay drains (its pod is shutting down) is moved off at once
// (moveOff).
func (l *tunnelLink) watch(sess *tunnel.Session) {
	replaced := false
	select {
	case <-sess.Done():
	case <-l.ctx.Done():
		return
	case <-sess.Draining():
		replaced = l.moveOff(sess)
		select {
		case <-sess.Done():
		case <-l.ctx.Done():
			return
		}
	}
	st := sess.Stats()
	l.mu.Lock()
	l.live--
	delete(l.welcomes, sess)
	l.base.BytesIn += st.BytesIn
	l.base.BytesOut += st.BytesOut
	l.base.StreamsTotal += st.StreamsTotal
	live := l.live
	l.mu.Unlock()
	err := sess.Err()
	if errors.Is(err, tunnel.ErrReplaced) {
		// Another daemon (another laptop, or a second state directory)
		// took the sandbox over with its token. Reconnecting would take
		// it back and the two would take turns forever: stop here.
		l.finish(&PermanentError{&nextStepError{fmt.Errorf("%w; this daemon stopped reconnecting so the two do not take turns", err),
			"run sbx connect here again to take the sandbox back"}})
		return
	}
	if live == 0 {
		l.finish(err)
		return
	}
	if replaced {
		return
	}
	l.log.Info("tunnel session ended; replacing it", "err", err, "remaining", live)
	t := time.NewTimer(replaceDelay)
	defer t.Stop()
	select {
	case <-l.ctx.Done():
		return
	case <-l.done:
		return
	case <-t.C:
	}
	dctx, cancel := context.WithTimeout(l.ctx, 30*time.Second)
	defer cancel()
	if err := l.addSession(dctx); err != nil {
		l.log.Warn("replacing tunnel session failed; continuing with fewer", "err", err)
	}
}

// drainReplaceTimeout bounds the attempts to reach a draining relay's
// replacement; after it the link falls back to reconnecting.
const drainReplaceTimeout = 10 * time.Second

// moveOff handles a session whose relay is draining: a rollout started its
// replacement pod before stopping it. It opens a session to the replacement
// at once (the dialer finds the newest ready pod) and takes the draining
// one out of the pool, so the laptop's new calls go to the replacement; the
// draining relay goes on serving the connections the mesh still sends it
// and ends the session when it is done. While no replacement answers (a
// pod deleted by hand, whose successor is still starting) it keeps trying
// for drainReplaceTimeout, the draining session carrying the laptop's calls
// meanwhile. Without one (the relay restarts in the same pod) the session
// carries them until it serves nothing, then is closed so the relay can
// stop; the link then replaces it as after any loss. It reports whether
// the replacement session is up.
func (l *tunnelLink) moveOff(sess *tunnel.Session) bool {
	l.log.Info("relay draining; opening a session to its replacement", "reason", sess.DrainReason())
	err := l.reachReplacement(sess)
	if err == nil {
		l.pool.Remove(sess)
		return true
	}
	l.log.Warn("no session to the draining relay's replacement; leaving the draining one when it serves nothing, then reconnecting", "err", err)
	t := time.NewTicker(50 * time.Millisecond)
	defer t.Stop()
	for {
		for sess.Busy() > 0 {
			select {
			case <-sess.Done():
				return false
			case <-l.ctx.Done():
				return false
			case <-t.C:
			}
		}
		// A stream picked just before it left the pool shows in Busy.
		l.pool.Remove(sess)
		if sess.Busy() == 0 {
			break
		}
	}
	_ = sess.Close()
	return false
}

// reachReplacement adds a session to a draining relay's replacement,
// retrying until drainReplaceTimeout while sess (the draining one) lives:
// the replacement may not be ready yet, or the pod list may still name the
// draining pod.
func (l *tunnelLink) reachReplacement(sess *tunnel.Session) error {
	ctx, cancel := context.WithTimeout(l.ctx, drainReplaceTimeout)
	defer cancel()
	pause := 100 * time.Millisecond
	for {
		err := l.addSession(ctx)
		var perm *PermanentError
		if err == nil || errors.As(err, &perm) || ctx.Err() != nil {
			return err
		}
		l.log.Debug("draining relay's replacement not reachable yet; retrying", "err", err, "in", pause)
		t := time.NewTimer(pause)
		select {
		case <-t.C:
		case <-ctx.Done():
			t.Stop()
			return err
		case <-sess.Done():
			t.Stop()
			return err
		}
		pause = min(2*pause, time.Second)
	}
}

func (l *tunnelLink) finish(err error) {
	l.doneOnce.Do(func() {
		if err == nil {
			err = errors.New("tunnel closed")
		}
		l.mu.Lock()
		l.err = err
		l.mu.Unlock()
		close(l.done)
	})
}

func (l *tunnelLink) acceptLoop(sess *tunnel.Session) {
	for {
		st, err := sess.Accept(l.ctx)
		if err != nil {
			return
		}
		l.wg.Add(1)
		go func() {
			defer l.wg.Done()
			l.serveInbound(st)
		}()
	}
}

// serveInbound connects one stream from the relay to its mapping's local
// address. A local address that refuses is answered with ReasonRefused and
// a message the relay shows in its 502.
func (l *tunnelLink) serveInbound(st *tunnel.Stream) {
	h := st.Header()
	if h.Kind != tunnel.KindInbound {
		_ = st.Reject(tunnel.ReasonDenied, fmt.Sprintf("the sbx daemon accepts only inbound streams, not %s", h.Kind))
		return
	}
	var rt *route
	for _, r := range l.p.Routes() {
		if r.Workload == h.Workload && r.Port == int32(h.Port) {
			rt = &r
			break
		}
	}
	if rt == nil {
		_ = st.Reject(tunnel.ReasonDenied, fmt.Sprintf("sandbox %s has no mapping for workload %s port %d (run sbx connect again with the current spec)",
			l.p.Ref.Name, h.Workload, h.Port))
		return
	}
	d := net.Dialer{Timeout: inboundDialTimeout}
	local, err := d.DialContext(l.ctx, "tcp", rt.ToLocal)
	if err != nil {
		reason := tunnel.ReasonOf(err)
		msg := fmt.Sprintf("sbx sandbox %s: dial %s for %s port %d: %v", l.p.Ref.Name, rt.ToLocal, rt.Workload, rt.Port, err)
		if reason == tunnel.ReasonRefused {
			msg = fmt.Sprintf("sbx sandbox %s: nothing listening on %s (mapping of %s port %d); start your service there, or fix toLocal in the sandbox spec",
				l.p.Ref.Name, rt.ToLocal, rt.Workload, rt.Port)
		}
		l.log.Info("inbound stream refused locally", "workload", rt.Workload, "port", rt.Port, "toLocal", rt.ToLocal, "reason", reason)
		_ = st.Reject(reason, msg)
		return
	}
	if err := st.Accept(); err != nil {
		_ = local.Close()
		_ = st.Close()
		return
	}
	if err := tunnel.Pipe(l.ctx, st, local); err != nil && l.ctx.Err() == nil {
		l.log.Debug("inbound stream ended with an error", "workload", rt.Workload, "port", rt.Port, "err", err)
	}
}

// DialOutbound opens an outbound stream; early (outbound.WithEarlyOpen)
// when the caller sends first and reports failure by closing, so its
// first bytes ride with the header and the relay's dial costs no round
// trip of its own.
func (l *tunnelLink) DialOutbound(ctx context.Context, target, source string) (net.Conn, error) {
	h := tunnel.Header{Kind: tunnel.KindOutbound, Target: target, Source: source}
	if outbound.EarlyOpen(ctx) {
		return l.pool.OpenEarly(ctx, h)
	}
	return l.pool.Open(ctx, h)
}

func (l *tunnelLink) Done() <-chan struct{} { return l.done }

func (l *tunnelLink) Err() error {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.err
}

// Stats sums the pool's sessions (plus those already gone) and measures
// the round trip on one of them.
func (l *tunnelLink) Stats() linkStats {
	l.mu.Lock()
	out := linkStats{BytesIn: int64(l.base.BytesIn), BytesOut: int64(l.base.BytesOut)}
	l.mu.Unlock()
	sessions := l.pool.Sessions()
	out.Sessions = len(sessions)
	for _, s := range sessions {
		st := s.Stats()
		out.BytesIn += int64(st.BytesIn)
		out.BytesOut += int64(st.BytesOut)
		out.Streams += st.StreamsOpen
	}
	out.RTT = l.ping(sessions)
	return out
}

// pingWait bounds how long Stats waits for a round trip: a ping on a
// stalled link can take up to the dead-peer timeout, and the supervisor
// must stay responsive (to a disconnect) meanwhile.
const pingWait = 2 * time.Second

// ping measures the RTT on the first session that answers within
// pingWait; 0 if none does.
func (l *tunnelLink) ping(sessions []*tunnel.Session) time.Duration {
	if len(sessions) == 0 {
		return 0
	}
	res := make(chan time.Duration, 1)
	l.wg.Add(1)
	go func() { // ends when Ping does: an answer, the session's end, or its dead-peer bound
		defer l.wg.Done()
		for _, s := range sessions {
			if rtt, err := s.Ping(); err == nil {
				res <- rtt
				return
			}
		}
		res <- 0
	}()
	t := time.NewTimer(pingWait)
	defer t.Stop()
	select {
	case rtt := <-res:
		return rtt
	case <-t.C:
		return 0
	case <-l.ctx.Done():
		return 0
	}
}

// Close ends every session and waits for the link's goroutines, including
// open inbound streams (Pipe ends them when the context is cancelled).
func (l *tunnelLink) Close() error {
	l.mu.Lock()
	l.cancel()
	l.mu.Unlock()
	err := l.pool.Close()
	l.wg.Wait()
	l.finish(errors.New("tunnel closed by the daemon"))
	return err
}

package tunnel

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"sync"
	"time"
)

// Pool holds several sessions to the same peer (each over its own
// connection) and spreads new streams across them. A session that ends is
// dropped and reported to onDead; the pool works while one session lives.
type Pool struct {
	log    *slog.Logger
	onDead func(*Session, error)
	now    func() time.Time // the clock; tests replace it

	mu       sync.Mutex
	sessions []*Session
	load     map[*Session]*sessionLoad
	closed   bool
	wg       sync.WaitGroup
	stop     chan struct{}
}

// Picking a session for a new stream: the fewest open streams, and among
// sessions with as few, the least recent traffic. A small request put on
// the connection that carries a download queues behind up to a window of
// it (see PROTOCOL.md, "Pool"). Traffic only breaks ties: the estimate
// below registers a transfer that just started slowly (over loadTau) and
// one that just ended as still busy, so weighing it against stream counts
// can send a request onto a download that has just begun, where counting
// streams never does (a version that did measured 2.1x and 3.2x raw TCP
// for the pool's p99 behind bulk, against 1.8-2.4x without it; too few
// runs to prove the cause; PROTOCOL.md, "Changelog").
//
// loadTau is the time constant over which a session's traffic is
// forgotten: load is about the bytes moved in the last loadTau.
const loadTau = time.Second

// sessionLoad is the pool's view of one session's recent traffic, updated
// when the pool picks.
type sessionLoad struct {
	bytes uint64    // payload bytes in + out when last seen
	at    time.Time // when last seen
	load  float64   // bytes moved recently, decaying with loadTau
}

// observe folds in the bytes moved since the last observation. When they
// were moved is not known, only that it was within the interval, so they
// are weighted as if spread evenly over it: a transfer that ended long
// before the pool looked weighs little.
func (l *sessionLoad) observe(now time.Time, bytes uint64) float64 {
	dt := now.Sub(l.at).Seconds() / loadTau.Seconds()
	delta := float64(bytes - l.bytes)
	decay := math.Exp(-dt)
	if dt > 1e-6 {
		delta *= (1 - decay) / dt
	}
	l.load = l.load*decay + delta
	l.bytes, l.at = bytes, now
	return l.load
}

// NewPool returns an empty pool. onDead (may be nil) is called exactly once
// for each session that ends while in the pool, with the session's Err,
// from the pool's watcher goroutine or from the Open that found it dead;
// it must not block for long. It is not called for sessions closed by
// Pool.Close.
func NewPool(logger *slog.Logger, onDead func(s *Session, err error)) *Pool {
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	return &Pool{log: logger, onDead: onDead, now: time.Now, load: map[*Session]*sessionLoad{}, stop: make(chan struct{})}
}

// Add puts a live session into the pool. Adding to a closed pool closes s.
func (p *Pool) Add(s *Session) {
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		_ = s.Close()
		return
	}
	p.sessions = append(p.sessions, s)
	p.load[s] = &sessionLoad{bytes: s.payloadBytes(), at: p.now()}
	p.wg.Add(1)
	p.mu.Unlock()
	go p.watch(s)
}

func (p *Pool) watch(s *Session) {
	defer p.wg.Done()
	select {
	case <-s.Done():
	case <-p.stop:
		return
	}
	p.drop(s)
}

// drop removes the dead session s and reports it to onDead, once: whichever
// of its watcher and an Open sees it dead first does so.
func (p *Pool) drop(s *Session) {
	if !p.remove(s) {
		return
	}
	p.log.Warn("tunnel session left the pool", "peer", s.RemoteAddr().String(), "err", s.Err(), "remaining", p.Len())
	if p.onDead != nil {
		p.onDead(s, s.Err())
	}
}

// remove drops s and reports whether it was still in the pool.
func (p *Pool) remove(s *Session) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	for i, x := range p.sessions {
		if x == s {
			p.sessions = append(p.sessions[:i:i], p.sessions[i+1:]...)
			delete(p.load, s)
			return true
		}
	}
	return false
}

// Remove takes s out of the pool without closing it: no new stream is
// opened on it once Remove returns (a pick made before counts in s.Busy
// until its Open returns). onDead is not called for it.
func (p *Pool) Remove(s *Session) {
	p.remove(s)
}

// Len is the number of sessions in the pool.
func (p *Pool) Len() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return len(p.sessions)
}

// Sessions returns the sessions in the pool.
func (p *Pool) Sessions() []*Session {
	p.mu.Lock()
	defer p.mu.Unlock()
	return append([]*Session(nil), p.sessions...)
}

// Open opens a stream on the live session with the fewest open streams,
// of those the one that moved the least in about the last loadTau. If that
// session turns out to be dead, it is dropped and the next one is tried; a
// peer's answer (a *DialError) is returned as is.
func (p *Pool) Open(ctx context.Context, h Header) (*Stream, error) {
	return p.open(ctx, h, (*Session).Open)
}

// OpenEarly is Open with Session.OpenEarly: the stream is returned once
// its header is sent; its first Read says whether the peer connected it.
// A session found dead while opening is skipped as in Open.
func (p *Pool) OpenEarly(ctx context.Context, h Header) (*Stream, error) {
	return p.open(ctx, h, (*Session).OpenEarly)
}

func (p *Pool) open(ctx context.Context, h Header, open func(*Session, context.Context, Header) (*Stream, error)) (*Stream, error) {
	tried := map[*Session]bool{}
	var lastErr error
	for {
		s := p.pick(tried)
		if s == nil {
			if lastErr != nil {
				return nil, fmt.Errorf("%w (last error: %v)", ErrNoSession, lastErr)
			}
			return nil, ErrNoSession
		}
		tried[s] = true
		st, err := open(s, ctx, h)
		s.inFlight.Add(-1) // pick's reservation; Open counts the stream now
		if err == nil {
			return st, nil
		}
		var de *DialError
		if errors.As(err, &de) || ctx.Err() != nil {
			return nil, err
		}
		select {
		case <-s.Done():
			lastErr = err
			p.drop(s)
			continue
		default:
		}
		return nil, err
	}
}

// pick chooses the session for a new stream (and reserves it, see Open): one whose peer is not
// draining when there is any (a draining peer serves only what it has),
// then the fewest streams, then the least recent traffic.
func (p *Pool) pick(skip map[*Session]bool) *Session {
	p.mu.Lock()
	defer p.mu.Unlock()
	var best *Session
	var bestStreams int
	var bestLoad float64
	bestDraining := false
	now := p.now()
	for _, s := range p.sessions {
		load := p.load[s].observe(now, s.payloadBytes())
		if skip[s] {
			continue
		}
		select {
		case <-s.Done():
			continue
		default:
		}
		draining := isClosed(s.Draining())
		n := s.NumStreams()
		switch {
		case best == nil,
			bestDraining && !draining,
			draining == bestDraining && (n < bestStreams || (n == bestStreams && load < bestLoad)):
			best, bestStreams, bestLoad, bestDraining = s, n, load, draining
		}
	}
	if best != nil {
		// Reserved under the lock, so a Remove that follows sees it in
		// Busy; Open releases it.
		best.inFlight.Add(1)
	}
	return best
}

func isClosed(ch <-chan struct{}) bool {
	select {
	case <-ch:
		return true
	default:
		return false
	}
}

// Close closes every session in the pool and waits for the pool's
// goroutines. onDead is not called for them.
func (p *Pool) Close() error {
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		return nil
	}
	p.closed = true
	ss := p.sessions
	p.sessions = nil
	clear(p.load)
	close(p.stop)
	p.mu.Unlock()
	p.wg.Wait()
	var wg sync.WaitGroup
	for _, s := range ss {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_ = s.Close()
		}()
	}
	wg.Wait()
	return nil
}

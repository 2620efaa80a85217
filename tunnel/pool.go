package tunnel

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
)

// Pool holds several sessions to the same peer (each over its own
// connection) and spreads new streams across them. A session that ends is
// dropped and reported to onDead; the pool works while one session lives.
type Pool struct {
	log    *slog.Logger
	onDead func(*Session, error)

	mu       sync.Mutex
	sessions []*Session
	closed   bool
	wg       sync.WaitGroup
	stop     chan struct{}
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
	return &Pool{log: logger, onDead: onDead, stop: make(chan struct{})}
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
			return true
		}
	}
	return false
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

// Open opens a stream on the live session with the fewest open streams. If
// that session turns out to be dead, it is dropped and the next one is
// tried; a peer's answer (a *DialError) is returned as is.
func (p *Pool) Open(ctx context.Context, h Header) (*Stream, error) {
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
		st, err := s.Open(ctx, h)
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

func (p *Pool) pick(skip map[*Session]bool) *Session {
	p.mu.Lock()
	defer p.mu.Unlock()
	var best *Session
	for _, s := range p.sessions {
		if skip[s] {
			continue
		}
		select {
		case <-s.Done():
			continue
		default:
		}
		if best == nil || s.NumStreams() < best.NumStreams() {
			best = s
		}
	}
	return best
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

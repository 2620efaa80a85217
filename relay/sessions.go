package relay

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/sbx-dev/sbx/tunnel"
)

// replacedReason is what the old daemon hears when a newer one takes over.
const replacedReason = "replaced by a newer sbx daemon for this sandbox (another client id connected with the sandbox token)"

// sessionSet holds the one laptop a sandbox has: the tunnel sessions of one
// client id, pooled. A session from a new client id replaces them all.
type sessionSet struct {
	log *slog.Logger
	m   *metrics
	now func() time.Time

	mu       sync.Mutex
	clientID string
	pool     *tunnel.Pool
	gen      uint64 // bumped whenever the pool is replaced
	live     int    // sessions of the current pool not yet done
	closed   bool
	// online is closed while live > 0; a fresh open channel is installed
	// when the last session ends, so waiters block until the next one.
	online chan struct{}
	// offline is closed while live == 0 (the mirror of online).
	offline      chan struct{}
	offlineSince time.Time
	everOnline   bool

	bg sync.WaitGroup // replaced pools being closed
}

func newSessionSet(log *slog.Logger, m *metrics, now func() time.Time) *sessionSet {
	off := make(chan struct{})
	close(off)
	return &sessionSet{log: log, m: m, now: now, online: make(chan struct{}), offline: off, offlineSince: now()}
}

// add makes s (already handshaken, from hello) part of the laptop's pool and
// returns a func that the session's owner calls once s is done. Sessions of
// another client id are closed with a reason first.
func (ss *sessionSet) add(s *tunnel.Session, hello tunnel.Hello) (func(), error) {
	ss.mu.Lock()
	if ss.closed {
		ss.mu.Unlock()
		return nil, errors.New("relay is shutting down")
	}
	var old *tunnel.Pool
	if ss.pool != nil && ss.clientID != hello.ClientID {
		old = ss.pool
		ss.log.Info("newer daemon connected; replacing the old one's sessions",
			"oldClientID", ss.clientID, "newClientID", hello.ClientID, "user", hello.User, "oldSessions", ss.live)
		ss.m.replaced.Add(float64(ss.live))
		ss.pool, ss.live = nil, 0
	}
	if ss.pool == nil {
		ss.gen++
		ss.clientID = hello.ClientID
		gen := ss.gen
		ss.pool = tunnel.NewPool(ss.log, func(_ *tunnel.Session, err error) {
			ss.log.Debug("pool dropped a dead session", "err", err, "generation", gen)
		})
	}
	ss.pool.Add(s)
	ss.live++
	gen := ss.gen
	select {
	case <-ss.online: // already online (a replacement keeps it so)
	default:
		close(ss.online)
		ss.offline = make(chan struct{})
	}
	ss.everOnline = true
	ss.m.sessions.Set(float64(ss.live))
	ss.mu.Unlock()

	if old != nil {
		// In the background: the new session serves at once while the
		// old daemon is told why it lost.
		ss.bg.Add(1)
		go func() {
			defer ss.bg.Done()
			closePool(old, tunnel.CodeReplaced, replacedReason)
		}()
	}
	var once sync.Once
	return func() { once.Do(func() { ss.done(gen) }) }, nil
}

// notifyDraining tells every session's daemon that this relay is shutting
// down (tunnel.Session.NotifyDraining).
func (ss *sessionSet) notifyDraining(reason string) {
	ss.mu.Lock()
	p := ss.pool
	ss.mu.Unlock()
	if p == nil {
		return
	}
	for _, s := range p.Sessions() {
		s.NotifyDraining(reason)
	}
}

// closePool closes every session of p telling the peer why (code lets the
// peer match the reason with errors.Is, e.g. tunnel.ErrReplaced so a
// replaced daemon stops reconnecting), then the pool. Each close waits (at most a second) for the peer to read the
// reason, so the sessions are closed in parallel.
func closePool(p *tunnel.Pool, code tunnel.HandshakeCode, reason string) {
	var wg sync.WaitGroup
	for _, s := range p.Sessions() {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_ = s.CloseWithCode(code, reason)
		}()
	}
	wg.Wait()
	_ = p.Close()
}

// done records the end of one session of generation gen.
func (ss *sessionSet) done(gen uint64) {
	ss.mu.Lock()
	if gen != ss.gen || ss.live == 0 {
		ss.mu.Unlock()
		return // its pool was replaced; the replacement already reset live
	}
	ss.live--
	ss.m.sessions.Set(float64(ss.live))
	var dead *tunnel.Pool
	if ss.live == 0 {
		dead = ss.goOffline()
	}
	ss.mu.Unlock()
	closeDead(dead)
}

// goOffline must be called with mu held and live == 0. It returns the
// emptied pool for the caller to close after unlocking.
func (ss *sessionSet) goOffline() *tunnel.Pool {
	select {
	case <-ss.online:
		ss.online = make(chan struct{})
		close(ss.offline)
	default:
	}
	ss.offlineSince = ss.now()
	ss.log.Info("laptop offline: no tunnel session left", "clientID", ss.clientID)
	p := ss.pool
	if p != nil {
		ss.pool = nil
		ss.gen++
	}
	return p
}

// closeDead closes a pool whose sessions have all ended.
func closeDead(p *tunnel.Pool) {
	if p != nil {
		_ = p.Close()
	}
}

// current returns the pool if a session is up, otherwise nil and the
// channel that is closed when one arrives.
func (ss *sessionSet) current() (*tunnel.Pool, <-chan struct{}) {
	ss.mu.Lock()
	defer ss.mu.Unlock()
	if ss.live > 0 {
		return ss.pool, nil
	}
	return nil, ss.online
}

// whenOffline returns a channel that is closed once no session is up.
func (ss *sessionSet) whenOffline() <-chan struct{} {
	ss.mu.Lock()
	defer ss.mu.Unlock()
	return ss.offline
}

// refresh is called when the pool reported no live session although sessions
// were counted: their Done has not been seen yet. It makes the set offline
// right away so waiters block instead of spinning.
func (ss *sessionSet) refresh(p *tunnel.Pool) {
	for _, s := range p.Sessions() {
		select {
		case <-s.Done():
		default:
			return // one is alive: the open failed for another reason
		}
	}
	ss.mu.Lock()
	var dead *tunnel.Pool
	if ss.pool == p && ss.live > 0 {
		ss.live = 0
		ss.m.sessions.Set(0)
		dead = ss.goOffline()
	}
	ss.mu.Unlock()
	closeDead(dead)
}

// offlineState reports when the laptop went offline and whether it was ever
// online, for 503 bodies.
func (ss *sessionSet) offlineState() (time.Time, bool) {
	ss.mu.Lock()
	defer ss.mu.Unlock()
	return ss.offlineSince, ss.everOnline
}

// errOffline is returned by wait when no session arrived in time.
var errOffline = errors.New("laptop offline")

// wait returns the pool as soon as a session is up, or errOffline after
// grace, or ctx's error.
func (ss *sessionSet) wait(ctx context.Context, deadline time.Time) (*tunnel.Pool, error) {
	for {
		p, online := ss.current()
		if p != nil {
			return p, nil
		}
		d := time.Until(deadline)
		if d <= 0 {
			return nil, errOffline
		}
		t := time.NewTimer(d)
		select {
		case <-online:
			t.Stop()
		case <-t.C:
			return nil, errOffline
		case <-ctx.Done():
			t.Stop()
			return nil, ctx.Err()
		}
	}
}

// closeAll closes every session with reason and refuses new ones.
// It waits for replaced pools still being closed.
func (ss *sessionSet) closeAll(reason string) {
	ss.mu.Lock()
	ss.closed = true
	p := ss.pool
	ss.mu.Unlock()
	if p != nil {
		closePool(p, 0, reason)
	}
	ss.bg.Wait()
}

// describe is a one-line state summary for logs.
func (ss *sessionSet) describe() string {
	ss.mu.Lock()
	defer ss.mu.Unlock()
	if ss.live > 0 {
		return fmt.Sprintf("online: %d session(s) from client %s", ss.live, ss.clientID)
	}
	return "offline since " + ss.offlineSince.UTC().Format(time.RFC3339)
}

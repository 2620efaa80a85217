package relay

import (
	"net"
	"sync"
	"sync/atomic"
	"time"
)

// Inbound connections that wait for nothing.
//
// The mesh keeps connections to the relay open between requests (Envoy's
// upstream idle timeout is an hour), and each one holds a tunnel stream and
// one of MaxStreams slots for as long as it is open. While the relay drains
// after SIGTERM, such a connection kept the drain waiting its whole timeout
// although no request was in flight.
//
// The relay pipes bytes; it does not parse the protocol. It judges a
// connection by who spoke last: when the last bytes went to the caller (an
// answer) and the caller has sent nothing since, the caller's turn has come
// and nothing is pending on the laptop's side. Such a connection is closed
// after Options.IdleTimeout, and after drainQuiet while the relay drains. A
// request waiting for the laptop (a process paused in a debugger) is never
// idle by this rule: its last bytes came from the caller.
//
// Closing a connection the caller considers reusable races a request sent
// at that instant; callers (Envoy, Go's http.Transport) drop pooled
// connections they see closed, so only a request sent within the round
// trip of the close can fail, as with any server's idle timeout.

// drainQuiet is how long a connection must have been waiting for its
// caller before a draining relay closes it.
const drainQuiet = time.Second

// quietConn records who spoke last on an inbound connection.
type quietConn struct {
	net.Conn
	base time.Time
	// last is the time of the last transfer (nanoseconds since base);
	// callerLast says whether the caller sent it.
	last       atomic.Int64
	callerLast atomic.Bool
	closed     atomic.Bool
}

func (c *quietConn) Read(p []byte) (int, error) {
	n, err := c.Conn.Read(p)
	if n > 0 {
		c.callerLast.Store(true)
		c.last.Store(int64(time.Since(c.base)))
	}
	return n, err
}

func (c *quietConn) Write(p []byte) (int, error) {
	n, err := c.Conn.Write(p)
	if n > 0 {
		c.callerLast.Store(false)
		c.last.Store(int64(time.Since(c.base)))
	}
	return n, err
}

// CloseWrite keeps half-close working through the wrapper.
func (c *quietConn) CloseWrite() error {
	if cw, ok := c.Conn.(interface{ CloseWrite() error }); ok {
		return cw.CloseWrite()
	}
	return c.Conn.Close()
}

// waitingFor returns how long the connection has waited for its caller,
// and false when something is pending on the laptop's side.
func (c *quietConn) waitingFor(now time.Time) (time.Duration, bool) {
	if c.callerLast.Load() {
		return 0, false
	}
	return now.Sub(c.base) - time.Duration(c.last.Load()), true
}

// quietConns is the set of inbound connections being piped.
type quietConns struct {
	mu    sync.Mutex
	conns map[*quietConn]struct{}
}

// track wraps conn and adds it to the set; the caller untracks it when the
// pipe ends.
func (s *quietConns) track(conn net.Conn) *quietConn {
	c := &quietConn{Conn: conn, base: time.Now()}
	s.mu.Lock()
	if s.conns == nil {
		s.conns = map[*quietConn]struct{}{}
	}
	s.conns[c] = struct{}{}
	s.mu.Unlock()
	return c
}

func (s *quietConns) untrack(c *quietConn) {
	s.mu.Lock()
	delete(s.conns, c)
	s.mu.Unlock()
}

// closeWaiting closes every connection that has waited for its caller for
// at least quiet and returns how many it closed.
func (s *quietConns) closeWaiting(quiet time.Duration) int {
	now := time.Now()
	s.mu.Lock()
	var victims []*quietConn
	for c := range s.conns {
		if d, ok := c.waitingFor(now); ok && d >= quiet && !c.closed.Load() {
			victims = append(victims, c)
		}
	}
	s.mu.Unlock()
	for _, c := range victims {
		c.closed.Store(true)
		_ = c.Conn.Close()
	}
	return len(victims)
}

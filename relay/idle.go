package relay

import (
	"cmp"
	"net"
	"slices"
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
// and nothing is pending on the laptop's side. While the relay drains, such
// a connection is closed after drainQuiet. A request waiting for the laptop
// (a process paused in a debugger) is never idle by this rule: its last
// bytes came from the caller.
//
// While serving, the rule cannot tell a keep-alive connection between
// requests from a response that streams with long gaps (server-sent
// events, a gRPC server stream, a WebSocket push): in both the laptop's
// side spoke last. Istio's sidecars keep such streams open however long
// they are quiet (they set Envoy's stream idle timeout to 0), so closing
// them would treat keyed requests differently from the baseline's. The
// relay therefore closes quiet connections only when stream slots run
// short: once more than half of MaxStreams are in use, connections that
// have waited for their caller for at least Options.IdleTimeout are
// closed, the longest-waiting first, until half are free again. Below
// that, a quiet connection costs one slot and nothing else.
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
		c.callerSpoke()
	}
	return n, err
}

// callerSpoke records bytes from the caller, read through c or before it
// was tracked (early data).
func (c *quietConn) callerSpoke() {
	c.callerLast.Store(true)
	c.last.Store(int64(time.Since(c.base)))
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
func (c *quietConn) CloseWrite() error { return closeWrite(c.Conn) }

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

// closeWaiting closes connections that have waited for their caller for
// at least quiet, the longest-waiting first, at most max of them (max < 0:
// all), and returns how many it closed.
func (s *quietConns) closeWaiting(quiet time.Duration, max int) int {
	now := time.Now()
	type victim struct {
		c    *quietConn
		wait time.Duration
	}
	s.mu.Lock()
	var victims []victim
	for c := range s.conns {
		if d, ok := c.waitingFor(now); ok && d >= quiet && !c.closed.Load() {
			victims = append(victims, victim{c, d})
		}
	}
	s.mu.Unlock()
	if max >= 0 && len(victims) > max {
		slices.SortFunc(victims, func(a, b victim) int { return cmp.Compare(b.wait, a.wait) })
		victims = victims[:max]
	}
	for _, v := range victims {
		v.c.closed.Store(true)
		_ = v.c.Conn.Close()
	}
	return len(victims)
}

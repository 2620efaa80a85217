package relay

import (
	"net"
	"runtime"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/sbx-dev/sbx/tunnel"
	"github.com/sbx-dev/sbx/tunnel/tunneltest"
)

func heapInUse() uint64 {
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return ms.HeapInuse
}

// TestPreAuthFloodIsBounded: connections that never authenticate cost the
// relay a bounded read each, not a multiplexer with stream windows: a
// flood of yamux stream openings and data from many connections leaves its
// heap nearly where it was, and a daemon with the token still connects
// during the flood.
func TestPreAuthFloodIsBounded(t *testing.T) {
	h := startRelay(t)
	before := heapInUse()

	stop := make(chan struct{})
	var wg sync.WaitGroup
	const flooders = 8
	for range flooders {
		conn, err := net.Dial("tcp", h.addrs.Tunnel.String())
		require.NoError(t, err)
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer conn.Close()
			for {
				tunneltest.PreAuthFlood(conn, stop)
				select {
				case <-stop:
					return
				default:
				}
				// The relay hung up on the garbage: come back.
				conn.Close()
				c, err := net.Dial("tcp", h.addrs.Tunnel.String())
				if err != nil {
					return
				}
				conn = c
			}
		}()
	}
	// And connections that send nothing at all hold pending slots.
	var idle []net.Conn
	for range maxPendingHandshakes / 2 {
		c, err := net.Dial("tcp", h.addrs.Tunnel.String())
		require.NoError(t, err)
		idle = append(idle, c)
	}
	time.Sleep(300 * time.Millisecond)

	lap := newLaptop(t, "laptop-1")
	lap.connect(h, 1)

	during := heapInUse()
	close(stop)
	wg.Wait()
	for _, c := range idle {
		c.Close()
	}
	grew := int64(during) - int64(before)
	t.Logf("relay heap in use: %d KiB before, %d KiB during the flood (%+d KiB)", before>>10, during>>10, grew>>10)
	// An earlier relay grew by ~255 MiB per flooding connection; the
	// bound leaves room for the test's own buffers and the one session.
	require.Less(t, grew, int64(16<<20), "heap grew by %d KiB under a pre-auth flood", grew>>10)
	require.Positive(t, h.metric("sbx_relay_handshakes_total", "result", "error"), "the garbage was refused")
}

// TestPendingHandshakesAreCapped: beyond maxPendingHandshakes connections
// that have not sent their Hello, each new one closes the oldest, each
// pending one is closed after helloTimeout, and a daemon still gets in
// while idle connections are opened as fast as they go.
func TestPendingHandshakesAreCapped(t *testing.T) {
	h := startRelay(t)
	var mu sync.Mutex
	var idle []net.Conn
	defer func() {
		mu.Lock()
		defer mu.Unlock()
		for _, c := range idle {
			c.Close()
		}
	}()
	open := func() net.Conn {
		c, err := net.Dial("tcp", h.addrs.Tunnel.String())
		require.NoError(t, err)
		mu.Lock()
		idle = append(idle, c)
		mu.Unlock()
		return c
	}
	first := open()
	for range maxPendingHandshakes {
		open()
	}
	// The oldest was closed to make room.
	_ = first.SetReadDeadline(time.Now().Add(helloTimeout / 2))
	var b [1]byte
	_, err := first.Read(b[:])
	require.Error(t, err)
	require.False(t, isTimeout(err), "the relay closed the oldest pending connection: %v", err)
	require.Positive(t, h.metric("sbx_relay_handshakes_total", "result", "too_many_pending"))

	// A flood of idle connections, renewed continuously, does not lock the
	// laptop out.
	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			select {
			case <-stop:
				return
			default:
			}
			c, err := net.Dial("tcp", h.addrs.Tunnel.String())
			if err != nil {
				continue
			}
			mu.Lock()
			idle = append(idle, c)
			mu.Unlock()
		}
	}()
	// On a loaded machine the flood can still push a pending handshake
	// out before the relay reads its Hello; the daemon then retries, as
	// here (with a short pause instead of its backoff), and gets in.
	lap := newLaptop(t, "laptop-1")
	var s *tunnel.Session
	var errs []error
	for attempt := 0; s == nil && attempt < 50; attempt++ {
		if s, err = lap.dial(h, lap.hello()); err != nil {
			errs = append(errs, err)
			time.Sleep(10 * time.Millisecond)
		}
	}
	close(stop)
	wg.Wait()
	require.NotNil(t, s, "the laptop never got in during the flood: %v", errs)
	t.Logf("the laptop got in after %d refused attempt(s)", len(errs))
	require.Eventually(t, func() bool { return h.metric("sbx_relay_sessions") == 1 }, 10*time.Second, 5*time.Millisecond)

	// A pending connection is closed once its time to send a Hello is up.
	last := open()
	_ = last.SetReadDeadline(time.Now().Add(helloTimeout + 5*time.Second))
	_, err = last.Read(b[:])
	require.Error(t, err)
	require.False(t, isTimeout(err), "the relay closed it: %v", err)
}

func isTimeout(err error) bool {
	ne, ok := err.(net.Error)
	return ok && ne.Timeout()
}

// pauseAfterWrite wraps the connections a listener accepts: once armed,
// the next connection that writes (the relay's Welcome, on the tunnel
// port) writes, reports on wrote and waits for release.
type pauseAfterWrite struct {
	net.Listener
	armed   atomic.Bool
	wrote   chan struct{}
	release chan struct{}
}

func (l *pauseAfterWrite) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	return &pausingConn{Conn: c, l: l}, nil
}

type pausingConn struct {
	net.Conn
	l *pauseAfterWrite
}

func (c *pausingConn) Write(b []byte) (int, error) {
	n, err := c.Conn.Write(b)
	if c.l.armed.CompareAndSwap(true, false) {
		close(c.l.wrote)
		<-c.l.release
	}
	return n, err
}

// TestAcceptedHandshakeIsNotEvicted: a connection whose Hello was accepted
// is no longer pending, so a flood that arrives between the Welcome and
// the session's start cannot close it under a daemon that believes it is
// in (CI saw this once: "got in", then the relay counted no session).
func TestAcceptedHandshakeIsNotEvicted(t *testing.T) {
	var tunnelL *pauseAfterWrite
	h := startRelayWith(t, func(d *Deps) {
		d.Listen = func(network, addr string) (net.Listener, error) {
			l, err := loopbackListen(network, addr)
			if err != nil || tunnelL != nil {
				return l, err
			}
			// The tunnel listener is bound first.
			tunnelL = &pauseAfterWrite{Listener: l, wrote: make(chan struct{}), release: make(chan struct{})}
			return tunnelL, nil
		}
	})
	require.NotNil(t, tunnelL)
	require.Equal(t, h.addrs.Tunnel.String(), tunnelL.Addr().String(), "the tunnel listener is the first one bound")

	tunnelL.armed.Store(true)
	lap := newLaptop(t, "laptop-1")
	type result struct {
		s   *tunnel.Session
		err error
	}
	dialed := make(chan result, 1)
	go func() {
		s, err := lap.dial(h, lap.hello())
		dialed <- result{s, err}
	}()
	<-tunnelL.wrote

	// The Welcome is out; a full set of pending connections arrives, one
	// more than the cap, so the oldest pending one is evicted.
	var idle []net.Conn
	defer func() {
		for _, c := range idle {
			c.Close()
		}
	}()
	for range maxPendingHandshakes + 1 {
		c, err := net.Dial("tcp", h.addrs.Tunnel.String())
		require.NoError(t, err)
		idle = append(idle, c)
	}
	require.Eventually(t, func() bool { return h.metric("sbx_relay_handshakes_total", "result", "too_many_pending") >= 1 }, 10*time.Second, 5*time.Millisecond)
	close(tunnelL.release)

	r := <-dialed
	require.NoError(t, r.err)
	require.Eventually(t, func() bool { return h.metric("sbx_relay_sessions") == 1 }, 10*time.Second, 5*time.Millisecond)
	// The evicted one was an idle connection, not the laptop's.
	select {
	case <-r.s.Done():
		t.Fatalf("the relay closed the laptop's accepted session: %v", r.s.Err())
	case <-time.After(200 * time.Millisecond):
	}
	_ = idle[0].SetReadDeadline(time.Now().Add(helloTimeout / 2))
	var b [1]byte
	_, err := idle[0].Read(b[:])
	require.Error(t, err)
	require.False(t, isTimeout(err), "the oldest idle connection was the one closed: %v", err)
}

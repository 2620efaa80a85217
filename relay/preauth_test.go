package relay

import (
	"encoding/binary"
	"net"
	"runtime"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// yamuxFlood writes what an unauthenticated peer sent to make an earlier
// relay buffer a quarter of a GiB: yamux frames opening streams and filling
// their windows, as fast as the connection takes them, until stop closes.
func yamuxFlood(conn net.Conn, stop <-chan struct{}) {
	payload := make([]byte, 64<<10)
	hdr := make([]byte, 12)
	for id := uint32(1); ; id += 2 {
		select {
		case <-stop:
			return
		default:
		}
		// Window update with SYN opens stream id, then a data frame.
		hdr[0], hdr[1] = 0, 1
		binary.BigEndian.PutUint16(hdr[2:4], 1)
		binary.BigEndian.PutUint32(hdr[4:8], id)
		binary.BigEndian.PutUint32(hdr[8:12], 0)
		if _, err := conn.Write(hdr); err != nil {
			return
		}
		hdr[1] = 0
		binary.BigEndian.PutUint16(hdr[2:4], 0)
		binary.BigEndian.PutUint32(hdr[8:12], uint32(len(payload)))
		if _, err := conn.Write(hdr); err != nil {
			return
		}
		if _, err := conn.Write(payload); err != nil {
			return
		}
	}
}

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
				yamuxFlood(conn, stop)
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
// that have not sent their Hello, new ones are closed at once, and each
// pending one is closed after helloTimeout.
func TestPendingHandshakesAreCapped(t *testing.T) {
	h := startRelay(t)
	var idle []net.Conn
	defer func() {
		for _, c := range idle {
			c.Close()
		}
	}()
	for range maxPendingHandshakes {
		c, err := net.Dial("tcp", h.addrs.Tunnel.String())
		require.NoError(t, err)
		idle = append(idle, c)
	}
	require.Eventually(t, func() bool {
		c, err := net.Dial("tcp", h.addrs.Tunnel.String())
		if err != nil {
			return false
		}
		defer c.Close()
		_ = c.SetReadDeadline(time.Now().Add(2 * time.Second))
		var b [1]byte
		_, err = c.Read(b[:])
		return err != nil && !isTimeout(err) // closed by the relay, not left waiting
	}, 10*time.Second, 20*time.Millisecond)
	require.Positive(t, h.metric("sbx_relay_handshakes_total", "result", "too_many_pending"))

	// A pending connection is closed once its time to send a Hello is up.
	_ = idle[0].SetReadDeadline(time.Now().Add(helloTimeout + 5*time.Second))
	var b [1]byte
	_, err := idle[0].Read(b[:])
	require.Error(t, err)
	require.False(t, isTimeout(err), "the relay closed it: %v", err)
}

func isTimeout(err error) bool {
	ne, ok := err.(net.Error)
	return ok && ne.Timeout()
}

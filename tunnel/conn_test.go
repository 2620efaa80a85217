package tunnel

import (
	"bytes"
	"encoding/binary"
	"io"
	"math/rand/v2"
	"net"
	"sync"
	"testing"

	"github.com/stretchr/testify/require"
)

// recordConn records every Write it gets; it is not a *net.TCPConn, so
// wireConn cannot hand it net.Buffers (as with a port-forward connection,
// where each Write becomes its own SPDY frame and WebSocket message).
type recordConn struct {
	net.Conn
	mu     sync.Mutex
	writes [][]byte
}

func (r *recordConn) Write(p []byte) (int, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.writes = append(r.writes, bytes.Clone(p))
	return len(p), nil
}

// writeDataFrame writes a yamux data frame carrying body through w as
// yamux's send loop does (header, then body) and returns the header.
func writeDataFrame(t *testing.T, w *wireConn, body []byte) []byte {
	t.Helper()
	hdr := dataHeader(len(body))
	n, err := w.Write(hdr)
	require.NoError(t, err)
	require.Equal(t, len(hdr), n)
	n, err = w.Write(body)
	require.NoError(t, err)
	require.Equal(t, len(body), n)
	return hdr
}

func dataHeader(length int) []byte {
	h := make([]byte, yamuxHeaderSize)
	h[0], h[1] = 0, yamuxTypeData
	binary.BigEndian.PutUint32(h[4:8], 3) // stream id
	binary.BigEndian.PutUint32(h[8:12], uint32(length))
	return h
}

// TestWireConnOneWritePerFrame: a data frame's header and body reach the
// connection in one Write whatever the body's size when the connection
// cannot do vectored writes; other frames pass through unchanged.
func TestWireConnOneWritePerFrame(t *testing.T) {
	for _, size := range []int{1, 1024, coalesceCopyMax, coalesceCopyMax + 1, 128 << 10, 1 << 20} {
		rc := &recordConn{}
		w := newWireConn(rc, false)
		require.False(t, w.vectored)
		body := bytes.Repeat([]byte{0xab}, size)
		hdr := dataHeader(size)
		n, err := w.Write(hdr)
		require.NoError(t, err)
		require.Equal(t, len(hdr), n)
		require.Empty(t, rc.writes, "the header waits for its body")
		n, err = w.Write(body)
		require.NoError(t, err)
		require.Equal(t, size, n)
		require.Len(t, rc.writes, 1, "size %d", size)
		require.Equal(t, append(hdr, body...), rc.writes[0])

		// A window update (no body) goes out as it is.
		upd := make([]byte, yamuxHeaderSize)
		upd[1] = 1
		_, err = w.Write(upd)
		require.NoError(t, err)
		require.Len(t, rc.writes, 2)
		require.Equal(t, upd, rc.writes[1])
	}
}

// TestWireConnVectoredOnTCP: on TCP, large bodies go out with writev
// instead of being copied.
func TestWireConnVectoredOnTCP(t *testing.T) {
	c, peer := tcpPair(t, nil)
	defer c.Close()
	defer peer.Close()
	w := newWireConn(c, false)
	require.True(t, w.vectored)

	body := bytes.Repeat([]byte{0xef}, coalesceCopyMax+1)
	hdr := writeDataFrame(t, w, body)
	require.Zero(t, cap(w.scratch), "the body was not copied behind the header")
	got := make([]byte, len(hdr)+len(body))
	_, err := io.ReadFull(peer, got)
	require.NoError(t, err)
	require.Equal(t, append(hdr, body...), got)
}

// TestWireConnSplitHeaderWrites: with Config.SplitHeaderWrites a data
// frame's header and body reach the connection as yamux wrote them.
func TestWireConnSplitHeaderWrites(t *testing.T) {
	rc := &recordConn{}
	w := newWireConn(rc, true)
	body := bytes.Repeat([]byte{0xab}, 1000)
	hdr := writeDataFrame(t, w, body)
	require.Equal(t, [][]byte{hdr, body}, rc.writes)
}

// TestWireConnKeepsBytesInOrder: whatever sequence of Writes reaches it,
// including headers followed by something other than their body, wireConn
// sends the same bytes in the same order and reports every Write whole;
// headers it could not join are counted. So a change in yamux's write
// pattern can cost the join's gain, never the stream's bytes.
func TestWireConnKeepsBytesInOrder(t *testing.T) {
	r := rand.New(rand.NewPCG(3, 4))
	for _, vectored := range []bool{false, true} {
		for round := range 200 {
			rc := &recordConn{}
			w := newWireConn(rc, false)
			w.vectored = vectored // net.Buffers fall back to one Write per buffer here
			var in []byte
			var headers, bodies int
			for range 1 + r.IntN(20) {
				var p []byte
				switch r.IntN(5) {
				case 0, 1: // a data header, then (usually) its body
					n := 1 + r.IntN(40<<10)
					p = dataHeader(n)
					if r.IntN(3) > 0 {
						headers++
						bodies++
						in = append(in, p...)
						k, err := w.Write(p)
						require.NoError(t, err)
						require.Equal(t, len(p), k)
						p = bytes.Repeat([]byte{byte(round)}, n)
					} else {
						headers++
					}
				case 2: // a header-like write announcing no body
					p = dataHeader(0)
				case 3: // a window update
					p = make([]byte, yamuxHeaderSize)
					p[1] = 1
				default: // anything else
					p = make([]byte, r.IntN(100))
					for i := range p {
						p[i] = byte(r.Uint32())
					}
				}
				in = append(in, p...)
				k, err := w.Write(p)
				require.NoError(t, err)
				require.Equal(t, len(p), k)
			}
			w.mu.Lock()
			if w.pendingLen > 0 { // a header still held: the next Write sends it
				w.mu.Unlock()
				_, err := w.Write([]byte{0xff})
				require.NoError(t, err)
				in = append(in, 0xff)
			} else {
				w.mu.Unlock()
			}
			require.Equal(t, in, bytes.Join(rc.writes, nil), "round %d", round)
			joined, fallbacks := w.writeStats()
			require.LessOrEqual(t, joined, bodies)
			require.Equal(t, headers, joined+fallbacks, "round %d: every held header is joined or sent alone", round)
		}
	}
}

// TestWireConnConcurrentWriters: Write is safe for concurrent use (yamux
// v0.1.2 writes from one goroutine, but nothing promises that): under
// -race, writers at once lose no byte.
func TestWireConnConcurrentWriters(t *testing.T) {
	rc := &recordConn{}
	w := newWireConn(rc, false)
	var wg sync.WaitGroup
	for g := range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range 100 {
				_, _ = w.Write(dataHeader(100 + g))
				_, _ = w.Write(bytes.Repeat([]byte{byte(g)}, 100+g))
			}
		}()
	}
	wg.Wait()
	_, _ = w.Write([]byte{0xff}) // flush a header still held
	require.Len(t, bytes.Join(rc.writes, nil), 4*100*yamuxHeaderSize+100*(100+101+102+103)+1)
}

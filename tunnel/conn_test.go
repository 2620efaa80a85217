package tunnel

import (
	"bytes"
	"encoding/binary"
	"io"
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

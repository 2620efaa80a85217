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

// prefixConn sends a prefix and a body as one unit, as
// cluster/portforward.Conn does over a WebSocket.
type prefixConn struct {
	recordConn
	prefixed bool
	calls    [][2][]byte
	body     []byte // the caller's body
	sameBody []bool // the body handed over was body itself, not a copy
}

func (p *prefixConn) PrefixedWrites() bool { return p.prefixed }

func (p *prefixConn) WritePrefixed(prefix, body []byte) (int, error) {
	p.calls = append(p.calls, [2][]byte{bytes.Clone(prefix), bytes.Clone(body)})
	p.sameBody = append(p.sameBody, len(body) > 0 && &body[0] == &p.body[0])
	return len(body), nil
}

// TestWireConnPrefixedWrites: on a connection that can send header and
// body as one unit, a data frame's body is handed over as it is, with the
// header as prefix; a connection that says it cannot gets the joined
// Write as before.
func TestWireConnPrefixedWrites(t *testing.T) {
	body := bytes.Repeat([]byte{0xcd}, 128<<10)
	pc := &prefixConn{prefixed: true, body: body}
	w := newWireConn(pc, false)
	require.NotNil(t, w.prefixed)
	hdr := writeDataFrame(t, w, body)
	require.Equal(t, [][2][]byte{{hdr, body}}, pc.calls)
	require.Equal(t, []bool{true}, pc.sameBody, "the body is not copied")
	require.Empty(t, pc.writes)

	upd := make([]byte, yamuxHeaderSize)
	upd[1] = 1
	_, err := w.Write(upd)
	require.NoError(t, err)
	require.Equal(t, [][]byte{upd}, pc.writes, "a window update goes out as it is")

	off := &prefixConn{}
	w = newWireConn(off, false)
	require.Nil(t, w.prefixed)
	writeDataFrame(t, w, body)
	require.Empty(t, off.calls)
	require.Equal(t, [][]byte{append(hdr, body...)}, off.writes)
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

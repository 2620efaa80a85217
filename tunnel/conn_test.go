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
		w := framedWireConn(rc, false, nil)
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
	w := framedWireConn(c, false, nil)
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
	w := framedWireConn(rc, true, nil)
	body := bytes.Repeat([]byte{0xab}, 1000)
	hdr := writeDataFrame(t, w, body)
	require.Equal(t, [][]byte{hdr, body}, rc.writes)
}

// framedWireConn is a wireConn past the handshake, carrying yamux frames
// with flow control f (nil: none).
func framedWireConn(c net.Conn, split bool, f *flowControl) *wireConn {
	w := newWireConn(c, split)
	w.startFraming(f)
	return w
}

// yamuxFrame builds a frame: a header and, for a data frame, its body.
func yamuxFrame(typ uint8, flags uint16, id uint32, length uint32, body []byte) []byte {
	h := make([]byte, yamuxHeaderSize, yamuxHeaderSize+len(body))
	h[1] = typ
	binary.BigEndian.PutUint16(h[2:4], flags)
	binary.BigEndian.PutUint32(h[4:8], id)
	binary.BigEndian.PutUint32(h[8:12], length)
	return append(h, body...)
}

// randomFrames returns a valid yamux frame stream (data frames with
// bodies, empty data frames, window updates, pings) and how many data
// frames in it have a body.
func randomFrames(r *rand.Rand, tag byte) (stream []byte, bodies int) {
	for range 1 + r.IntN(20) {
		switch r.IntN(4) {
		case 0, 1:
			n := 1 + r.IntN(40<<10)
			stream = append(stream, yamuxFrame(yamuxTypeData, 0, 3, uint32(n), bytes.Repeat([]byte{tag}, n))...)
			bodies++
		case 2:
			stream = append(stream, yamuxFrame(yamuxTypeData, yamuxFlagFIN, 5, 0, nil)...)
		default:
			stream = append(stream, yamuxFrame(2, yamuxFlagSYN, 0, r.Uint32(), nil)...) // a ping
		}
	}
	return stream, bodies
}

// TestWireConnKeepsBytesInOrder: whatever pieces a frame stream is
// written in, wireConn sends the same bytes in the same order, reports
// every Write whole and counts every data frame's header as joined or
// sent alone. So a change in yamux's write pattern can cost the join's
// gain, never the stream's bytes. Written as yamux writes (header, then
// body), every frame is joined.
func TestWireConnKeepsBytesInOrder(t *testing.T) {
	r := rand.New(rand.NewPCG(3, 4))
	for _, vectored := range []bool{false, true} {
		for round := range 200 {
			rc := &recordConn{}
			w := framedWireConn(rc, false, nil)
			w.vectored = vectored // net.Buffers fall back to one Write per buffer here
			in, bodies := randomFrames(r, byte(round))
			asYamux := round%2 == 0
			for rest := in; len(rest) > 0; {
				n := 1 + r.IntN(min(len(rest), 50<<10))
				if asYamux { // a whole header, or a whole body
					n = yamuxHeaderSize
					if w.bodyLeft > 0 {
						n = w.bodyLeft
					}
				}
				k, err := w.Write(rest[:n])
				require.NoError(t, err)
				require.Equal(t, n, k)
				rest = rest[n:]
			}
			require.Equal(t, in, bytes.Join(rc.writes, nil), "round %d", round)
			joined, fallbacks := w.writeStats()
			require.Equal(t, bodies, joined+fallbacks, "round %d: every held header is joined or sent alone", round)
			if asYamux {
				require.Equal(t, bodies, joined, "round %d", round)
			}
		}
	}
}

// TestWireConnPassesHandshakeBytes: before the session starts (the
// handshake), bytes are not yamux frames and go out as they are.
func TestWireConnPassesHandshakeBytes(t *testing.T) {
	rc := &recordConn{}
	w := newWireConn(rc, false)
	for _, p := range [][]byte{{1, 2, 3}, dataHeader(10), {0xff}} {
		_, err := w.Write(p)
		require.NoError(t, err)
	}
	require.Equal(t, [][]byte{{1, 2, 3}, dataHeader(10), {0xff}}, rc.writes)
}

// TestWireConnGrantsBetweenFrames: yamux's own window updates never
// reach the wire (plain ones are dropped, SYN/ACK/FIN/RST lose their
// delta), and flow control's grants go out only between frames, even
// when requested while a frame's header has gone out without its body.
func TestWireConnGrantsBetweenFrames(t *testing.T) {
	cfg := DefaultConfig()
	f := newFlowControl(cfg)
	rc := &recordConn{}
	w := framedWireConn(rc, true, f) // split: headers go out alone
	write := func(p []byte) {
		t.Helper()
		_, err := w.Write(p)
		require.NoError(t, err)
	}
	write(yamuxFrame(yamuxTypeWindowUpdate, yamuxFlagSYN, 7, 1<<20, nil))
	write(yamuxFrame(yamuxTypeWindowUpdate, 0, 7, 1<<20, nil))
	write(yamuxFrame(yamuxTypeWindowUpdate, yamuxFlagACK, 9, 5000, nil))
	write(yamuxFrame(2, yamuxFlagSYN, 0, 42, nil)) // pings pass as they are
	require.Equal(t, [][]byte{
		yamuxFrame(yamuxTypeWindowUpdate, yamuxFlagSYN, 7, 0, nil),
		yamuxFrame(yamuxTypeWindowUpdate, yamuxFlagACK, 9, 0, nil),
		yamuxFrame(2, yamuxFlagSYN, 0, 42, nil),
	}, rc.writes)

	// A data frame's header goes out alone; a grant comes due before its
	// body: it waits for the frame's end.
	rc.writes = nil
	write(yamuxFrame(yamuxTypeData, 0, 7, 100, nil))
	f.consumed(7, yamuxInitialWindow/grantFraction)
	require.NoError(t, w.writeGrants())
	require.Len(t, rc.writes, 1, "no grant inside a frame")
	write(bytes.Repeat([]byte{1}, 100))
	require.Equal(t, [][]byte{
		yamuxFrame(yamuxTypeData, 0, 7, 100, nil),
		bytes.Repeat([]byte{1}, 100),
		yamuxFrame(yamuxTypeWindowUpdate, 0, 7, yamuxInitialWindow/grantFraction, nil),
	}, rc.writes)
	// Between frames, the grant writer sends at once.
	rc.writes = nil
	f.consumed(7, yamuxInitialWindow/grantFraction)
	require.NoError(t, w.writeGrants())
	require.Equal(t, [][]byte{yamuxFrame(yamuxTypeWindowUpdate, 0, 7, yamuxInitialWindow/grantFraction, nil)}, rc.writes)
}

// TestWireConnConcurrentGrants: yamux's writer and the grant writer at
// once (under -race) interleave whole frames only: the output parses as
// the frames written plus grants, every body intact.
func TestWireConnConcurrentGrants(t *testing.T) {
	for _, split := range []bool{false, true} {
		f := newFlowControl(DefaultConfig())
		rc := &recordConn{}
		w := framedWireConn(rc, split, f)
		_, err := w.Write(yamuxFrame(yamuxTypeWindowUpdate, yamuxFlagSYN, 3, 0, nil))
		require.NoError(t, err)
		var wg sync.WaitGroup
		wg.Add(2)
		go func() {
			defer wg.Done()
			for i := range 200 {
				body := bytes.Repeat([]byte{byte(i)}, 100+i)
				_, _ = w.Write(yamuxFrame(yamuxTypeData, 0, 5, uint32(len(body)), nil))
				_, _ = w.Write(body)
			}
		}()
		go func() {
			defer wg.Done()
			for range 200 {
				f.consumed(3, yamuxInitialWindow/grantFraction)
				_ = w.writeGrants()
			}
		}()
		wg.Wait()
		var p frameParser
		var grants, datas int
		var credit uint32
		out := bytes.Join(rc.writes, nil)
		require.NoError(t, p.feed(out, func(typ uint8, id uint32, flags uint16, length uint32) error {
			switch {
			case typ == yamuxTypeData:
				require.Equal(t, uint32(5), id)
				require.Equal(t, uint32(100+datas), length)
				datas++
			case typ == yamuxTypeWindowUpdate && flags == 0:
				require.Equal(t, uint32(3), id)
				grants++
				credit += length
			}
			return nil
		}))
		require.Equal(t, 200, datas)
		require.Positive(t, grants)
		require.Equal(t, uint32(200*yamuxInitialWindow/grantFraction), credit, "all credit granted, none lost or doubled")
	}
}

package portforward

import (
	"bytes"
	"encoding/binary"
	"errors"
	"io"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	gwebsocket "github.com/gorilla/websocket"
	"github.com/stretchr/testify/require"
)

// wsPeer is the server end of a real WebSocket connection: gorilla checks
// every frame frameConn writes (masking, lengths, opcodes) and hands over
// the binary messages it reads.
type wsPeer struct {
	msgs  chan []byte
	pongs chan string // buffered for every pong a test expects: the server's reader must not block
	conn  chan *gwebsocket.Conn
}

// newWSPair connects a gorilla client to a gorilla server on loopback and
// returns the client's frameConn and the server's end.
func newWSPair(t *testing.T) (*frameConn, *gwebsocket.Conn, *wsPeer) {
	t.Helper()
	p := &wsPeer{msgs: make(chan []byte, 64), pongs: make(chan string, 16), conn: make(chan *gwebsocket.Conn, 1)}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		ws, err := (&gwebsocket.Upgrader{}).Upgrade(w, r, nil)
		if err != nil {
			return
		}
		defer ws.Close()
		ws.SetReadLimit(64 << 20)
		ws.SetPongHandler(func(s string) error { p.pongs <- s; return nil })
		p.conn <- ws
		defer close(p.msgs)
		for {
			typ, msg, err := ws.ReadMessage()
			if err != nil {
				return
			}
			if typ != gwebsocket.BinaryMessage {
				t.Errorf("message type %d, want binary", typ)
				return
			}
			p.msgs <- msg
		}
	}))
	t.Cleanup(srv.Close)
	ws, _, err := gwebsocket.DefaultDialer.Dial("ws"+strings.TrimPrefix(srv.URL, "http"), nil)
	require.NoError(t, err)
	t.Cleanup(func() { _ = ws.Close() })
	return newFrameConn(ws.NetConn(), ws), ws, p
}

// next returns the next message the server read.
func (p *wsPeer) next(t *testing.T) []byte {
	t.Helper()
	select {
	case m, ok := <-p.msgs:
		require.True(t, ok, "the server's connection ended")
		return m
	case <-time.After(10 * time.Second):
		t.Fatal("no message within 10s")
		return nil
	}
}

// joined reads messages until they hold n bytes, checks that none is
// longer than one WebSocket frame may be, and returns them joined.
func (p *wsPeer) joined(t *testing.T, n int) []byte {
	t.Helper()
	var got []byte
	for len(got) < n {
		m := p.next(t)
		require.LessOrEqual(t, len(m), wsMaxPayload)
		got = append(got, m...)
	}
	return got
}

// none checks that no message is waiting.
func (p *wsPeer) none(t *testing.T) {
	t.Helper()
	select {
	case m := <-p.msgs:
		t.Fatalf("unexpected message of %d bytes", len(m))
	case <-time.After(20 * time.Millisecond):
	}
}

// frame builds a SPDY data frame the way the framer writes it: two header
// words, then the payload.
func frame(stream uint32, payload []byte) [][]byte {
	var w1, w2 [4]byte
	binary.BigEndian.PutUint32(w1[:], stream)
	binary.BigEndian.PutUint32(w2[:], uint32(len(payload)))
	return [][]byte{w1[:], w2[:], payload}
}

// patterned is n bytes that do not repeat at any power-of-two period, so
// that a piece in the wrong place or masked with the wrong key phase shows.
func patterned(n int) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(i % 251)
	}
	return b
}

func TestFrameConnWritesWholeFrames(t *testing.T) {
	tests := []struct {
		name     string
		payloads []int
	}{
		{"one frame", []int{100}},
		{"empty payload (FIN)", []int{0}},
		// 125 and 126 straddle the 7-bit length, 65535 and 65536 the
		// 16-bit one.
		{"length encodings", []int{117, 118, 65527, 65528, 128 << 10}},
		{"several frames", []int{1, 0, 5000, 64 << 10}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, _, peer := newWSPair(t)
			for i, n := range tt.payloads {
				payload := make([]byte, n)
				for j := range payload {
					payload[j] = byte(j*7 + i)
				}
				var whole []byte
				for _, piece := range frame(uint32(i*2+1), payload) {
					whole = append(whole, piece...)
					if len(piece) == 0 {
						continue
					}
					k, err := c.Write(piece)
					require.NoError(t, err)
					require.Equal(t, len(piece), k)
				}
				require.Equal(t, whole, peer.next(t), "frame %d goes out whole, in one message, once complete", i)
			}
			peer.none(t)
		})
	}
}

// TestFrameConnSplitsHugeFrames: a SPDY frame longer than the largest
// WebSocket frame goes out as several messages that join up to it.
func TestFrameConnSplitsHugeFrames(t *testing.T) {
	c, _, peer := newWSPair(t)
	payload := patterned(2*wsMaxPayload + 100)
	var whole []byte
	for _, piece := range frame(3, payload) {
		whole = append(whole, piece...)
		_, err := c.Write(piece)
		require.NoError(t, err)
	}
	require.Equal(t, whole, peer.joined(t, len(whole)))
	require.LessOrEqual(t, cap(c.buf), wsMaxHeader+wsMaxPayload, "the buffer stays bounded")
}

func TestFrameConnSplitAndJoinedWrites(t *testing.T) {
	c, _, peer := newWSPair(t)
	var all []byte
	for i := range 3 {
		for _, p := range frame(uint32(i+1), []byte("payload")) {
			all = append(all, p...)
		}
	}
	// Two frames and a half in one write, the rest byte by byte: one
	// message per frame, each sent as soon as the frame is complete.
	const f = 8 + 7
	cut := 2*f + 5
	_, err := c.Write(all[:cut])
	require.NoError(t, err)
	require.Equal(t, all[:f], peer.next(t))
	require.Equal(t, all[f:2*f], peer.next(t))
	peer.none(t)
	for _, b := range all[cut:] {
		_, err := c.Write([]byte{b})
		require.NoError(t, err)
	}
	require.Equal(t, all[2*f:], peer.next(t))
}

type failingWriter struct{ err error }

func (w failingWriter) Write([]byte) (int, error) { return 0, w.err }

func TestFrameConnReportsErrorsSynchronously(t *testing.T) {
	c := &frameConn{raw: failingWriter{io.ErrClosedPipe}, sending: make(chan struct{}, 1)}
	pieces := frame(1, []byte("x"))
	_, err := c.Write(pieces[0])
	require.NoError(t, err, "a partial frame is only buffered")
	_, err = c.Write(pieces[1])
	require.NoError(t, err)
	_, err = c.Write(pieces[2])
	require.ErrorIs(t, err, io.ErrClosedPipe, "the write completing the frame reports the failure")
	_, err = c.Write([]byte{0})
	require.ErrorIs(t, err, io.ErrClosedPipe, "and so do later ones")
}

// TestFrameConnFlagsAreNotLength: byte 4 of a SPDY header is the flags
// (FIN on the data frame that closes a stream, on control frames too);
// only bytes 5-7 are the length, so a flagged frame is still one message
// of header + payload, and the next frame starts its own.
func TestFrameConnFlagsAreNotLength(t *testing.T) {
	header := func(word0 uint32, flags byte, length int) []byte {
		h := make([]byte, spdyHeaderLen)
		binary.BigEndian.PutUint32(h[0:4], word0)
		binary.BigEndian.PutUint32(h[4:8], uint32(flags)<<24|uint32(length))
		return h
	}
	frames := [][]byte{
		append(header(5, 0x01, 3), "fin"...),                      // data frame with FIN
		header(7, 0x01, 0),                                        // empty data frame with FIN
		append(header(0x80030001, 0x01, 10), make([]byte, 10)...), // SYN_STREAM control frame with FIN
		append(header(0x80030006, 0xff, 4), 1, 2, 3, 4),           // PING, all flag bits set
	}
	c, _, peer := newWSPair(t)
	for _, f := range frames {
		// As the framer writes them: two header words, then the payload.
		for _, piece := range [][]byte{f[:4], f[4:8], f[8:]} {
			if len(piece) == 0 {
				continue
			}
			_, err := c.Write(piece)
			require.NoError(t, err)
		}
		require.Equal(t, f, peer.next(t))
	}
	require.Zero(t, c.nhdr, "no header left open")
	require.Zero(t, c.left, "no frame left open")
}

// TestFrameConnAnswersPingsDuringWrites: the peer's pings are answered
// (the client's reader runs the handler) while large frames are being
// written from another goroutine, and neither corrupts the other.
func TestFrameConnAnswersPingsDuringWrites(t *testing.T) {
	c, client, peer := newWSPair(t)
	srv := <-peer.conn
	// The client's reader: it runs the ping handler.
	readerDone := make(chan struct{})
	go func() {
		defer close(readerDone)
		for {
			if _, _, err := client.NextReader(); err != nil {
				return
			}
		}
	}()
	defer func() { _ = client.Close(); <-readerDone }()
	const frames = 40
	payload := bytes.Repeat([]byte("0123456789abcdef"), 8<<10) // 128 KiB
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for i := range frames {
			for _, piece := range frame(uint32(2*i+1), payload) {
				if _, err := c.Write(piece); err != nil {
					t.Errorf("write: %v", err)
					return
				}
			}
		}
	}()
	for i := range 10 {
		require.NoError(t, srv.WriteControl(gwebsocket.PingMessage, []byte{byte('a' + i)}, time.Now().Add(5*time.Second)))
	}
	for i := range frames {
		m := peer.next(t)
		require.Len(t, m, spdyHeaderLen+len(payload), "frame %d", i)
		require.Equal(t, payload, m[spdyHeaderLen:], "frame %d", i)
	}
	wg.Wait()
	for i := range 10 {
		select {
		case s := <-peer.pongs:
			require.Equal(t, string(rune('a'+i)), s)
		case <-time.After(10 * time.Second):
			t.Fatalf("pong %d never came", i)
		}
	}
}

// TestMaskCopy checks the word-at-a-time masking against the definition
// (RFC 6455 §5.3), at every key phase and many lengths.
func TestMaskCopy(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	key := [4]byte{0x12, 0x34, 0x56, 0x78}
	for _, n := range []int{0, 1, 3, 31, 32, 33, 63, 64, 100, 4096, 4099} {
		for pos := range 8 {
			src := make([]byte, n)
			for i := range src {
				src[i] = byte(r.Uint32())
			}
			want := make([]byte, n)
			for i := range src {
				want[i] = src[i] ^ key[(pos+i)%4]
			}
			dst := make([]byte, n+8)
			maskCopy(dst, src, key, pos)
			require.Equal(t, want, dst[:n], "n=%d pos=%d", n, pos)
			require.Equal(t, make([]byte, 8), dst[n:], "nothing written past the end")
		}
	}
}

// spdyData writes a data frame of body on stream through c as the framer
// does: two header words, then the payload.
func spdyData(c *frameConn, stream uint32, body []byte) (int, error) {
	for _, piece := range frame(stream, body)[:2] {
		if _, err := c.Write(piece); err != nil {
			return 0, err
		}
	}
	if len(body) == 0 {
		return 0, nil
	}
	return c.Write(body)
}

func TestFrameConnPrefix(t *testing.T) {
	c, _, peer := newWSPair(t)
	body := bytes.Repeat([]byte("b"), 70_000)
	joined := func(stream uint32, pre, body []byte) []byte {
		var out []byte
		for _, p := range frame(stream, append(slices.Clone(pre), body...)) {
			out = append(out, p...)
		}
		return out
	}

	// The prefix goes into the stream's data frame, counted in its length.
	n, err := c.writePrefixed(5, []byte("HEADER"), body, func(p []byte) (int, error) { return spdyData(c, 5, p) })
	require.NoError(t, err)
	require.Equal(t, len(body), n)
	require.Equal(t, joined(5, []byte("HEADER"), body), peer.next(t))

	// Frames of other streams, of another length, or control frames
	// written meanwhile do not take it.
	n, err = c.writePrefixed(5, []byte("H2"), body, func(p []byte) (int, error) {
		if _, err := spdyData(c, 7, p); err != nil { // another stream, same length
			return 0, err
		}
		if _, err := spdyData(c, 5, p[:10]); err != nil { // same stream, other length
			return 0, err
		}
		if _, err := c.Write(append(binary.BigEndian.AppendUint32(nil, 0x80030006), 0, 0, 0, 4, 1, 2, 3, 4)); err != nil {
			return 0, err // a PING control frame
		}
		return spdyData(c, 5, p)
	})
	require.NoError(t, err)
	require.Equal(t, len(body), n)
	require.Equal(t, joined(7, nil, body), peer.next(t))
	require.Equal(t, joined(5, nil, body[:10]), peer.next(t))
	require.Len(t, peer.next(t), 12)
	require.Equal(t, joined(5, []byte("H2"), body), peer.next(t))

	// A write that fails returns its error and leaves nothing pending.
	boom := errors.New("boom")
	_, err = c.writePrefixed(9, []byte("X"), body, func([]byte) (int, error) { return 0, boom })
	require.ErrorIs(t, err, boom)
	require.Empty(t, c.prefixes)

	// A write that "succeeds" without the frame is a broken stream.
	_, err = c.writePrefixed(9, []byte("X"), body, func(p []byte) (int, error) { return len(p), nil })
	require.ErrorContains(t, err, "without its 1-byte prefix")
	require.Empty(t, c.prefixes)
	peer.none(t)
}

// TestFrameConnPrefixOnHugeFrame: a prefix on a data frame longer than one
// WebSocket frame goes into the first of its messages, the mask phase
// carries on past the prefix's odd length, and the header keeps its flags
// while its length grows by the prefix.
func TestFrameConnPrefixOnHugeFrame(t *testing.T) {
	c, _, peer := newWSPair(t)
	body := patterned(2*wsMaxPayload + 7)
	pre := []byte("PRE")
	hdr := func(length int) []byte {
		h := binary.BigEndian.AppendUint32(nil, 9)
		return binary.BigEndian.AppendUint32(h, 0x01<<24|uint32(length)) // FIN
	}
	n, err := c.writePrefixed(9, pre, body, func(p []byte) (int, error) {
		h := hdr(len(p))
		for _, piece := range [][]byte{h[:4], h[4:], p} {
			if _, err := c.Write(piece); err != nil {
				return 0, err
			}
		}
		return len(p), nil
	})
	require.NoError(t, err)
	require.Equal(t, len(body), n)
	want := append(append(hdr(len(pre)+len(body)), pre...), body...)
	require.Equal(t, want, peer.joined(t, len(want)))
	require.Empty(t, c.prefixes)
}

// stuckWriter blocks its first Write until release is closed, as a write
// to a peer that does not read does, and records every Write.
type stuckWriter struct {
	started chan struct{}
	release chan struct{}
	mu      sync.Mutex
	writes  [][]byte
}

func (w *stuckWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	first := len(w.writes) == 0
	w.writes = append(w.writes, slices.Clone(p))
	w.mu.Unlock()
	if first {
		close(w.started)
		<-w.release
	}
	return len(p), nil
}

// TestFrameConnPongDoesNotWaitForAStuckWrite: pong runs on the reader; a
// frame write stuck on the network must not stall it for longer than
// pongWait (the pong is skipped, as gorilla's handler skips it), and once
// the network moves a pong goes out again.
func TestFrameConnPongDoesNotWaitForAStuckWrite(t *testing.T) {
	w := &stuckWriter{started: make(chan struct{}), release: make(chan struct{})}
	c := &frameConn{raw: w, sending: make(chan struct{}, 1), pongWait: 10 * time.Millisecond}
	writeErr := make(chan error, 1)
	go func() {
		_, err := spdyData(c, 1, []byte("payload"))
		writeErr <- err
	}()
	<-w.started
	pongErr := make(chan error, 1)
	go func() { pongErr <- c.pong("a") }()
	select {
	case err := <-pongErr:
		require.NoError(t, err, "a skipped pong is not an error")
	case <-time.After(10 * time.Second):
		close(w.release)
		t.Fatal("pong waited for the stuck write")
	}
	w.mu.Lock()
	require.Len(t, w.writes, 1, "no pong while the frame is stuck")
	w.mu.Unlock()

	close(w.release)
	require.NoError(t, <-writeErr)
	require.NoError(t, c.pong("b"))
	w.mu.Lock()
	defer w.mu.Unlock()
	require.Len(t, w.writes, 2)
	pong := w.writes[1]
	require.Equal(t, []byte{wsFinPong, wsMaskBit | 1}, pong[:2])
	require.Len(t, pong, 2+4+1)
	require.Equal(t, byte('b'), pong[6]^pong[2], "the payload is masked with the frame's key")
}

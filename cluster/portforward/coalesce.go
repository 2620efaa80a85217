package portforward

import (
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
	"time"

	gwebsocket "github.com/gorilla/websocket"
)

// spdyHeaderLen is the size of a SPDY/3 frame header; bytes 5-7 of it hold
// the payload length for data and control frames alike.
const spdyHeaderLen = 8

// WebSocket framing (RFC 6455 §5.2) of what frameConn writes: every frame
// is a final binary (or, for pongs, control) frame from a client, so its
// payload is masked.
const (
	wsFinBinary = 0x80 | 0x2
	wsFinPong   = 0x80 | 0xA
	wsMaskBit   = 0x80
	// wsMaxHeader is the longest frame header: 2 bytes, a 64-bit length,
	// the 4-byte mask key.
	wsMaxHeader = 2 + 8 + 4
	// wsMaxPayload bounds one WebSocket frame, and so frameConn's buffer;
	// a longer SPDY frame (they can reach 16 MiB) goes out as several
	// messages, which the reader joins as it joins any.
	wsMaxPayload = 1 << 20
)

// frameConn sits under the SPDY framer on a WebSocket tunnel and writes the
// WebSocket frames itself. The framer writes every SPDY frame in several
// pieces (two 4-byte header words, then the payload); client-go's
// TunnelingConnection would turn each Write into its own WebSocket message
// and system call, and gorilla's writer copies every payload into its 32
// KiB buffer, masks it there in a second pass and sends each 32 KiB as a
// fragment of its own. frameConn instead builds each SPDY frame into one
// WebSocket frame, copying and masking in one pass, and sends it with one
// Write when the frame is complete. That is a quarter of the sends and
// one pass over the bytes instead of two on the path every tunnelled byte
// takes; the peer sees ordinary masked binary messages.
//
// Writing beside gorilla is safe because every frame, ours and the
// control frames gorilla still writes, goes out in a single Write of the
// network connection, and the connections gorilla dials (*net.TCPConn,
// *tls.Conn) hold a write lock for a whole Write, so two Writes never
// interleave (net.Conn itself does not promise that). Gorilla writes only
// close frames now (on Close, on the peer's close, on a protocol error),
// each with a one-second write deadline that stays on the connection; by
// then the connection is ending. Pings are answered here (SetPingHandler)
// instead of by gorilla's default handler, which would leave that deadline
// behind on a live connection. Reads, Close and addresses are the
// TunnelingConnection's.
//
// It is synchronous: the write that completes a frame sends it and returns
// its error, so the framer (and client-go's CreateStream, which otherwise
// waits 30s for a reply that cannot come) learns at once that the
// connection is dead. The framer writes each frame whole under its lock
// before the next one starts.
type frameConn struct {
	net.Conn           // the TunnelingConnection
	raw      io.Writer // the WebSocket's network connection
	// sending holds a token while a frame or a pong is written to raw, so
	// that pong can give up waiting for a write stuck on a full network
	// (c.mu cannot be waited on with a timeout).
	sending  chan struct{}
	pongWait time.Duration // how long pong waits for sending (pongWait; shorter in tests)

	mu   sync.Mutex
	hdr  [spdyHeaderLen]byte
	nhdr int    // header bytes of the next frame received so far
	left int    // payload bytes of the current frame still to come; 0 between frames
	buf  []byte // the WebSocket frame being built: header room, then payload
	n    int    // payload bytes in buf
	key  [4]byte
	err  error // sticky: the connection is broken

	// prefixes are bytes to put in front of the payload of a stream's
	// next data frame of a given length (see Conn.WritePrefixed); at most
	// one per stream, and only a handful of streams write at once.
	prefixes []prefix
}

// prefix is a pending prefix for one data frame.
type prefix struct {
	stream  uint32
	bodyLen int
	bytes   []byte
	sent    bool
}

// maxSPDYLength is the largest payload a SPDY frame's 24-bit length holds.
const maxSPDYLength = 1<<24 - 1

// newFrameConn returns a frameConn writing to ws's network connection
// and reading through tc, and takes over ws's ping handler.
func newFrameConn(tc net.Conn, ws *gwebsocket.Conn) *frameConn {
	c := &frameConn{Conn: tc, raw: ws.NetConn(), sending: make(chan struct{}, 1), pongWait: pongWait}
	ws.SetPingHandler(c.pong)
	return c
}

// Read marks the connection broken when the peer is gone, so that later
// writes fail at once rather than go into a dead connection.
func (c *frameConn) Read(p []byte) (int, error) {
	n, err := c.Conn.Read(p)
	if err != nil {
		c.mu.Lock()
		c.fail(err)
		c.mu.Unlock()
	}
	return n, err
}

func (c *frameConn) Write(p []byte) (int, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.err != nil {
		return 0, c.err
	}
	n := len(p)
	for len(p) > 0 {
		if c.left == 0 { // between frames: p starts or continues a header
			k := copy(c.hdr[c.nhdr:], p)
			c.nhdr += k
			p = p[k:]
			if c.nhdr < spdyHeaderLen {
				break
			}
			c.nhdr = 0
			c.left = int(binary.BigEndian.Uint32(c.hdr[4:8]) & maxSPDYLength)
			pre := c.prefixFor()
			if pre != nil {
				// Announce the prefix in the frame's length; it goes
				// before the payload the framer is about to write.
				binary.BigEndian.PutUint32(c.hdr[4:8], uint32(c.hdr[4])<<24|uint32(len(pre)+c.left))
			}
			c.start(spdyHeaderLen + len(pre) + c.left)
			c.put(c.hdr[:])
			c.put(pre)
		}
		for k := min(c.left, len(p)); k > 0; {
			if c.n == wsMaxPayload {
				if err := c.flush(); err != nil {
					return 0, err
				}
				c.start(c.left)
			}
			m := min(k, wsMaxPayload-c.n)
			c.put(p[:m])
			p, k, c.left = p[m:], k-m, c.left-m
		}
		if c.left == 0 {
			if err := c.flush(); err != nil {
				return 0, err
			}
		}
	}
	return n, nil
}

// prefixFor takes the pending prefix of the data frame whose header is in
// c.hdr, if there is one: same stream, same payload length.
func (c *frameConn) prefixFor() []byte {
	word0 := binary.BigEndian.Uint32(c.hdr[0:4])
	if word0&0x80000000 != 0 {
		return nil // a control frame
	}
	for i := range c.prefixes {
		p := &c.prefixes[i]
		if p.stream == word0 && p.bodyLen == c.left && !p.sent {
			p.sent = true
			return p.bytes
		}
	}
	return nil
}

// writePrefixed has the framer write one data frame of body on stream
// (through write, a Write of that stream) and puts pre in front of body in
// that frame; a write that succeeded without pre is an error. The caller
// keeps other writes of the stream out until it returns.
func (c *frameConn) writePrefixed(stream uint32, pre, body []byte, write func([]byte) (int, error)) (int, error) {
	c.mu.Lock()
	c.prefixes = append(c.prefixes, prefix{stream: stream, bodyLen: len(body), bytes: pre})
	c.mu.Unlock()
	n, err := write(body)
	c.mu.Lock()
	var sent bool
	for i, p := range c.prefixes {
		if p.stream == stream {
			sent = p.sent
			c.prefixes = append(c.prefixes[:i], c.prefixes[i+1:]...)
			break
		}
	}
	c.mu.Unlock()
	if err == nil && !sent {
		// The framer wrote the body in some other shape than one data
		// frame: the stream now lacks the prefix and cannot be trusted.
		return n, fmt.Errorf("stream %d: the data frame went out without its %d-byte prefix", stream, len(pre))
	}
	return n, err
}

// start begins a WebSocket frame for up to size payload bytes.
func (c *frameConn) start(size int) {
	if need := wsMaxHeader + min(size, wsMaxPayload); cap(c.buf) < need {
		c.buf = make([]byte, need)
	}
	c.n = 0
	_, _ = rand.Read(c.key[:]) // crypto/rand.Read never fails (Go 1.24+)
}

// put appends p to the frame's payload, masked.
func (c *frameConn) put(p []byte) {
	maskCopy(c.buf[wsMaxHeader+c.n:], p, c.key, c.n)
	c.n += len(p)
}

// flush sends the frame built so far.
func (c *frameConn) flush() error {
	h := wsHeader(c.buf[:wsMaxHeader], wsFinBinary, c.n, c.key)
	c.sending <- struct{}{}
	_, err := c.raw.Write(c.buf[wsMaxHeader-h : wsMaxHeader+c.n])
	<-c.sending
	if err != nil {
		return c.fail(err)
	}
	return nil
}

// pongWait bounds how long pong waits for a frame being written: it runs
// on the connection's reader, which must not stall behind a write that
// waits for the peer to read (gorilla's default handler, through
// WriteControl, also gives up after a second).
const pongWait = time.Second

// pong answers a ping, as gorilla's default handler would, but without
// touching the connection's write deadline. When a frame write holds the
// connection for longer than pongWait it skips the pong, as gorilla's
// handler does, rather than hold up reading.
func (c *frameConn) pong(data string) error {
	var f [wsMaxHeader + 125]byte // a control payload is at most 125 bytes
	var key [4]byte
	_, _ = rand.Read(key[:])
	maskCopy(f[wsMaxHeader:], []byte(data), key, 0)
	h := wsHeader(f[:wsMaxHeader], wsFinPong, len(data), key)
	select {
	case c.sending <- struct{}{}:
	default:
		t := time.NewTimer(c.pongWait)
		defer t.Stop()
		select {
		case c.sending <- struct{}{}:
		case <-t.C:
			return nil
		}
	}
	_, err := c.raw.Write(f[wsMaxHeader-h : wsMaxHeader+len(data)])
	<-c.sending
	var ne net.Error
	if err != nil && !(errors.As(err, &ne) && ne.Timeout()) {
		return err
	}
	return nil
}

// fail records the first error (c.mu held); the connection is unusable
// after it.
func (c *frameConn) fail(err error) error {
	if c.err == nil {
		c.err = err
	}
	return c.err
}

// wsHeader writes the header of a masked frame of n payload bytes at the
// end of dst (len wsMaxHeader) and returns its length.
func wsHeader(dst []byte, b0 byte, n int, key [4]byte) int {
	var h int
	switch {
	case n <= 125:
		h = 2 + 4
		dst[wsMaxHeader-h+1] = wsMaskBit | byte(n)
	case n <= 0xffff:
		h = 4 + 4
		dst[wsMaxHeader-h+1] = wsMaskBit | 126
		binary.BigEndian.PutUint16(dst[wsMaxHeader-h+2:], uint16(n))
	default:
		h = 10 + 4
		dst[wsMaxHeader-h+1] = wsMaskBit | 127
		binary.BigEndian.PutUint64(dst[wsMaxHeader-h+2:], uint64(n))
	}
	dst[wsMaxHeader-h] = b0
	copy(dst[wsMaxHeader-4:], key[:])
	return h
}

// maskCopy copies src to dst XORed with the mask key, as the bytes at
// payload offset pos onward: byte i of the payload is XORed with
// key[i%4]. It works a word at a time, 32 bytes per round.
func maskCopy(dst, src []byte, key [4]byte, pos int) {
	dst = dst[:len(src)]
	var k [4]byte
	for i := range k {
		k[i] = key[(pos+i)&3]
	}
	kw := uint64(binary.LittleEndian.Uint32(k[:]))
	kw |= kw << 32
	n := len(src) &^ 31
	for i := 0; i < n; i += 32 {
		s, d := src[i:i+32:i+32], dst[i:i+32:i+32]
		binary.LittleEndian.PutUint64(d[0:], binary.LittleEndian.Uint64(s[0:])^kw)
		binary.LittleEndian.PutUint64(d[8:], binary.LittleEndian.Uint64(s[8:])^kw)
		binary.LittleEndian.PutUint64(d[16:], binary.LittleEndian.Uint64(s[16:])^kw)
		binary.LittleEndian.PutUint64(d[24:], binary.LittleEndian.Uint64(s[24:])^kw)
	}
	for i := n; i < len(src); i++ {
		dst[i] = src[i] ^ k[i&3]
	}
}

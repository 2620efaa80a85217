package portforward

import (
	"net"
	"sync"
)

// spdyHeaderLen is the size of a SPDY/3 frame header; bytes 5-7 of it hold
// the payload length for data and control frames alike.
const spdyHeaderLen = 8

// frameConn sits under the SPDY framer on a WebSocket tunnel. The framer
// writes every SPDY frame in several pieces (two 4-byte header words, then
// the payload), and client-go's TunnelingConnection turns each Write into
// its own WebSocket message and system call. frameConn holds the pieces
// until a frame is complete and writes it as one message.
//
// It is synchronous: the write that completes a frame performs it and
// returns its error, so the framer (and client-go's CreateStream, which
// otherwise waits 30s for a reply that cannot come) learns at once that
// the connection is dead. Writes that only start a frame return at once;
// the framer always completes a frame under its lock before another one
// starts, so nothing is held back.
type frameConn struct {
	net.Conn

	mu  sync.Mutex
	buf []byte
	err error
}

func newFrameConn(c net.Conn) *frameConn { return &frameConn{Conn: c} }

// Read marks the connection broken when the peer is gone, so that later
// writes fail at once rather than go into a dead connection.
func (c *frameConn) Read(p []byte) (int, error) {
	n, err := c.Conn.Read(p)
	if err != nil {
		c.mu.Lock()
		if c.err == nil {
			c.err = err
		}
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
	c.buf = append(c.buf, p...)
	end := completeFrames(c.buf)
	if end == 0 {
		return len(p), nil
	}
	if _, err := c.Conn.Write(c.buf[:end]); err != nil {
		c.err = err
		return 0, err
	}
	n := copy(c.buf, c.buf[end:])
	c.buf = c.buf[:n]
	if cap(c.buf) > 1<<20 && n == 0 {
		c.buf = nil // don't keep a buffer sized for one huge frame
	}
	return len(p), nil
}

// completeFrames returns the length of the longest prefix of b made of
// whole SPDY frames.
func completeFrames(b []byte) int {
	end := 0
	for len(b)-end >= spdyHeaderLen {
		h := b[end:]
		total := spdyHeaderLen + (int(h[5])<<16 | int(h[6])<<8 | int(h[7]))
		if len(b)-end < total {
			break
		}
		end += total
	}
	return end
}

package portforward

import (
	"encoding/binary"
	"io"
	"net"
	"sync"

	gwebsocket "github.com/gorilla/websocket"
)

// spdyHeaderLen is the size of a SPDY/3 frame header; bytes 5-7 of it hold
// the payload length for data and control frames alike.
const spdyHeaderLen = 8

// messageWriter opens WebSocket messages (*gwebsocket.Conn does).
type messageWriter interface {
	NextWriter(messageType int) (io.WriteCloser, error)
}

// frameConn sits under the SPDY framer on a WebSocket tunnel. The framer
// writes every SPDY frame in several pieces (two 4-byte header words, then
// the payload), and client-go's TunnelingConnection turns each Write into
// its own WebSocket message and system call. frameConn instead streams
// each frame into one WebSocket message: the header opens it, the payload
// goes straight into the WebSocket's write buffer (no copy of its own),
// and the write that completes the frame closes the message, which sends
// it. Reads, Close and addresses are the TunnelingConnection's.
//
// It is synchronous: the write that completes a frame sends it and
// returns its error, so the framer (and client-go's CreateStream, which
// otherwise waits 30s for a reply that cannot come) learns at once that
// the connection is dead. The framer writes each frame whole under its
// lock before the next one starts, so one message is open at a time.
type frameConn struct {
	net.Conn
	ws messageWriter

	mu   sync.Mutex
	hdr  [spdyHeaderLen]byte
	nhdr int            // header bytes of the next frame received so far
	msg  io.WriteCloser // the message of the frame in progress
	left int            // payload bytes the frame in progress still needs
	err  error          // sticky: the connection is broken
}

func newFrameConn(c net.Conn, ws messageWriter) *frameConn { return &frameConn{Conn: c, ws: ws} }

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
	n := len(p)
	for len(p) > 0 {
		if c.msg == nil {
			k := copy(c.hdr[c.nhdr:], p)
			c.nhdr += k
			p = p[k:]
			if c.nhdr < spdyHeaderLen {
				break
			}
			c.nhdr = 0
			msg, err := c.ws.NextWriter(gwebsocket.BinaryMessage)
			if err != nil {
				return 0, c.fail(err)
			}
			c.msg = msg
			c.left = int(binary.BigEndian.Uint32(c.hdr[4:8]) & 0xffffff)
			if _, err := msg.Write(c.hdr[:]); err != nil {
				return 0, c.fail(err)
			}
		}
		if k := min(c.left, len(p)); k > 0 {
			if _, err := c.msg.Write(p[:k]); err != nil {
				return 0, c.fail(err)
			}
			p = p[k:]
			c.left -= k
		}
		if c.left == 0 {
			err := c.msg.Close()
			c.msg = nil
			if err != nil {
				return 0, c.fail(err)
			}
		}
	}
	return n, nil
}

// fail records the first error; the connection is unusable after it.
func (c *frameConn) fail(err error) error {
	if c.err == nil {
		c.err = err
	}
	return c.err
}

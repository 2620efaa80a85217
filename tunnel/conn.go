package tunnel

import (
	"encoding/binary"
	"fmt"
	"log/slog"
	"net"
	"strings"
	"sync/atomic"
	"time"
)

// wireConn sits between yamux and the real connection. It does two things:
//
//   - It records when bytes last arrived, which is how the heartbeat
//     detects a dead peer without depending on yamux's ping (whose timeout
//     is the long write timeout).
//   - It sends a yamux data frame's 12-byte header and its body as one
//     unit. yamux's send loop writes them separately; joining them halves
//     the writes per frame, which is most of the per-request cost of a
//     small round trip. Over a port-forward it matters even more: each
//     Write becomes its own SPDY frame, WebSocket message and system call
//     on every hop to the relay. On TCP a body over 16 KiB goes out with
//     the header in one writev; otherwise the two are copied into one
//     buffer.
//
// Only yamux's single send goroutine calls Write, so the pending-header
// state needs no lock.
type wireConn struct {
	net.Conn
	lastRecv atomic.Int64 // UnixNano of the last successful read

	pending    [yamuxHeaderSize]byte
	pendingLen int // body length announced by the pending header; 0 = none
	scratch    []byte
	// vectored: the connection turns net.Buffers into one writev. Other
	// connections (TLS, net.Pipe, a port-forward) would get one Write per
	// buffer, so there header and body are copied into one buffer.
	vectored bool
	split    bool // Config.SplitHeaderWrites: no joining
}

const (
	yamuxHeaderSize = 12
	yamuxTypeData   = 0
	// coalesceCopyMax: on a vectored connection, bodies up to this size
	// are copied behind the header into one buffer; larger ones go out
	// with writev.
	coalesceCopyMax = 16 << 10
)

func newWireConn(c net.Conn, split bool) *wireConn {
	w := &wireConn{Conn: c, split: split}
	switch c.(type) {
	case *net.TCPConn, *net.UnixConn:
		w.vectored = true
	}
	w.lastRecv.Store(time.Now().UnixNano())
	return w
}

func (c *wireConn) Read(p []byte) (int, error) {
	n, err := c.Conn.Read(p)
	if n > 0 {
		c.lastRecv.Store(time.Now().UnixNano())
	}
	return n, err
}

func (c *wireConn) sinceRecv() time.Duration {
	return time.Since(time.Unix(0, c.lastRecv.Load()))
}

func (c *wireConn) Write(p []byte) (int, error) {
	if c.pendingLen > 0 {
		want := c.pendingLen
		c.pendingLen = 0
		if len(p) == want {
			return c.writeFrame(p)
		}
		// Not the body we expected (cannot happen with yamux v0.1.2);
		// send the header on its own and carry on.
		if _, err := c.Conn.Write(c.pending[:]); err != nil {
			return 0, err
		}
	}
	if !c.split && len(p) == yamuxHeaderSize && p[0] == 0 && p[1] == yamuxTypeData {
		if n := binary.BigEndian.Uint32(p[8:12]); n > 0 && n <= 1<<30 {
			copy(c.pending[:], p)
			c.pendingLen = int(n)
			return len(p), nil
		}
	}
	return c.Conn.Write(p)
}

// writeFrame writes the pending header and body p together and reports
// len(p) written on success.
func (c *wireConn) writeFrame(p []byte) (int, error) {
	if len(p) <= coalesceCopyMax || !c.vectored {
		c.scratch = append(append(c.scratch[:0], c.pending[:]...), p...)
		if _, err := c.Conn.Write(c.scratch); err != nil {
			return 0, err
		}
		return len(p), nil
	}
	bufs := net.Buffers{c.pending[:], p}
	if _, err := bufs.WriteTo(c.Conn); err != nil {
		return 0, err
	}
	return len(p), nil
}

// yamuxLogger forwards yamux's printf-style logs to slog at debug level:
// they are mostly connection-level noise that the session reports better.
type yamuxLogger struct{ l *slog.Logger }

func (y yamuxLogger) Print(v ...any) {
	y.l.Debug(strings.TrimSpace(fmt.Sprint(v...)), "component", "yamux")
}
func (y yamuxLogger) Printf(format string, v ...any) {
	y.l.Debug(strings.TrimSpace(fmt.Sprintf(format, v...)), "component", "yamux")
}
func (y yamuxLogger) Println(v ...any) {
	y.l.Debug(strings.TrimSpace(fmt.Sprint(v...)), "component", "yamux")
}

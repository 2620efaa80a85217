package tunnel

import (
	"encoding/binary"
	"fmt"
	"log/slog"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// wireConn sits between yamux and the real connection. It does three things:
//
//   - It records when bytes last arrived, which is how the heartbeat
//     detects a dead peer without depending on yamux's ping (whose timeout
//     is the long write timeout).
//   - It carries the session's flow control (flow.go): it filters yamux's
//     window updates, writes the session's own grants between frames and
//     counts incoming data per stream.
//   - It sends a yamux data frame's 12-byte header and its body in one
//     Write: one writev on TCP and Unix sockets for a body over 16 KiB,
//     else one buffer (TLS, net.Pipe or a port-forward would get one Write
//     per buffer). Over a port-forward each Write becomes its own SPDY
//     frame, three WebSocket messages and a system call on every hop.
//
// What the join gains, measured on and off in the same run (paired
// repetitions, five runs each; joined / split, medians):
//
//   - sbx bench portforward --ab split-headers (PortForwardConfig): 1 KiB
//     round trip p50 0.76x (split/joined 1.28-1.33: without the join
//     tunnel_vs_bare_rtt would be ~1.5, over its 1.25 target); pool CPU
//     per byte 0.95x (1.04-1.07), pool throughput 1.07x.
//   - sbx bench tunnel --ab-split-headers (loopback TCP, DefaultConfig;
//     two sets of five runs): single-stream bulk 1.12-1.15x
//     (split/joined 0.83-0.93), round trip p50 0.68-0.70x (1.41-1.47),
//     p99 behind bulk 0.79-0.88x; 64 streams on one session 0.76x in one
//     set (1.26-1.44) and 0.99x in the other (0.97-1.16).
//
// The join relies on how yamux v0.1.2's send loop writes a data frame: a
// Write of the 12-byte header, then one Write of exactly its body, from
// one goroutine. yamux does not promise that, so only the gain depends on
// it, never the bytes: Write holds its lock throughout and follows the
// framing byte by byte, so whatever sequence of Writes arrives, the same
// bytes go out in the same order (a held header goes out alone before a
// piece that is not its whole body, counted in fallbacks;
// TestWireConnKeepsBytesInOrder), apart from the window updates that flow
// control rewrites. The tests in
// conn_contract_test.go run real yamux over a varied workload and fail,
// naming the yamux version, when a header ever goes out without its body.
type wireConn struct {
	net.Conn
	lastRecv atomic.Int64 // UnixNano of the last successful read

	// flow, once set, grants the peer its receive windows (flow.go):
	// yamux's own window updates are filtered on the way out, grants
	// are written between frames, and incoming frames are counted.
	// Before it is set (the handshake), bytes pass as they are.
	flow *flowControl
	in   frameParser // incoming frames (Read, one reader: yamux's recvLoop)

	mu     sync.Mutex
	framed bool // yamux frames from here on (startFraming)
	// The outgoing frame being written: its header as far as it has
	// arrived, and how much of a data frame's body is still to come.
	hdr      [yamuxHeaderSize]byte
	hdrN     int
	bodyLeft int
	// held: the data frame's header waits to go out with its body.
	held    bool
	scratch []byte
	// vectored: the connection turns net.Buffers into one writev. Other
	// connections (TLS, net.Pipe, a port-forward) would get one Write per
	// buffer, so there header and body are copied into one buffer.
	vectored bool
	split    bool // Config.SplitHeaderWrites: no joining
	// joined counts data frames sent joined; fallbacks, held headers
	// sent alone because the next Write was not their whole body.
	joined, fallbacks int
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
		if c.flow != nil {
			if ferr := c.in.feed(p[:n], c.flow.sawIncoming); ferr != nil {
				return n, ferr
			}
		}
	}
	return n, err
}

func (c *wireConn) sinceRecv() time.Duration {
	return time.Since(time.Unix(0, c.lastRecv.Load()))
}

// startFraming makes the connection carry yamux frames from now on, with
// flow control; called once, after the handshake and before yamux starts.
func (c *wireConn) startFraming(f *flowControl) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.framed = true
	c.flow = f
}

// Write takes yamux's frames as yamux writes them (a header, then a data
// frame's body) and follows the framing byte by byte, so it knows where
// frames begin whatever the pieces. It reports every Write whole.
func (c *wireConn) Write(p []byte) (int, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if !c.framed {
		return c.Conn.Write(p)
	}
	total := len(p)
	for len(p) > 0 {
		if c.bodyLeft > 0 {
			n := min(len(p), c.bodyLeft)
			if err := c.writeBody(p[:n]); err != nil {
				return 0, err
			}
			c.bodyLeft -= n
			p = p[n:]
			if c.bodyLeft == 0 {
				if err := c.flushGrants(); err != nil {
					return 0, err
				}
			}
			continue
		}
		n := copy(c.hdr[c.hdrN:], p)
		c.hdrN += n
		p = p[n:]
		if c.hdrN < yamuxHeaderSize {
			break
		}
		c.hdrN = 0
		if err := c.writeHeader(); err != nil {
			return 0, err
		}
	}
	return total, nil
}

// writeHeader handles a complete outgoing frame header in c.hdr.
func (c *wireConn) writeHeader() error {
	typ := c.hdr[1]
	flags := binary.BigEndian.Uint16(c.hdr[2:4])
	id := binary.BigEndian.Uint32(c.hdr[4:8])
	length := binary.BigEndian.Uint32(c.hdr[8:12])
	switch {
	case typ == yamuxTypeData:
		if c.flow != nil {
			if length > 0 {
				c.flow.lastData.Store(time.Now().UnixNano())
			}
			c.flow.sawOutgoing(id, flags)
		}
		if length > 0 {
			c.bodyLeft = int(length)
			if !c.split {
				c.held = true
				return nil
			}
			_, err := c.Conn.Write(c.hdr[:])
			return err
		}
	case typ == yamuxTypeWindowUpdate && id != 0 && c.flow != nil:
		// yamux's delta is for its own window; the peer's window is
		// flow's. A plain update is dropped, a SYN/ACK/FIN/RST keeps its
		// flags with no credit.
		c.flow.sawOutgoing(id, flags)
		if flags == 0 {
			return nil
		}
		binary.BigEndian.PutUint32(c.hdr[8:12], 0)
	}
	if _, err := c.Conn.Write(c.hdr[:]); err != nil {
		return err
	}
	return c.flushGrants()
}

// writeBody writes a piece of the current data frame's body, joined to
// its held header when the piece is the whole body.
func (c *wireConn) writeBody(p []byte) error {
	if !c.held {
		_, err := c.Conn.Write(p)
		return err
	}
	c.held = false
	if len(p) == c.bodyLeft {
		c.joined++
		return c.writeFrame(p)
	}
	// Not the whole body: yamux no longer writes as v0.1.2 does. Send
	// the header alone, then the piece.
	c.fallbacks++
	if _, err := c.Conn.Write(c.hdr[:]); err != nil {
		return err
	}
	_, err := c.Conn.Write(p)
	return err
}

// writeFrame writes the held header and body p together.
func (c *wireConn) writeFrame(p []byte) error {
	if len(p) <= coalesceCopyMax || !c.vectored {
		c.scratch = append(append(c.scratch[:0], c.hdr[:]...), p...)
		_, err := c.Conn.Write(c.scratch)
		return err
	}
	bufs := net.Buffers{c.hdr[:], p}
	_, err := bufs.WriteTo(c.Conn)
	return err
}

// flushGrants writes flow's pending grants; the caller holds c.mu and is
// between frames.
func (c *wireConn) flushGrants() error {
	if c.flow == nil {
		return nil
	}
	b := c.flow.takeGrants(c.scratch[:0])
	if len(b) == 0 {
		return nil
	}
	c.scratch = b
	_, err := c.Conn.Write(b)
	return err
}

// sendGrants writes a grant that has just come due from the reader's
// goroutine when the connection is free, between frames, and otherwise
// leaves it to the grant writer: no hand-over to another goroutine in the
// common case, and a reader never waits behind a frame being written (it
// may wait for the 12 bytes to fit in the connection, as it did for
// yamux's own window updates).
func (c *wireConn) sendGrants() {
	if c.mu.TryLock() {
		boundary := c.hdrN == 0 && (c.bodyLeft == 0 || c.held)
		var err error
		if boundary {
			err = c.flushGrants()
		}
		c.mu.Unlock()
		if boundary && err == nil {
			return
		}
	}
	c.flow.signal()
}

// writeGrants writes pending grants unless a frame is half written (its
// end writes them then); it runs when flow signals grants.
func (c *wireConn) writeGrants() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.hdrN > 0 || (c.bodyLeft > 0 && !c.held) {
		return nil
	}
	return c.flushGrants()
}

// writeStats returns how many data frames went out joined and how many
// headers went out alone (tests).
func (c *wireConn) writeStats() (joined, fallbacks int) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.joined, c.fallbacks
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

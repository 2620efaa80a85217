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

// wireConn sits between yamux and the real connection. It does two things:
//
//   - It records when bytes last arrived, which is how the heartbeat
//     detects a dead peer without depending on yamux's ping (whose timeout
//     is the long write timeout).
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
// it, never the bytes: Write holds its lock throughout, and whatever
// sequence of Writes arrives, the same bytes go out in the same order (a
// held header goes out alone before anything that is not its body,
// counted in fallbacks; TestWireConnKeepsBytesInOrder). The tests in
// conn_contract_test.go run real yamux over a varied workload and fail,
// naming the yamux version, when a header ever goes out without its body.
type wireConn struct {
	net.Conn
	lastRecv atomic.Int64 // UnixNano of the last successful read

	mu         sync.Mutex
	pending    [yamuxHeaderSize]byte
	pendingLen int // body length announced by the pending header; 0 = none
	scratch    []byte
	// vectored: the connection turns net.Buffers into one writev. Other
	// connections (TLS, net.Pipe, a port-forward) would get one Write per
	// buffer, so there header and body are copied into one buffer.
	vectored bool
	split    bool // Config.SplitHeaderWrites: no joining
	// joined counts data frames sent joined; fallbacks, held headers
	// sent alone because the next Write was not their body.
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
	}
	return n, err
}

func (c *wireConn) sinceRecv() time.Duration {
	return time.Since(time.Unix(0, c.lastRecv.Load()))
}

func (c *wireConn) Write(p []byte) (int, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.pendingLen > 0 {
		want := c.pendingLen
		c.pendingLen = 0
		if len(p) == want {
			c.joined++
			return c.writeFrame(p)
		}
		// Not the body the header announced: yamux no longer writes
		// as v0.1.2 does. Send the header alone, then p as it is.
		c.fallbacks++
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

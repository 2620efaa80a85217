package portforward

import (
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"

	"k8s.io/apimachinery/pkg/util/httpstream"
)

// ForwardError is the kubelet's report that a forwarded connection failed
// (typically: nothing listens on the port in the pod).
type ForwardError struct {
	Namespace, Pod string
	Port           uint16
	// Message is what the kubelet wrote on the error stream.
	Message string
}

func (e *ForwardError) Error() string {
	return fmt.Sprintf("port-forward to pod %s/%s port %d failed: %s (is the process in the pod listening on port %d?)",
		e.Namespace, e.Pod, e.Port, strings.TrimSpace(e.Message), e.Port)
}

// Addr is the address of one end of a forwarded connection.
type Addr struct {
	Namespace, Pod string
	Port           uint16 // 0 for the local end
}

// Network is "portforward".
func (a Addr) Network() string { return "portforward" }

func (a Addr) String() string {
	if a.Port == 0 {
		return "local"
	}
	return a.Namespace + "/" + a.Pod + ":" + strconv.Itoa(int(a.Port))
}

// maxErrorMessage bounds what is read from a kubelet error stream.
const maxErrorMessage = 64 << 10

// errorWait bounds how long a read that hit the end of a forwarded stream
// (or a stream creation that failed) waits for the kubelet's error message.
// The kubelet writes it just before resetting the streams, so it normally
// arrives at once; the bound only matters when it never comes.
const errorWait = 2 * time.Second

var bufPool = sync.Pool{New: func() any { b := make([]byte, 32<<10); return &b }}

type chunk struct {
	buf *[]byte
	n   int
	err error
}

// Conn is one forwarded connection: a net.Conn over a data stream of a
// port-forward connection, with the kubelet's error stream beside it.
//
// Reads honour deadlines fully. Writes check the write deadline before
// writing but cannot interrupt a write already blocked on the API server
// connection (SPDY has no per-stream flow control; a write blocks only when
// the whole connection is stalled, which its pings detect).
type Conn struct {
	pc        *pfConn
	port      uint16
	requestID string
	errStream httpstream.Stream
	data      httpstream.Stream

	chunks  chan chunk
	readMu  sync.Mutex
	cur     []byte
	curBuf  *[]byte
	readErr error

	errDone chan struct{} // closed when the error stream ended
	errMsg  string

	writeMu   sync.Mutex
	closed    chan struct{}
	closeOnce sync.Once
	wg        sync.WaitGroup
	rdl, wdl  deadline
}

func newConn(pc *pfConn, port uint16, requestID string, errStream, data httpstream.Stream) *Conn {
	c := &Conn{
		pc:        pc,
		port:      port,
		requestID: requestID,
		errStream: errStream,
		data:      data,
		chunks:    make(chan chunk, 1),
		errDone:   make(chan struct{}),
		closed:    make(chan struct{}),
		rdl:       makeDeadline(),
		wdl:       makeDeadline(),
	}
	c.wg.Add(2)
	go c.readErrorStream()
	go c.readLoop()
	return c
}

func (c *Conn) readErrorStream() {
	defer c.wg.Done()
	msg, _ := io.ReadAll(io.LimitReader(c.errStream, maxErrorMessage))
	c.errMsg = string(msg)
	close(c.errDone)
}

// readLoop moves data frames to Read so that Read can honour deadlines and
// Close.
func (c *Conn) readLoop() {
	defer c.wg.Done()
	for {
		bp := bufPool.Get().(*[]byte)
		n, err := c.data.Read(*bp)
		if n > 0 {
			select {
			case c.chunks <- chunk{buf: bp, n: n}:
			case <-c.closed:
				bufPool.Put(bp)
				return
			}
		} else {
			bufPool.Put(bp)
		}
		if err != nil {
			select {
			case c.chunks <- chunk{err: err}:
			case <-c.closed:
			}
			return
		}
	}
}

// Read reads forwarded bytes. At the end of the stream it returns io.EOF, a
// *ForwardError if the kubelet reported a failure, or an error matching
// ErrConnectionLost if the port-forward connection died.
func (c *Conn) Read(p []byte) (int, error) {
	c.readMu.Lock()
	defer c.readMu.Unlock()
	if len(c.cur) == 0 && c.readErr == nil {
		select {
		case <-c.closed:
			return 0, net.ErrClosed
		default:
		}
		select {
		case ch := <-c.chunks:
			if ch.err != nil {
				c.readErr = c.endOfStream(ch.err)
			} else {
				c.curBuf, c.cur = ch.buf, (*ch.buf)[:ch.n]
			}
		case <-c.closed:
			return 0, net.ErrClosed
		case <-c.rdl.wait():
			return 0, os.ErrDeadlineExceeded
		}
	}
	if len(c.cur) == 0 {
		return 0, c.readErr
	}
	n := copy(p, c.cur)
	c.cur = c.cur[n:]
	if len(c.cur) == 0 {
		bufPool.Put(c.curBuf)
		c.curBuf, c.cur = nil, nil
	}
	return n, nil
}

// endOfStream turns the data stream's end into the error the caller should
// see. The kubelet writes its error message and then resets the streams;
// the two may arrive in either order, so wait (bounded) for the error
// stream to end.
func (c *Conn) endOfStream(err error) error {
	t := time.NewTimer(errorWait)
	defer t.Stop()
	select {
	case <-c.errDone:
	case <-t.C:
	case <-c.closed:
		return net.ErrClosed
	}
	if ferr := c.forwardError(); ferr != nil {
		return ferr
	}
	select {
	case <-c.pc.conn.CloseChan():
		return c.lost()
	default:
	}
	if errors.Is(err, io.EOF) {
		return io.EOF
	}
	return fmt.Errorf("read from pod %s/%s port %d: %w", c.pc.namespace, c.pc.pod, c.port, err)
}

func (c *Conn) lost() error {
	return fmt.Errorf("%w %s/%s (port %d): the connection to the API server closed; dial again",
		ErrConnectionLost, c.pc.namespace, c.pc.pod, c.port)
}

// forwardError returns the kubelet's error if its message has arrived.
func (c *Conn) forwardError() error {
	select {
	case <-c.errDone:
		if strings.TrimSpace(c.errMsg) != "" {
			return &ForwardError{Namespace: c.pc.namespace, Pod: c.pc.pod, Port: c.port, Message: c.errMsg}
		}
	default:
	}
	return nil
}

// Write sends bytes to the pod. Concurrent Writes do not interleave.
func (c *Conn) Write(p []byte) (int, error) {
	select {
	case <-c.closed:
		return 0, net.ErrClosed
	case <-c.wdl.wait():
		return 0, os.ErrDeadlineExceeded
	default:
	}
	if err := c.forwardError(); err != nil {
		return 0, err
	}
	// One Write at a time: spdystream's stream sends a Write as one data
	// frame under its framer's lock, but does not promise it.
	c.writeMu.Lock()
	n, err := c.data.Write(p)
	c.writeMu.Unlock()
	if err != nil {
		if ferr := c.forwardError(); ferr != nil {
			return n, ferr
		}
		select {
		case <-c.pc.conn.CloseChan():
			return n, c.lost()
		default:
		}
		return n, fmt.Errorf("write to pod %s/%s port %d: %w", c.pc.namespace, c.pc.pod, c.port, err)
	}
	return n, nil
}

// CloseWrite half-closes the connection: the pod sees end of input. Note
// that a kubelet (containerd) tears the whole forwarded connection down
// about a second after either direction ends.
func (c *Conn) CloseWrite() error {
	return c.data.Close()
}

// Close resets both streams and waits for the connection's goroutines.
func (c *Conn) Close() error {
	c.closeOnce.Do(func() {
		close(c.closed)
		_ = c.data.Reset()
		_ = c.errStream.Reset()
		c.pc.conn.RemoveStreams(c.data, c.errStream)
		c.wg.Wait()
		c.readMu.Lock()
		if c.curBuf != nil {
			bufPool.Put(c.curBuf)
			c.curBuf, c.cur = nil, nil
		}
		c.readMu.Unlock()
		c.pc.release()
	})
	return nil
}

// LocalAddr is a placeholder: the connection has no local socket.
func (c *Conn) LocalAddr() net.Addr { return Addr{} }

// RemoteAddr names the pod and port.
func (c *Conn) RemoteAddr() net.Addr {
	return Addr{Namespace: c.pc.namespace, Pod: c.pc.pod, Port: c.port}
}

// SetDeadline sets both deadlines.
func (c *Conn) SetDeadline(t time.Time) error {
	c.rdl.set(t)
	c.wdl.set(t)
	return nil
}

// SetReadDeadline sets the read deadline; it also wakes a blocked Read.
func (c *Conn) SetReadDeadline(t time.Time) error { c.rdl.set(t); return nil }

// SetWriteDeadline sets the write deadline (checked before each write).
func (c *Conn) SetWriteDeadline(t time.Time) error { c.wdl.set(t); return nil }

// deadline is a resettable timer whose channel closes when it passes.
type deadline struct {
	mu     *sync.Mutex
	timer  *time.Timer
	cancel chan struct{}
}

func makeDeadline() deadline {
	return deadline{mu: &sync.Mutex{}, cancel: make(chan struct{})}
}

func (d *deadline) set(t time.Time) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.timer != nil && !d.timer.Stop() {
		<-d.cancel // the timer fired; wait for it to close cancel
	}
	d.timer = nil
	closed := isClosed(d.cancel)
	if t.IsZero() {
		if closed {
			d.cancel = make(chan struct{})
		}
		return
	}
	if dur := time.Until(t); dur > 0 {
		if closed {
			d.cancel = make(chan struct{})
		}
		ch := d.cancel
		d.timer = time.AfterFunc(dur, func() { close(ch) })
		return
	}
	if !closed {
		close(d.cancel)
	}
}

func (d *deadline) wait() <-chan struct{} {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.cancel
}

func isClosed(ch chan struct{}) bool {
	select {
	case <-ch:
		return true
	default:
		return false
	}
}

var _ net.Conn = (*Conn)(nil)

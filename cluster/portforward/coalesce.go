package portforward

import (
	"net"
	"sync"
	"time"
)

// maxPending bounds the bytes a coalescingConn holds before Write blocks.
const maxPending = 512 << 10

// closeFlushTimeout bounds how long Close waits for pending bytes to go out.
const closeFlushTimeout = 2 * time.Second

// coalescingConn sits under the SPDY framer on a WebSocket tunnel. The
// framer writes every SPDY frame in three or more pieces (8 header bytes,
// then the payload), and client-go's TunnelingConnection turns each Write
// into its own WebSocket message and system call. coalescingConn queues
// writes and one goroutine sends whatever has accumulated as one message,
// so a frame, or a burst of frames, costs one message. It adds no delay:
// the sender starts as soon as there is data; batching happens only while
// it is busy.
//
// Writes are asynchronous: an error sending is returned by the next Write
// (the SPDY connection also notices the dead connection on its read side).
type coalescingConn struct {
	net.Conn

	mu      sync.Mutex
	cond    *sync.Cond
	pending []byte
	spare   []byte
	err     error
	closed  bool
	done    chan struct{}
}

func newCoalescingConn(c net.Conn) *coalescingConn {
	cc := &coalescingConn{Conn: c, done: make(chan struct{})}
	cc.cond = sync.NewCond(&cc.mu)
	go cc.sendLoop()
	return cc
}

func (c *coalescingConn) Write(p []byte) (int, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for len(c.pending) >= maxPending && c.err == nil && !c.closed {
		c.cond.Wait()
	}
	if c.err != nil {
		return 0, c.err
	}
	if c.closed {
		return 0, net.ErrClosed
	}
	c.pending = append(c.pending, p...)
	c.cond.Broadcast()
	return len(p), nil
}

// sendLoop is owned by the conn; Close waits for it.
func (c *coalescingConn) sendLoop() {
	defer close(c.done)
	c.mu.Lock()
	defer c.mu.Unlock()
	for {
		for len(c.pending) == 0 && !c.closed && c.err == nil {
			c.cond.Wait()
		}
		if c.err != nil || len(c.pending) == 0 {
			return // closed and drained, or broken
		}
		out := c.pending
		c.pending, c.spare = c.spare[:0], nil
		c.cond.Broadcast() // the queue has room again
		c.mu.Unlock()
		_, err := c.Conn.Write(out)
		c.mu.Lock()
		c.spare = out[:0]
		if err != nil && c.err == nil {
			c.err = err
		}
		c.cond.Broadcast()
	}
}

// Close sends what is pending (bounded by closeFlushTimeout), then closes.
func (c *coalescingConn) Close() error {
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		return nil
	}
	c.closed = true
	c.cond.Broadcast()
	c.mu.Unlock()
	t := time.AfterFunc(closeFlushTimeout, func() { _ = c.Conn.Close() }) // unblocks a stuck send
	<-c.done
	t.Stop()
	return c.Conn.Close()
}

package portforward

import (
	"bytes"
	"errors"
	"io"
	"net"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

func TestCoalescingConnKeepsOrderAndFlushesOnClose(t *testing.T) {
	a, b := net.Pipe()
	c := newCoalescingConn(a)
	var want bytes.Buffer
	got := make(chan []byte, 1)
	go func() {
		all, _ := io.ReadAll(b)
		got <- all
	}()
	for i := range 1000 {
		p := bytes.Repeat([]byte{byte(i)}, i%97+1)
		want.Write(p)
		n, err := c.Write(p)
		require.NoError(t, err)
		require.Equal(t, len(p), n)
	}
	require.NoError(t, c.Close())
	require.Equal(t, want.Bytes(), <-got)
	_, err := c.Write([]byte("late"))
	require.ErrorIs(t, err, net.ErrClosed)
	require.NoError(t, c.Close(), "Close is idempotent")
}

func TestCoalescingConnReportsWriteErrors(t *testing.T) {
	a, b := net.Pipe()
	require.NoError(t, b.Close())
	c := newCoalescingConn(a)
	defer c.Close()
	require.Eventually(t, func() bool {
		_, err := c.Write([]byte("x"))
		return errors.Is(err, io.ErrClosedPipe)
	}, 5*time.Second, time.Millisecond)
}

func TestCoalescingConnBlocksWhenFull(t *testing.T) {
	a, b := net.Pipe() // unbuffered: nothing drains until b reads
	c := newCoalescingConn(a)
	done := make(chan struct{})
	go func() {
		defer close(done)
		for range 3 {
			_, _ = c.Write(make([]byte, maxPending))
		}
	}()
	// The first write is in flight (net.Pipe is unbuffered) and the second
	// fills the queue; the third must wait for the reader.
	require.Eventually(t, func() bool {
		c.mu.Lock()
		defer c.mu.Unlock()
		return len(c.pending) >= maxPending
	}, 5*time.Second, time.Millisecond)
	select {
	case <-done:
		t.Fatal("writes of more than maxPending did not block")
	default:
	}
	_, err := io.CopyN(io.Discard, b, 3*maxPending)
	require.NoError(t, err)
	<-done
	require.NoError(t, b.Close())
	require.NoError(t, c.Close())
}

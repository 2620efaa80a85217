package tunnel

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// pipeRig connects: client ⇄ (a) Pipe (b) ⇄ backend, all over loopback TCP
// so half-close is real.
type pipeRig struct {
	client, backend net.Conn
	done            chan error
}

func newPipeRig(t *testing.T, ctx context.Context) pipeRig {
	client, a := tcpPair(t, nil)
	b, backend := tcpPair(t, nil)
	done := make(chan error, 1)
	go func() { done <- Pipe(ctx, a, b) }()
	t.Cleanup(func() {
		client.Close()
		backend.Close()
	})
	return pipeRig{client: client, backend: backend, done: done}
}

func TestPipeHalfClose(t *testing.T) {
	r := newPipeRig(t, context.Background())
	_, err := r.client.Write([]byte("request"))
	require.NoError(t, err)
	require.NoError(t, r.client.(*net.TCPConn).CloseWrite())
	req, err := io.ReadAll(r.backend) // sees EOF through the pipe
	require.NoError(t, err)
	require.Equal(t, "request", string(req))
	// The other direction still flows after the half-close.
	_, err = r.backend.Write([]byte("response"))
	require.NoError(t, err)
	require.NoError(t, r.backend.Close())
	resp, err := io.ReadAll(r.client)
	require.NoError(t, err)
	require.Equal(t, "response", string(resp))
	select {
	case err := <-r.done:
		require.NoError(t, err)
	case <-time.After(10 * time.Second):
		t.Fatal("Pipe did not return after both directions ended")
	}
}

func TestPipeContextCancel(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	r := newPipeRig(t, ctx)
	cancel()
	select {
	case err := <-r.done:
		require.ErrorIs(t, err, context.Canceled)
	case <-time.After(10 * time.Second):
		t.Fatal("Pipe ignored the cancellation")
	}
	// Both sides were closed.
	_, err := r.client.Read(make([]byte, 1))
	require.Error(t, err)
	_, err = r.backend.Read(make([]byte, 1))
	require.Error(t, err)
}

// errConn fails its reads with a given error.
type errConn struct {
	net.Conn
	err error
}

func (c errConn) Read([]byte) (int, error) { return 0, c.err }

func TestPipeFirstError(t *testing.T) {
	boom := errors.New("disk on fire")
	a, aPeer := net.Pipe()
	b, bPeer := net.Pipe()
	defer aPeer.Close()
	defer bPeer.Close()
	go func() { _, _ = io.Copy(io.Discard, bPeer) }()
	err := Pipe(context.Background(), errConn{a, boom}, b)
	require.ErrorIs(t, err, boom, "the first real error, not the closing errors after it")
}

// TestPipeStreams pipes two tunnel streams end to end (a relay would pipe
// a stream to a dialed conn): half-close crosses the tunnel.
func TestPipeStreams(t *testing.T) {
	forEachMatrix(t, func(t *testing.T, tr transport, rl roles) {
		p := newSessionPair(t, tr, rl, nil)
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		backendConn, backendPeer := tcpPair(t, nil)
		defer backendPeer.Close()
		pipeDone := make(chan error, 1)
		go func() {
			st, err := p.server.Accept(ctx)
			if err != nil {
				pipeDone <- err
				return
			}
			if err := st.Accept(); err != nil {
				pipeDone <- err
				return
			}
			pipeDone <- Pipe(ctx, st, backendConn)
		}()
		st, err := p.client.Open(ctx, outboundHeader)
		require.NoError(t, err)
		defer st.Close()
		_, err = st.Write([]byte("ping"))
		require.NoError(t, err)
		require.NoError(t, st.CloseWrite())
		got, err := io.ReadAll(backendPeer)
		require.NoError(t, err)
		require.Equal(t, "ping", string(got))
		_, err = backendPeer.Write([]byte("pong"))
		require.NoError(t, err)
		require.NoError(t, backendPeer.(*net.TCPConn).CloseWrite())
		got, err = io.ReadAll(st)
		require.NoError(t, err)
		require.Equal(t, "pong", string(got))
		require.NoError(t, <-pipeDone)
	})
}

// TestPipeWith: the forward function does the a→b direction (here: upper
// case), b→a is the plain copy, and half-close and the first error work as
// in Pipe.
func TestPipeWith(t *testing.T) {
	upper := func(dst, src net.Conn) error {
		b, err := io.ReadAll(src)
		if err != nil {
			return err
		}
		_, err = dst.Write(bytes.ToUpper(b))
		return err
	}
	client, a := tcpPair(t, nil)
	b, backend := tcpPair(t, nil)
	done := make(chan error, 1)
	go func() { done <- PipeWith(context.Background(), a, b, upper) }()
	_, err := client.Write([]byte("request"))
	require.NoError(t, err)
	require.NoError(t, client.(*net.TCPConn).CloseWrite())
	got, err := io.ReadAll(backend)
	require.NoError(t, err)
	require.Equal(t, "REQUEST", string(got), "forward did a→b and its clean end half-closed b")
	_, err = backend.Write([]byte("response"))
	require.NoError(t, err)
	require.NoError(t, backend.Close())
	got, err = io.ReadAll(client)
	require.NoError(t, err)
	require.Equal(t, "response", string(got), "b→a is a plain copy")
	require.NoError(t, <-done)

	// A forward error closes both conns and is returned.
	client, a = tcpPair(t, nil)
	b, backend = tcpPair(t, nil)
	boom := errors.New("boom")
	go func() { done <- PipeWith(context.Background(), a, b, func(net.Conn, net.Conn) error { return boom }) }()
	require.ErrorIs(t, <-done, boom)
	_, err = io.ReadAll(backend)
	require.NoError(t, err, "b was closed")
	_, err = io.ReadAll(client)
	require.NoError(t, err, "a was closed")
}

// scriptedConn serves reads from a script (1: fill the buffer, -1: fill
// half of it, -2: one byte, 0 or the script's end: EOF) and records each
// read's buffer size.
type scriptedConn struct {
	net.Conn
	script  []int
	bufs    []int
	written int
}

func (c *scriptedConn) Read(p []byte) (int, error) {
	c.bufs = append(c.bufs, len(p))
	if len(c.script) == 0 || c.script[0] == 0 {
		return 0, io.EOF
	}
	step := c.script[0]
	c.script = c.script[1:]
	n := len(p)
	switch step {
	case -1:
		n /= 2
	case -2:
		n = 1
	}
	clear(p[:n])
	return n, nil
}

func (c *scriptedConn) Write(p []byte) (int, error) {
	c.written += len(p)
	return len(p), nil
}

// TestPipeBufferSizes: a direction reads with the smallest buffer until a
// read fills it and grows one size per full read up to the largest; a
// partial read of at least the smallest size keeps the size (a yamux
// stream returns what has arrived so far), and a smaller read drops back
// to the smallest (the traffic is not bulk: an idle stream should not hold
// a large buffer).
func TestPipeBufferSizes(t *testing.T) {
	const s, m, l = 32 << 10, 128 << 10, 256 << 10
	require.Equal(t, [3]int{s, m, l}, pipeSizes)
	src := &scriptedConn{script: []int{-1, 1, 1, 1, 1, -1, 1, -2, 1, -1, -2, 0}}
	dst := &scriptedConn{}
	require.NoError(t, copyPooled(dst, src))
	require.Equal(t, []int{s, s, m, l, l, l, l, l, s, m, m, s}, src.bufs)
	require.Equal(t, s/2+s+m+l+l+l/2+l+1+s+m/2+1, dst.written, "every byte read is written")
}

// stepConn answers each Read with the next scripted step (its bytes and
// error), then io.EOF; its Write keeps what it is given, up to short bytes
// less than asked when short > 0, or fails with werr.
type stepConn struct {
	net.Conn
	steps []readStep
	got   []byte
	short int
	werr  error
}

type readStep struct {
	data string
	err  error
}

func (c *stepConn) Read(p []byte) (int, error) {
	if len(c.steps) == 0 {
		return 0, io.EOF
	}
	s := c.steps[0]
	c.steps = c.steps[1:]
	return copy(p, s.data), s.err
}

func (c *stepConn) Write(p []byte) (int, error) {
	if c.werr != nil {
		return 0, c.werr
	}
	n := max(len(p)-c.short, 0)
	c.got = append(c.got, p[:n]...)
	return n, nil
}

// TestCopyPooledContract: the copy keeps io.Copy's rules: every byte read
// is written, including one-byte reads and bytes that come with an error;
// an empty read is no end; io.EOF is a clean end (nil), another read error
// or a write error is returned, and a short write is io.ErrShortWrite.
func TestCopyPooledContract(t *testing.T) {
	boom := errors.New("boom")
	tests := []struct {
		name    string
		steps   []readStep
		short   int
		werr    error
		want    string
		wantErr error
	}{
		{name: "small and empty reads", steps: []readStep{{data: "a"}, {}, {data: "bc"}, {data: "d"}}, want: "abcd"},
		{name: "data with EOF", steps: []readStep{{data: "x"}, {data: "yz", err: io.EOF}}, want: "xyz"},
		{name: "data with an error", steps: []readStep{{data: "ab", err: boom}}, want: "ab", wantErr: boom},
		{name: "unexpected EOF is an error", steps: []readStep{{err: io.ErrUnexpectedEOF}}, wantErr: io.ErrUnexpectedEOF},
		{name: "short write", steps: []readStep{{data: "abc"}}, short: 1, want: "ab", wantErr: io.ErrShortWrite},
		{name: "write error", steps: []readStep{{data: "abc"}}, werr: boom, wantErr: boom},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dst := &stepConn{short: tt.short, werr: tt.werr}
			err := copyPooled(dst, &stepConn{steps: tt.steps})
			if tt.wantErr == nil {
				require.NoError(t, err)
			} else {
				require.ErrorIs(t, err, tt.wantErr)
			}
			require.Equal(t, tt.want, string(dst.got))
		})
	}
}

package tunnel

import (
	"context"
	"errors"
	"io"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// TestOpenEarlySendsWithTheHeader: what the opener writes right after
// OpenEarly reaches the peer with the header, before the peer has even
// answered (so a request costs one round trip on a new stream), and the
// stream then works both ways.
func TestOpenEarlySendsWithTheHeader(t *testing.T) {
	forEachMatrix(t, func(t *testing.T, tr transport, r roles) {
		p := newSessionPair(t, tr, r, nil)
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		got := make(chan string, 1)
		go func() {
			st, err := p.server.Accept(ctx)
			if err != nil {
				got <- err.Error()
				return
			}
			defer st.Close()
			buf := make([]byte, 5)
			_, err = io.ReadFull(st, buf) // before Accept: it came with the header
			if err != nil {
				got <- err.Error()
				return
			}
			got <- string(buf)
			if st.Accept() == nil {
				_, _ = st.Write([]byte("world"))
			}
		}()
		st, err := p.client.OpenEarly(ctx, outboundHeader)
		require.NoError(t, err)
		defer st.Close()
		_, err = st.Write([]byte("hello"))
		require.NoError(t, err)
		require.Equal(t, "hello", <-got)
		buf := make([]byte, 5)
		_, err = io.ReadFull(st, buf)
		require.NoError(t, err)
		require.Equal(t, "world", string(buf))
		require.NoError(t, st.AwaitReply())
	})
}

// TestOpenEarlyRefused: a refusal reaches the opener's first Read (and
// AwaitReply) as Open would have returned it, with the peer's reason.
func TestOpenEarlyRefused(t *testing.T) {
	p := newSessionPair(t, transportTCP, roleSets[0], nil)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	go func() {
		st, err := p.server.Accept(ctx)
		if err == nil {
			_ = st.Reject(ReasonRefused, "dial tcp 10.1.2.3:8082: connection refused")
		}
	}()
	st, err := p.client.OpenEarly(ctx, outboundHeader)
	require.NoError(t, err)
	defer st.Close()
	_, _ = st.Write([]byte("GET / HTTP/1.1\r\n\r\n")) // may go out before the refusal
	_, err = st.Read(make([]byte, 10))
	var de *DialError
	require.True(t, errors.As(err, &de), "%v", err)
	require.Equal(t, ReasonRefused, de.Reason)
	require.ErrorContains(t, err, "connection refused")
	require.ErrorContains(t, err, outboundHeader.Target)
	require.Equal(t, err, st.AwaitReply(), "the same answer every time")
	_, err2 := st.Read(make([]byte, 10))
	require.Equal(t, err, err2)
	require.Eventually(t, func() bool { return p.client.Stats().StreamsFailed == 1 }, 5*time.Second, 5*time.Millisecond)
}

// TestOpenEarlyReplyDeadline: a read deadline that passes before the
// reply began leaves the stream usable; the reply is read later.
func TestOpenEarlyReplyDeadline(t *testing.T) {
	p := newSessionPair(t, transportTCP, roleSets[0], nil)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	answer := make(chan struct{})
	go func() {
		st, err := p.server.Accept(ctx)
		if err != nil {
			return
		}
		<-answer
		if st.Accept() == nil {
			_, _ = st.Write([]byte("late"))
			_ = st.CloseWrite()
		}
		_, _ = io.Copy(io.Discard, st)
		st.Close()
	}()
	st, err := p.client.OpenEarly(ctx, outboundHeader)
	require.NoError(t, err)
	defer st.Close()
	require.NoError(t, st.SetReadDeadline(time.Now().Add(50*time.Millisecond)))
	_, err = st.Read(make([]byte, 4))
	require.True(t, isTimeout(err), "%v", err)
	require.NoError(t, st.SetReadDeadline(time.Time{}))
	close(answer)
	b, err := io.ReadAll(st)
	require.NoError(t, err)
	require.Equal(t, "late", string(b))
}

// TestOpenEarlySessionGone: a session that dies before the reply ends
// the early stream's Read with the session's error.
func TestOpenEarlySessionGone(t *testing.T) {
	p := newSessionPair(t, transportTCP, roleSets[0], nil)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	st, err := p.client.OpenEarly(ctx, outboundHeader)
	require.NoError(t, err)
	defer st.Close()
	require.NoError(t, p.server.Close())
	_, err = st.Read(make([]byte, 4))
	require.Error(t, err)
	var de *DialError
	require.False(t, errors.As(err, &de), "not a refusal: %v", err)
	require.False(t, errors.Is(err, io.EOF), "a cut is not a clean end: %v", err)
}

// TestPoolOpenEarly: the pool opens early streams on its sessions.
func TestPoolOpenEarly(t *testing.T) {
	p := newSessionPair(t, transportTCP, roleSets[0], nil)
	echoServer(t, p.server)
	pool := NewPool(nil, nil)
	pool.Add(p.client)
	defer pool.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	st, err := pool.OpenEarly(ctx, outboundHeader)
	require.NoError(t, err)
	defer st.Close()
	_, err = st.Write([]byte("ping"))
	require.NoError(t, err)
	require.NoError(t, st.CloseWrite())
	b, err := io.ReadAll(st)
	require.NoError(t, err)
	require.Equal(t, "ping", string(b))
}

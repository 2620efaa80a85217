package tunnel

import (
	"context"
	"errors"
	"io"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// TestBadHeader sends malformed headers on raw yamux streams: each gets a
// ReasonProtocol reply, and the session keeps serving other streams.
func TestBadHeader(t *testing.T) {
	long := make([]byte, 0, 5000)
	long = append(long, headerVersion, 0x13, 0x88) // claims 5000 bytes
	long = append(long, make([]byte, 4997)...)
	cases := []struct {
		name string
		raw  []byte
		want string
	}{
		{"garbage", []byte("GET / HTTP/1.1\r\nHost: x\r\n\r\n"), "unsupported header version"},
		{"wrong version", appendHeader(nil, outboundHeader)[:0:0], ""},
		{"oversized", long, "limit 1024"},
		{"bad kind", []byte{headerVersion, 0, 9, 7, 0, 0, 0, 0, 0, 0, 0, 0}, "unknown kind"},
		{"truncated payload", []byte{headerVersion, 0, 3, 1}, ""},
		{"control chars", appendHeader(nil, Header{Kind: KindOutbound, Target: "a\x1b[31m:80"}), "control character"},
		{"outbound without port", appendHeader(nil, Header{Kind: KindOutbound, Target: "host"}), "host:port"},
		{"trailing bytes", append(fixLen(appendHeader(nil, outboundHeader), 2), 0, 0), "trailing"},
	}
	// "wrong version": a valid header with another version byte.
	wv := appendHeader(nil, outboundHeader)
	wv[0] = 2
	cases[1].raw, cases[1].want = wv, "unsupported header version 2"

	forEachMatrix(t, func(t *testing.T, tr transport, r roles) {
		p := newSessionPair(t, tr, r, nil)
		echoServer(t, p.server)
		for _, c := range cases {
			ys, err := p.client.mux.OpenStream()
			require.NoError(t, err)
			_, err = ys.Write(c.raw)
			require.NoError(t, err, c.name)
			if c.name == "truncated payload" {
				require.NoError(t, ys.Close()) // EOF inside the header
				_, err := io.ReadAll(ys)
				require.NoError(t, err, "a truncated header is closed without a reply")
				continue
			}
			_ = ys.SetReadDeadline(time.Now().Add(5 * time.Second))
			rep, err := readReply(ys)
			require.NoError(t, err, c.name)
			require.Equal(t, uint8(ReasonProtocol), rep.code, c.name)
			require.Contains(t, rep.message, c.want, c.name)
			_ = ys.Close()
		}
		// The session survives: a well-formed stream still works.
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		st, err := p.client.Open(ctx, outboundHeader)
		require.NoError(t, err)
		_, err = st.Write([]byte("still alive"))
		require.NoError(t, err)
		require.NoError(t, st.CloseWrite())
		got, err := io.ReadAll(st)
		require.NoError(t, err)
		require.Equal(t, "still alive", string(got))
		require.NoError(t, st.Close())
		require.Nil(t, p.client.Err())
		require.Nil(t, p.server.Err())
		require.GreaterOrEqual(t, p.server.Stats().StreamsFailed, uint64(len(cases)))
	})
}

// fixLen adds extra to the length field of an encoded header.
func fixLen(b []byte, extra int) []byte {
	n := int(b[1])<<8 | int(b[2]) + extra
	b[1], b[2] = byte(n>>8), byte(n)
	return b
}

func TestHeaderTimeout(t *testing.T) {
	p := newSessionPair(t, transportTCP, roleSets[0], func(c *Config) { c.HeaderTimeout = 100 * time.Millisecond })
	ys, err := p.client.mux.OpenStream()
	require.NoError(t, err)
	_, err = ys.Write([]byte{headerVersion}) // then nothing
	require.NoError(t, err)
	_ = ys.SetReadDeadline(time.Now().Add(10 * time.Second))
	_, err = io.ReadAll(ys)
	require.NoError(t, err, "the receiver closes a stream whose header does not arrive")
	_ = ys.Close()
	require.Eventually(t, func() bool { return p.server.Stats().StreamsFailed == 1 }, 5*time.Second, 5*time.Millisecond)
	require.Nil(t, p.server.Err())
}

// TestDeadPeer stalls the connection in the proxy: both ends must notice
// within their (short, configured) dead-peer bound.
func TestDeadPeer(t *testing.T) {
	for _, r := range roleSets {
		t.Run(r.name, func(t *testing.T) {
			p := newSessionPair(t, transportProxy, r, func(c *Config) {
				c.KeepAliveInterval = 50 * time.Millisecond
				c.DeadPeerTimeout = 400 * time.Millisecond
			})
			// Idle but healthy for several bounds: no false alarm.
			for range 3 {
				_, err := p.client.Ping()
				require.NoError(t, err)
			}
			require.Never(t, func() bool { return p.client.Err() != nil || p.server.Err() != nil },
				time.Second, 50*time.Millisecond)
			p.proxy.Stall()
			for _, s := range []*Session{p.client, p.server} {
				select {
				case <-s.Done():
				case <-time.After(20 * time.Second):
					t.Fatal("dead peer not detected")
				}
				require.ErrorIs(t, s.Err(), ErrPeerDead)
			}
		})
	}
}

// TestConnectionCut: the connection dies under open streams; sessions end,
// and streams report an error, not a clean EOF.
func TestConnectionCut(t *testing.T) {
	p := newSessionPair(t, transportProxy, roleSets[0], nil)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	srv := make(chan *Stream, 1)
	go func() {
		st, err := p.server.Accept(ctx)
		if err == nil && st.Accept() == nil {
			srv <- st
		}
	}()
	st, err := p.client.Open(ctx, outboundHeader)
	require.NoError(t, err)
	sst := <-srv
	readErr := make(chan error, 1)
	go func() {
		_, err := io.ReadAll(st)
		readErr <- err
	}()
	p.proxy.Cut()
	select {
	case err := <-readErr:
		require.Error(t, err, "a cut must not look like a clean end of stream")
		require.NotErrorIs(t, err, io.EOF)
	case <-time.After(10 * time.Second):
		t.Fatal("read not unblocked by the cut")
	}
	<-p.client.Done()
	<-p.server.Done()
	require.Error(t, p.client.Err())
	require.NotErrorIs(t, p.client.Err(), ErrSessionClosed)
	_, err = p.client.Open(ctx, outboundHeader)
	require.Error(t, err)
	_ = st.Close()
	_ = sst.Close()
}

func TestCloseWithReason(t *testing.T) {
	forEachMatrix(t, func(t *testing.T, tr transport, r roles) {
		p := newSessionPair(t, tr, r, nil)
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		short, cancelShort := context.WithTimeout(ctx, 20*time.Millisecond)
		_, err := p.client.Accept(short) // nothing to accept
		cancelShort()
		require.ErrorIs(t, err, context.DeadlineExceeded)
		acceptErr := make(chan error, 1)
		go func() {
			_, err := p.client.Accept(context.Background())
			acceptErr <- err
		}()
		require.NoError(t, p.server.CloseWithCode(CodeReplaced, "replaced by a newer daemon"))
		require.ErrorIs(t, p.server.Err(), ErrSessionClosed)
		<-p.client.Done()
		var pe *PeerClosedError
		require.ErrorAs(t, p.client.Err(), &pe)
		require.Equal(t, "replaced by a newer daemon", pe.Reason)
		require.ErrorIs(t, p.client.Err(), ErrReplaced)
		require.Contains(t, p.client.Err().Error(), "replaced")
		err = <-acceptErr
		require.ErrorAs(t, err, &pe)
		require.NoError(t, p.client.Close(), "closing an ended session is fine")
	})
}

// TestContextCancel: cancelling the context of Accept, Open and Pipe ends
// them and closes what they hold.
func TestContextCancel(t *testing.T) {
	forEachMatrix(t, func(t *testing.T, tr transport, r roles) {
		p := newSessionPair(t, tr, r, nil)
		ctx, cancel := context.WithCancel(context.Background())
		var wg sync.WaitGroup
		errs := make(chan error, 100)
		// Server: pipe every accepted stream into an in-memory conn that
		// never answers.
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				st, err := p.server.Accept(ctx)
				if err != nil {
					errs <- err
					return
				}
				if err := st.Accept(); err != nil {
					errs <- err
					return
				}
				a, b := net.Pipe()
				wg.Add(2)
				go func() { defer wg.Done(); errs <- Pipe(ctx, st, a) }()
				go func() { defer wg.Done(); _, _ = io.Copy(io.Discard, b); b.Close() }()
			}
		}()
		var clientStreams []*Stream
		for range 5 {
			st, err := p.client.Open(ctx, outboundHeader)
			require.NoError(t, err)
			_, err = st.Write([]byte("x"))
			require.NoError(t, err)
			clientStreams = append(clientStreams, st)
		}
		blocked := make(chan error, 1)
		go func() {
			_, err := p.client.Accept(ctx)
			blocked <- err
		}()
		cancel()
		wg.Wait()
		close(errs)
		n := 0
		for err := range errs {
			require.ErrorIs(t, err, context.Canceled)
			n++
		}
		require.Equal(t, 6, n, "5 pipes and the accept loop")
		require.ErrorIs(t, <-blocked, context.Canceled)
		_, err := p.client.Open(ctx, outboundHeader)
		require.ErrorIs(t, err, context.Canceled)
		// The server's streams were closed by Pipe; the client sees EOF.
		for _, st := range clientStreams {
			_ = st.SetReadDeadline(time.Now().Add(10 * time.Second))
			_, err := io.ReadAll(st)
			require.NoError(t, err)
			require.NoError(t, st.Close())
		}
		require.Eventually(t, func() bool { return p.server.NumStreams() == 0 && p.client.NumStreams() == 0 },
			5*time.Second, 5*time.Millisecond, "open streams: client %v server %v", p.client.Stats(), p.server.Stats())
		require.Nil(t, p.client.Err(), "cancelling operations does not end the session")
	})
}

func TestOpenOnClosedSession(t *testing.T) {
	p := newSessionPair(t, transportPipe, roleSets[0], nil)
	require.NoError(t, p.client.Close())
	_, err := p.client.Open(context.Background(), outboundHeader)
	require.ErrorIs(t, err, ErrSessionClosed)
	_, err = p.client.Accept(context.Background())
	require.ErrorIs(t, err, ErrSessionClosed)
	_, err = p.client.Ping()
	require.ErrorIs(t, err, ErrSessionClosed)
	<-p.server.Done()
	var pe *PeerClosedError
	require.True(t, errors.As(p.server.Err(), &pe), "server sees the goodbye: %v", p.server.Err())
	require.Zero(t, pe.Code)
	require.NotErrorIs(t, p.server.Err(), ErrReplaced)
}

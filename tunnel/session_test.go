package tunnel

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"golang.org/x/sync/errgroup"
)

var outboundHeader = Header{Kind: KindOutbound, Target: "driver.hotrod.svc.cluster.local:8082", Source: "127.0.0.1:40000"}
var inboundHeader = Header{Kind: KindInbound, Workload: "route", Port: 8083, Source: "10.1.2.3:5555"}

func TestEcho(t *testing.T) {
	forEachMatrix(t, func(t *testing.T, tr transport, r roles) {
		p := newSessionPair(t, tr, r, nil)
		echoServer(t, p.server)
		echoServer(t, p.client)
		// Both directions: the daemon opens outbound, the relay inbound.
		for _, c := range []struct {
			name   string
			opener *Session
			h      Header
		}{{"client opens", p.client, outboundHeader}, {"server opens", p.server, inboundHeader}} {
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			st, err := c.opener.Open(ctx, c.h)
			cancel()
			require.NoError(t, err, c.name)
			require.Equal(t, c.h, st.Header())
			msg := []byte("hello through the tunnel: " + c.name)
			_, err = st.Write(msg)
			require.NoError(t, err)
			require.NoError(t, st.CloseWrite())
			got, err := io.ReadAll(st)
			require.NoError(t, err)
			require.Equal(t, msg, got)
			require.NoError(t, st.Close())
		}
		require.Eventually(t, func() bool {
			return p.client.NumStreams() == 0 && p.server.NumStreams() == 0
		}, 5*time.Second, 5*time.Millisecond)
		cs, ss := p.client.Stats(), p.server.Stats()
		require.EqualValues(t, 2, cs.StreamsTotal)
		require.EqualValues(t, 2, ss.StreamsTotal)
		require.Positive(t, cs.BytesOut)
		require.Equal(t, cs.BytesOut+cs.BytesIn, ss.BytesIn+ss.BytesOut)
	})
}

// sendAndHash writes n random bytes to w and returns their hash.
func sendAndHash(w io.Writer, n int64) ([32]byte, error) {
	h := sha256.New()
	src := io.LimitReader(rand.Reader, n)
	buf := make([]byte, 256<<10)
	_, err := io.CopyBuffer(io.MultiWriter(w, h), src, buf)
	var sum [32]byte
	copy(sum[:], h.Sum(nil))
	return sum, err
}

func readAndHash(r io.Reader) ([32]byte, int64, error) {
	h := sha256.New()
	buf := make([]byte, 256<<10)
	n, err := io.CopyBuffer(h, struct{ io.Reader }{r}, buf)
	var sum [32]byte
	copy(sum[:], h.Sum(nil))
	return sum, n, err
}

// TestBulk sends bulkSize bytes each way at once on one stream and checks
// both checksums.
func TestBulk(t *testing.T) {
	forEachMatrix(t, func(t *testing.T, tr transport, r roles) {
		p := newSessionPair(t, tr, r, nil)
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
		defer cancel()
		type result struct {
			sent, got [32]byte
			n         int64
		}
		run := func(st *Stream) (result, error) {
			var res result
			var g errgroup.Group
			g.Go(func() error {
				var err error
				res.sent, err = sendAndHash(st, bulkSize)
				if err != nil {
					return err
				}
				return st.CloseWrite()
			})
			g.Go(func() error {
				var err error
				res.got, res.n, err = readAndHash(st)
				return err
			})
			return res, g.Wait()
		}
		srvRes := make(chan result, 1)
		go func() {
			defer close(srvRes)
			st, err := p.server.Accept(ctx)
			if err != nil {
				return
			}
			defer st.Close()
			if st.Accept() != nil {
				return
			}
			res, err := run(st)
			if err == nil {
				srvRes <- res
			}
		}()
		st, err := p.client.Open(ctx, outboundHeader)
		require.NoError(t, err)
		defer st.Close()
		cres, err := run(st)
		require.NoError(t, err)
		sres, ok := <-srvRes
		require.True(t, ok, "server side failed")
		require.EqualValues(t, bulkSize, cres.n)
		require.EqualValues(t, bulkSize, sres.n)
		require.Equal(t, cres.sent, sres.got, "client→server checksum")
		require.Equal(t, sres.sent, cres.got, "server→client checksum")
	})
}

// TestHalfClose: the opener finishes writing, then still reads the whole
// reply, which the other side only sends after seeing end-of-stream.
func TestHalfClose(t *testing.T) {
	forEachMatrix(t, func(t *testing.T, tr transport, r roles) {
		p := newSessionPair(t, tr, r, nil)
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		done := make(chan error, 1)
		go func() {
			done <- func() error {
				st, err := p.server.Accept(ctx)
				if err != nil {
					return err
				}
				defer st.Close()
				if err := st.Accept(); err != nil {
					return err
				}
				req, err := io.ReadAll(st) // until the opener's CloseWrite
				if err != nil {
					return err
				}
				reply := bytes.Repeat(req, 1000) // a reply larger than the request
				if _, err := st.Write(reply); err != nil {
					return err
				}
				return st.CloseWrite()
			}()
		}()
		st, err := p.client.Open(ctx, outboundHeader)
		require.NoError(t, err)
		defer st.Close()
		_, err = st.Write([]byte("request-"))
		require.NoError(t, err)
		require.NoError(t, st.CloseWrite())
		_, err = st.Write([]byte("x"))
		require.Error(t, err, "write after CloseWrite must fail")
		got, err := io.ReadAll(st)
		require.NoError(t, err)
		require.Equal(t, bytes.Repeat([]byte("request-"), 1000), got)
		require.NoError(t, <-done)
	})
}

// TestConcurrentStreams runs 1,000 streams at once, each echoing its own
// random payload, each checked by checksum.
func TestConcurrentStreams(t *testing.T) {
	forEachMatrix(t, func(t *testing.T, tr transport, r roles) {
		p := newSessionPair(t, tr, r, nil)
		echoServer(t, p.server)
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
		defer cancel()
		const streams = 1000
		var g errgroup.Group
		for i := range streams {
			g.Go(func() error {
				st, err := p.client.Open(ctx, outboundHeader)
				if err != nil {
					return fmt.Errorf("stream %d: open: %w", i, err)
				}
				defer st.Close()
				var sent [32]byte
				werr := make(chan error, 1)
				go func() {
					var err error
					sent, err = sendAndHash(st, concurrentPayload+int64(i))
					if err == nil {
						err = st.CloseWrite()
					}
					werr <- err
				}()
				got, n, err := readAndHash(st)
				if err2 := <-werr; err == nil {
					err = err2
				}
				if err != nil {
					return fmt.Errorf("stream %d: %w", i, err)
				}
				if n != concurrentPayload+int64(i) || got != sent {
					return fmt.Errorf("stream %d: got %d bytes, checksum match %v", i, n, got == sent)
				}
				return nil
			})
		}
		require.NoError(t, g.Wait())
		require.EqualValues(t, streams, p.client.Stats().StreamsTotal)
	})
}

func TestHandshakeRefusals(t *testing.T) {
	cases := []struct {
		name    string
		hello   func(h *Hello)
		check   func(Hello) (Welcome, error)
		want    error
		code    HandshakeCode
		srvWant string
	}{
		{"wrong token", func(h *Hello) { h.Token = "wrong" }, acceptAll, ErrBadToken, CodeBadToken, ""},
		{"wrong version", func(h *Hello) { h.Version = 99 }, acceptAll, ErrVersionMismatch, CodeVersionMismatch, ""},
		{"sandbox mismatch", nil, func(h Hello) (Welcome, error) {
			return Welcome{}, &HandshakeError{Code: CodeSandboxMismatch, Message: "this relay serves sandbox bob, not " + h.Sandbox}
		}, ErrSandboxMismatch, CodeSandboxMismatch, ""},
		{"internal error stays private", nil, func(Hello) (Welcome, error) {
			return Welcome{}, errors.New("database password hunter2 rejected")
		}, ErrHandshakeInternal, CodeInternal, "hunter2"},
	}
	for _, tr := range []transport{transportPipe, transportTCP} {
		for _, r := range roleSets {
			for _, c := range cases {
				t.Run(string(tr)+"/"+r.name+"/"+c.name, func(t *testing.T) {
					a, b, _ := connPair(t, tr)
					ccfg, scfg := testConfig(), testConfig()
					ccfg.MuxRole, scfg.MuxRole = r.client, r.server
					ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
					defer cancel()
					srvErr := make(chan error, 1)
					go func() {
						s, _, err := Server(ctx, b, scfg, c.check)
						if s != nil {
							s.Close()
						}
						srvErr <- err
					}()
					h := testHello()
					if c.hello != nil {
						c.hello(&h)
					}
					s, _, err := Client(ctx, a, ccfg, h)
					require.Nil(t, s)
					require.Error(t, err)
					require.ErrorIs(t, err, c.want)
					var he *HandshakeError
					require.ErrorAs(t, err, &he)
					require.Equal(t, c.code, he.Code)
					require.NotContains(t, err.Error(), testToken)
					if c.srvWant != "" {
						require.NotContains(t, err.Error(), c.srvWant, "internal error text must not reach the peer")
					}
					serr := <-srvErr
					require.Error(t, serr)
					require.NotContains(t, serr.Error(), testToken)
				})
			}
		}
	}
}

func TestHandshakeTokenNeverLogged(t *testing.T) {
	var logs bytes.Buffer
	var mu sync.Mutex
	logger := newTestLogger(&logs, &mu)
	a, b := net.Pipe()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	cfg := testConfig()
	cfg.Logger = logger
	ch := make(chan *Session, 1)
	go func() {
		s, h, err := Server(ctx, b, cfg, acceptAll)
		if err == nil {
			logger.Info("got hello", "hello", h, "raw", fmt.Sprintf("%v %+v %#v %s", h, h, h, h))
		}
		ch <- s
	}()
	c, _, err := Client(ctx, a, cfg, testHello())
	require.NoError(t, err)
	s := <-ch
	require.NotNil(t, s)
	h := testHello()
	logger.Info("client hello", "hello", h, "fmt", fmt.Sprintf("%v %+v %#v %s", h, h, h, h))
	require.NoError(t, c.CloseWithReason("test over"))
	<-s.Done()
	require.NoError(t, s.Close())
	mu.Lock()
	defer mu.Unlock()
	require.NotContains(t, logs.String(), testToken)
	require.Contains(t, logs.String(), "<redacted>")
	require.Empty(t, s.Hello().Token, "the server must not keep the token")
}

func TestHandshakeTimeoutAndCancel(t *testing.T) {
	for _, tr := range []transport{transportPipe, transportTCP} {
		t.Run(string(tr), func(t *testing.T) {
			a, b, _ := connPair(t, tr)
			defer b.Close()
			// The peer never answers: b is read and discarded.
			go func() { _, _ = io.Copy(io.Discard, b) }()
			cfg := testConfig()
			cfg.HandshakeTimeout = 200 * time.Millisecond
			_, _, err := Client(context.Background(), a, cfg, testHello())
			require.ErrorIs(t, err, context.DeadlineExceeded)

			a2, b2, _ := connPair(t, tr)
			defer b2.Close()
			go func() { _, _ = io.Copy(io.Discard, b2) }()
			ctx, cancel := context.WithCancel(context.Background())
			go cancel()
			_, _, err = Client(ctx, a2, testConfig(), testHello())
			require.ErrorIs(t, err, context.Canceled)

			// The relay leaves the bound on a silent daemon to Server.
			a3, b3, _ := connPair(t, tr)
			defer b3.Close()
			go func() { _, _ = io.Copy(io.Discard, b3) }()
			_, _, err = Server(context.Background(), a3, cfg, acceptAll)
			require.ErrorIs(t, err, context.DeadlineExceeded)
		})
	}
}

func TestDialErrorReply(t *testing.T) {
	forEachMatrix(t, func(t *testing.T, tr transport, r roles) {
		p := newSessionPair(t, tr, r, nil)
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		go func() {
			st, err := p.server.Accept(ctx)
			if err != nil {
				return
			}
			_ = st.Reject(ReasonRefused, "dial tcp 10.0.0.7:8082: connect: connection refused")
		}()
		st, err := p.client.Open(ctx, outboundHeader)
		require.Nil(t, st)
		var de *DialError
		require.ErrorAs(t, err, &de)
		require.Equal(t, ReasonRefused, de.Reason)
		require.Contains(t, err.Error(), "connection refused")
		require.Contains(t, err.Error(), outboundHeader.Target)
		// The session is still fine.
		d, err := p.client.Ping()
		require.NoError(t, err)
		require.Positive(t, d)
		require.Eventually(t, func() bool { return p.server.NumStreams() == 0 && p.client.NumStreams() == 0 },
			5*time.Second, 5*time.Millisecond)
		require.EqualValues(t, 1, p.client.Stats().StreamsFailed)
	})
}

func TestWriteBeforeAccept(t *testing.T) {
	p := newSessionPair(t, transportPipe, roleSets[0], nil)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	got := make(chan *Stream, 1)
	go func() {
		st, err := p.server.Accept(ctx)
		if err == nil {
			got <- st
		}
	}()
	opened := make(chan error, 1)
	go func() {
		st, err := p.client.Open(ctx, outboundHeader)
		if err == nil {
			defer st.Close()
		}
		opened <- err
	}()
	st := <-got
	_, err := st.Write([]byte("too early"))
	require.ErrorIs(t, err, ErrNotAccepted)
	require.NoError(t, st.Accept())
	require.Error(t, st.Accept(), "a second answer must fail")
	require.NoError(t, <-opened)
	require.NoError(t, st.Close())
}

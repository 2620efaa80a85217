package tunnel

import (
	"context"
	"encoding/binary"
	"errors"
	"io"
	"net"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// benchServer runs ServeBench on conn and returns a channel with its
// outcome.
type benchOutcome struct {
	served BenchServed
	err    error
}

func serveBenchAsync(ctx context.Context, conn net.Conn, lim BenchLimits) <-chan benchOutcome {
	ch := make(chan benchOutcome, 1)
	go func() {
		s, err := ServeBench(ctx, conn, lim)
		ch <- benchOutcome{s, err}
	}()
	return ch
}

func testBenchLimits() BenchLimits { return BenchLimits{MaxBytes: 1 << 30} }

// benchConns yields a fresh pair of connections for each exchange: one
// over loopback TCP and one over a KindBench stream of a session.
func benchConns(t *testing.T) map[string]func() (client, server net.Conn) {
	p := newSessionPair(t, transportTCP, roleSets[0], nil)
	return map[string]func() (net.Conn, net.Conn){
		"tcp": func() (net.Conn, net.Conn) {
			a, b := tcpPair(t, nil)
			t.Cleanup(func() { _ = a.Close(); _ = b.Close() })
			return a, b
		},
		"stream": func() (net.Conn, net.Conn) {
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			acc := make(chan *Stream, 1)
			go func() {
				st, err := p.server.Accept(ctx)
				if err == nil {
					require.Equal(t, KindBench, st.Header().Kind)
					require.NoError(t, st.Accept())
				}
				acc <- st
			}()
			st, err := p.client.Open(ctx, Header{Kind: KindBench, Source: "test"})
			require.NoError(t, err)
			srv := <-acc
			require.NotNil(t, srv)
			t.Cleanup(func() { _ = st.Close(); _ = srv.Close() })
			return st, srv
		},
	}
}

func TestBenchExchanges(t *testing.T) {
	for name, pair := range benchConns(t) {
		t.Run(name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()

			// Upload, bounded by its byte limit before its time is up.
			c, s := pair()
			out := serveBenchAsync(ctx, s, testBenchLimits())
			const limit = 3*benchChunk + 123
			up, err := BenchUpload(ctx, c, limit, time.Minute)
			require.NoError(t, err)
			require.EqualValues(t, limit, up.Bytes)
			require.Positive(t, up.Elapsed)
			o := <-out
			require.NoError(t, o.err)
			require.Equal(t, BenchSink, o.served.Request.Mode)
			require.EqualValues(t, limit, o.served.In)

			// Upload, bounded by its time.
			c, s = pair()
			out = serveBenchAsync(ctx, s, testBenchLimits())
			up, err = BenchUpload(ctx, c, 1<<30, 50*time.Millisecond)
			require.NoError(t, err)
			require.Positive(t, up.Bytes)
			require.Less(t, up.Bytes, uint64(1<<30))
			o = <-out
			require.NoError(t, o.err)
			require.Equal(t, up.Bytes, o.served.In)

			// Download, bounded by time, then by bytes.
			c, s = pair()
			out = serveBenchAsync(ctx, s, testBenchLimits())
			down, err := BenchDownload(ctx, c, 1<<30, 50*time.Millisecond)
			require.NoError(t, err)
			require.Positive(t, down.Bytes)
			o = <-out
			require.NoError(t, o.err)
			require.Equal(t, down.Bytes, o.served.Out)
			c, s = pair()
			out = serveBenchAsync(ctx, s, testBenchLimits())
			down, err = BenchDownload(ctx, c, 5000, time.Minute)
			require.NoError(t, err)
			require.EqualValues(t, 5000, down.Bytes)
			require.NoError(t, (<-out).err)

			// Round trips, bounded by bytes: exactly limit/size of them.
			c, s = pair()
			out = serveBenchAsync(ctx, s, testBenchLimits())
			rtts, err := BenchRoundTrips(ctx, c, 1024, 10*1024, time.Minute)
			require.NoError(t, err)
			require.Len(t, rtts, 10)
			for _, r := range rtts {
				require.Positive(t, r)
			}
			o = <-out
			require.NoError(t, o.err)
			require.EqualValues(t, 10*1024, o.served.In)
			require.EqualValues(t, 10*1024, o.served.Out)
		})
	}
}

func TestBenchRefusals(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	refused := func(t *testing.T, lim BenchLimits, do func(c net.Conn) error, reason Reason, msg string) {
		t.Helper()
		c, s := tcpPair(t, nil)
		defer c.Close()
		out := serveBenchAsync(ctx, s, lim)
		err := do(c)
		var de *DialError
		require.ErrorAs(t, err, &de)
		require.Equal(t, reason, de.Reason, "%v", err)
		require.Contains(t, de.Message, msg)
		o := <-out
		require.ErrorAs(t, o.err, &de, "the relay reports the refusal too")
	}
	t.Run("over the byte cap", func(t *testing.T) {
		refused(t, BenchLimits{MaxBytes: 1000}, func(c net.Conn) error {
			_, err := BenchUpload(ctx, c, 1001, time.Second)
			return err
		}, ReasonDenied, "asks for 1001 bytes, over this relay's cap of 1000")
	})
	t.Run("over the duration cap", func(t *testing.T) {
		refused(t, testBenchLimits(), func(c net.Conn) error {
			_, err := BenchDownload(ctx, c, 1000, BenchMaxDuration+time.Second)
			return err
		}, ReasonDenied, "over this relay's cap of 1m0s")
	})
	t.Run("not admitted", func(t *testing.T) {
		released := false
		lim := BenchLimits{MaxBytes: 1 << 20, Admit: func(BenchRequest) (func(), error) {
			return func() { released = true }, errors.New("busy with 8 bench connections")
		}}
		refused(t, lim, func(c net.Conn) error {
			_, err := BenchRoundTrips(ctx, c, 10, 100, time.Second)
			return err
		}, ReasonOther, "busy with 8 bench connections")
		require.False(t, released, "a refused request holds no slot")
	})
	t.Run("malformed request", func(t *testing.T) {
		refused(t, testBenchLimits(), func(c net.Conn) error {
			b := appendBenchRequest(nil, BenchRequest{Mode: 9, Limit: 1})
			_, err := c.Write(b)
			require.NoError(t, err)
			rep, err := readReply(c)
			require.NoError(t, err)
			return rep.err()
		}, ReasonProtocol, "unknown mode 9")
	})
	t.Run("admitted and released", func(t *testing.T) {
		var admitted, released int
		lim := BenchLimits{MaxBytes: 1 << 20, Admit: func(BenchRequest) (func(), error) {
			admitted++
			return func() { released++ }, nil
		}}
		c, s := tcpPair(t, nil)
		defer c.Close()
		out := serveBenchAsync(ctx, s, lim)
		_, err := BenchRoundTrips(ctx, c, 10, 100, time.Second)
		require.NoError(t, err)
		require.NoError(t, (<-out).err)
		require.Equal(t, 1, admitted)
		require.Equal(t, 1, released)
	})
}

// An opener that sends more than its request's limit, or a chunk over
// the chunk cap, is cut off: the relay never reads past what it admitted.
func TestBenchLimitEnforced(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	for name, chunk := range map[string]uint32{"over the request's limit": 2000, "over the chunk cap": benchMaxChunk + 1} {
		t.Run(name, func(t *testing.T) {
			c, s := tcpPair(t, nil)
			defer c.Close()
			out := serveBenchAsync(ctx, s, testBenchLimits())
			require.NoError(t, benchOpen(c, BenchRequest{Mode: BenchSink, Limit: 1000}))
			_, err := c.Write(binary.BigEndian.AppendUint32(nil, chunk))
			require.NoError(t, err)
			o := <-out
			require.ErrorIs(t, o.err, ErrProtocol)
			require.Zero(t, o.served.In)
			_, err = io.ReadAll(c)
			require.NoError(t, err, "the relay closed the connection")
		})
	}
}

// ServeBench returns when its context ends, closing the connection.
func TestBenchServeEndsWithContext(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	c, s := tcpPair(t, nil)
	defer c.Close()
	out := serveBenchAsync(ctx, s, testBenchLimits())
	require.NoError(t, benchOpen(c, BenchRequest{Mode: BenchEcho, Limit: 1000}))
	cancel()
	select {
	case o := <-out:
		require.ErrorIs(t, o.err, context.Canceled)
	case <-time.After(10 * time.Second):
		t.Fatal("ServeBench did not return after its context ended")
	}
}

func TestBenchHandshake(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	check := func(h Hello) (Welcome, error) {
		w, err := acceptAll(h)
		w.Capabilities = append(w.Capabilities, "bench")
		return w, err
	}

	// A bench Hello gets the bare connection, with the Welcome; the
	// check sees it is one.
	a, b := tcpPair(t, nil)
	type res struct {
		s     *Session
		bench net.Conn
		h     Hello
		err   error
	}
	ch := make(chan res, 1)
	go func() {
		s, bc, h, err := ServerOrBench(ctx, b, testConfig(), check)
		ch <- res{s, bc, h, err}
	}()
	conn, w, err := ClientBench(ctx, a, testConfig(), testHello())
	require.NoError(t, err)
	require.Contains(t, w.Capabilities, "bench")
	r := <-ch
	require.NoError(t, r.err)
	require.Nil(t, r.s)
	require.NotNil(t, r.bench)
	require.True(t, r.h.Bench)
	require.Empty(t, r.h.Token, "the returned Hello holds no token")
	require.Contains(t, r.h.String(), "Bench:true")
	out := serveBenchAsync(ctx, r.bench, testBenchLimits())
	rtts, err := BenchRoundTrips(ctx, conn, 100, 1000, time.Minute)
	require.NoError(t, err)
	require.Len(t, rtts, 10)
	require.NoError(t, (<-out).err)
	_ = conn.Close()

	// The token is checked as for a session.
	a, b = tcpPair(t, nil)
	go func() {
		s, bc, h, err := ServerOrBench(ctx, b, testConfig(), check)
		ch <- res{s, bc, h, err}
	}()
	bad := testHello()
	bad.Token = "wrong"
	_, _, err = ClientBench(ctx, a, testConfig(), bad)
	require.ErrorIs(t, err, ErrBadToken)
	require.ErrorIs(t, (<-ch).err, ErrBadToken)

	// A plain Hello still gets a session from ServerOrBench.
	a, b = tcpPair(t, nil)
	go func() {
		s, bc, h, err := ServerOrBench(ctx, b, testConfig(), check)
		ch <- res{s, bc, h, err}
	}()
	cs, _, err := Client(ctx, a, testConfig(), testHello())
	require.NoError(t, err)
	r = <-ch
	require.NoError(t, r.err)
	require.NotNil(t, r.s)
	require.Nil(t, r.bench)
	require.False(t, r.h.Bench)
	_ = cs.Close()
	_ = r.s.Close()

	// Server serves no bench connections: it refuses the bench Hello
	// before asking its check.
	a, b = tcpPair(t, nil)
	asked := make(chan bool, 1)
	go func() {
		_, _, err := Server(ctx, b, testConfig(), func(h Hello) (Welcome, error) {
			asked <- true
			return acceptAll(h)
		})
		ch <- res{err: err}
	}()
	_, _, err = ClientBench(ctx, a, testConfig(), testHello())
	require.ErrorIs(t, err, ErrHandshakeInternal)
	require.ErrorContains(t, err, "serves no bench connections")
	require.Error(t, (<-ch).err)
	require.Empty(t, asked)
}

func TestBenchHeader(t *testing.T) {
	h := Header{Kind: KindBench, Source: "sbx bench cluster"}
	require.NoError(t, h.Validate())
	require.Equal(t, "bench from sbx bench cluster", h.String())
	b := appendHeader(nil, h)
	got, err := readHeader(bytesReader(b), 1024)
	require.NoError(t, err)
	require.Equal(t, h, got)
	for _, bad := range []Header{
		{Kind: KindBench, Target: "x:1"},
		{Kind: KindBench, Workload: "w"},
		{Kind: KindBench, Port: 1},
	} {
		require.ErrorContains(t, bad.Validate(), "bench stream must not carry")
	}
}

type byteReader struct{ b []byte }

func (r *byteReader) Read(p []byte) (int, error) {
	if len(r.b) == 0 {
		return 0, io.EOF
	}
	n := copy(p, r.b)
	r.b = r.b[n:]
	return n, nil
}

func bytesReader(b []byte) io.Reader { return &byteReader{b} }

// FuzzDecodeBenchRequest: a request is decoded or refused, never more;
// what decodes encodes back to the same bytes.
func FuzzDecodeBenchRequest(f *testing.F) {
	f.Add(appendBenchRequest(nil, BenchRequest{Mode: BenchSink, Limit: 1 << 30}))
	f.Add(appendBenchRequest(nil, BenchRequest{Mode: BenchSource, Limit: 1, Duration: time.Second}))
	f.Add(appendBenchRequest(nil, BenchRequest{Mode: BenchEcho, Limit: 1 << 20}))
	f.Add([]byte{1, 2, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 0})
	f.Fuzz(func(t *testing.T, b []byte) {
		req, err := decodeBenchRequest(b)
		if err != nil {
			var be *benchRequestError
			if len(b) >= benchRequestSize && !errors.As(err, &be) {
				t.Fatalf("error of another type: %v", err)
			}
			return
		}
		require.Equal(t, b[:benchRequestSize], appendBenchRequest(nil, req))
	})
}

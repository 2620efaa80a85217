package relay

import (
	"context"
	"encoding/binary"
	"io"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/sbx-dev/sbx/tunnel"
)

// benchSession connects a laptop session to h and returns it with the
// relay's Welcome.
func benchSession(t *testing.T, h *harness) (*tunnel.Session, tunnel.Welcome) {
	t.Helper()
	conn, err := net.Dial("tcp", h.addrs.Tunnel.String())
	require.NoError(t, err)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	lap := newLaptop(t, "bench")
	s, w, err := tunnel.Client(ctx, conn, tunnel.DefaultConfig(), lap.hello())
	require.NoError(t, err)
	t.Cleanup(func() { _ = s.Close() })
	return s, w
}

// bareBench opens a bare bench connection to h with hello.
func bareBench(t *testing.T, h *harness, hello tunnel.Hello) (net.Conn, tunnel.Welcome, error) {
	t.Helper()
	conn, err := net.Dial("tcp", h.addrs.Tunnel.String())
	require.NoError(t, err)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	bc, w, err := tunnel.ClientBench(ctx, conn, tunnel.DefaultConfig(), hello)
	if err == nil {
		t.Cleanup(func() { _ = bc.Close() })
	}
	return bc, w, err
}

func benchStream(t *testing.T, s *tunnel.Session) net.Conn {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	st, err := s.Open(ctx, tunnel.Header{Kind: tunnel.KindBench, Source: "test"})
	require.NoError(t, err)
	t.Cleanup(func() { _ = st.Close() })
	return st
}

// holdEcho asks for an echo as PROTOCOL.md lays the request out (version
// 1, mode 3, limit 64, duration 32) and returns the reply's code and
// message; with code 0 the connection holds one of the relay's bench
// slots until releaseEcho.
func holdEcho(t *testing.T, c net.Conn, limit uint64) (uint8, string) {
	t.Helper()
	req := []byte{1, 3}
	req = binary.BigEndian.AppendUint64(req, limit)
	req = binary.BigEndian.AppendUint32(req, 0)
	_, err := c.Write(req)
	require.NoError(t, err)
	var pre [4]byte
	_, err = io.ReadFull(c, pre[:])
	require.NoError(t, err)
	require.Equal(t, byte(1), pre[0], "reply version")
	msg := make([]byte, binary.BigEndian.Uint16(pre[2:]))
	_, err = io.ReadFull(c, msg)
	require.NoError(t, err)
	return pre[1], string(msg)
}

// releaseEcho ends a held echo: the end chunk, echoed back.
func releaseEcho(t *testing.T, c net.Conn) {
	t.Helper()
	_, err := c.Write([]byte{0, 0, 0, 0})
	require.NoError(t, err)
	var end [4]byte
	_, err = io.ReadFull(c, end[:])
	require.NoError(t, err)
	require.Equal(t, [4]byte{}, end)
}

func TestBenchOverStreamsAndBareConnections(t *testing.T) {
	h := startRelay(t)
	s, w := benchSession(t, h)
	require.Contains(t, w.Capabilities, "bench", "the relay announces the bench capability")
	require.Equal(t, "v0.0.0-test", w.RelayVersion)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()

	up, err := tunnel.BenchUpload(ctx, benchStream(t, s), 1<<20, time.Minute)
	require.NoError(t, err)
	require.EqualValues(t, 1<<20, up.Bytes)
	down, err := tunnel.BenchDownload(ctx, benchStream(t, s), 1<<30, 20*time.Millisecond)
	require.NoError(t, err)
	require.Positive(t, down.Bytes)
	rtts, err := tunnel.BenchRoundTrips(ctx, benchStream(t, s), 1024, 1<<30, 20*time.Millisecond)
	require.NoError(t, err)
	require.NotEmpty(t, rtts)

	lap := newLaptop(t, "bench")
	bc, bw, err := bareBench(t, h, lap.hello())
	require.NoError(t, err)
	require.Contains(t, bw.Capabilities, "bench")
	up2, err := tunnel.BenchUpload(ctx, bc, 1<<20, time.Minute)
	require.NoError(t, err)
	require.EqualValues(t, 1<<20, up2.Bytes)

	require.Eventually(t, func() bool {
		fams := h.metrics()
		return metricValue(fams, "sbx_relay_bench_total", "result", "ok") == 4 &&
			metricValue(fams, "sbx_relay_bench_bytes_total", "direction", "from_laptop") >= 2<<20 && // and the echoes

			metricValue(fams, "sbx_relay_bench_bytes_total", "direction", "to_laptop") >= float64(down.Bytes)
	}, 10*time.Second, 5*time.Millisecond)
	fams := h.metrics()
	require.Zero(t, metricValue(fams, "sbx_relay_bytes_total", "direction", "from_laptop"), "bench bytes are not relayed bytes")
	require.Equal(t, 1.0, metricValue(fams, "sbx_relay_sessions"), "a bare bench connection is no session")
}

// A bare bench connection proves the token and names the sandbox like a
// session does.
func TestBenchBareConnectionAuthenticated(t *testing.T) {
	h := startRelay(t)
	lap := newLaptop(t, "bench")
	bad := lap.hello()
	bad.Token = "wrong-token"
	_, _, err := bareBench(t, h, bad)
	require.ErrorIs(t, err, tunnel.ErrBadToken)
	other := lap.hello()
	other.Sandbox = "bob"
	_, _, err = bareBench(t, h, other)
	require.ErrorIs(t, err, tunnel.ErrSandboxMismatch)
	require.Eventually(t, func() bool {
		fams := h.metrics()
		return metricValue(fams, "sbx_relay_handshakes_total", "result", "bad_token") == 1 &&
			metricValue(fams, "sbx_relay_handshakes_total", "result", "sandbox_mismatch") == 1
	}, 10*time.Second, 5*time.Millisecond)
	require.Zero(t, h.metric("sbx_relay_bench_total", "result", "ok"))
}

// At most benchMaxConns bench connections at once, streams and bare
// connections together, apart from --max-streams; at most benchMaxBytes
// each. Refusals say why.
func TestBenchCaps(t *testing.T) {
	h := startRelay(t, "--max-streams", "1")
	s, _ := benchSession(t, h)
	lap := newLaptop(t, "bench")
	var held []net.Conn
	for i := range benchMaxConns {
		var c net.Conn
		if i%2 == 0 {
			c = benchStream(t, s)
		} else {
			bc, _, err := bareBench(t, h, lap.hello())
			require.NoError(t, err)
			c = bc
		}
		code, msg := holdEcho(t, c, 1<<20)
		require.Zero(t, code, "bench connection %d: %s", i+1, msg)
		held = append(held, c)
	}
	for _, c := range []net.Conn{benchStream(t, s), func() net.Conn {
		bc, _, err := bareBench(t, h, lap.hello())
		require.NoError(t, err)
		return bc
	}()} {
		code, msg := holdEcho(t, c, 1<<20)
		require.Equal(t, uint8(tunnel.ReasonOther), code)
		require.Contains(t, msg, "the relay of sandbox alice is serving its limit of 8 bench connections at once")
		require.Contains(t, msg, "wait until the running benchmark")
	}
	// One ends: its slot is free again.
	releaseEcho(t, held[0])
	require.Eventually(t, func() bool {
		c := benchStream(t, s)
		code, _ := holdEcho(t, c, 1<<20)
		if code == 0 {
			releaseEcho(t, c)
		}
		return code == 0
	}, 10*time.Second, 10*time.Millisecond)
	for _, c := range held[1:] {
		releaseEcho(t, c)
	}

	// The byte cap, on either kind of connection.
	code, msg := holdEcho(t, benchStream(t, s), benchMaxBytes+1)
	require.Equal(t, uint8(tunnel.ReasonDenied), code)
	require.Contains(t, msg, "over this relay's cap of 1073741824 per bench connection")
	bc, _, err := bareBench(t, h, lap.hello())
	require.NoError(t, err)
	_, err = tunnel.BenchUpload(context.Background(), bc, benchMaxBytes+1, time.Second)
	var de *tunnel.DialError
	require.ErrorAs(t, err, &de)
	require.Equal(t, tunnel.ReasonDenied, de.Reason)

	// Two busy, two over the byte cap, and any the retry above met
	// before the released slot was free.
	require.Eventually(t, func() bool {
		return h.metric("sbx_relay_bench_total", "result", "refused") >= 4
	}, 10*time.Second, 5*time.Millisecond)
}

// A relay shutting down cuts the bench connections it serves.
func TestBenchEndsWithTheRelay(t *testing.T) {
	h := startRelay(t, "--drain-timeout", "1s")
	s, _ := benchSession(t, h)
	c := benchStream(t, s)
	code, msg := holdEcho(t, c, 1<<20)
	require.Zero(t, code, msg)
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		h.stop()
	}()
	_, err := io.ReadAll(c)
	require.Error(t, err, "the session ends under the stream")
	wg.Wait()
}

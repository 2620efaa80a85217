package tunnelbench

import (
	"context"
	"encoding/json"
	"io"
	"net"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"

	"github.com/sbx-dev/sbx/tunnel"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// TestRunSmall runs the whole benchmark at a tiny size: every figure is
// measured and the JSON has the documented keys. It asserts no timings.
func TestRunSmall(t *testing.T) {
	o := Options{Reps: 1, BulkBytes: 4 << 20, RTTSamples: 50, Streams: 100, SplitHeaders: true}
	var progress strings.Builder
	o.Progress = &progress
	r, err := Run(context.Background(), o)
	require.NoError(t, err)
	require.True(t, r.Streams1000OK)
	for name, v := range map[string]float64{
		"raw": r.RawMBps, "tunnel": r.TunnelMBps, "pool": r.PoolMBps, "raw64": r.Raw64MBps, "pool64": r.Pool64MBps,
		"rawrtt": r.RawRTTP50, "tunnelrtt": r.TunnelRTTP50, "bulkrtt": r.TunnelRTTUnderBulkP99,
		"ratio": r.ThroughputRatio, "rttratio": r.RTTRatio, "bulkratio": r.RTTUnderBulkRatio,
		"largeraw": r.LargeReadRawMBps, "largetunnel": r.LargeReadTunnelMBps, "largepool": r.LargeReadPoolMBps,
		"largebulkrtt": r.LargeReadTunnelRTTUnderBulkP99, "largeratio": r.LargeReadThroughputRatio,
		"largebulkratio": r.LargeReadRTTUnderBulkRatio, "largepoolbulkratio": r.LargeReadPoolRTTUnderBulkRatio,
	} {
		require.Positive(t, v, name)
	}
	for _, k := range []string{"tunnel_bulk1", "pool_bulk64", "tunnel_rtt50", "tunnel_bulkrtt99"} {
		require.Positive(t, r.SplitHeaders[k], k)
	}
	b, err := json.Marshal(r)
	require.NoError(t, err)
	var m map[string]any
	require.NoError(t, json.Unmarshal(b, &m))
	for _, k := range []string{"raw_tcp_mbps", "tunnel_mbps", "throughput_ratio", "raw_rtt_p50_us", "tunnel_rtt_p50_us",
		"rtt_ratio", "raw_rtt_under_bulk_p99_us", "tunnel_rtt_under_bulk_p99_us", "rtt_under_bulk_ratio", "streams_1000_ok",
		"large_read_throughput_ratio", "large_read_rtt_under_bulk_ratio"} {
		require.Contains(t, m, k)
	}
	require.Equal(t, 8192.0, m["sink_read_bytes"])
	require.Equal(t, 32768.0, m["large_read_sink_bytes"])
	var text strings.Builder
	require.NoError(t, r.WriteText(&text))
	require.Contains(t, text.String(), "throughput_ratio")
	require.Contains(t, text.String(), "Reading 32 KiB at a time")
	require.Contains(t, text.String(), "large_read_rtt_under_bulk_ratio")
	require.Contains(t, progress.String(), "100 concurrent streams verified")
}

// TestRunBudget: once the budget is spent, a run stops after MinReps
// repetitions instead of running all of them, and reports how many ran.
func TestRunBudget(t *testing.T) {
	o := Options{Reps: MinReps + 2, Budget: time.Nanosecond, BulkBytes: 1 << 20, RTTSamples: 20, Streams: 10}
	var progress strings.Builder
	o.Progress = &progress
	r, err := Run(context.Background(), o)
	require.NoError(t, err)
	require.Equal(t, MinReps, r.Reps)
	require.Contains(t, progress.String(), "stopping after 3 repetitions")
}

// TestSinkReadSizes: the two sinks read what the report says they read,
// on the connections the benchmark really serves. The targets' sink is
// io.Copy(io.Discard, conn), whose read size depends on the connection's
// type: a *net.TCPConn is an io.WriterTo, so only its WriteTo handing the
// copy back to io.Discard's ReadFrom makes raw TCP read 8 KiB at a time.
// Wrapping the connection to watch its reads would hide that WriteTo, so
// for that sink the test watches the writer instead. This catches a Go
// release that changes either.
func TestSinkReadSizes(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	tun, err := newTunnelEndpoint(ctx, "tunnel", 1, DefaultOptions().Config, 1024)
	require.NoError(t, err)
	defer tun.close()
	for name, pair := range map[string]func(t *testing.T) (send io.WriteCloser, recv net.Conn){
		"raw TCP": tcpPair,
		"tunnel":  func(t *testing.T) (io.WriteCloser, net.Conn) { return streamPair(ctx, t, tun) },
	} {
		t.Run(name, func(t *testing.T) {
			const size = 1 << 20
			send, recv := pair(t)
			go sendAndClose(send, size)
			d := &discardRecorder{}
			n, err := drain(serviceSink, d, recv)
			require.NoError(t, err)
			require.EqualValues(t, size, n)
			require.False(t, d.wrote, "io.Copy bypassed io.Discard's ReadFrom")
			require.Equal(t, discardReadSize, d.max, serviceSink)

			send, recv = pair(t)
			go sendAndClose(send, size)
			r := &readSizes{Reader: recv}
			n, err = drain(serviceSinkLarge, io.Discard, r)
			require.NoError(t, err)
			require.EqualValues(t, size, n)
			require.Equal(t, largeSinkReadSize, r.max, serviceSinkLarge)
		})
	}
}

func sendAndClose(w io.WriteCloser, n int) {
	_, _ = w.Write(make([]byte, n))
	_ = w.Close()
}

// tcpPair is a loopback TCP connection: what a raw endpoint's sink reads
// (a *net.TCPConn) and its other end.
func tcpPair(t *testing.T) (io.WriteCloser, net.Conn) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	defer ln.Close()
	send, err := net.Dial("tcp", ln.Addr().String())
	require.NoError(t, err)
	t.Cleanup(func() { _ = send.Close() })
	recv, err := ln.Accept()
	require.NoError(t, err)
	t.Cleanup(func() { _ = recv.Close() })
	require.IsType(t, &net.TCPConn{}, recv)
	return send, recv
}

// streamPair is a tunnel stream of e's session, opened by the server side
// so that the test holds the receiving end (a *tunnel.Stream, as a tunnel
// endpoint's sink reads).
func streamPair(ctx context.Context, t *testing.T, e *tunnelEndpoint) (io.WriteCloser, net.Conn) {
	client := e.pool.Sessions()[0]
	accepted := make(chan *tunnel.Stream, 1)
	go func() {
		defer close(accepted)
		st, err := client.Accept(ctx)
		if err != nil {
			return
		}
		if err := st.Accept(); err != nil {
			_ = st.Close()
			return
		}
		accepted <- st
	}()
	send, err := e.servers[0].Open(ctx, tunnel.Header{Kind: tunnel.KindInbound, Workload: "sink", Port: 1})
	require.NoError(t, err)
	t.Cleanup(func() { _ = send.Close() })
	recv, ok := <-accepted
	require.True(t, ok, "the client side did not accept the stream")
	t.Cleanup(func() { _ = recv.Close() })
	return writeCloser{send}, recv
}

// writeCloser ends a stream's sending side only, as a sender that is done
// does; Close would also stop the receiver's answers.
type writeCloser struct{ *tunnel.Stream }

func (w writeCloser) Close() error { return w.CloseWrite() }

// readSizes records the largest buffer a reader was given.
type readSizes struct {
	io.Reader
	max int
}

func (r *readSizes) Read(p []byte) (int, error) {
	r.max = max(r.max, len(p))
	return r.Reader.Read(p)
}

// discardRecorder is io.Discard that records the largest buffer its
// ReadFrom reads into (io.Discard's own ReadFrom, over a recording
// reader), and whether anything bypassed ReadFrom and wrote to it.
type discardRecorder struct {
	max   int
	wrote bool
}

func (d *discardRecorder) Write(p []byte) (int, error) {
	d.wrote = true
	return len(p), nil
}

func (d *discardRecorder) ReadFrom(r io.Reader) (int64, error) {
	rs := &readSizes{Reader: r}
	n, err := io.Discard.(io.ReaderFrom).ReadFrom(rs)
	d.max = max(d.max, rs.max)
	return n, err
}

func TestRatio(t *testing.T) {
	require.Equal(t, 0.5, ratio(1, 2))
	require.Equal(t, 0.0, ratio(1, 0))
}

func endpoints(b *testing.B) []endpoint {
	ctx := context.Background()
	raw, err := newRawEndpoint(1024)
	require.NoError(b, err)
	b.Cleanup(raw.close)
	tun, err := newTunnelEndpoint(ctx, "tunnel", 1, DefaultOptions().Config, 1024)
	require.NoError(b, err)
	b.Cleanup(tun.close)
	pool, err := newTunnelEndpoint(ctx, "pool", 4, DefaultOptions().Config, 1024)
	require.NoError(b, err)
	b.Cleanup(pool.close)
	return []endpoint{raw, tun, pool}
}

// BenchmarkBulk: single-stream and 8-stream throughput; ns/op is per
// 128 KiB write, MB/s as reported by SetBytes.
func BenchmarkBulk(b *testing.B) {
	for _, ep := range endpoints(b) {
		for _, streams := range []int{1, 8} {
			b.Run(ep.name()+"/streams="+strconv.Itoa(streams), func(b *testing.B) {
				b.ReportAllocs()
				b.SetBytes(ioBuffer)
				per := int64(b.N) * ioBuffer / int64(streams)
				if per < ioBuffer {
					per = ioBuffer
				}
				_, err := bulk(context.Background(), ep, serviceSink, streams, per)
				require.NoError(b, err)
			})
		}
	}
}

// BenchmarkRTT: one 1 KiB request/response per op, idle and behind bulk.
func BenchmarkRTT(b *testing.B) {
	for _, ep := range endpoints(b) {
		b.Run(ep.name()+"/idle", func(b *testing.B) {
			b.ReportAllocs()
			p50, p99, err := rttIdle(context.Background(), ep, max(b.N, 10), 1024)
			require.NoError(b, err)
			b.ReportMetric(float64(p50)/float64(time.Microsecond), "p50-µs")
			b.ReportMetric(float64(p99)/float64(time.Microsecond), "p99-µs")
		})
		b.Run(ep.name()+"/under-bulk", func(b *testing.B) {
			b.ReportAllocs()
			p50, p99, err := rttUnderBulk(context.Background(), ep, serviceSink, max(b.N, 10), 1024)
			require.NoError(b, err)
			b.ReportMetric(float64(p50)/float64(time.Microsecond), "p50-µs")
			b.ReportMetric(float64(p99)/float64(time.Microsecond), "p99-µs")
		})
	}
}

package pfbench

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math"
	"net"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/sbx-dev/sbx/cluster/portforward"
	"github.com/sbx-dev/sbx/tools/testbed/benchstat"
	"github.com/sbx-dev/sbx/tools/testbed/linkshape"
	"github.com/sbx-dev/sbx/tunnel"
)

// DefaultShapedReps is the default number of repetitions per link. Over a
// shaped link the paths are far steadier than on bare loopback (the link,
// not the shared CPU, sets the pace), and a repetition of the slowest
// preset takes ~14 s.
const DefaultShapedReps = 3

// ShapedOptions configure RunShaped. Zero values take the defaults.
type ShapedOptions struct {
	// Links are measured in turn, each in a world of its own.
	Links []linkshape.Link
	// Reps is the number of repetitions per link (DefaultShapedReps).
	Reps int
	// Streams is the number of parallel uploads (default 8); together they
	// send what one stream alone does.
	Streams int
	// PoolSize is the number of sessions in the pool (default 4).
	PoolSize int
	// Transfer is how long a bulk transfer lasts at the link's rate
	// (default max(300 ms, 12 round trips)): transfers scale with the
	// link's bandwidth × delay, so that each reaches steady state. A
	// tunnel stream's window starts at 256 KiB and doubles about once a
	// round trip until it covers the link (tunnel/flow.go): at 100 ms
	// and 100 Mbit/s that takes ~4 round trips, which the rate's slope,
	// read from a quarter of the transfer on, must leave behind. A link
	// without a bandwidth limit sends 16 MiB.
	Transfer time.Duration
	// BulkBytes, if set, is the size of every single-stream transfer
	// instead (tests use tiny ones).
	BulkBytes int64
	// RTTSamples and NewStreamSamples, if set, are the numbers of warm
	// round trips and of requests on new streams per path and
	// repetition; by default as many as fit in 300 ms (4 to 100) and
	// 100 ms (2 to 20) of the link's round trips.
	RTTSamples       int
	NewStreamSamples int
	// Idle, if set, measures the first request on a new stream after
	// every path was idle this long, once per path after the repetitions.
	Idle time.Duration
	// Transport is the port-forward upgrade, as in Options.
	Transport portforward.Transport
	Progress  func(string)
	Logger    *slog.Logger
}

func (o *ShapedOptions) defaults() {
	if o.Reps <= 0 {
		o.Reps = DefaultShapedReps
	}
	if o.Streams <= 0 {
		o.Streams = 8
	}
	if o.PoolSize <= 0 {
		o.PoolSize = 4
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
}

// Latency is a distribution of request times: percentiles over every
// sample of every repetition, in milliseconds and in the link's round
// trips (0 on a link without delay).
type Latency struct {
	P50ms   float64 `json:"p50_ms"`
	P99ms   float64 `json:"p99_ms"`
	P50RTTs float64 `json:"p50_rtts"`
	P99RTTs float64 `json:"p99_rtts"`
	Samples int     `json:"samples"`
}

// ShapedPath is one path measured through a shaped link. Throughputs are
// medians over repetitions in MB/s (10^6 bytes), each a steady rate (see
// "How bulk transfers are timed").
type ShapedPath struct {
	UploadMBps     float64   `json:"upload_mbps"`
	UploadRepsMBps []float64 `json:"upload_reps_mbps"`
	DownloadMBps   float64   `json:"download_mbps"`
	// ParallelMBps is the aggregate of Streams parallel uploads.
	ParallelMBps float64 `json:"parallel_upload_mbps"`
	// RTT is a 1 KiB echo on a warm connection; NewStream the first one on
	// a new connection, timed from the dial; BehindBulk a warm echo sent
	// while one upload runs beside it on the same path (after a round
	// trip and 10 ms, once the upload has filled the path).
	RTT        Latency `json:"rtt"`
	NewStream  Latency `json:"new_stream"`
	BehindBulk Latency `json:"behind_bulk"`
	// IdleFirstByteMs is the first echo on a new connection after the
	// idle time (ShapedOptions.Idle), if measured.
	IdleFirstByteMs   float64 `json:"idle_first_byte_ms,omitempty"`
	IdleFirstByteRTTs float64 `json:"idle_first_byte_rtts,omitempty"`
}

// LinkResult is one link's measurement. The ratios are medians over
// repetitions of the ratio within each repetition; Ranges holds each
// one's min and max.
type LinkResult struct {
	Name          string  `json:"name"`
	RTTms         float64 `json:"rtt_ms"`
	BandwidthMbit float64 `json:"bandwidth_mbit"` // 0: unlimited
	// LinkMBps is the configured rate in MB/s.
	LinkMBps float64 `json:"link_mbps"`
	// Model is how the link is emulated: "stream" (a byte-stream proxy)
	// or "packet" (TCP over emulated IP packets, with LossPct of them
	// dropped); Packets counts the packet model's packets, drops and
	// TCP retransmissions over the whole run.
	Model     string                 `json:"model"`
	LossPct   float64                `json:"loss_pct,omitempty"`
	Packets   *linkshape.PacketStats `json:"packets,omitempty"`
	BulkBytes int64                  `json:"bulk_bytes"`
	// Link is raw TCP through the shaped link: its own capacity.
	Link   ShapedPath `json:"link"`
	Bare   ShapedPath `json:"bare"`
	Tunnel ShapedPath `json:"tunnel"`
	Pool   ShapedPath `json:"pool"`
	// TunnelVsLinkThroughput is one tunnel stream's upload over one raw
	// TCP upload through the same link; TunnelVsBareThroughput over one
	// bare port-forward upload.
	TunnelVsLinkThroughput float64 `json:"tunnel_vs_link_throughput"`
	TunnelVsBareThroughput float64 `json:"tunnel_vs_bare_throughput"`
	// Ratios holds the others: bare_vs_link_throughput,
	// tunnel_vs_link_download, tunnel_vs_bare_download,
	// bare_vs_link_parallel, tunnel_vs_link_parallel,
	// pool_vs_link_parallel, tunnel_vs_bare_rtt (warm p50).
	Ratios  map[string]float64    `json:"ratios"`
	Ranges  map[string][2]float64 `json:"ranges"`
	Seconds float64               `json:"seconds"`
}

// ShapedResult is a whole shaped run.
type ShapedResult struct {
	Transport string       `json:"transport"`
	Reps      int          `json:"reps"`
	Streams   int          `json:"streams"`
	PoolSize  int          `json:"pool_size"`
	IdleS     float64      `json:"idle_s,omitempty"`
	Links     []LinkResult `json:"links"`
	Seconds   float64      `json:"seconds"`
}

// RunShaped measures the raw link, the bare port-forward, the tunnel and
// the pool through each link in turn: the port-forward connections (both
// directions) and the raw TCP connections go through the same shaped
// link, everything behind it (the kubelet side, the application, the
// relay) is on loopback.
func RunShaped(ctx context.Context, opts ShapedOptions) (*ShapedResult, error) {
	opts.defaults()
	if len(opts.Links) == 0 {
		return nil, errors.New("no link to measure")
	}
	start := time.Now()
	res := &ShapedResult{Transport: string(opts.Transport), Reps: opts.Reps, Streams: opts.Streams,
		PoolSize: opts.PoolSize, IdleS: opts.Idle.Seconds()}
	if res.Transport == "" {
		res.Transport = "auto (websocket, spdy fallback)"
	}
	for _, l := range opts.Links {
		if l.RTT <= 0 && l.Bandwidth <= 0 && l.Loss <= 0 {
			return nil, fmt.Errorf("link %s: neither a round trip nor a bandwidth to shape", l.Name)
		}
		lr, err := runLink(ctx, opts, l)
		if err != nil {
			return nil, fmt.Errorf("link %s: %w", l.Name, err)
		}
		res.Links = append(res.Links, *lr)
	}
	res.Seconds = round3(time.Since(start).Seconds())
	return res, nil
}

// shapedSample is one path's measurements in one repetition.
type shapedSample struct {
	up, down, parallel     float64
	rtt, newStream, behind []float64 // ms
	rttP50                 float64
}

func runLink(ctx context.Context, opts ShapedOptions, l linkshape.Link) (*LinkResult, error) {
	start := time.Now()
	// The shaper closes after the paths (deferred calls run last first):
	// their connections end through the link.
	sh := linkshape.New(l)
	defer sh.Close()
	e, err := newEnv(ctx, opts.Logger, tunnel.PortForwardConfig())
	if err != nil {
		return nil, err
	}
	defer e.close()
	if e.pfAddr, err = sh.Proxy(strings.TrimPrefix(e.srv.URL(), "http://")); err != nil {
		return nil, err
	}
	rawAddr, err := sh.Proxy(e.appAddr)
	if err != nil {
		return nil, err
	}
	if err := e.startBare(opts.Transport); err != nil {
		return nil, fmt.Errorf("bare port-forward: %w", err)
	}
	tunnelAddr, err := e.startTunnel(ctx, opts.Transport, 1, Variant{})
	if err != nil {
		return nil, fmt.Errorf("tunnel over port-forward: %w", err)
	}
	poolAddr, err := e.startTunnel(ctx, opts.Transport, opts.PoolSize, Variant{})
	if err != nil {
		return nil, fmt.Errorf("tunnel pool over port-forward: %w", err)
	}

	lr := &LinkResult{Name: l.Name, RTTms: ms(l.RTT), BandwidthMbit: float64(l.Bandwidth) / 1e6,
		LinkMBps: round3(l.BytesPerSecond() / 1e6), Model: "stream"}
	if l.Packets {
		lr.Model, lr.LossPct = "packet", l.Loss*100
	}
	transfer := opts.Transfer
	if transfer <= 0 {
		transfer = max(300*time.Millisecond, 12*l.RTT)
	}
	lr.BulkBytes = opts.BulkBytes
	if lr.BulkBytes <= 0 {
		lr.BulkBytes = 16 << 20
		if rate := expectedRate(l); rate > 0 {
			lr.BulkBytes = int64(rate * transfer.Seconds())
		}
		if l.Loss > 0 {
			// Enough packets for lossSamples losses: a transfer that
			// loses one or two measures luck.
			lr.BulkBytes = max(lr.BulkBytes, min(int64(lossSamples/l.Loss*tcpMSS), lossBulkCap))
		}
	}
	rttUnit := l.RTT
	if rttUnit <= 0 {
		rttUnit = time.Millisecond // only to size the sample counts
	}
	clamp := func(budget time.Duration, lo, hi int) int {
		return min(max(int(budget/rttUnit), lo), hi)
	}
	nRTT, nNew := opts.RTTSamples, opts.NewStreamSamples
	if nRTT <= 0 {
		nRTT = clamp(300*time.Millisecond, 4, 100)
	}
	if nNew <= 0 {
		nNew = clamp(100*time.Millisecond, 2, 20)
	}
	m := &measurer{ctx: ctx, link: l, bulk: lr.BulkBytes, streams: opts.Streams, nRTT: nRTT, nNew: nNew}

	type path struct {
		name    string
		addr    string
		out     *ShapedPath
		samples []shapedSample
	}
	paths := []path{{name: "link", addr: rawAddr, out: &lr.Link}, {name: "bare", addr: e.bareAddr, out: &lr.Bare},
		{name: "tunnel", addr: tunnelAddr, out: &lr.Tunnel}, {name: "pool", addr: poolAddr, out: &lr.Pool}}
	if opts.Progress != nil {
		opts.Progress(fmt.Sprintf("link %s: %d B per transfer, %d reps", l, lr.BulkBytes, opts.Reps))
	}
	// Warm up every path: connections, windows, buffers.
	for _, p := range paths {
		if _, err := m.upload(p.addr, []int64{max(lr.BulkBytes/8, 1)}, nil); err != nil {
			return nil, fmt.Errorf("%s: warm-up: %w", p.name, err)
		}
	}
	for rep := range opts.Reps {
		for i := range paths {
			p := &paths[(rep+i)%len(paths)]
			s, err := m.measure(p.addr)
			if err != nil {
				return nil, fmt.Errorf("%s: %w", p.name, err)
			}
			p.samples = append(p.samples, s)
			p.out.UploadRepsMBps = append(p.out.UploadRepsMBps, round3(s.up))
			if opts.Progress != nil {
				opts.Progress(fmt.Sprintf("%s rep %d/%d %-6s up %7.2f MB/s  down %7.2f  %dx up %7.2f  rtt p50 %7.2f ms  new stream p50 %7.2f ms  behind bulk max %7.2f ms",
					l.Name, rep+1, opts.Reps, p.name, s.up, s.down, opts.Streams, s.parallel, s.rttP50, pct(s.newStream, 0.5), pct(s.behind, 1)))
			}
		}
	}
	if opts.Idle > 0 {
		if opts.Progress != nil {
			opts.Progress(fmt.Sprintf("%s: idle for %v", l.Name, opts.Idle))
		}
		select {
		case <-time.After(opts.Idle):
		case <-ctx.Done():
			return nil, ctx.Err()
		}
		for _, p := range paths {
			d, err := m.newStream(p.addr)
			if err != nil {
				return nil, fmt.Errorf("%s: after idle: %w", p.name, err)
			}
			p.out.IdleFirstByteMs = round3(d)
			p.out.IdleFirstByteRTTs = m.inRTTs(d)
		}
	}

	for i := range paths {
		p, ss := paths[i].out, paths[i].samples
		med := func(f func(shapedSample) float64) float64 {
			v := make([]float64, len(ss))
			for j, s := range ss {
				v[j] = f(s)
			}
			return round3(benchstat.Median(v))
		}
		all := func(f func(shapedSample) []float64) Latency {
			var v []float64
			for _, s := range ss {
				v = append(v, f(s)...)
			}
			return m.latency(v)
		}
		p.UploadMBps = med(func(s shapedSample) float64 { return s.up })
		p.DownloadMBps = med(func(s shapedSample) float64 { return s.down })
		p.ParallelMBps = med(func(s shapedSample) float64 { return s.parallel })
		p.RTT = all(func(s shapedSample) []float64 { return s.rtt })
		p.NewStream = all(func(s shapedSample) []float64 { return s.newStream })
		p.BehindBulk = all(func(s shapedSample) []float64 { return s.behind })
	}
	const link, bare, tun, pool = 0, 1, 2, 3
	lr.Ratios, lr.Ranges = map[string]float64{}, map[string][2]float64{}
	ratio := func(name string, a, b int, f func(shapedSample) float64) float64 {
		r := make([]float64, opts.Reps)
		for j := range r {
			r[j] = f(paths[a].samples[j]) / f(paths[b].samples[j])
		}
		lr.Ranges[name] = [2]float64{round3(slices.Min(r)), round3(slices.Max(r))}
		return round3(benchstat.Median(r))
	}
	up := func(s shapedSample) float64 { return s.up }
	down := func(s shapedSample) float64 { return s.down }
	par := func(s shapedSample) float64 { return s.parallel }
	lr.TunnelVsLinkThroughput = ratio("tunnel_vs_link_throughput", tun, link, up)
	lr.TunnelVsBareThroughput = ratio("tunnel_vs_bare_throughput", tun, bare, up)
	for _, r := range []struct {
		name string
		a, b int
		f    func(shapedSample) float64
	}{
		{"bare_vs_link_throughput", bare, link, up},
		{"tunnel_vs_link_download", tun, link, down},
		{"tunnel_vs_bare_download", tun, bare, down},
		{"bare_vs_link_parallel", bare, link, par},
		{"tunnel_vs_link_parallel", tun, link, par},
		{"pool_vs_link_parallel", pool, link, par},
		{"tunnel_vs_bare_rtt", tun, bare, func(s shapedSample) float64 { return s.rttP50 }},
	} {
		lr.Ratios[r.name] = ratio(r.name, r.a, r.b, r.f)
	}
	if st, ok := sh.PacketStats(); ok {
		lr.Packets = &st
	}
	lr.Seconds = round3(time.Since(start).Seconds())
	return lr, nil
}

// A lossy link's transfers carry about lossSamples lost packets each, up
// to lossBulkCap bytes; tcpMSS is a segment's payload on the packet
// model's 1500-byte MTU (IPv4, TCP with timestamps).
const (
	lossSamples = 30
	lossBulkCap = 8 << 20
	tcpMSS      = 1448
)

// expectedRate is what one TCP connection can move over l in bytes per
// second, to size transfers (0: no bound known): the link's rate, or less
// where loss bounds it (Mathis et al.: MSS / RTT * 1.22 / sqrt(loss)).
func expectedRate(l linkshape.Link) float64 {
	rate := l.BytesPerSecond()
	if l.Loss > 0 && l.RTT > 0 {
		mathis := tcpMSS / l.RTT.Seconds() * 1.22 / math.Sqrt(l.Loss)
		if rate == 0 || mathis < rate {
			rate = mathis
		}
	}
	return rate
}

// measurer runs one repetition's measurements on a path.
type measurer struct {
	ctx        context.Context
	link       linkshape.Link
	bulk       int64
	streams    int
	nRTT, nNew int
}

func (m *measurer) inRTTs(msec float64) float64 {
	if m.link.RTT <= 0 {
		return 0
	}
	return round3(msec / ms(m.link.RTT))
}

func (m *measurer) latency(v []float64) Latency {
	slices.Sort(v)
	p50, p99 := benchstat.Percentile(v, 0.5), benchstat.Percentile(v, 0.99)
	return Latency{P50ms: round3(p50), P99ms: round3(p99), P50RTTs: m.inRTTs(p50), P99RTTs: m.inRTTs(p99), Samples: len(v)}
}

// measure runs every measurement once on the path at addr: a new stream's
// first request, warm requests, an upload with warm requests beside it,
// a download, parallel uploads, and more new streams.
func (m *measurer) measure(addr string) (shapedSample, error) {
	var s shapedSample
	c, first, err := m.dialEcho(addr)
	if err != nil {
		return s, fmt.Errorf("first request on a new stream: %w", err)
	}
	defer c.Close()
	s.newStream = append(s.newStream, first)
	if _, err := echo(c); err != nil { // not timed: the stream's second request
		return s, err
	}
	for range m.nRTT {
		d, err := echo(c)
		if err != nil {
			return s, fmt.Errorf("round trips: %w", err)
		}
		s.rtt = append(s.rtt, d)
	}
	s.rttP50 = pct(s.rtt, 0.5)

	// The upload, with requests behind it once it has filled the path
	// (one round trip for the window to open, and some): every request
	// sent while it runs, however long the queue ahead of it makes it.
	behind := func(done <-chan struct{}) error {
		select {
		case <-done: // over before it filled the path: no request behind it
			return nil
		case <-time.After(m.link.RTT + 10*time.Millisecond):
		}
		for {
			select {
			case <-done:
				return nil
			default:
			}
			d, err := echo(c)
			if err != nil {
				return fmt.Errorf("round trips behind an upload: %w", err)
			}
			s.behind = append(s.behind, d)
		}
	}
	if s.up, err = m.steadyRate(m.upload, addr, m.bulk, behind); err != nil {
		return s, fmt.Errorf("upload: %w", err)
	}
	if s.down, err = m.steadyRate(m.download, addr, m.bulk, nil); err != nil {
		return s, fmt.Errorf("download: %w", err)
	}
	if s.parallel, err = m.marginalRate(m.parallel, addr, m.bulk); err != nil {
		return s, fmt.Errorf("%d parallel uploads: %w", m.streams, err)
	}
	for range m.nNew - 1 {
		d, err := m.newStream(addr)
		if err != nil {
			return s, fmt.Errorf("first request on a new stream: %w", err)
		}
		s.newStream = append(s.newStream, d)
	}
	return s, nil
}

// dial connects to addr, closing the connection when the run is canceled
// (the returned stop undoes that).
func (m *measurer) dial(addr string) (net.Conn, func() bool, error) {
	c, err := (&net.Dialer{}).DialContext(m.ctx, "tcp", addr)
	if err != nil {
		return nil, nil, err
	}
	return c, context.AfterFunc(m.ctx, func() { _ = c.Close() }), nil
}

// dialEcho opens an echo connection and times its first 1 KiB request
// from the dial, in ms.
func (m *measurer) dialEcho(addr string) (net.Conn, float64, error) {
	t := time.Now()
	c, stop, err := m.dial(addr)
	if err != nil {
		return nil, 0, err
	}
	msg := make([]byte, 1+1024)
	msg[0] = opEcho
	if _, err := c.Write(msg); err != nil {
		stop()
		_ = c.Close()
		return nil, 0, err
	}
	if _, err := io.ReadFull(c, msg[1:]); err != nil {
		stop()
		_ = c.Close()
		return nil, 0, err
	}
	d := ms(time.Since(t))
	return &stoppingConn{Conn: c, stop: stop}, d, nil
}

type stoppingConn struct {
	net.Conn
	stop func() bool
}

func (c *stoppingConn) Close() error { c.stop(); return c.Conn.Close() }

// newStream times a new connection's first request, in ms.
func (m *measurer) newStream(addr string) (float64, error) {
	c, d, err := m.dialEcho(addr)
	if err != nil {
		return 0, err
	}
	_ = c.Close()
	return d, nil
}

// echo times one 1 KiB request on an echo connection, in ms.
func echo(c net.Conn) (float64, error) {
	msg := make([]byte, 1024)
	t := time.Now()
	if _, err := c.Write(msg); err != nil {
		return 0, err
	}
	if _, err := io.ReadFull(c, msg); err != nil {
		return 0, err
	}
	return ms(time.Since(t)), nil
}

// How bulk transfers are timed. One stream's rate is read at its receiver:
// the least-squares slope of the bytes received against time, from the
// read that passes a quarter of the transfer on (before it the window is
// still opening). Through the tunnel the bytes come in bursts (a yamux
// frame, up to 256 KiB, is handed to the reader only once all of it is
// in, and a window-bound stream moves a window per round), so timing from
// one byte mark to another would land anywhere in a burst; the slope
// averages over them. Parallel streams are timed together, from the
// first sender's start to the receiver's last byte (marginalRate).

// xfer is what one transfer measured: since epoch (one clock: everything
// is in this process), when the sender started and when the receiver had
// the last byte, and the receiver's steady rate in bytes/s (0 when too
// few reads to tell).
type xfer struct {
	start, last time.Duration
	slope       float64
}

// rate is the transfer's steady rate in MB/s, or its average if there is
// no slope.
func (x xfer) rate(size int64) float64 {
	if x.slope > 0 {
		return x.slope / 1e6
	}
	return float64(size) / (x.last - x.start).Seconds() / 1e6
}

// transfer is one kind of bulk transfer: on a connection (or several) to
// addr it moves each of sizes bytes in turn, calling before(i) before the
// i-th, and returns what each measured.
type transfer func(addr string, sizes []int64, before func(i int)) ([]xfer, error)

// run runs x for sizes, with during (if set) running beside the last
// transfer until it ends.
func (m *measurer) run(x transfer, addr string, sizes []int64, during func(done <-chan struct{}) error) ([]xfer, error) {
	done, finished := make(chan struct{}), make(chan struct{})
	var duringErr error
	started := false
	before := func(i int) {
		if i == len(sizes)-1 && during != nil {
			started = true
			go func() {
				defer close(finished)
				duringErr = during(done)
			}()
		}
	}
	t, err := x(addr, sizes, before)
	close(done)
	if started {
		<-finished
	}
	return t, errors.Join(err, duringErr)
}

// steadyRate runs x for 1 byte, which sets the stream up, and then for
// size bytes, and returns the receiver's steady rate in MB/s.
func (m *measurer) steadyRate(x transfer, addr string, size int64, during func(done <-chan struct{}) error) (float64, error) {
	t, err := m.run(x, addr, []int64{1, size}, during)
	if err != nil {
		return 0, err
	}
	return t[1].rate(size), nil
}

// marginalRate runs x for 1 byte, which sets the streams up, 1 byte
// again and then size bytes, and returns the marginal rate in MB/s: the
// size bytes over the time they took beyond the second byte, so that what
// both pay alike (the first one-way trip) cancels. Parallel streams open
// their windows together and fill the link from the start.
func (m *measurer) marginalRate(x transfer, addr string, size int64) (float64, error) {
	t, err := m.run(x, addr, []int64{1, 1, size}, nil)
	if err != nil {
		return 0, err
	}
	d1, d := t[1].last-t[1].start, t[2].last-t[2].start
	if d <= d1 { // too small to tell apart
		return float64(size) / d.Seconds() / 1e6, nil
	}
	return float64(size) / (d - d1).Seconds() / 1e6, nil
}

// request starts a request with its op (the first on a connection) and
// size.
func request(c net.Conn, op byte, size int64, first bool) error {
	hdr := binary.BigEndian.AppendUint64([]byte{op}, uint64(size))
	if !first {
		hdr = hdr[1:]
	}
	_, err := c.Write(hdr)
	return err
}

// timedUpload sends one opTimedSink request of size bytes on c and reads
// the application's answer.
func timedUpload(c net.Conn, size int64, buf []byte, first bool) (xfer, error) {
	x := xfer{start: time.Since(epoch)}
	if err := request(c, opTimedSink, size, first); err != nil {
		return x, err
	}
	if err := send(c, size, buf); err != nil {
		return x, err
	}
	var reply [16]byte
	if _, err := io.ReadFull(c, reply[:]); err != nil {
		return x, fmt.Errorf("waiting for the acknowledgement: %w", err)
	}
	x.last = time.Duration(binary.BigEndian.Uint64(reply[:8]))
	x.slope = math.Float64frombits(binary.BigEndian.Uint64(reply[8:]))
	return x, nil
}

// upload sends each of sizes on one connection.
func (m *measurer) upload(addr string, sizes []int64, before func(int)) ([]xfer, error) {
	c, stop, err := m.dial(addr)
	if err != nil {
		return nil, err
	}
	defer stop()
	defer c.Close()
	buf := pattern(256 << 10)
	var t []xfer
	for i, size := range sizes {
		if before != nil {
			before(i)
		}
		x, err := timedUpload(c, size, buf, i == 0)
		if err != nil {
			return nil, err
		}
		t = append(t, x)
	}
	return t, nil
}

// download asks for each of sizes on one connection.
func (m *measurer) download(addr string, sizes []int64, before func(int)) ([]xfer, error) {
	c, stop, err := m.dial(addr)
	if err != nil {
		return nil, err
	}
	defer stop()
	defer c.Close()
	buf := make([]byte, appReadSize)
	var t []xfer
	for i, size := range sizes {
		if before != nil {
			before(i)
		}
		x := xfer{start: time.Since(epoch)}
		if err := request(c, opSource, size, i == 0); err != nil {
			return nil, err
		}
		if x.last, x.slope, err = receive(c, size, buf); err != nil {
			return nil, err
		}
		t = append(t, x)
	}
	return t, nil
}

// parallel splits each of sizes over m.streams connections, all sending
// at once (each waits for the others between sizes), and returns for
// each size the first start and the last byte.
func (m *measurer) parallel(addr string, sizes []int64, before func(int)) ([]xfer, error) {
	n := m.streams
	conns := make([]net.Conn, 0, n)
	defer func() {
		for _, c := range conns {
			_ = c.Close()
		}
	}()
	for range n {
		c, stop, err := m.dial(addr)
		if err != nil {
			return nil, err
		}
		conns = append(conns, &stoppingConn{Conn: c, stop: stop})
	}
	buf := pattern(256 << 10)
	var t []xfer
	for i, size := range sizes {
		if before != nil {
			before(i)
		}
		each := max(size/int64(n), 1)
		xs := make([]xfer, n)
		errs := make([]error, n)
		var wg sync.WaitGroup
		for k, c := range conns {
			wg.Add(1)
			go func() {
				defer wg.Done()
				xs[k], errs[k] = timedUpload(c, each, buf, i == 0)
			}()
		}
		wg.Wait()
		if err := errors.Join(errs...); err != nil {
			return nil, err
		}
		all := xfer{start: xs[0].start, last: xs[0].last}
		for _, x := range xs[1:] {
			all.start, all.last = min(all.start, x.start), max(all.last, x.last)
		}
		t = append(t, all)
	}
	return t, nil
}

// epoch is what transfer times count from: one monotonic clock for
// everything in the process.
var epoch = time.Now()

// receive reads size bytes from r and returns when the last one came
// (since epoch) and the steady rate they came at (bytes/s; 0 if too few
// reads to tell).
func receive(r io.Reader, size int64, buf []byte) (time.Duration, float64, error) {
	fit := rateFit{from: size / 4}
	for got := int64(0); got < size; {
		n, err := r.Read(buf[:min(int64(len(buf)), size-got)])
		got += int64(n)
		if n > 0 {
			fit.add(time.Since(epoch), got)
		}
		if err != nil && got < size {
			if err == io.EOF {
				err = io.ErrUnexpectedEOF
			}
			return 0, 0, err
		}
	}
	return time.Since(epoch), fit.slope(), nil
}

// rateFit is the least-squares line through (time, bytes received so far)
// at each read from the one that reaches from bytes on.
type rateFit struct {
	from                int64
	t0, tn              time.Duration
	n, st, sy, stt, sty float64
}

func (f *rateFit) add(now time.Duration, got int64) {
	if got < f.from {
		return
	}
	if f.n == 0 {
		f.t0 = now
	}
	f.tn = now
	t, y := (now - f.t0).Seconds(), float64(got)
	f.n++
	f.st += t
	f.sy += y
	f.stt += t * t
	f.sty += t * y
}

// slope is the line's slope in bytes/s; 0 for fewer than 3 reads or less
// than a millisecond of them.
func (f *rateFit) slope() float64 {
	d := f.n*f.stt - f.st*f.st
	if f.n < 3 || f.tn-f.t0 < time.Millisecond || d <= 0 {
		return 0
	}
	return max((f.n*f.sty-f.st*f.sy)/d, 0)
}

// send writes size bytes to w from buf, over and over.
func send(w io.Writer, size int64, buf []byte) error {
	for left := size; left > 0; {
		chunk := buf[:min(int64(len(buf)), left)]
		if _, err := w.Write(chunk); err != nil {
			return err
		}
		left -= int64(len(chunk))
	}
	return nil
}

func pattern(n int) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(i * 7)
	}
	return b
}

func ms(d time.Duration) float64 { return float64(d.Nanoseconds()) / 1e6 }

// pct is the q-quantile of v (not sorted in place), 0 for none.
func pct(v []float64, q float64) float64 {
	if len(v) == 0 {
		return 0
	}
	s := slices.Clone(v)
	slices.Sort(s)
	return benchstat.Percentile(s, q)
}

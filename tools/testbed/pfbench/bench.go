// Package pfbench measures what the sbx tunnel costs, and gains, over a
// Kubernetes port-forward, all in one process on loopback through the real
// client-go port-forward and the kubelet's own handler (pftest).
//
// Three paths carry the same traffic between the same local client and the
// same application server "in the pod":
//
//   - bare: kubectl's port-forwarder (local listener; one forwarded stream
//     per connection over one port-forward connection);
//   - tunnel: a local listener whose connections go through one sbx tunnel
//     session over one listener-less port-forward connection to a relay
//     (which answers like the application, so that all paths have the same
//     TCP hops);
//   - pool: the same over a pool of tunnel sessions, each over its own
//     port-forward connection.
//
// Bulk throughput is the aggregate of Streams parallel uploads; round-trip
// time is that of 1 KiB echoes on one connection. Each repetition runs
// every path back to back (in rotating order). A ratio is the median over
// repetitions of the ratio within each repetition: pairing the paths this
// way cancels most of the drift in background load on a shared machine.
// The process CPU time per byte moved is reported too; unlike wall-clock
// figures it hardly depends on that load.
//
// RunShaped measures the same paths, and raw TCP beside them, with the
// port-forward connections going through a shaped link (linkshape): one
// stream's and parallel streams' throughput against the link's, and
// requests in link round trips.
package pfbench

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"slices"
	"sync"
	"time"

	"github.com/sbx-dev/sbx/cluster/portforward"
	"github.com/sbx-dev/sbx/tools/testbed/benchstat"
	"github.com/sbx-dev/sbx/tunnel"
)

// Targets the ratios are held to (see issue "Port-forward benchmark").
const (
	TargetTunnelVsBareThroughput = 0.95
	TargetPoolVsBareThroughput   = 1.15
	TargetTunnelVsBareRTT        = 1.25
)

// DefaultReps is the default number of repetitions. The paired ratio of a
// single repetition spreads by ±15% (one standard deviation) on a 2-core
// machine, and that sampling noise is most of what moves a run's median:
// with 61 the 95% confidence interval of the pool ratio's median is about
// ±0.05 and whole runs agree within about as much. A run takes ~24 s.
const DefaultReps = 61

// Options configure a run. Zero values take the defaults.
type Options struct {
	// Reps is the number of repetitions (default DefaultReps).
	Reps int
	// Streams is the number of parallel uploads per bulk measurement
	// (default 4) and BulkBytes the bytes each sends (default 16 MiB).
	Streams   int
	BulkBytes int64
	// RTTSamples is the number of 1 KiB round trips per measurement
	// (default 400).
	RTTSamples int
	// PoolSize is the number of sessions in the pool (default 4).
	PoolSize int
	// Transport is the port-forward upgrade for every path (default: SPDY
	// over WebSocket with SPDY fallback, as kubectl).
	Transport portforward.Transport
	// Tunnel configures the sessions at both ends (daemon and relay); nil
	// means tunnel.PortForwardConfig(), what sbx uses.
	Tunnel *tunnel.Config
	// Variants adds, per variant, a tunnel and a pool path configured
	// otherwise, measured in the same repetitions as the others and
	// compared with the tunnel and the pool as sbx runs them
	// (Result.Variants).
	Variants []Variant
	// Progress, if set, receives one line per finished measurement.
	Progress func(string)
	Logger   *slog.Logger
}

// Variant is the tunnel over a port-forward configured otherwise (a part
// of sbx's data path switched off, another frame size or window), for A/B
// measurements in one run.
type Variant struct {
	// Name labels the variant's paths ("tunnel/NAME", "pool/NAME").
	Name string `json:"name"`
	// Tunnel configures the variant's sessions at both ends (the relay
	// gets a listener of its own for them); nil means the run's.
	Tunnel *tunnel.Config `json:"-"`
}

func (o *Options) defaults() {
	if o.Reps <= 0 {
		o.Reps = DefaultReps
	}
	if o.Streams <= 0 {
		o.Streams = 4
	}
	if o.BulkBytes <= 0 {
		o.BulkBytes = 16 << 20
	}
	if o.RTTSamples <= 0 {
		o.RTTSamples = 400
	}
	if o.PoolSize <= 0 {
		o.PoolSize = 4
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
}

// Path is the measurement of one path.
type Path struct {
	// ThroughputMBps is the median aggregate bulk throughput (MB = 10^6
	// bytes per second); ThroughputRepsMBps every repetition's.
	ThroughputMBps     float64   `json:"throughput_mbps"`
	ThroughputRepsMBps []float64 `json:"throughput_reps_mbps"`
	// SingleStreamMBps is the median throughput of one upload alone, which
	// the tunnel's per-stream window bounds.
	SingleStreamMBps float64 `json:"single_stream_mbps"`
	// RTTP50us and RTTP99us are medians over repetitions of each
	// repetition's percentiles, in microseconds.
	RTTP50us float64 `json:"rtt_p50_us"`
	RTTP99us float64 `json:"rtt_p99_us"`
	// CPUNsPerByte is the median process CPU time (user+system, all
	// goroutines: both ends of the path run in this process) per byte of
	// bulk transfer; 0 where the platform does not report it.
	CPUNsPerByte float64 `json:"cpu_ns_per_byte"`
}

// Result is a whole run.
type Result struct {
	Transport  string  `json:"transport"`
	Reps       int     `json:"reps"`
	Streams    int     `json:"streams"`
	BulkBytes  int64   `json:"bulk_bytes_per_stream"`
	RTTSamples int     `json:"rtt_samples"`
	PoolSize   int     `json:"pool_size"`
	Bare       Path    `json:"bare"`
	Tunnel     Path    `json:"tunnel"`
	Pool       Path    `json:"pool"`
	Seconds    float64 `json:"seconds"`

	TunnelVsBareThroughput float64 `json:"tunnel_vs_bare_throughput"`
	PoolVsBareThroughput   float64 `json:"pool_vs_bare_throughput"`
	TunnelVsBareRTT        float64 `json:"tunnel_vs_bare_rtt"`
	// CI95 holds, per target ratio (keys as in Pass), the distribution-free
	// 95% confidence interval [low, high] of its median over repetitions.
	CI95 map[string][2]float64 `json:"ci95"`
	// TunnelVsBareSingleStream compares one upload alone (informational).
	TunnelVsBareSingleStream float64 `json:"tunnel_vs_bare_single_stream"`
	// TunnelVsBareCPU and PoolVsBareCPU compare CPU time per byte (lower
	// is cheaper); 0 where the platform does not report CPU time.
	TunnelVsBareCPU float64 `json:"tunnel_vs_bare_cpu_per_byte"`
	PoolVsBareCPU   float64 `json:"pool_vs_bare_cpu_per_byte"`
	// Pass says whether each ratio meets its target.
	Pass map[string]bool `json:"pass"`
	// Variants holds the A/B variants' measurements, in Options order.
	Variants []VariantResult `json:"variants,omitempty"`
}

// VariantResult is one variant measured beside the paths as sbx runs them.
// Each ratio is the median over repetitions of variant / sbx's path within
// the repetition, with the 95% confidence interval of that median: a
// throughput ratio below 1 or a CPU-per-byte ratio above 1 means sbx's
// configuration is the better one.
type VariantResult struct {
	Variant
	Tunnel Path `json:"tunnel"`
	Pool   Path `json:"pool"`
	// Ratios by name: tunnel_throughput, pool_throughput,
	// tunnel_single_stream, tunnel_rtt (p50), tunnel_cpu_per_byte,
	// pool_cpu_per_byte.
	Ratios map[string]float64    `json:"ratios"`
	CI95   map[string][2]float64 `json:"ci95"`
}

// Run sets up the paths, measures them and tears everything down.
func Run(ctx context.Context, opts Options) (*Result, error) {
	opts.defaults()
	start := time.Now()
	cfg := tunnel.PortForwardConfig()
	if opts.Tunnel != nil {
		cfg = *opts.Tunnel
	}
	e, err := newEnv(ctx, opts.Logger, cfg)
	if err != nil {
		return nil, err
	}
	defer e.close()
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
	type sample struct{ mbps, single, p50, p99, cpu float64 }
	type path struct {
		name    string
		addr    string
		out     *Path
		samples []sample
	}
	paths := []path{{name: "bare", addr: e.bareAddr}, {name: "tunnel", addr: tunnelAddr}, {name: "pool", addr: poolAddr}}
	res := &Result{
		Transport: string(opts.Transport), Reps: opts.Reps, Streams: opts.Streams, BulkBytes: opts.BulkBytes,
		RTTSamples: opts.RTTSamples, PoolSize: opts.PoolSize,
	}
	if res.Transport == "" {
		res.Transport = "auto (websocket, spdy fallback)"
	}
	paths[0].out, paths[1].out, paths[2].out = &res.Bare, &res.Tunnel, &res.Pool
	res.Variants = make([]VariantResult, len(opts.Variants))
	for i, v := range opts.Variants {
		res.Variants[i].Variant = v
		for _, p := range []struct {
			kind string
			n    int
			out  *Path
		}{{"tunnel", 1, &res.Variants[i].Tunnel}, {"pool", opts.PoolSize, &res.Variants[i].Pool}} {
			addr, err := e.startTunnel(ctx, opts.Transport, p.n, v)
			if err != nil {
				return nil, fmt.Errorf("%s/%s over port-forward: %w", p.kind, v.Name, err)
			}
			paths = append(paths, path{name: p.kind + "/" + v.Name, addr: addr, out: p.out})
		}
	}

	// Warm up every path (connections, windows, buffers) before measuring.
	for _, p := range paths {
		if _, err := bulk(ctx, p.addr, opts.Streams, 4<<20); err != nil {
			return nil, fmt.Errorf("%s: warm-up: %w", p.name, err)
		}
	}
	for rep := range opts.Reps {
		for i := range paths {
			p := &paths[(rep+i)%len(paths)]
			cpu0 := cpuTime()
			mbps, err := bulk(ctx, p.addr, opts.Streams, opts.BulkBytes)
			if err != nil {
				return nil, fmt.Errorf("%s: bulk transfer: %w", p.name, err)
			}
			cpu := float64(cpuTime()-cpu0) / float64(int64(opts.Streams)*opts.BulkBytes)
			single, err := bulk(ctx, p.addr, 1, opts.BulkBytes)
			if err != nil {
				return nil, fmt.Errorf("%s: single-stream transfer: %w", p.name, err)
			}
			p50, p99, err := rtt(ctx, p.addr, opts.RTTSamples)
			if err != nil {
				return nil, fmt.Errorf("%s: round trips: %w", p.name, err)
			}
			p.samples = append(p.samples, sample{mbps: mbps, single: single, p50: p50, p99: p99, cpu: cpu})
			p.out.ThroughputRepsMBps = append(p.out.ThroughputRepsMBps, round3(mbps))
			if opts.Progress != nil {
				opts.Progress(fmt.Sprintf("rep %d/%d %-6s %8.1f MB/s (one stream %7.1f)  %5.2f cpu-ns/B  rtt p50 %6.0f us  p99 %6.0f us",
					rep+1, opts.Reps, p.name, mbps, single, cpu, p50, p99))
			}
		}
	}
	pick := func(i int, f func(sample) float64) []float64 {
		out := make([]float64, len(paths[i].samples))
		for j, s := range paths[i].samples {
			out[j] = f(s)
		}
		return out
	}
	for i := range paths {
		p := paths[i].out
		p.ThroughputMBps = round3(benchstat.Median(pick(i, func(s sample) float64 { return s.mbps })))
		p.SingleStreamMBps = round3(benchstat.Median(pick(i, func(s sample) float64 { return s.single })))
		p.RTTP50us = round3(benchstat.Median(pick(i, func(s sample) float64 { return s.p50 })))
		p.RTTP99us = round3(benchstat.Median(pick(i, func(s sample) float64 { return s.p99 })))
		p.CPUNsPerByte = round3(benchstat.Median(pick(i, func(s sample) float64 { return s.cpu })))
	}
	// Paired ratios: path i against path base within each repetition.
	ratiosTo := func(i, base int, f func(sample) float64) []float64 {
		r := make([]float64, opts.Reps)
		for j := range r {
			r[j] = f(paths[i].samples[j]) / f(paths[base].samples[j])
		}
		return r
	}
	ratios := func(i int, f func(sample) float64) []float64 { return ratiosTo(i, 0, f) }
	ratio := func(i int, f func(sample) float64) float64 { return round3(benchstat.Median(ratios(i, f))) }
	res.CI95 = map[string][2]float64{}
	target := func(name string, i int, f func(sample) float64) float64 {
		r := ratios(i, f)
		lo, hi := benchstat.MedianCI(r, 0.95)
		res.CI95[name] = [2]float64{round3(lo), round3(hi)}
		return round3(benchstat.Median(r))
	}
	res.TunnelVsBareThroughput = target("tunnel_vs_bare_throughput", 1, func(s sample) float64 { return s.mbps })
	res.PoolVsBareThroughput = target("pool_vs_bare_throughput", 2, func(s sample) float64 { return s.mbps })
	res.TunnelVsBareRTT = target("tunnel_vs_bare_rtt", 1, func(s sample) float64 { return s.p50 })
	res.TunnelVsBareSingleStream = ratio(1, func(s sample) float64 { return s.single })
	if res.Bare.CPUNsPerByte > 0 {
		res.TunnelVsBareCPU = ratio(1, func(s sample) float64 { return s.cpu })
		res.PoolVsBareCPU = ratio(2, func(s sample) float64 { return s.cpu })
	}
	for k := range res.Variants {
		v := &res.Variants[k]
		v.Ratios, v.CI95 = map[string]float64{}, map[string][2]float64{}
		tunnelIdx, poolIdx := 3+2*k, 4+2*k
		for _, m := range []struct {
			name      string
			i, base   int
			f         func(sample) float64
			needsCPUs bool
		}{
			{"tunnel_throughput", tunnelIdx, 1, func(s sample) float64 { return s.mbps }, false},
			{"pool_throughput", poolIdx, 2, func(s sample) float64 { return s.mbps }, false},
			{"tunnel_single_stream", tunnelIdx, 1, func(s sample) float64 { return s.single }, false},
			{"tunnel_rtt", tunnelIdx, 1, func(s sample) float64 { return s.p50 }, false},
			{"tunnel_cpu_per_byte", tunnelIdx, 1, func(s sample) float64 { return s.cpu }, true},
			{"pool_cpu_per_byte", poolIdx, 2, func(s sample) float64 { return s.cpu }, true},
		} {
			if m.needsCPUs && res.Bare.CPUNsPerByte == 0 {
				continue
			}
			r := ratiosTo(m.i, m.base, m.f)
			lo, hi := benchstat.MedianCI(r, 0.95)
			v.Ratios[m.name] = round3(benchstat.Median(r))
			v.CI95[m.name] = [2]float64{round3(lo), round3(hi)}
		}
	}
	res.Pass = map[string]bool{
		"tunnel_vs_bare_throughput": res.TunnelVsBareThroughput >= TargetTunnelVsBareThroughput,
		"pool_vs_bare_throughput":   res.PoolVsBareThroughput >= TargetPoolVsBareThroughput,
		"tunnel_vs_bare_rtt":        res.TunnelVsBareRTT <= TargetTunnelVsBareRTT,
	}
	res.Seconds = round3(time.Since(start).Seconds())
	return res, nil
}

// bulk uploads size bytes on each of n parallel connections and returns the
// aggregate throughput in MB/s, timed from when all connections are open
// until the last acknowledgement.
func bulk(ctx context.Context, addr string, n int, size int64) (float64, error) {
	conns := make([]net.Conn, 0, n)
	defer func() {
		for _, c := range conns {
			_ = c.Close()
		}
	}()
	for range n {
		c, err := (&net.Dialer{}).DialContext(ctx, "tcp", addr)
		if err != nil {
			return 0, err
		}
		conns = append(conns, c)
		stop := context.AfterFunc(ctx, func() { _ = c.Close() })
		defer stop()
		// One round trip with a tiny upload proves the path is connected
		// end to end before the clock starts, and that its tunnel stream
		// is open before the next one is, so a pool spreads them.
		if err := upload(c, 1, nil, true); err != nil {
			return 0, err
		}
	}
	buf := make([]byte, 256<<10)
	for i := range buf {
		buf[i] = byte(i * 7)
	}
	var wg sync.WaitGroup
	errs := make([]error, n)
	start := time.Now()
	for i, c := range conns {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs[i] = upload(c, size, buf, false)
		}()
	}
	wg.Wait()
	elapsed := time.Since(start)
	if err := errors.Join(errs...); err != nil {
		return 0, err
	}
	return float64(n) * float64(size) / elapsed.Seconds() / 1e6, nil
}

// upload sends one sink request of size bytes and waits for its ack. The
// first request on a connection carries the operation byte.
func upload(c net.Conn, size int64, buf []byte, first bool) error {
	var hdr [9]byte
	hdr[0] = opSink
	binary.BigEndian.PutUint64(hdr[1:], uint64(size))
	h := hdr[1:]
	if first {
		h = hdr[:]
	}
	if _, err := c.Write(h); err != nil {
		return err
	}
	if buf == nil {
		buf = make([]byte, size)
	}
	for left := size; left > 0; {
		chunk := buf[:min(int64(len(buf)), left)]
		if _, err := c.Write(chunk); err != nil {
			return err
		}
		left -= int64(len(chunk))
	}
	var ack [1]byte
	if _, err := io.ReadFull(c, ack[:]); err != nil {
		return fmt.Errorf("waiting for the acknowledgement: %w", err)
	}
	return nil
}

// rtt measures samples 1 KiB echoes on one connection and returns p50 and
// p99 in microseconds.
func rtt(ctx context.Context, addr string, samples int) (p50, p99 float64, err error) {
	c, err := (&net.Dialer{}).DialContext(ctx, "tcp", addr)
	if err != nil {
		return 0, 0, err
	}
	defer c.Close()
	stop := context.AfterFunc(ctx, func() { _ = c.Close() })
	defer stop()
	if _, err := c.Write([]byte{opEcho}); err != nil {
		return 0, 0, err
	}
	msg := make([]byte, 1024)
	got := make([]byte, 1024)
	durations := make([]float64, 0, samples)
	const warmup = 20
	for i := range samples + warmup {
		msg[0] = byte(i)
		t := time.Now()
		if _, err := c.Write(msg); err != nil {
			return 0, 0, err
		}
		if _, err := io.ReadFull(c, got); err != nil {
			return 0, 0, err
		}
		d := time.Since(t)
		if got[0] != msg[0] {
			return 0, 0, fmt.Errorf("echo returned another message")
		}
		if i >= warmup {
			durations = append(durations, float64(d.Nanoseconds())/1e3)
		}
	}
	slices.Sort(durations)
	return benchstat.Percentile(durations, 0.50), benchstat.Percentile(durations, 0.99), nil
}

func round3(f float64) float64 { return float64(int64(f*1000+0.5)) / 1000 }

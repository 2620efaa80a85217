// Package tunnelbench measures the tunnel against raw loopback TCP: bulk
// throughput with 1, 8 and 64 streams, small request/response round trips
// idle and behind a bulk transfer, and 1,000 concurrent verified streams.
// `sbx bench tunnel` and the package's go test benchmarks both use it.
package tunnelbench

import (
	"context"
	"fmt"
	"io"
	"text/tabwriter"
	"time"

	"github.com/sbx-dev/sbx/tools/testbed/benchstat"
	"github.com/sbx-dev/sbx/tunnel"
)

// Options size a run. Zero fields take the defaults of DefaultOptions.
type Options struct {
	// Reps is how many times each measurement runs; medians are reported.
	Reps int
	// Budget bounds the repetitions' wall time: after at least MinReps,
	// no repetition starts that would likely end past it. A slow or busy
	// machine gets fewer repetitions instead of a run over a minute.
	Budget time.Duration
	// BulkBytes is the total sent per bulk measurement (split across
	// the streams of the 8- and 64-stream runs).
	BulkBytes int64
	// RTTSamples is the number of round trips per RTT measurement.
	RTTSamples int
	// RequestSize is the size of a small request and of its response.
	RequestSize int
	// Streams is the number of concurrent verified streams.
	Streams int
	// PoolSize is the number of sessions in the pool variant.
	PoolSize int
	// Config is the tunnel configuration under test.
	Config tunnel.Config
	// Progress, if set, receives one line per finished step.
	Progress io.Writer
	// SplitHeaders also measures, in the same repetitions, a tunnel and a
	// pool whose sessions write each yamux data frame's header and body
	// with two Writes, as yamux itself does (Config.SplitHeaderWrites at
	// both ends; Result.SplitHeaders).
	SplitHeaders bool
}

// MinReps is the fewest repetitions a run reports medians of.
const MinReps = 3

// DefaultOptions is what `sbx bench tunnel` runs: under a minute on two
// cores.
func DefaultOptions() Options {
	return Options{
		Reps:        11,
		Budget:      35 * time.Second,
		BulkBytes:   128 << 20,
		RTTSamples:  5000,
		RequestSize: 1024,
		Streams:     1000,
		PoolSize:    4,
		Config:      tunnel.DefaultConfig(),
	}
}

func (o Options) withDefaults() Options {
	d := DefaultOptions()
	if o.Reps <= 0 {
		o.Reps = d.Reps
	}
	if o.Budget <= 0 {
		o.Budget = d.Budget
	}
	if o.BulkBytes <= 0 {
		o.BulkBytes = d.BulkBytes
	}
	if o.RTTSamples <= 0 {
		o.RTTSamples = d.RTTSamples
	}
	if o.RequestSize <= 0 {
		o.RequestSize = d.RequestSize
	}
	if o.Streams <= 0 {
		o.Streams = d.Streams
	}
	if o.PoolSize <= 0 {
		o.PoolSize = d.PoolSize
	}
	if o.Config == (tunnel.Config{}) {
		o.Config = d.Config
	}
	return o
}

// Result holds medians over the repetitions and the ratios against raw
// TCP. Throughput is in MB/s (10^6 bytes/s), times in microseconds.
type Result struct {
	RawMBps    float64 `json:"raw_tcp_mbps"`
	TunnelMBps float64 `json:"tunnel_mbps"`
	PoolMBps   float64 `json:"pool_mbps"`

	Raw8MBps     float64 `json:"raw_tcp_8_streams_mbps"`
	Tunnel8MBps  float64 `json:"tunnel_8_streams_mbps"`
	Pool8MBps    float64 `json:"pool_8_streams_mbps"`
	Raw64MBps    float64 `json:"raw_tcp_64_streams_mbps"`
	Tunnel64MBps float64 `json:"tunnel_64_streams_mbps"`
	Pool64MBps   float64 `json:"pool_64_streams_mbps"`

	RawRTTP50    float64 `json:"raw_rtt_p50_us"`
	RawRTTP99    float64 `json:"raw_rtt_p99_us"`
	TunnelRTTP50 float64 `json:"tunnel_rtt_p50_us"`
	TunnelRTTP99 float64 `json:"tunnel_rtt_p99_us"`
	PoolRTTP50   float64 `json:"pool_rtt_p50_us"`
	PoolRTTP99   float64 `json:"pool_rtt_p99_us"`

	RawRTTUnderBulkP50    float64 `json:"raw_rtt_under_bulk_p50_us"`
	RawRTTUnderBulkP99    float64 `json:"raw_rtt_under_bulk_p99_us"`
	TunnelRTTUnderBulkP50 float64 `json:"tunnel_rtt_under_bulk_p50_us"`
	TunnelRTTUnderBulkP99 float64 `json:"tunnel_rtt_under_bulk_p99_us"`
	PoolRTTUnderBulkP50   float64 `json:"pool_rtt_under_bulk_p50_us"`
	PoolRTTUnderBulkP99   float64 `json:"pool_rtt_under_bulk_p99_us"`

	ThroughputRatio       float64 `json:"throughput_ratio"`
	Throughput8Ratio      float64 `json:"throughput_8_streams_ratio"`
	Throughput64Ratio     float64 `json:"throughput_64_streams_ratio"`
	PoolThroughputRatio   float64 `json:"pool_throughput_ratio"`
	Pool64ThroughputRatio float64 `json:"pool_64_streams_throughput_ratio"`
	RTTRatio              float64 `json:"rtt_ratio"`
	RTTUnderBulkRatio     float64 `json:"rtt_under_bulk_ratio"`
	PoolRTTUnderBulkRatio float64 `json:"pool_rtt_under_bulk_ratio"`

	// The single-stream bulk and the p99 behind bulk again, with the sink
	// reading LargeReadSinkBytes at a time instead of SinkReadBytes:
	// reported beside the targets, not judged (see largeSinkReadSize).
	SinkReadBytes                  int     `json:"sink_read_bytes"`
	LargeReadSinkBytes             int     `json:"large_read_sink_bytes"`
	LargeReadRawMBps               float64 `json:"large_read_raw_tcp_mbps"`
	LargeReadTunnelMBps            float64 `json:"large_read_tunnel_mbps"`
	LargeReadPoolMBps              float64 `json:"large_read_pool_mbps"`
	LargeReadRawRTTUnderBulkP99    float64 `json:"large_read_raw_rtt_under_bulk_p99_us"`
	LargeReadTunnelRTTUnderBulkP99 float64 `json:"large_read_tunnel_rtt_under_bulk_p99_us"`
	LargeReadPoolRTTUnderBulkP99   float64 `json:"large_read_pool_rtt_under_bulk_p99_us"`
	LargeReadThroughputRatio       float64 `json:"large_read_throughput_ratio"`
	LargeReadRTTUnderBulkRatio     float64 `json:"large_read_rtt_under_bulk_ratio"`
	LargeReadPoolRTTUnderBulkRatio float64 `json:"large_read_pool_rtt_under_bulk_ratio"`

	// SplitHeaders holds, when Options.SplitHeaders is set, the paired
	// ratios (median over repetitions of split / joined within each) per
	// metric, e.g. "tunnel_bulk1", "pool_bulkrtt99"; CI95 the 95%
	// confidence interval of each.
	SplitHeaders     map[string]float64    `json:"split_headers_vs_joined,omitempty"`
	SplitHeadersCI95 map[string][2]float64 `json:"split_headers_ci95,omitempty"`

	Streams1000OK bool    `json:"streams_1000_ok"`
	Streams       int     `json:"streams"`
	Reps          int     `json:"reps"`
	Seconds       float64 `json:"duration_seconds"`
}

// Targets are the ratios the tunnel must meet on a 2-core machine.
const (
	TargetThroughputRatio   = 0.55
	TargetRTTRatio          = 2.0
	TargetRTTUnderBulkRatio = 2.0
)

// Run measures everything once per repetition, interleaving raw TCP, the
// tunnel and the pool so background noise hits them alike.
func Run(ctx context.Context, opts Options) (Result, error) {
	o := opts.withDefaults()
	start := time.Now()
	progress := func(format string, a ...any) {
		if o.Progress != nil {
			fmt.Fprintf(o.Progress, format+"\n", a...)
		}
	}
	raw, err := newRawEndpoint(o.RequestSize)
	if err != nil {
		return Result{}, err
	}
	defer raw.close()
	tun, err := newTunnelEndpoint(ctx, "tunnel", 1, o.Config, o.RequestSize)
	if err != nil {
		return Result{}, err
	}
	defer tun.close()
	pool, err := newTunnelEndpoint(ctx, "pool", o.PoolSize, o.Config, o.RequestSize)
	if err != nil {
		return Result{}, err
	}
	defer pool.close()
	eps := []endpoint{raw, tun, pool}
	if o.SplitHeaders {
		split := o.Config
		split.SplitHeaderWrites = true
		for _, v := range []struct {
			label string
			n     int
		}{{"tunnel-split", 1}, {"pool-split", o.PoolSize}} {
			ep, err := newTunnelEndpoint(ctx, v.label, v.n, split, o.RequestSize)
			if err != nil {
				return Result{}, err
			}
			defer ep.close()
			eps = append(eps, ep)
		}
	}

	// samples[metric][endpoint] over the repetitions.
	type key struct{ metric, ep string }
	samples := map[key][]float64{}
	add := func(metric, ep string, v float64) { samples[key{metric, ep}] = append(samples[key{metric, ep}], v) }
	us := func(d time.Duration) float64 { return float64(d.Nanoseconds()) / 1e3 }

	// Each measurement runs on raw TCP, the tunnel and the pool back to
	// back, so a burst of background load hits all three alike.
	reps := 0
	for rep := range o.Reps {
		repStart := time.Now()
		for _, streams := range []int{1, 8, 64} {
			for _, ep := range eps {
				mbps, err := bulk(ctx, ep, serviceSink, streams, o.BulkBytes/int64(streams))
				if err != nil {
					return Result{}, err
				}
				add(fmt.Sprintf("bulk%d", streams), ep.name(), mbps)
			}
		}
		for _, ep := range eps {
			p50, p99, err := rttIdle(ctx, ep, o.RTTSamples, o.RequestSize)
			if err != nil {
				return Result{}, err
			}
			add("rtt50", ep.name(), us(p50))
			add("rtt99", ep.name(), us(p99))
		}
		for _, ep := range eps {
			p50, p99, err := rttUnderBulk(ctx, ep, serviceSink, o.RTTSamples, o.RequestSize)
			if err != nil {
				return Result{}, err
			}
			add("bulkrtt50", ep.name(), us(p50))
			add("bulkrtt99", ep.name(), us(p99))
		}
		for _, ep := range eps {
			mbps, err := bulk(ctx, ep, serviceSinkLarge, 1, o.BulkBytes)
			if err != nil {
				return Result{}, err
			}
			add("largebulk1", ep.name(), mbps)
			_, p99, err := rttUnderBulk(ctx, ep, serviceSinkLarge, o.RTTSamples, o.RequestSize)
			if err != nil {
				return Result{}, err
			}
			add("largebulkrtt99", ep.name(), us(p99))
		}
		reps++
		progress("repetition %d/%d done (%s)", rep+1, o.Reps, time.Since(start).Round(100*time.Millisecond))
		if reps >= MinReps && reps < o.Reps && time.Since(start)+time.Since(repStart) > o.Budget {
			progress("stopping after %d repetitions: the next would end past the %s budget", reps, o.Budget)
			break
		}
	}
	med := func(metric, ep string) float64 { return round(benchstat.Median(samples[key{metric, ep}]), 1) }

	r := Result{
		RawMBps: med("bulk1", "raw"), TunnelMBps: med("bulk1", "tunnel"), PoolMBps: med("bulk1", "pool"),
		Raw8MBps: med("bulk8", "raw"), Tunnel8MBps: med("bulk8", "tunnel"), Pool8MBps: med("bulk8", "pool"),
		Raw64MBps: med("bulk64", "raw"), Tunnel64MBps: med("bulk64", "tunnel"), Pool64MBps: med("bulk64", "pool"),
		RawRTTP50: med("rtt50", "raw"), RawRTTP99: med("rtt99", "raw"),
		TunnelRTTP50: med("rtt50", "tunnel"), TunnelRTTP99: med("rtt99", "tunnel"),
		PoolRTTP50: med("rtt50", "pool"), PoolRTTP99: med("rtt99", "pool"),
		RawRTTUnderBulkP50: med("bulkrtt50", "raw"), RawRTTUnderBulkP99: med("bulkrtt99", "raw"),
		TunnelRTTUnderBulkP50: med("bulkrtt50", "tunnel"), TunnelRTTUnderBulkP99: med("bulkrtt99", "tunnel"),
		PoolRTTUnderBulkP50: med("bulkrtt50", "pool"), PoolRTTUnderBulkP99: med("bulkrtt99", "pool"),
		SinkReadBytes: discardReadSize, LargeReadSinkBytes: largeSinkReadSize,
		LargeReadRawMBps: med("largebulk1", "raw"), LargeReadTunnelMBps: med("largebulk1", "tunnel"),
		LargeReadPoolMBps:           med("largebulk1", "pool"),
		LargeReadRawRTTUnderBulkP99: med("largebulkrtt99", "raw"), LargeReadTunnelRTTUnderBulkP99: med("largebulkrtt99", "tunnel"),
		LargeReadPoolRTTUnderBulkP99: med("largebulkrtt99", "pool"),
		Streams:                      o.Streams, Reps: reps,
	}
	r.ThroughputRatio = ratio(r.TunnelMBps, r.RawMBps)
	r.Throughput8Ratio = ratio(r.Tunnel8MBps, r.Raw8MBps)
	r.Throughput64Ratio = ratio(r.Tunnel64MBps, r.Raw64MBps)
	r.PoolThroughputRatio = ratio(r.PoolMBps, r.RawMBps)
	r.Pool64ThroughputRatio = ratio(r.Pool64MBps, r.Raw64MBps)
	r.RTTRatio = ratio(r.TunnelRTTP50, r.RawRTTP50)
	r.RTTUnderBulkRatio = ratio(r.TunnelRTTUnderBulkP99, r.RawRTTUnderBulkP99)
	r.PoolRTTUnderBulkRatio = ratio(r.PoolRTTUnderBulkP99, r.RawRTTUnderBulkP99)
	r.LargeReadThroughputRatio = ratio(r.LargeReadTunnelMBps, r.LargeReadRawMBps)
	r.LargeReadRTTUnderBulkRatio = ratio(r.LargeReadTunnelRTTUnderBulkP99, r.LargeReadRawRTTUnderBulkP99)
	r.LargeReadPoolRTTUnderBulkRatio = ratio(r.LargeReadPoolRTTUnderBulkP99, r.LargeReadRawRTTUnderBulkP99)

	if o.SplitHeaders {
		r.SplitHeaders, r.SplitHeadersCI95 = map[string]float64{}, map[string][2]float64{}
		for _, metric := range []string{"bulk1", "bulk8", "bulk64", "rtt50", "rtt99", "bulkrtt50", "bulkrtt99", "largebulk1", "largebulkrtt99"} {
			for _, ep := range []string{"tunnel", "pool"} {
				a, b := samples[key{metric, ep + "-split"}], samples[key{metric, ep}]
				rs := make([]float64, min(len(a), len(b)))
				for i := range rs {
					rs[i] = a[i] / b[i]
				}
				lo, hi := benchstat.MedianCI(rs, 0.95)
				r.SplitHeaders[ep+"_"+metric] = round(benchstat.Median(rs), 3)
				r.SplitHeadersCI95[ep+"_"+metric] = [2]float64{round(lo, 3), round(hi, 3)}
			}
		}
	}
	if err := manyStreams(ctx, tun, o.Streams, o.RequestSize, 8); err != nil {
		progress("%d concurrent streams FAILED: %v", o.Streams, err)
	} else {
		r.Streams1000OK = true
		progress("%d concurrent streams verified", o.Streams)
	}
	r.Seconds = round(time.Since(start).Seconds(), 1)
	return r, nil
}

func ratio(a, b float64) float64 {
	if b == 0 {
		return 0
	}
	return round(a/b, 3)
}

func round(v float64, digits int) float64 {
	p := 1.0
	for range digits {
		p *= 10
	}
	return float64(int64(v*p+0.5)) / p
}

// Pass reports whether the result meets the targets.
func (r Result) Pass() bool {
	return r.ThroughputRatio >= TargetThroughputRatio && r.RTTRatio <= TargetRTTRatio &&
		r.RTTUnderBulkRatio <= TargetRTTUnderBulkRatio && r.Streams1000OK
}

// WriteText prints the result as a table with the targets.
func (r Result) WriteText(w io.Writer) error {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintf(tw, "loopback, medians of %d\traw TCP\ttunnel\tpool(4)\t\n", r.Reps)
	fmt.Fprintf(tw, "bulk 1 stream MB/s\t%.0f\t%.0f\t%.0f\t\n", r.RawMBps, r.TunnelMBps, r.PoolMBps)
	fmt.Fprintf(tw, "bulk 8 streams MB/s\t%.0f\t%.0f\t%.0f\t\n", r.Raw8MBps, r.Tunnel8MBps, r.Pool8MBps)
	fmt.Fprintf(tw, "bulk 64 streams MB/s\t%.0f\t%.0f\t%.0f\t\n", r.Raw64MBps, r.Tunnel64MBps, r.Pool64MBps)
	fmt.Fprintf(tw, "RTT 1 KiB p50 µs\t%.1f\t%.1f\t%.1f\t\n", r.RawRTTP50, r.TunnelRTTP50, r.PoolRTTP50)
	fmt.Fprintf(tw, "RTT 1 KiB p99 µs\t%.1f\t%.1f\t%.1f\t\n", r.RawRTTP99, r.TunnelRTTP99, r.PoolRTTP99)
	fmt.Fprintf(tw, "RTT under bulk p50 µs\t%.1f\t%.1f\t%.1f\t\n", r.RawRTTUnderBulkP50, r.TunnelRTTUnderBulkP50, r.PoolRTTUnderBulkP50)
	fmt.Fprintf(tw, "RTT under bulk p99 µs\t%.1f\t%.1f\t%.1f\t\n", r.RawRTTUnderBulkP99, r.TunnelRTTUnderBulkP99, r.PoolRTTUnderBulkP99)
	if err := tw.Flush(); err != nil {
		return err
	}
	mark := func(ok bool) string {
		if ok {
			return "ok"
		}
		return "MISSED"
	}
	fmt.Fprintf(w, "\nthroughput_ratio      %.3f  (target >= %.2f) %s\n", r.ThroughputRatio, TargetThroughputRatio, mark(r.ThroughputRatio >= TargetThroughputRatio))
	fmt.Fprintf(w, "rtt_ratio             %.3f  (target <= %.1f) %s\n", r.RTTRatio, TargetRTTRatio, mark(r.RTTRatio <= TargetRTTRatio))
	fmt.Fprintf(w, "rtt_under_bulk_ratio  %.3f  (target <= %.1f) %s\n", r.RTTUnderBulkRatio, TargetRTTUnderBulkRatio, mark(r.RTTUnderBulkRatio <= TargetRTTUnderBulkRatio))
	fmt.Fprintf(w, "%d concurrent streams verified: %v\n", r.Streams, r.Streams1000OK)
	fmt.Fprintf(w, "\nThe sink above reads %d KiB at a time (io.Copy into io.Discard), as when the targets were set.\n"+
		"Reading %d KiB at a time (reported, not a target):\n", r.SinkReadBytes>>10, r.LargeReadSinkBytes>>10)
	tw = tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintf(tw, "\traw TCP\ttunnel\tpool(4)\t\n")
	fmt.Fprintf(tw, "bulk 1 stream MB/s\t%.0f\t%.0f\t%.0f\t\n", r.LargeReadRawMBps, r.LargeReadTunnelMBps, r.LargeReadPoolMBps)
	fmt.Fprintf(tw, "RTT under bulk p99 µs\t%.1f\t%.1f\t%.1f\t\n", r.LargeReadRawRTTUnderBulkP99, r.LargeReadTunnelRTTUnderBulkP99, r.LargeReadPoolRTTUnderBulkP99)
	if err := tw.Flush(); err != nil {
		return err
	}
	fmt.Fprintf(w, "large_read_throughput_ratio      %.3f\n", r.LargeReadThroughputRatio)
	fmt.Fprintf(w, "large_read_rtt_under_bulk_ratio  %.3f  (pool %.3f)\n", r.LargeReadRTTUnderBulkRatio, r.LargeReadPoolRTTUnderBulkRatio)
	_, err := fmt.Fprintf(w, "took %.1fs\n", r.Seconds)
	return err
}

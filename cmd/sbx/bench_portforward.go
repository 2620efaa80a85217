package main

import (
	"fmt"
	"log/slog"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/sbx-dev/sbx/cluster/kube"
	"github.com/sbx-dev/sbx/cluster/portforward"
	"github.com/sbx-dev/sbx/tools/testbed/linkshape"
	"github.com/sbx-dev/sbx/tools/testbed/pfbench"
	"github.com/sbx-dev/sbx/tunnel"
)

func newBenchPortForwardCmd(g *globalOptions) *cobra.Command {
	var (
		asJSON    bool
		check     bool
		transport string
		opts      pfbench.Options
		bulkMiB   int
		variants  []string
		shape     shapeFlags
	)
	cmd := &cobra.Command{
		Use:   "portforward",
		Short: "Compare kubectl's port-forward with the sbx tunnel over it",
		Long: `Compare kubectl's port-forward with the sbx tunnel over it.

Everything runs in this process on loopback: client-go's port-forward
against the kubelet's own port-forward handler, an application server "in
the pod", and a relay. Three paths carry the same traffic:

  bare    kubectl's port-forwarder: one forwarded stream per connection
  tunnel  one sbx tunnel session over one port-forward connection
  pool    a pool of tunnel sessions, each over its own port-forward connection

Bulk throughput is the aggregate of parallel uploads (and, for reference,
one upload alone); round-trip time is that of 1 KiB echoes. Figures are
medians over repetitions; the ratios compare the paths against bare, each
target ratio with the 95% confidence interval of its median (ci95 in
--json).

With --links, or --rtt and --bandwidth, the port-forward connections (both
directions) go through a shaped link: toxiproxy in this process, with the
link's bandwidth shared by all connections in each direction and half its
round trip added each way. Raw TCP through the same link is measured
beside the three paths: the link's own capacity. Each link reports, per
path, one upload, one download and parallel uploads together sending as
much (--streams, default 8) in MB/s at steady state, and 1 KiB requests in
link round trips: on a warm stream, the first on a new stream, and sent
while an upload runs on the same path. Transfers last about max(300 ms, 3
round trips) at the link's rate; 3 repetitions unless --reps is given. The presets:

  lan               rtt 1ms,   1 Gbit/s
  wifi              rtt 10ms,  300 Mbit/s
  vpn               rtt 30ms,  100 Mbit/s
  intercontinental  rtt 100ms, 100 Mbit/s

--loss P% (e.g. --loss 1%) switches the links to the packet model:
TCP itself crosses the link, as IP packets between two userspace TCP/IP
stacks in this process (gVisor's netstack), which drop P% of them at
random in each direction, serialize them at the link's rate behind a
bottleneck queue of four bandwidth-delay products (deep enough that the
queue drops nothing of its own when connections start together), and
deliver the rest half a round trip later. TCP then goes through slow
start and congestion control (CUBIC) and recovers the losses (SACK, fast
retransmit, timeouts) as over a real link, and the report counts the
packets lost and retransmitted. --loss 0% runs the packet model without loss, the baseline
to hold a lossy run against (the default stream model carries bytes, not
packets: TCP over it has no congestion window to lose). Transfers are
sized to what one TCP connection moves at that loss (Mathis et al.), and
to at least about 30 lost packets (at most 8 MiB), so that a figure does
not hang on one or two losses.`,
		Example: `  sbx bench portforward
  sbx bench portforward --json
  sbx bench portforward --reps 9 --check
  sbx bench portforward --links lan,wifi,vpn,intercontinental
  sbx bench portforward --rtt 40ms --bandwidth 50mbit --json
  sbx bench portforward --links vpn --loss 0.5%`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			format, err := g.outputFormat("text", "json", "yaml")
			if err != nil {
				return err
			}
			if asJSON {
				format = "json"
			}
			switch portforward.Transport(transport) {
			case portforward.TransportAuto, portforward.TransportWebSocket, portforward.TransportSPDY:
				opts.Transport = portforward.Transport(transport)
			default:
				return userError(fmt.Errorf("unknown transport %q", transport), "use --transport websocket, spdy, or leave it out for kubectl's choice")
			}
			if bulkMiB <= 0 || opts.Reps <= 0 || opts.Streams <= 0 || opts.RTTSamples <= 0 || opts.PoolSize <= 0 {
				return userError(fmt.Errorf("--bulk-mib, --reps, --streams, --rtt-samples and --pool must be positive"), "give each a value of 1 or more, or leave it out for the default")
			}
			opts.BulkBytes = int64(bulkMiB) << 20
			links, err := shape.links()
			if err != nil {
				return err
			}
			if links != nil {
				if len(variants) > 0 || check {
					return userError(fmt.Errorf("--ab and --check are not available with a shaped link"), "leave out --ab and --check, or --links, --rtt and --bandwidth")
				}
				return runShapedBench(cmd, g, format, shapedBenchOptions(cmd, opts, links, shape.idle))
			}
			for _, name := range variants {
				v, err := parseBenchVariant(name)
				if err != nil {
					return userError(err, "use --ab with split-headers, frame=SIZE, window=SIZE or budget=SIZE (e.g. 128k, 2m, 0), several joined with +")
				}
				opts.Variants = append(opts.Variants, v)
			}
			// The kubelet-side handler runs in this process and reports
			// every stream the benchmark closes (and all of them on
			// Ctrl-C) through klog: noise, unless asked for with -v.
			klogTo := slog.New(slog.DiscardHandler)
			if g.verbosity > 0 {
				klogTo = g.logger(g.stderr)
			}
			defer kube.RouteKlog(klogTo.With("component", "client-go"))()
			if format == "text" || g.verbosity > 0 {
				opts.Progress = func(line string) { fmt.Fprintln(g.stderr, line) }
			}
			res, err := pfbench.Run(cmd.Context(), opts)
			if err != nil {
				return fmt.Errorf("port-forward benchmark: %w", err)
			}
			if err := printValue(g.stdout, format, res, func() string { return benchText(res) }); err != nil {
				return err
			}
			if check {
				for name, ok := range res.Pass {
					if !ok {
						fmt.Fprintf(g.stderr, "target missed: %s\n", name)
						return exitError(1)
					}
				}
			}
			return nil
		},
	}
	f := cmd.Flags()
	f.BoolVar(&asJSON, "json", false, "print the result as JSON (same as -o json)")
	f.BoolVar(&check, "check", false, "exit with status 1 if a ratio misses its target")
	f.StringVar(&transport, "transport", "", "port-forward upgrade: websocket or spdy (default: websocket with spdy fallback, as kubectl)")
	f.IntVar(&opts.Reps, "reps", pfbench.DefaultReps, "repetitions; figures are medians (through a shaped link: 3 unless given)")
	f.IntVar(&opts.Streams, "streams", 4, "parallel uploads per bulk measurement (through a shaped link: 8 unless given)")
	f.IntVar(&bulkMiB, "bulk-mib", 16, "MiB each upload sends (through a shaped link: sized to the link unless given; parallel uploads share it)")
	f.IntVar(&opts.RTTSamples, "rtt-samples", 400, "1 KiB round trips per measurement (through a shaped link: per path and repetition, as many as fit in 300 ms unless given)")
	f.IntVar(&opts.PoolSize, "pool", 4, "tunnel sessions (and port-forward connections) in the pool")
	f.StringVar(&shape.rtt, "rtt", "", "shape the port-forward link: round-trip time, half added each way (e.g. 30ms)")
	f.StringVar(&shape.bandwidth, "bandwidth", "", "shape the port-forward link: rate each way, in bits (100mbit, 1gbit) or bytes (12.5MB/s)")
	f.StringVar(&shape.loss, "loss", "", "with a shaped link, drop this share of packets each way, as a percentage (e.g. 1%, 0.1%; 0% for the packet model without loss); see the description")
	f.StringSliceVar(&shape.presets, "links", nil, "shape the port-forward link as each of these presets in turn: "+linkshape.PresetNames())
	f.StringVar(&shape.idleS, "idle", "", "with a shaped link, also time the first request after every path was idle this long (e.g. 60s; off by default)")
	f.StringSliceVar(&variants, "ab", nil, "also measure, in the same repetitions, the tunnel and pool configured otherwise: split-headers (yamux header and body as two writes), frame=SIZE, window=SIZE (the most a stream's window grows to; 256k: fixed) or budget=SIZE (a session's window growth budget; 0: fixed windows) (tunnel.Config at both ends), several joined with +")
	return cmd
}

// shapeFlags are the flags that put a shaped link under the port-forward.
type shapeFlags struct {
	rtt, bandwidth, loss, idleS string
	presets                     []string
	idle                        time.Duration
}

// links returns the links the flags ask for, nil for none (the loopback
// benchmark).
func (f *shapeFlags) links() ([]linkshape.Link, error) {
	if f.idleS != "" {
		d, err := linkshape.ParseDuration(f.idleS)
		if err != nil {
			return nil, userError(fmt.Errorf("--idle %s", err), "give a duration, e.g. --idle 60s")
		}
		f.idle = d
	}
	var custom linkshape.Link
	if f.rtt != "" {
		d, err := linkshape.ParseDuration(f.rtt)
		if err != nil {
			return nil, userError(fmt.Errorf("--rtt %s", err), "give the round-trip time as a duration, e.g. --rtt 30ms")
		}
		custom.RTT = d
	}
	if f.bandwidth != "" {
		bits, err := linkshape.ParseRate(f.bandwidth)
		if err != nil {
			return nil, userError(fmt.Errorf("--bandwidth %q: %w", f.bandwidth, err), "give a rate in bits or bytes per second, e.g. --bandwidth 100mbit, --bandwidth 1gbit or --bandwidth 12.5MB/s")
		}
		custom.Bandwidth = bits
	}
	links, err := f.shapedLinks(custom)
	if err != nil || links == nil || f.loss == "" {
		return links, err
	}
	loss, err := linkshape.ParseLoss(f.loss)
	if err != nil {
		return nil, userError(fmt.Errorf("--loss %w", err), "give the share of packets lost as a percentage, e.g. --loss 1% or --loss 0.1%")
	}
	for i := range links {
		links[i].Packets, links[i].Loss = true, loss
	}
	return links, nil
}

// shapedLinks returns the links of --links or of --rtt and --bandwidth
// (custom), nil for none.
func (f *shapeFlags) shapedLinks(custom linkshape.Link) ([]linkshape.Link, error) {
	switch {
	case len(f.presets) > 0 && (f.rtt != "" || f.bandwidth != ""):
		return nil, userError(fmt.Errorf("--links cannot be combined with --rtt or --bandwidth"), "use --links for presets, or --rtt and --bandwidth for one link of your own")
	case len(f.presets) > 0:
		links := make([]linkshape.Link, 0, len(f.presets))
		for _, name := range f.presets {
			l, err := linkshape.Preset(strings.TrimSpace(name))
			if err != nil {
				return nil, userError(fmt.Errorf("--links: %w", err), "e.g. --links lan,vpn")
			}
			links = append(links, l)
		}
		return links, nil
	case f.rtt != "" || f.bandwidth != "":
		if custom.RTT == 0 && custom.Bandwidth == 0 {
			return nil, userError(fmt.Errorf("--rtt %s with no --bandwidth shapes nothing", f.rtt), "give a round trip above zero or a bandwidth, e.g. --rtt 30ms --bandwidth 100mbit")
		}
		custom.Name = "custom"
		return []linkshape.Link{custom}, nil
	case f.idleS != "":
		return nil, userError(fmt.Errorf("--idle needs a shaped link"), "add --links or --rtt and --bandwidth, e.g. --links vpn --idle 60s")
	case f.loss != "":
		return nil, userError(fmt.Errorf("--loss %s needs a shaped link", f.loss), "add --links or --rtt and --bandwidth, e.g. --links vpn --loss 1%")
	}
	return nil, nil
}

// shapedBenchOptions carries the loopback benchmark's flags over to a
// shaped run; those left at their defaults take the shaped run's.
func shapedBenchOptions(cmd *cobra.Command, opts pfbench.Options, links []linkshape.Link, idle time.Duration) pfbench.ShapedOptions {
	f := cmd.Flags()
	so := pfbench.ShapedOptions{Links: links, Transport: opts.Transport, PoolSize: opts.PoolSize, Idle: idle,
		Progress: opts.Progress}
	if f.Changed("reps") {
		so.Reps = opts.Reps
	}
	if f.Changed("streams") {
		so.Streams = opts.Streams
	}
	if f.Changed("bulk-mib") {
		so.BulkBytes = opts.BulkBytes
	}
	if f.Changed("rtt-samples") {
		so.RTTSamples = opts.RTTSamples
	}
	return so
}

func runShapedBench(cmd *cobra.Command, g *globalOptions, format string, so pfbench.ShapedOptions) error {
	klogTo := slog.New(slog.DiscardHandler)
	if g.verbosity > 0 {
		klogTo = g.logger(g.stderr)
	}
	defer kube.RouteKlog(klogTo.With("component", "client-go"))()
	if format == "text" || g.verbosity > 0 {
		so.Progress = func(line string) { fmt.Fprintln(g.stderr, line) }
	}
	res, err := pfbench.RunShaped(cmd.Context(), so)
	if err != nil {
		return fmt.Errorf("port-forward benchmark: %w", err)
	}
	return printValue(g.stdout, format, res, func() string { return shapedBenchText(res) })
}

func shapedBenchText(r *pfbench.ShapedResult) string {
	var b strings.Builder
	fmt.Fprintf(&b, "port-forward benchmark through shaped links: transport %s; medians of %d reps\n", r.Transport, r.Reps)
	b.WriteString("bulk: MB/s at steady state (one stream: fitted to its receiver's bytes over time; parallel: beyond a 1-byte transfer)\n")
	b.WriteString("1 KiB requests: p50 / p99 over all reps, in link round trips: warm, first on a new stream, behind an upload\n")
	for _, l := range r.Links {
		bw := "unlimited"
		if l.BandwidthMbit > 0 {
			bw = fmt.Sprintf("%s = %.1f MB/s", linkshape.FormatRate(int64(l.BandwidthMbit*1e6)), l.LinkMBps)
		}
		unit, lat := "rtts", func(x pfbench.Latency) string { return fmt.Sprintf("%.2f / %.2f", x.P50RTTs, x.P99RTTs) }
		if l.RTTms == 0 {
			unit, lat = "ms", func(x pfbench.Latency) string { return fmt.Sprintf("%.2f / %.2f", x.P50ms, x.P99ms) }
		}
		fmt.Fprintf(&b, "\nlink %s: rtt %g ms, %s each way; %.1f MB per transfer; took %.1f s\n", l.Name, l.RTTms, bw, float64(l.BulkBytes)/1e6, l.Seconds)
		if st := l.Packets; st != nil {
			fmt.Fprintf(&b, "packet model, %s loss: %d packets, %d lost at random (%.2f%%), %d dropped by the full bottleneck queue, %d TCP retransmissions\n",
				linkshape.FormatLoss(l.LossPct/100), st.Packets, st.Lost, 100*float64(st.Lost)/float64(max(st.Packets, 1)), st.QueueDrops, st.Retransmits)
		}
		tw := tabwriter.NewWriter(&b, 0, 0, 2, ' ', tabwriter.AlignRight)
		fmt.Fprintf(tw, "path	upload	download	%dx upload	rtt p50/p99 (%s)	new stream	behind bulk	", r.Streams, unit)
		idle := r.IdleS > 0
		if idle {
			fmt.Fprintf(tw, "after %gs idle	", r.IdleS)
		}
		fmt.Fprintln(tw)
		for _, p := range []struct {
			name string
			p    pfbench.ShapedPath
		}{{"raw tcp (the link)", l.Link}, {"bare (kubectl)", l.Bare}, {"tunnel", l.Tunnel}, {fmt.Sprintf("pool of %d", r.PoolSize), l.Pool}} {
			fmt.Fprintf(tw, "%s	%.1f	%.1f	%.1f	%s	%s	%s	", p.name, p.p.UploadMBps, p.p.DownloadMBps, p.p.ParallelMBps, lat(p.p.RTT), lat(p.p.NewStream), lat(p.p.BehindBulk))
			if idle {
				if l.RTTms == 0 {
					fmt.Fprintf(tw, "%.2f	", p.p.IdleFirstByteMs)
				} else {
					fmt.Fprintf(tw, "%.2f	", p.p.IdleFirstByteRTTs)
				}
			}
			fmt.Fprintln(tw)
		}
		_ = tw.Flush()
		line := func(name string, v float64) {
			rg := l.Ranges[name]
			fmt.Fprintf(&b, "  %-26s %.3f  (%.3f-%.3f)\n", name, v, rg[0], rg[1])
		}
		line("tunnel_vs_link_throughput", l.TunnelVsLinkThroughput)
		line("tunnel_vs_bare_throughput", l.TunnelVsBareThroughput)
		for _, name := range []string{"bare_vs_link_throughput", "tunnel_vs_link_download", "tunnel_vs_bare_download", "bare_vs_link_parallel", "tunnel_vs_link_parallel", "pool_vs_link_parallel", "tunnel_vs_bare_rtt"} {
			line(name, l.Ratios[name])
		}
	}
	fmt.Fprintf(&b, "took %.1f s", r.Seconds)
	return b.String()
}

// parseBenchVariant parses an --ab value: parts joined with "+", each
// split-headers, frame=SIZE, window=SIZE or budget=SIZE.
func parseBenchVariant(name string) (pfbench.Variant, error) {
	v := pfbench.Variant{Name: name}
	cfg := tunnel.PortForwardConfig()
	for part := range strings.SplitSeq(name, "+") {
		key, val, _ := strings.Cut(part, "=")
		switch key {
		case "split-headers":
			cfg.SplitHeaderWrites = true
		case "frame", "window", "budget":
			n, err := parseSize(val)
			if key == "budget" && val == "0" {
				n, err = 0, nil
			}
			if err != nil {
				return v, fmt.Errorf("variant %q: %s: %w", name, key, err)
			}
			switch key {
			case "frame":
				cfg.MaxFrameSize = n
			case "window":
				// The cap; streams start no higher than it.
				cfg.MaxStreamWindow = uint32(n)
				cfg.MinStreamWindow = min(cfg.MinStreamWindow, cfg.MaxStreamWindow)
			default:
				cfg.WindowBudget = int64(n)
			}
		default:
			return v, fmt.Errorf("unknown variant %q", part)
		}
	}
	if err := cfg.Verify(); err != nil {
		return v, fmt.Errorf("variant %q: %w", name, err)
	}
	v.Tunnel = &cfg
	return v, nil
}

// parseSize reads a byte count with an optional k or m suffix (KiB, MiB).
func parseSize(s string) (int, error) {
	mult := 1
	switch {
	case strings.HasSuffix(s, "k"):
		mult, s = 1<<10, strings.TrimSuffix(s, "k")
	case strings.HasSuffix(s, "m"):
		mult, s = 1<<20, strings.TrimSuffix(s, "m")
	}
	n, err := strconv.Atoi(s)
	if err != nil || n <= 0 || n > 1<<30/mult {
		return 0, fmt.Errorf("size %q is not a positive byte count (e.g. 262144, 256k, 1m)", s)
	}
	return n * mult, nil
}

func benchText(r *pfbench.Result) string {
	var b strings.Builder
	fmt.Fprintf(&b, "port-forward benchmark: transport %s; %d parallel uploads x %d MiB; %d x 1 KiB round trips; medians of %d reps\n\n",
		r.Transport, r.Streams, r.BulkBytes>>20, r.RTTSamples, r.Reps)
	tw := tabwriter.NewWriter(&b, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "path\tthroughput\tone stream\trtt p50\trtt p99\tcpu/byte\t")
	for _, p := range []struct {
		name string
		p    pfbench.Path
	}{{"bare (kubectl)", r.Bare}, {"tunnel", r.Tunnel}, {fmt.Sprintf("pool of %d", r.PoolSize), r.Pool}} {
		fmt.Fprintf(tw, "%s\t%.1f MB/s\t%.1f MB/s\t%.0f us\t%.0f us\t%.2f ns\t\n", p.name, p.p.ThroughputMBps, p.p.SingleStreamMBps, p.p.RTTP50us, p.p.RTTP99us, p.p.CPUNsPerByte)
	}
	_ = tw.Flush()
	b.WriteString("\n")
	verdict := func(ok bool) string {
		if ok {
			return "ok"
		}
		return "MISSED"
	}
	for _, t := range []struct {
		name, cmp string
		value     float64
		target    float64
	}{
		{"tunnel_vs_bare_throughput", ">=", r.TunnelVsBareThroughput, pfbench.TargetTunnelVsBareThroughput},
		{"pool_vs_bare_throughput", ">=", r.PoolVsBareThroughput, pfbench.TargetPoolVsBareThroughput},
		{"tunnel_vs_bare_rtt", "<=", r.TunnelVsBareRTT, pfbench.TargetTunnelVsBareRTT},
	} {
		ci := r.CI95[t.name]
		fmt.Fprintf(&b, "%-26s %.3f  95%% CI %.3f-%.3f  (target %s %.2f)  %s\n", t.name, t.value, ci[0], ci[1], t.cmp, t.target, verdict(r.Pass[t.name]))
	}
	fmt.Fprintf(&b, "one stream alone, tunnel vs bare: %.3f\n", r.TunnelVsBareSingleStream)
	if r.TunnelVsBareCPU > 0 {
		fmt.Fprintf(&b, "cpu per byte vs bare: tunnel %.3f, pool %.3f (lower is cheaper)\n", r.TunnelVsBareCPU, r.PoolVsBareCPU)
	}
	for _, v := range r.Variants {
		fmt.Fprintf(&b, "\nvariant %s (paired ratios, variant / sbx; 95%% CI):\n", v.Name)
		for _, name := range []string{"tunnel_throughput", "pool_throughput", "tunnel_single_stream", "tunnel_rtt", "tunnel_cpu_per_byte", "pool_cpu_per_byte"} {
			if val, ok := v.Ratios[name]; ok {
				fmt.Fprintf(&b, "  %-22s %.3f  (%.3f-%.3f)\n", name, val, v.CI95[name][0], v.CI95[name][1])
			}
		}
	}
	fmt.Fprintf(&b, "took %.1f s", r.Seconds)
	return b.String()
}

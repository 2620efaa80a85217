package main

import (
	"fmt"
	"log/slog"
	"strconv"
	"strings"
	"text/tabwriter"

	"github.com/spf13/cobra"

	"github.com/sbx-dev/sbx/cluster/kube"
	"github.com/sbx-dev/sbx/cluster/portforward"
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
--json).`,
		Example: `  sbx bench portforward
  sbx bench portforward --json
  sbx bench portforward --reps 9 --check`,
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
			for _, name := range variants {
				v, err := parseBenchVariant(name)
				if err != nil {
					return userError(err, "use --ab with split-headers, frame=SIZE or window=SIZE (e.g. 128k, 2m), several joined with +")
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
	f.IntVar(&opts.Reps, "reps", pfbench.DefaultReps, "repetitions; figures are medians")
	f.IntVar(&opts.Streams, "streams", 4, "parallel uploads per bulk measurement")
	f.IntVar(&bulkMiB, "bulk-mib", 16, "MiB each upload sends")
	f.IntVar(&opts.RTTSamples, "rtt-samples", 400, "1 KiB round trips per measurement")
	f.IntVar(&opts.PoolSize, "pool", 4, "tunnel sessions (and port-forward connections) in the pool")
	f.StringSliceVar(&variants, "ab", nil, "also measure, in the same repetitions, the tunnel and pool configured otherwise: split-headers (yamux header and body as two writes), frame=SIZE or window=SIZE (tunnel.Config at both ends), several joined with +")
	return cmd
}

// parseBenchVariant parses an --ab value: parts joined with "+", each
// split-headers, frame=SIZE or window=SIZE.
func parseBenchVariant(name string) (pfbench.Variant, error) {
	v := pfbench.Variant{Name: name}
	cfg := tunnel.PortForwardConfig()
	for part := range strings.SplitSeq(name, "+") {
		key, val, _ := strings.Cut(part, "=")
		switch key {
		case "split-headers":
			cfg.SplitHeaderWrites = true
		case "frame", "window":
			n, err := parseSize(val)
			if err != nil {
				return v, fmt.Errorf("variant %q: %s: %w", name, key, err)
			}
			if key == "frame" {
				cfg.MaxFrameSize = n
			} else {
				cfg.StreamWindow = uint32(n)
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

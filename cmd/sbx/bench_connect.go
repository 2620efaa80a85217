package main

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/sbx-dev/sbx/cluster/kube"
	"github.com/sbx-dev/sbx/tools/testbed/connbench"
	"github.com/sbx-dev/sbx/tools/testbed/prober"
	"github.com/sbx-dev/sbx/tools/testbed/sim"
	"github.com/sbx-dev/sbx/tools/testbed/simbin"
)

func newBenchConnectCmd(g *globalOptions) *cobra.Command {
	var (
		asJSON bool
		opts   connbench.Options
	)
	cmd := &cobra.Command{
		Use:   "connect",
		Short: "Time connect → ready and reconnect after a port-forward cut; the daemon's memory",
		Long: `Time how long a sandbox takes to get ready, and ready again after its
port-forwards are cut, and read the daemon's memory, on the simulated
cluster of ` + "`sbx demo`" + ` (started in this process: the real relay, the
kubelet's own port-forward handler). This sbx binary runs every step as
you would: ` + "`sbx connect`" + ` (which starts its daemon, a process of its
own with a temporary HOME), ` + "`sbx disconnect`" + `, ` + "`sbx daemon stop`" + `.

  first connect         the run's first sbx connect: it starts the daemon,
                        which starts the relay
  relay must start      sbx connect after sbx disconnect (--connects times)
  relay runs            sbx connect after sbx daemon stop: the command
                        starts a daemon, which takes the sandbox back with
                        its token, so its relay pod keeps running (checked).
                        Only a daemon restart (a reboot, a crash) finds a
                        relay running: a running daemon holds the tunnel
                        and disconnect removes the relay
  cut → ready           every port-forward connection is closed at once
                        (--cuts times, 600 ms after the last reconnect):
                        until the daemon reports the sandbox ready again,
                        and until a keyed request from a pod in the cluster
                        is served by the laptop again
  daemon RSS            VmRSS of the daemon process (Linux: /proc; "not
                        measured" elsewhere) idle for 2 s with one sandbox,
                        and after --streams streams through the tunnel
                        (each its own connection to the relay pod, 32 at a
                        time), with the peak (VmHWM); and how much of it is
                        the daemon's own memory (RssAnon: heap, stacks) and
                        how much the sbx binary's pages mapped from its file
                        (RssFile), which the kernel shares and may drop.
                        RssFile depends on the page cache (a file read whole
                        is cached in blocks of up to 2 MiB that a fault maps
                        entirely: 36 to 66 MiB for the same idle daemon), so
                        the binary's pages no process maps are dropped
                        before the measured daemon starts; compare runs by
                        RssAnon

Times are wall-clock, medians with p95 and max. The targets printed
(connect with a running relay and the median cut → ready within 1 s, the
idle daemon within 40 MiB) are for comparing runs: the simulated cluster
answers from this machine, a real API server adds its round trips. About
30 s with the defaults.`,
		Example: `  sbx bench connect
  sbx bench connect --json
  sbx bench connect --cuts 50 --connects 5`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			format, err := g.outputFormat("text", "json", "yaml")
			if err != nil {
				return err
			}
			if asJSON {
				format = "json"
			}
			for _, f := range []struct {
				name string
				v    int
				def  int
			}{
				{"--cuts", opts.Cuts, connbench.DefaultCuts},
				{"--connects", opts.Connects, connbench.DefaultConnects},
				{"--streams", opts.Streams, connbench.DefaultStreams},
			} {
				if f.v < 1 {
					return userError(fmt.Errorf("%s %d: must be 1 or more", f.name, f.v), fmt.Sprintf("use %s 1 or more (default %d)", f.name, f.def))
				}
			}
			if format == "text" || g.verbosity > 0 {
				opts.Progress = func(line string) { fmt.Fprintln(g.stderr, line) }
			}
			res, err := runBenchConnect(cmd.Context(), g, opts)
			if err != nil {
				return fmt.Errorf("connect benchmark: %w", err)
			}
			return printValue(g.stdout, format, res, func() string {
				var b strings.Builder
				_ = res.WriteText(&b)
				return strings.TrimRight(b.String(), "\n")
			})
		},
	}
	f := cmd.Flags()
	f.BoolVar(&asJSON, "json", false, "print the result as JSON (same as -o json)")
	f.IntVar(&opts.Cuts, "cuts", connbench.DefaultCuts, "port-forward cuts to measure")
	f.IntVar(&opts.Connects, "connects", connbench.DefaultConnects, "connects to measure of each kind (the relay must start; the relay runs)")
	f.IntVar(&opts.Streams, "streams", connbench.DefaultStreams, "streams through the tunnel before the daemon's memory is read again")
	return cmd
}

// runBenchConnect starts the simulated cluster and a home for this
// binary, and measures.
func runBenchConnect(ctx context.Context, g *globalOptions, opts connbench.Options) (*connbench.Result, error) {
	bin, err := os.Executable()
	if err != nil {
		return nil, fmt.Errorf("find this sbx binary, which the benchmark runs: %w", err)
	}
	// The cluster's logs (and the kubelet-side port-forward handler's,
	// through klog, on every cut) are noise unless asked for with -v.
	logger := slog.New(slog.DiscardHandler)
	if g.verbosity > 0 {
		logger = g.logger(g.stderr)
	}
	defer kube.RouteKlog(logger.With("component", "client-go"))()
	if opts.Progress != nil {
		opts.Progress("starting the simulated cluster")
	}
	startCtx, cancel := context.WithTimeout(ctx, 30*time.Second)
	env, err := simbin.Start(startCtx, simbin.Options{Bin: bin, Logger: logger, Outbound: simbin.OutboundProxy})
	cancel()
	if err != nil {
		return nil, err
	}
	defer env.Close()
	local, err := sim.StartLocalRoute("127.0.0.1:0", nil, nil, logger.With("side", "laptop-app"))
	if err != nil {
		return nil, err
	}
	defer local.Close()
	specFile, err := env.WriteSpec(local.Addr())
	if err != nil {
		return nil, err
	}
	client := env.Sim.HTTPClient("default")
	defer client.CloseIdleConnections()
	return connbench.Run(ctx, connbench.Target{
		Cluster:   "simulated cluster",
		Bin:       bin,
		Environ:   env.Environ,
		SpecFile:  specFile,
		Kube:      env.Sim.Clients.Kube,
		Namespace: sim.AppNamespace,
		// The simulated kubelet-side port-forward server is the API
		// server's port-forward endpoint here: it closes the laptop's
		// port-forward connections itself.
		Cuts: []connbench.Cut{{Name: "port-forwards", Do: env.Cut}},
		Keyed: func(baggage string) prober.Once {
			return simbin.KeyedOnce(client, baggage, simbin.RouteOnLaptop)
		},
		Dial: env.Sim.Network.Resolver("default").DialContext,
	}, opts)
}

package main

import (
	"errors"
	"fmt"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/sbx-dev/sbx/daemon/api"
)

func newBenchClusterCmd(g *globalOptions) *cobra.Command {
	var (
		asJSON   bool
		duration time.Duration
	)
	cmd := &cobra.Command{
		Use:   "cluster NAME",
		Short: "Measure a connected sandbox's real path to its relay: bare port-forward, tunnel, pool",
		Long: `Measure a connected sandbox's path to its relay pod, through your
network, the API server and the kubelet, so you can tell "my network" from
"the tunnel". The daemon runs it with the sandbox's token, sessions and
port-forward dialer; three paths carry the same traffic in turn:

  bare    one new port-forward connection to the relay pod, used raw (no
          multiplexer): what kubectl port-forward gets
  tunnel  one stream on one of the sandbox's tunnel sessions
  pool    one stream on each tunnel session at once (at most 8), summed

Each path gets an upload (laptop to relay), a download (relay to laptop)
and 1 KiB round trips, each for --duration (about 9 × --duration in all),
and the result compares tunnel and pool with bare, with a one-line
verdict. Progress goes to stderr, the result to stdout.

The relay serves the benchmark's sink, source and echo only on
connections the sandbox's token authenticated, at most 8 at once and 1 GiB
each. A relay older than this feature says so: reconnect to upgrade it.
The benchmark's traffic shares the tunnel with the sandbox's own.`,
		Example: `  sbx bench cluster alice
  sbx bench cluster alice --duration 5s
  sbx bench cluster alice --json`,
		Args:              cobra.ExactArgs(1),
		ValidArgsFunction: completeSandboxNames,
		RunE: func(cmd *cobra.Command, args []string) error {
			format, err := g.outputFormat("text", "json", "yaml")
			if err != nil {
				return err
			}
			if asJSON {
				format = "json"
			}
			req := api.BenchRequest{Duration: duration}
			if err := req.Validate(); err != nil {
				return userError(err, fmt.Sprintf("give --duration from %s to %s (default %s)", api.MinBenchDuration, api.MaxBenchDuration, api.DefaultBenchDuration))
			}
			ctx := cmd.Context()
			c, err := connectDaemon(ctx)
			if err != nil {
				return err
			}
			defer c.Close()
			name := args[0]
			sb, err := connectedSandbox(ctx, c, name)
			if err != nil {
				return err
			}
			if sb.Phase != api.PhaseReady {
				return stateError(fmt.Errorf("sandbox %s is not connected (phase %s), and the benchmark measures through its tunnel", name, sb.Phase),
					fmt.Sprintf("`sbx status %s` shows why; run the benchmark once it is ready", name))
			}
			res, err := c.Bench(ctx, name, req, func(p api.BenchProgress) { fmt.Fprintln(g.stderr, p.Message) })
			if err != nil {
				var be *api.BenchError
				if errors.As(err, &be) {
					// The daemon's message names the cause and the next step.
					return &cliError{kind: kindUser, code: 1, err: err}
				}
				if api.IsNotFound(err) {
					return userError(err, "connect it with `sbx connect -f FILE`")
				}
				return classify(err, "")
			}
			return printValue(g.stdout, format, res, func() string { return benchClusterText(res) })
		},
	}
	f := cmd.Flags()
	f.BoolVar(&asJSON, "json", false, "print one JSON object (same as -o json)")
	f.DurationVar(&duration, "duration", api.DefaultBenchDuration, "how long each measurement (one path's upload, download or round trips) lasts")
	return cmd
}

// benchClusterText lays out a cluster benchmark: a table of the paths,
// the ratios against bare and the verdict.
func benchClusterText(r api.BenchResult) string {
	var b strings.Builder
	fmt.Fprintf(&b, "sandbox %s, relay %s: %s per measurement, %d-byte round trips\n\n", r.Sandbox, r.RelayVersion,
		time.Duration(r.Seconds*float64(time.Second)).Round(time.Millisecond), r.EchoBytes)
	tw := tabwriter.NewWriter(&b, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "path\tconnections\tupload\tdownload\trtt p50\trtt p99\t")
	for _, p := range []struct {
		name string
		p    api.BenchPath
	}{{"bare port-forward", r.Bare}, {"tunnel", r.Tunnel}, {"pool", r.Pool}} {
		fmt.Fprintf(tw, "%s\t%d\t%.1f MB/s\t%.1f MB/s\t%s\t%s\t\n", p.name, p.p.Connections, p.p.UploadMBps, p.p.DownloadMBps, api.FormatMS(p.p.RTTP50ms), api.FormatMS(p.p.RTTP99ms))
	}
	_ = tw.Flush()
	fmt.Fprintf(&b, "\ntunnel ÷ bare: upload %.2f×, download %.2f×, round trip %.2f×\n", r.TunnelVsBareUpload, r.TunnelVsBareDownload, r.TunnelVsBareRTT)
	fmt.Fprintf(&b, "pool ÷ bare:   upload %.2f×, download %.2f×, round trip %.2f×\n", r.PoolVsBareUpload, r.PoolVsBareDownload, r.PoolVsBareRTT)
	fmt.Fprintf(&b, "\n%s", r.Verdict)
	return b.String()
}

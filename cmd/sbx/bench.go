package main

import (
	"encoding/json"
	"fmt"

	"github.com/spf13/cobra"

	"github.com/sbx-dev/sbx/tools/testbed/tunnelbench"
)

// newBenchCmd is the parent of the benchmarks; each subsystem adds one
// subcommand here.
func newBenchCmd(g *globalOptions) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "bench",
		Short: "Measure sbx's data path: on this machine, or to a connected sandbox's relay",
		Long: `Measure sbx's data path and print figures and ratios against a baseline
measured in the same run: tunnel and portforward on this machine (portforward
also through shaped links), connect on the embedded simulated cluster, and
cluster through your real path to a connected sandbox's relay.`,
		Args: cobra.NoArgs,
	}
	cmd.AddCommand(
		newBenchTunnelCmd(g),
		newBenchPortForwardCmd(g),
		newBenchClusterCmd(g),
		newBenchConnectCmd(g),
	)
	return cmd
}

func newBenchTunnelCmd(g *globalOptions) *cobra.Command {
	var (
		asJSON bool
		reps   int
		window uint32
		frame  int
		split  bool
	)
	cmd := &cobra.Command{
		Use:   "tunnel",
		Short: "Compare the tunnel with raw loopback TCP (throughput, round trips, many streams)",
		Long: `Compare the tunnel with raw loopback TCP in one run: single-stream and
8/64-stream bulk throughput, 1 KiB request/response round trips (idle and
behind a bulk transfer on the same session), for one session and a pool of
4, and 1,000 concurrent streams verified by checksum. The receiving
application copies into io.Discard (8 KiB reads), as when the targets were
set; single-stream bulk and round trips behind bulk are measured again with
32 KiB reads and reported beside them (large_read_* in the JSON). Medians
over the repetitions; ratios are tunnel/raw. Takes under a minute.`,
		Example: `  sbx bench tunnel
  sbx bench tunnel --json`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			format, err := g.outputFormat("text", "json")
			if err != nil {
				return err
			}
			if asJSON {
				format = "json"
			}
			if reps < 1 {
				return userError(fmt.Errorf("--reps %d is not positive", reps), fmt.Sprintf("use --reps 1 or more (default %d)", tunnelbench.DefaultOptions().Reps))
			}
			opts := tunnelbench.DefaultOptions()
			opts.Reps = reps
			opts.SplitHeaders = split
			if window > 0 {
				opts.Config.MaxStreamWindow = window
			}
			if frame > 0 {
				opts.Config.MaxFrameSize = frame
			}
			if err := opts.Config.Verify(); err != nil {
				return userError(err, "adjust --stream-window / --max-frame")
			}
			if format == "text" {
				opts.Progress = g.stderr
			}
			res, err := tunnelbench.Run(cmd.Context(), opts)
			if err != nil {
				return fmt.Errorf("tunnel benchmark failed: %w", err)
			}
			if format == "json" {
				b, err := json.Marshal(res)
				if err != nil {
					return err
				}
				_, err = fmt.Fprintf(g.stdout, "%s\n", b)
				return err
			}
			return res.WriteText(g.stdout)
		},
	}
	cmd.Flags().BoolVar(&asJSON, "json", false, "print one JSON object (same as -o json)")
	cmd.Flags().IntVar(&reps, "reps", tunnelbench.DefaultOptions().Reps, "repetitions per measurement (medians are reported)")
	cmd.Flags().Uint32Var(&window, "stream-window", 0, "override the most a stream's receive window grows to, in bytes (262144 fixes it at yamux's initial 256 KiB; default: the tuned value)")
	cmd.Flags().BoolVar(&split, "ab-split-headers", false, "also measure a tunnel and pool writing each yamux header apart from its body, as plain yamux does, and report split/joined ratios")
	cmd.Flags().IntVar(&frame, "max-frame", 0, "override the tunnel's maximum data frame size in bytes (default: the tuned value)")
	return cmd
}

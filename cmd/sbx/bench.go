package main

import "github.com/spf13/cobra"

// newBenchCmd is the parent of the benchmark commands; each measures one
// part of sbx in-process and prints ratios measured in one run.
func newBenchCmd(g *globalOptions) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "bench",
		Short: "Measure sbx's data paths on this machine",
		Long: `Measure sbx's data paths on this machine, in-process and on loopback.

Each benchmark compares paths within one run and reports ratios, which are
meaningful on a busy machine where absolute figures are not.`,
		Args: cobra.NoArgs,
	}
	cmd.AddCommand(newBenchPortForwardCmd(g))
	return cmd
}

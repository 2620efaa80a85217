package main

import (
	"errors"
	"fmt"
	"slices"
	"strings"

	"github.com/spf13/cobra"

	"github.com/sbx-dev/sbx/daemon/runenv"
)

func newEnvCmd(g *globalOptions) *cobra.Command {
	var (
		flags  envFlags
		format string
	)
	cmd := &cobra.Command{
		Use:   "env NAME",
		Short: "Print the environment `sbx run` gives a process, for IDEs and debuggers",
		Long: `Env prints the environment a local process of the sandbox should run with:
SBX_SANDBOX, SBX_ROUTING_KEY, SBX_BAGGAGE (the baggage member that routes to
this sandbox), proxy variables when outbound access runs in proxy mode (their
URLs carry the proxy's password: keep what you write them to private), and
with --env-from-baseline the baseline container's own environment (ConfigMap
values resolved; Secret values only with --include-secrets), read from the
cluster the sandbox was connected through (its kubeconfig and context, not
this shell's; --kubeconfig and --context override them).

Formats: dotenv (VS Code "envFile", docker --env-file style), json (an object
for launch.json "env"), shell (export lines for eval); the global -o json
is the same as --format json. What cannot be carried
is reported on stderr, never written wrong.`,
		Example: `  sbx env alice > .env                         # VS Code: "envFile": "${workspaceFolder}/.env"
  sbx env alice --env-from-baseline --format json
  eval "$(sbx env alice --format shell)" && dlv debug ./cmd/driver`,
		Args:              cobra.ExactArgs(1),
		ValidArgsFunction: completeSandboxNames,
		RunE: func(cmd *cobra.Command, args []string) error {
			// The global -o picks the format too (scripts pass -o json to
			// every command); it must never be silently ignored.
			if g.output != "" {
				if !slices.Contains(runenv.Formats, g.output) {
					return userError(fmt.Errorf("output format %q is not supported by sbx env", g.output),
						"use --format (or -o) with one of "+strings.Join(runenv.Formats, ", "))
				}
				if cmd.Flags().Changed("format") && format != g.output {
					return userError(fmt.Errorf("-o %s and --format %s disagree", g.output, format), "give only one of them")
				}
				format = g.output
			}
			if !slices.Contains(runenv.Formats, format) {
				return userError(errors.New("unknown --format "+format), "use one of "+strings.Join(runenv.Formats, ", "))
			}
			env, err := sandboxEnv(cmd.Context(), g, args[0], flags)
			if err != nil {
				return err
			}
			out, skipped, err := runenv.Format(env, format)
			if err != nil {
				return err
			}
			printNotes(g, env, skipped)
			_, err = g.stdout.Write(out)
			return err
		},
	}
	cmd.Flags().StringVar(&format, "format", runenv.FormatDotenv, "output format: "+strings.Join(runenv.Formats, ", "))
	_ = cmd.RegisterFlagCompletionFunc("format", cobra.FixedCompletions(runenv.Formats, cobra.ShellCompDirectiveNoFileComp))
	flags.bind(cmd.Flags())
	return cmd
}

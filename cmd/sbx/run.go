package main

import (
	"context"
	"errors"
	"os"
	"os/signal"

	"github.com/spf13/cobra"

	"github.com/sbx-dev/sbx/daemon/runenv"
)

func newRunCmd(g *globalOptions) *cobra.Command {
	var flags envFlags
	cmd := &cobra.Command{
		Use:   "run NAME [flags] -- CMD [ARGS...]",
		Short: "Run a local process with the sandbox's environment",
		Long: `Run starts CMD with the environment ` + "`sbx env`" + ` prints (SBX_SANDBOX,
SBX_ROUTING_KEY, SBX_BAGGAGE, proxy variables in proxy mode, and with
--env-from-baseline the baseline container's environment), forwards the
signals sbx receives to it, and exits with its exit code (128+N when signal
N killed it).`,
		Example: `  sbx run alice -- go run ./cmd/route
  sbx run alice --env-from-baseline -- ./bin/driver --port 8082
  sbx run alice --env-from-baseline --include-secrets -- dlv debug ./cmd/driver`,
		Args: func(cmd *cobra.Command, args []string) error {
			dash := cmd.ArgsLenAtDash()
			switch {
			case dash < 0 || len(args) <= dash:
				return userError(errors.New("give the command after --"), "sbx run NAME -- CMD ARGS...")
			case dash != 1:
				return userError(errors.New("give exactly one sandbox name before --"), "sbx run NAME -- CMD ARGS...")
			}
			return nil
		},
		ValidArgsFunction: completeSandboxNames,
		RunE: func(cmd *cobra.Command, args []string) error {
			// The output is the child's; refuse -o json rather than ignore it.
			if _, err := g.outputFormat("text"); err != nil {
				return err
			}
			env, err := sandboxEnv(cmd.Context(), g, args[0], flags)
			if err != nil {
				return err
			}
			printNotes(g, env, nil)
			sigs := make(chan os.Signal, 8)
			signal.Notify(sigs, runenv.ForwardedSignals...)
			defer signal.Stop(sigs)
			// Not cmd.Context(): main cancels it on SIGINT/SIGTERM, which
			// here are the child's to handle (forwarded through sigs).
			code, err := runenv.Run(context.Background(), runenv.RunOptions{
				Args: args[1:], Env: env.Environ(os.Environ()),
				Stdin: g.stdin, Stdout: g.stdout, Stderr: g.stderr,
				Signals: sigs, SkipTerminalSignals: runenv.InForeground(),
			})
			if se := (*runenv.StartError)(nil); errors.As(err, &se) {
				// A shell's codes (127 not found, 126 not executable), so
				// scripts and IDEs tell a missing command from its failure.
				return &cliError{kind: kindUser, err: err, code: se.Code,
					hint: "check the command after -- (its name, $PATH, and that it is executable)"}
			}
			if err != nil {
				return userError(err, "check the command after --")
			}
			if code != 0 {
				return exitError(code)
			}
			return nil
		},
	}
	flags.bind(cmd.Flags())
	return cmd
}

package main

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"github.com/sbx-dev/sbx/daemon/api"
	"github.com/spf13/cobra"
)

func newDisconnectCmd(g *globalOptions) *cobra.Command {
	var all, orphan, forget, force bool
	cmd := &cobra.Command{
		Use:   "disconnect NAME | --all",
		Short: "Disconnect a sandbox and delete its cluster objects",
		Long: `Disconnect closes the sandbox's tunnel and deletes everything sbx created for
it in the cluster: the relay Deployment, its Services, its Lease
and its routes (routes inside VirtualServices owned by others are removed one
by one, leaving the rest intact). Keyed requests go to the baseline again.`,
		Example: `  sbx disconnect alice
  sbx disconnect --all
  sbx disconnect ghost --orphan -n hotrod   # leftovers of a crashed daemon`,
		ValidArgsFunction: completeSandboxNames,
		RunE: func(cmd *cobra.Command, args []string) error {
			format, err := g.outputFormat("text", "json", "yaml")
			if err != nil {
				return err
			}
			switch {
			case all && len(args) > 0:
				return userError(errors.New("give a sandbox name or --all, not both"), "`sbx disconnect alice` or `sbx disconnect --all`")
			case !all && len(args) != 1:
				return userError(errors.New("which sandbox? give one name or --all"), "`sbx status` lists the connected sandboxes")
			case forget && orphan:
				return userError(errors.New("--forget and --orphan contradict each other"), "--forget leaves the cluster alone, --orphan deletes a leftover there")
			case orphan && all:
				return userError(errors.New("--orphan takes one sandbox name, not --all"), "`sbx list` marks the orphans; `sbx gc` removes the expired ones")
			case force && !orphan:
				return userError(errors.New("--force goes with --orphan"), "`sbx disconnect NAME --orphan --force` deletes a sandbox another daemon still renews")
			}
			if orphan {
				if err := readKubeconfig(g); err != nil {
					return userError(fmt.Errorf("cannot delete the objects of sandbox %s: %w", args[0], err), "fix "+kubeconfigFlags+" and run it again")
				}
			}
			ctx := cmd.Context()
			// A stopped daemon still owns the sandboxes in its state
			// file; starting it is how they get disconnected.
			c, err := needDaemon(ctx, g)
			if err != nil {
				return err
			}
			defer c.Close()
			var res api.DisconnectResult
			what := "disconnecting " + strings.Join(args, "")
			if all {
				what = "disconnecting every sandbox"
			}
			stop := whileClusterWork(ctx, g, what, "the daemon is deleting cluster objects")
			switch {
			case forget && all:
				res, err = c.ForgetAll(ctx)
			case all:
				res, err = c.DisconnectAll(ctx)
			case forget:
				res, err = c.Forget(ctx, args[0])
			case orphan:
				res, err = c.DeleteOrphan(ctx, args[0], clusterRequest(g), force)
			default:
				res, err = c.Disconnect(ctx, args[0])
			}
			stop()
			if err != nil {
				if ctx.Err() != nil && errors.Is(err, context.Canceled) {
					look := "sbx status"
					if orphan {
						look = "sbx list"
					}
					return interruptedDisconnect(what, look, disconnectAgain(cmd, g, args, all, orphan, forget), forget)
				}
				if api.IsNotFound(err) {
					if orphan {
						return userError(fmt.Errorf("no sandbox %q found in the cluster", args[0]), "`sbx list` shows the sandboxes in the cluster; pass -n NAMESPACE or --context if it lives elsewhere")
					}
					// The daemon's message already points at sbx status;
					// the hint says it once, with the orphan case.
					return userError(fmt.Errorf("sandbox %q is not connected to this daemon", args[0]),
						"`sbx status` lists the connected sandboxes; for a leftover shown as orphan by `sbx list`, use `sbx disconnect NAME --orphan`")
				}
				return classify(err, "`sbx status` shows the sandboxes")
			}
			if forget {
				return printValue(g.stdout, format, res, func() string {
					if len(res.Disconnected) == 0 {
						return "no sandboxes were connected"
					}
					return fmt.Sprintf("forgot %s; their cluster objects stay until `sbx gc` collects them after the lease expired", strings.Join(res.Disconnected, ", "))
				})
			}
			return printValue(g.stdout, format, res, func() string {
				if len(res.Disconnected) == 0 {
					return "no sandboxes were connected"
				}
				out := ""
				for i, n := range res.Disconnected {
					if i > 0 {
						out += "\n"
					}
					out += fmt.Sprintf("sandbox %s disconnected; its cluster objects are deleted", n)
				}
				return out
			})
		},
	}
	cmd.Flags().BoolVar(&all, "all", false, "disconnect every sandbox of this daemon")
	cmd.Flags().BoolVar(&forget, "forget", false, "stop the sandbox and drop it from the daemon without touching the cluster (gone or unreachable); sbx gc collects its objects later")
	cmd.Flags().BoolVar(&orphan, "orphan", false, "delete the cluster objects of a sandbox this daemon does not own (marked orphan by sbx list)")
	cmd.Flags().BoolVar(&force, "force", false, "with --orphan: delete it even though another daemon still renews its Lease (that daemon recreates it unless stopped)")
	return cmd
}

// interruptedDisconnect is disconnect's answer to Ctrl-C once the daemon
// got the request: the daemon stops where the interruption caught it, so
// a sandbox may be left stopped (failed) with some of its cluster objects
// still there, and a plain "interrupted" would say neither that nor what
// to do. look is the command that shows what is left, again the one that
// finishes the work.
func interruptedDisconnect(what, look, again string, forget bool) error {
	msg := "interrupted while " + what
	if !forget {
		msg += "; the daemon stopped there, so cluster objects may remain"
	}
	return &cliError{kind: kindUser, code: exitInterrupted, err: errors.New(msg),
		hint: "`" + look + "` shows what is left; `" + again + "` finishes it"}
}

// disconnectAgain is the disconnect command line that repeats this one.
func disconnectAgain(cmd *cobra.Command, g *globalOptions, args []string, all, orphan, forget bool) string {
	line := append([]string{cmd.CommandPath()}, args...)
	if all {
		line = append(line, "--all")
	}
	if orphan {
		line = append(line, "--orphan")
		for _, f := range [][2]string{{"--kubeconfig", g.kubeconfig}, {"--context", g.context}, {"-n", g.namespace}} {
			if f[1] != "" {
				line = append(line, f[0], f[1])
			}
		}
	}
	if forget {
		line = append(line, "--forget")
	}
	return strings.Join(line, " ")
}

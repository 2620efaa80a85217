package main

import (
	"errors"
	"fmt"

	"github.com/spf13/cobra"

	"github.com/sbx-dev/sbx/daemon"
)

func newDisconnectCmd(g *globalOptions) *cobra.Command {
	var all bool
	cmd := &cobra.Command{
		Use:   "disconnect NAME | --all",
		Short: "Disconnect a sandbox and delete its cluster objects",
		Long: `Disconnect closes the sandbox's tunnel and deletes everything sbx created for
it in the cluster: the relay Deployment, its Secret and Services, its Lease
and its routes (routes inside VirtualServices owned by others are removed one
by one, leaving the rest intact). Keyed requests go to the baseline again.`,
		Example: `  sbx disconnect alice
  sbx disconnect --all`,
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
			}
			ctx := cmd.Context()
			// A stopped daemon still owns the sandboxes in its state
			// file; starting it is how they get disconnected.
			c, err := ensureDaemon(ctx, g)
			if err != nil {
				return err
			}
			defer c.Close()
			var res daemon.DisconnectResult
			if all {
				res, err = c.DisconnectAll(ctx)
			} else {
				res, err = c.Disconnect(ctx, args[0])
			}
			if err != nil {
				if daemon.IsNotFound(err) {
					return userError(err, "`sbx status` lists the connected sandboxes; `sbx list` also shows leftovers in the cluster")
				}
				return err
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
	return cmd
}

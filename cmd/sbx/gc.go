package main

import (
	"fmt"
	"strings"

	"github.com/spf13/cobra"
)

func newGCCmd(g *globalOptions) *cobra.Command {
	return &cobra.Command{
		Use:   "gc",
		Short: "Delete sandboxes whose lease expired, and routes of sandboxes that are gone",
		Long: `GC deletes the cluster objects of every sandbox whose Lease expired more than
a grace period ago, in the namespace given by -n (default: every namespace
you may list). A connected daemon renews its sandboxes' leases, so live
sandboxes are never collected.

It also removes routes whose sandbox is gone (its Lease deleted, for example
by the cluster's garbage collector) from VirtualServices others own, and
deletes sbx's own VirtualServices left without a live sandbox's route.`,
		Example: `  sbx gc
  sbx gc -n hotrod`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			format, err := g.outputFormat("text", "json", "yaml")
			if err != nil {
				return err
			}
			if err := readKubeconfig(g); err != nil {
				return userError(fmt.Errorf("cannot collect expired sandboxes: %w", err), "fix "+kubeconfigFlags+" and run gc again")
			}
			ctx := cmd.Context()
			c, err := needDaemon(ctx, g)
			if err != nil {
				return err
			}
			defer c.Close()
			stop := whileClusterWork(ctx, g, "collecting expired sandboxes", "the daemon is listing and deleting cluster objects")
			res, err := c.GC(ctx, clusterRequest(g))
			stop()
			if err != nil {
				return classify(err, "pass -n NAMESPACE to collect in one namespace")
			}
			return printValue(g.stdout, format, res, func() string {
				var lines []string
				if len(res.Deleted) == 0 {
					lines = append(lines, "no sandbox has an expired lease")
				} else {
					lines = append(lines, fmt.Sprintf("deleted %d expired sandbox(es): %s", len(res.Deleted), strings.Join(res.Deleted, ", ")))
				}
				for _, l := range res.Routes {
					lines = append(lines, fmt.Sprintf("removed %s: VirtualService %s/%s", l.What, l.Namespace, l.Name))
				}
				return strings.Join(lines, "\n")
			})
		},
	}
}

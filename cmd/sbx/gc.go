package main

import (
	"fmt"
	"strings"
	"time"

	"github.com/sbx-dev/sbx/daemon/api"
	"github.com/spf13/cobra"
)

func newGCCmd(g *globalOptions) *cobra.Command {
	var dryRun bool
	cmd := &cobra.Command{
		Use:   "gc",
		Short: "Delete sandboxes whose lease expired, and routes of sandboxes that are gone",
		Long: `GC deletes the cluster objects of every sandbox whose Lease expired more than
a grace period ago (10 minutes: a laptop that slept gets its sandbox back),
in the namespace given by -n (default: every namespace you may list). A
connected daemon renews its sandboxes' leases, so live sandboxes are never
collected; those whose Lease expired more recently are listed with when gc
will take them.

It also removes routes whose sandbox is gone (its Lease deleted, for example
by the cluster's garbage collector) from VirtualServices others own, and
deletes sbx's own VirtualServices left without a live sandbox's route.`,
		Example: `  sbx gc
  sbx gc --dry-run      # what gc would delete, deleting nothing
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
			res, err := c.GC(ctx, api.GCRequest{ClusterRequest: clusterRequest(g), DryRun: dryRun})
			stop()
			if err != nil {
				return classify(err, "pass -n NAMESPACE to collect in one namespace")
			}
			return printValue(g.stdout, format, res, func() string { return renderGC(res, time.Now()) })
		},
	}
	cmd.Flags().BoolVar(&dryRun, "dry-run", false, "say what gc would delete, and delete nothing")
	return cmd
}

// renderGC is gc's text output.
func renderGC(res api.GCResult, now time.Time) string {
	var lines []string
	deleted, removed := "deleted", "removed"
	if res.DryRun {
		deleted, removed = "would delete", "would remove"
	}
	switch {
	case len(res.Deleted) > 0:
		lines = append(lines, fmt.Sprintf("%s %d expired sandbox(es): %s", deleted, len(res.Deleted), strings.Join(res.Deleted, ", ")))
	case len(res.Waiting) > 0:
		lines = append(lines, fmt.Sprintf("no sandbox's lease expired more than %s ago (the grace a laptop that slept gets to come back)", res.Grace))
	default:
		lines = append(lines, "no sandbox has an expired lease")
	}
	for _, w := range res.Waiting {
		in := w.CollectableAt.Sub(now).Round(time.Second)
		line := fmt.Sprintf("kept for now: %s in %s (lease expired %s ago; gc collects it in %s or later)", w.Name, w.Namespace,
			now.Sub(w.LeaseExpired).Round(time.Second), in)
		if in <= 0 {
			line = fmt.Sprintf("kept for now: %s in %s (lease expired %s ago; the next gc collects it)", w.Name, w.Namespace, now.Sub(w.LeaseExpired).Round(time.Second))
		}
		if w.Holder != "" {
			line = strings.TrimSuffix(line, ")") + "; held by " + w.Holder + ")"
		}
		lines = append(lines, line)
	}
	for _, l := range res.Routes {
		lines = append(lines, fmt.Sprintf("%s %s: VirtualService %s/%s", removed, l.What, l.Namespace, l.Name))
	}
	return strings.Join(lines, "\n")
}

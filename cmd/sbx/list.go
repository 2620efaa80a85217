package main

import (
	"fmt"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/sbx-dev/sbx/daemon/api"
	"github.com/spf13/cobra"
)

func newListCmd(g *globalOptions) *cobra.Command {
	var localOnly bool
	cmd := &cobra.Command{
		Use:   "list",
		Short: "List sandboxes: this daemon's, and sbx objects found in the cluster (orphans marked)",
		Long: `List shows the daemon's sandboxes together with the sandboxes sbx created in
the cluster (selected by --kubeconfig, --context and -n). A sandbox in the
cluster that this daemon does not own shows its Lease's holder (user@host):
another daemon renews it, yours or a colleague's. One whose Lease expired
is marked as an orphan (a crashed daemon, a laptop that went away); ` + "`sbx gc`" + `
removes those after a grace period.`,
		Example: `  sbx list
  sbx list -n hotrod -o json
  sbx list --local      # only this daemon's sandboxes, no cluster access`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			format, err := g.outputFormat("text", "json", "yaml")
			if err != nil {
				return err
			}
			ctx := cmd.Context()
			c, err := needDaemon(ctx, g)
			if err != nil {
				return err
			}
			defer c.Close()
			withCluster, kubeErr := !localOnly, ""
			if withCluster {
				if err := readKubeconfig(g); err != nil {
					// The daemon's sandboxes are still worth listing.
					withCluster = false
					kubeErr = fmt.Sprintf("cannot list sbx objects in the cluster: %v; fix %s, or pass --local to skip the cluster", err, kubeconfigFlags)
				}
			}
			stop := func() {}
			if withCluster {
				stop = whileClusterWork(ctx, g, "listing sbx objects in the cluster", "--local skips the cluster")
			}
			res, err := c.List(ctx, clusterRequest(g), withCluster)
			stop()
			if err != nil {
				return classify(err, "run `sbx list --local` to skip the cluster")
			}
			if kubeErr != "" {
				res.ClusterError = kubeErr
			}
			if res.ClusterError != "" {
				fmt.Fprintf(g.stderr, "! %s\n", res.ClusterError)
			}
			if err := printValue(g.stdout, format, res, func() string { return renderList(res, time.Now()) }); err != nil {
				return err
			}
			// The daemon's sandboxes are listed either way; the exit code
			// says the cluster's part is missing: 2 for a kubeconfig or
			// context that cannot work, 1 for a cluster that failed.
			switch {
			case kubeErr != "":
				return exitError(2)
			case res.ClusterError != "":
				return exitError(1)
			}
			return nil
		},
	}
	cmd.Flags().BoolVar(&localOnly, "local", false, "list only this daemon's sandboxes, without asking the cluster")
	return cmd
}

func renderList(res api.ListResult, now time.Time) string {
	var left strings.Builder
	for _, l := range res.Leftovers {
		fmt.Fprintf(&left, "\nleftover: %s in VirtualService %s/%s (`sbx gc` removes it)", l.What, l.Namespace, l.Name)
	}
	if len(res.Sandboxes) == 0 {
		return "no sandboxes" + left.String()
	}
	var b strings.Builder
	tw := tabwriter.NewWriter(&b, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "NAME\tROUTING KEY\tNAMESPACE\tPHASE\tWHERE\tHOLDER\tLEASE")
	for _, e := range res.Sandboxes {
		where := []string{}
		if e.InDaemon {
			where = append(where, "daemon")
		}
		if e.InCluster {
			where = append(where, "cluster")
		}
		w := strings.Join(where, "+")
		if e.Orphan {
			w += " (orphan)"
		}
		phase := string(e.Phase)
		if phase == "" {
			phase = "-"
		}
		lease := "-"
		if !e.LeaseExpires.IsZero() {
			if d := e.LeaseExpires.Sub(now); d > 0 {
				lease = "expires in " + d.Round(time.Second).String()
			} else {
				lease = "expired " + (-d).Round(time.Second).String() + " ago"
			}
		}
		ns := e.Namespace
		if ns == "" {
			ns = "-"
		}
		holder := e.Holder
		if holder == "" {
			holder = "-"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\n", e.Name, e.RoutingKey, ns, phase, w, holder, lease)
	}
	_ = tw.Flush()
	return strings.TrimRight(b.String(), "\n") + left.String()
}

package main

import (
	"context"
	"strings"
	"time"

	"github.com/sbx-dev/sbx/daemon/client"
	"github.com/spf13/cobra"
)

// completeSandboxNames completes the first argument with the names of the
// running daemon's sandboxes. It never starts a daemon.
func completeSandboxNames(cmd *cobra.Command, args []string, toComplete string) ([]string, cobra.ShellCompDirective) {
	if len(args) > 0 {
		return nil, cobra.ShellCompDirectiveNoFileComp
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	c := &client.Client{Socket: daemonPaths().Socket()}
	defer c.Close()
	st, err := c.Status(ctx)
	if err != nil {
		return nil, cobra.ShellCompDirectiveNoFileComp
	}
	var names []string
	for _, sb := range st.Sandboxes {
		if strings.HasPrefix(sb.Name, toComplete) {
			names = append(names, sb.Name+"\t"+string(sb.Phase)+", key "+sb.RoutingKey)
		}
	}
	return names, cobra.ShellCompDirectiveNoFileComp
}

package main

import (
	"fmt"
	"strings"
	"time"

	"github.com/sbx-dev/sbx/daemon/api"
	"github.com/spf13/cobra"
)

func newRoutesCmd(g *globalOptions) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "routes NAME",
		Short: "Show where a sandbox's keyed requests go, per Service port and client namespace",
		Long: `Routes shows, for each Service port the sandbox takes requests for and each
group of client namespaces that sees different VirtualServices, which
VirtualServices Istio considers (in its order), which one applies, and
whether a request carrying the sandbox's routing key reaches the sandbox;
where it does not, why.

The connected daemon keeps this current: it watches the VirtualServices the
routes depend on and puts the routes back when a CD sync removes, reorders
or shadows them ("restored" counts that).`,
		Example: `  sbx routes alice
  sbx routes alice -o json`,
		Args:              cobra.ExactArgs(1),
		ValidArgsFunction: completeSandboxNames,
		RunE: func(cmd *cobra.Command, args []string) error {
			format, err := g.outputFormat("text", "json", "yaml")
			if err != nil {
				return err
			}
			ctx := cmd.Context()
			c, err := connectDaemon(ctx)
			if err != nil {
				return err
			}
			defer c.Close()
			sb, err := connectedSandbox(ctx, c, args[0])
			if err != nil {
				return err
			}
			if sb.Routes == nil {
				return &cliError{kind: kindUser, code: 1,
					err:  fmt.Errorf("sandbox %s has no routes yet (phase %s)", sb.Name, sb.Phase),
					hint: "they are known once its objects are applied: `sbx status " + sb.Name + "` shows why not"}
			}
			return printValue(g.stdout, format, sb.Routes, func() string { return renderRoutes(sb.Name, *sb.Routes, time.Now()) })
		},
	}
	return cmd
}

// renderRoutes lays out a RouteState: per Service port, per client
// namespace group, the VirtualServices Istio considers and what keyed
// requests get.
func renderRoutes(name string, r api.RouteState, now time.Time) string {
	var b strings.Builder
	fmt.Fprintf(&b, "sandbox %s: %s\n", name, renderRouteState(name, r, now))
	for _, p := range r.Ports {
		fmt.Fprintf(&b, "\n%s.%s:%d (local workload %s)\n", p.Service, p.Namespace, p.Port, p.Workload)
		for _, v := range p.Views {
			who := "clients in " + v.Clients
			if v.Clients == "" {
				who = "clients in other namespaces"
			}
			chain := "none"
			if len(v.Chain) > 0 {
				chain = strings.Join(v.Chain, " → ")
			}
			fmt.Fprintf(&b, "  %s\n    VirtualServices: %s\n    applies: %s\n", who, chain, v.Applies)
			switch v.Keyed {
			case api.KeyedSandbox:
				b.WriteString("    keyed requests: reach the sandbox\n")
			case api.KeyedPartial:
				fmt.Fprintf(&b, "    keyed requests: PARTLY reach the sandbox: %s\n", v.Reason)
			default:
				fmt.Fprintf(&b, "    keyed requests: reach the BASELINE: %s\n", v.Reason)
			}
		}
	}
	for _, w := range r.Warnings {
		fmt.Fprintf(&b, "\nwarning: %s\n", w)
	}
	return strings.TrimRight(b.String(), "\n")
}

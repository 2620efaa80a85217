package main

import (
	"github.com/spf13/cobra"

	"github.com/sbx-dev/sbx/relay"
)

// newRelayCmd runs the in-cluster relay. It is a thin wrapper: the relay
// package owns the flags (the simulator parses the same arguments in-process).
func newRelayCmd(g *globalOptions) *cobra.Command {
	f := relay.NewFlags()
	cmd := &cobra.Command{
		Use:   "relay",
		Short: "Run a sandbox's in-cluster relay (the command of the relay pod sbx creates)",
		Long: `Run the in-cluster end of a sandbox's tunnel. sbx starts it in the relay pod
of each sandbox; you normally never run it yourself.

The relay accepts tunnel sessions from the laptop daemon on a loopback-only
listener (reached through a Kubernetes port-forward) and checks their token
against --token-sha256, the token's SHA-256: the token itself stays with the
daemon that minted it, so reading the relay Deployment does not let anyone
connect in its place. It listens on each --inbound
container port and sends every connection through the tunnel to the laptop;
while no laptop is connected it holds connections for --grace, then HTTP
ports answer 503 (naming the sandbox and since when it is offline) and TCP
ports close. When the laptop has nothing listening, HTTP ports answer 502.
Outbound connections from the laptop are dialed from inside the cluster,
except to link-local and cloud-metadata addresses, loopback and the relay's
own ports. /healthz, /readyz and /metrics (Prometheus) are served on
--health-listen. On SIGTERM it stops accepting, lets open streams finish for
up to --drain-timeout and exits 0.`,
		Example: `  # what the relay Deployment runs
  sbx relay --sandbox alice --token-sha256 9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08 \
    --listen 127.0.0.1:7000 --health-listen :7001 \
    --inbound 20001=route/8083/http --inbound 20002=driver/8082/grpc \
    --grace 10s --drain-timeout 20s

  # by hand, for a token you chose
  sbx relay --sandbox alice --token-sha256 "$(printf %s "$TOKEN" | sha256sum | cut -d' ' -f1)" --inbound 20001=route/8083`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			opts, err := f.Options()
			if err != nil {
				return userError(err, "see `sbx relay --help` for the flags")
			}
			logger := g.logger(g.stderr)
			r, err := relay.New(opts, relay.Deps{Logger: logger, Version: g.build.Version})
			if err != nil {
				return err
			}
			return r.Run(cmd.Context())
		},
	}
	f.AddFlags(cmd.Flags())
	return cmd
}

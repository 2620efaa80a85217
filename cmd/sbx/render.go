package main

import (
	"errors"
	"fmt"
	"net/netip"
	"os"
	"strconv"
	"strings"

	"github.com/spf13/cobra"

	"github.com/sbx-dev/sbx/cluster"
	"github.com/sbx-dev/sbx/cluster/routingkey"
	"github.com/sbx-dev/sbx/relay/relayargs"
)

// relayImageFor is the relay image a build of sbx uses unless told
// otherwise: the release pipeline publishes ghcr.io/sbx-dev/sbx:<version>,
// the same binary as the CLI.
func relayImageFor(version string) string {
	return cluster.DefaultRelayImageRepo + ":" + version
}

func newRenderCmd(g *globalOptions) *cobra.Command {
	var (
		sf          specFlags
		baselines   []string
		routingKey  string
		relayImage  string
		mesh        string
		maxStreams  int
		denyFlags   []string
		baggageKey  string
		leaseHolder string
	)
	cmd := &cobra.Command{
		Use:   "render -f FILE [--set name=value]... --baseline MANIFESTS.yaml [--routing-key KEY]",
		Short: "Print the exact objects sbx would apply, without a cluster",
		Long: `Render reads the sandbox spec and the baseline's manifests (Deployments,
StatefulSets, Argo Rollouts, Services and Istio VirtualServices, as
` + "`kubectl get -o yaml`" + ` or a CD repository has them) and prints, as a YAML
stream, every object sbx would write: the Lease, the relay Deployment, the
sandbox Services and the VirtualServices (sbx's own, or CD's with the
sandbox's routes on top). No Secret: the relay gets only the SHA-256 of the
tunnel token (--token-sha256), which the daemon mints at connect, so it is
shown as a placeholder; owner UIDs, which the API server assigns, likewise.
The output is the same for the same spec, baseline and routing key.`,
		Example: `  sbx render -f sandbox.yaml --set name=alice --baseline hotrod.yaml --routing-key k3x9a0b1c2d3e
  kubectl get deploy,sts,svc,virtualservices -n hotrod -o yaml > baseline.yaml && sbx render -f sandbox.yaml --baseline baseline.yaml`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			format, err := g.outputFormat("text", "yaml", "json")
			if err != nil {
				return err
			}
			sb, err := sf.load(g)
			if err != nil {
				return err
			}
			if len(baselines) == 0 {
				return userError(errors.New("no baseline manifests given"),
					"pass --baseline FILE with the baseline's Deployments and Services (kubectl get deploy,svc,virtualservices -n NS -o yaml)")
			}
			ns := g.namespace
			if ns == "" {
				ns = "default"
			}
			base, err := loadBaselines(baselines, ns)
			if err != nil {
				return err
			}
			if err := cluster.ValidateMesh(mesh); err != nil {
				return userError(fmt.Errorf("--mesh: %w", err), "pass --mesh auto (the default), istio or gateway-api, as mesh in the sbx config")
			}
			// The manifests stand for a cluster that serves Gateway API
			// routes when they hold some or --mesh asks for them.
			base.GatewayAPI = mesh == cluster.MeshGatewayAPI
			if routingKey == "" {
				routingKey = routingkey.New()
				fmt.Fprintf(g.stderr, "note: random routing key %s; pass --routing-key for a reproducible rendering\n", routingKey)
			} else if err := routingkey.Validate(routingKey); err != nil {
				return userError(err, "a routing key is 13 characters of [0-9a-z], as sbx connect prints it")
			}
			if err := routingkey.ValidateBaggageKey(baggageKey); err != nil {
				return userError(err, "use a W3C baggage key such as "+routingkey.DefaultBaggageKey)
			}
			if err := relayargs.ValidateMaxStreams(maxStreams); err != nil {
				return userError(fmt.Errorf("--relay-max-streams: %w", err),
					"pass 1-"+strconv.Itoa(relayargs.MaxStreamsLimit)+", or leave it out for the relay's default")
			}
			var deny []netip.Prefix
			for _, s := range denyFlags {
				p, err := relayargs.ParseDeny(strings.TrimSpace(s))
				if err != nil {
					return userError(fmt.Errorf("--relay-deny: %w", err), "pass IP addresses or CIDRs, repeatable or comma-separated, as outbound.deny in the sbx config has them")
				}
				deny = append(deny, p)
			}
			if err := relayargs.ValidateDeny(deny); err != nil {
				return userError(fmt.Errorf("--relay-deny: %w", err), "give each range once, at most "+strconv.Itoa(relayargs.MaxDeny))
			}
			if relayImage == "" {
				relayImage = relayImageFor(g.build.Version)
			}
			objs, err := cluster.Plan(cmd.Context(), base, sb, cluster.Options{
				RoutingKey:      routingKey,
				TokenVerifier:   cluster.VerifierPlaceholder,
				RelayImage:      relayImage,
				RelayMaxStreams: maxStreams,
				RelayDeny:       deny,
				BaggageKey:      baggageKey,
				Holder:          leaseHolder,
				Mesh:            mesh,
			})
			if err != nil {
				// cluster.Plan leaves naming the sandbox to its caller.
				return userError(fmt.Errorf("sandbox %s: %w", sb.Name, err), "the spec must name workloads, Services and ports that exist in the baseline")
			}
			for _, b := range objs.Backends {
				fmt.Fprintf(g.stderr, "routing: %s\n", b)
			}
			for _, w := range objs.Warnings {
				fmt.Fprintf(g.stderr, "warning: %s\n", w)
			}
			if format == "json" {
				return printValue(g.stdout, format, map[string]any{"apiVersion": "v1", "kind": "List", "items": objs.List()}, nil)
			}
			return objs.WriteYAML(g.stdout)
		},
	}
	sf.register(cmd)
	f := cmd.Flags()
	f.StringArrayVar(&baselines, "baseline", nil, "baseline manifests (YAML or JSON stream; repeatable); objects without a namespace are in -n or default")
	f.StringVar(&routingKey, "routing-key", "", "routing key to render with (default: a random one)")
	f.StringVar(&relayImage, "relay-image", "", "relay image (default "+cluster.DefaultRelayImageRepo+":<sbx version>)")
	f.IntVar(&maxStreams, "relay-max-streams", 0, fmt.Sprintf("most streams the relay serves at once, 1-%d (0: the relay's default %d, as relayMaxStreams in the sbx config); the relay's memory limit grows ~1 MiB a stream above 512Mi (past 256 streams)",
		relayargs.MaxStreamsLimit, relayargs.DefaultMaxStreams))
	f.StringSliceVar(&denyFlags, "relay-deny", nil, fmt.Sprintf("address or CIDR the relay must never dial, on top of its built-in list, as outbound.deny in the sbx config (repeatable or comma-separated, at most %d); each becomes a --deny of the relay", relayargs.MaxDeny))
	f.StringVar(&baggageKey, "baggage-key", routingkey.DefaultBaggageKey, "W3C baggage key that carries the routing key")
	f.StringVar(&leaseHolder, "holder", "sbx", "Lease holder identity to render (sbx connect uses user@host)")
	f.StringVar(&mesh, "mesh", cluster.MeshAuto, "how keyed requests are routed, as mesh in the sbx config: auto (per Service: Gateway API where the baseline routes it with HTTPRoutes, else Istio VirtualServices), istio, or gateway-api (sbx's own HTTPRoutes)")
	return cmd
}

// loadBaselines reads and merges the baseline manifest files.
func loadBaselines(paths []string, defaultNS string) (*cluster.ManifestBaseline, error) {
	var files []*os.File
	defer func() {
		for _, f := range files {
			f.Close()
		}
	}()
	for _, p := range paths {
		fh, err := os.Open(p)
		if err != nil {
			return nil, userError(fmt.Errorf("reading baseline manifests: %w", err), "check the path given to --baseline")
		}
		files = append(files, fh)
	}
	m, err := cluster.ParseManifestFiles(files, defaultNS)
	if err != nil {
		return nil, userError(err, "--baseline takes Kubernetes manifests (YAML documents separated by ---, or a kubectl List)")
	}
	return m, nil
}

package main

import (
	"errors"
	"fmt"
	"strings"
	"text/tabwriter"

	"github.com/spf13/cobra"

	"github.com/sbx-dev/sbx/cluster"
	"github.com/sbx-dev/sbx/cluster/spec"
)

func newValidateCmd(g *globalOptions) *cobra.Command {
	var sf specFlags
	var mesh string
	cmd := &cobra.Command{
		Use:   "validate -f FILE [--set name=value]...",
		Short: "Check a sandbox spec offline, without a cluster",
		Long: `Validate fills the spec's templates (@{name} from --set, @{embed: path}
from files next to the spec), parses it strictly and checks every field. It
reports all problems at once, each with its file, line and field path, and
exits non-zero when there is any. With -o json or -o yaml it prints the
parsed sandbox (or, for an invalid spec, the problems as a list).

--mesh gateway-api also checks what that routing needs of the spec: sbx's
HTTPRoute sends keyed requests to the sandbox's Service in the routed
Service's own namespace, so every local workload must be in the sandbox's
home namespace (its first workload's).`,
		Example: `  sbx validate -f sandbox.yaml --set name=alice
  sbx validate -f sandbox.yaml --set name=alice -o json`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			format, err := g.outputFormat("text", "json", "yaml")
			if err != nil {
				return err
			}
			if err := cluster.ValidateMesh(mesh); err != nil {
				return userError(fmt.Errorf("--mesh: %w", err), "pass --mesh auto (the default), istio or gateway-api, as mesh in the sbx config")
			}
			s, err := sf.load(g)
			if err == nil && mesh == cluster.MeshGatewayAPI {
				err = gatewayAPISpecProblems(s, sf.file)
			}
			if err != nil {
				var list spec.ErrorList
				if format != "text" && errors.As(err, &list) {
					// Machine-readable problems for editors and CI; the
					// human message still goes to stderr.
					if perr := printValue(g.stdout, format, map[string]any{"errors": list}, nil); perr != nil {
						return perr
					}
				}
				return err
			}
			return printValue(g.stdout, format, s, func() string { return specSummary(s) })
		},
	}
	sf.register(cmd)
	cmd.Flags().StringVar(&mesh, "mesh", cluster.MeshAuto, "check the spec for this routing too, as mesh in the sbx config: gateway-api needs every local workload in the home namespace; auto and istio ask nothing more than the spec checks (auto decides per Service at connect)")
	return cmd
}

// gatewayAPISpecProblems are the spec's problems for mesh: gateway-api,
// located like the spec's own: local workloads outside the home namespace.
func gatewayAPISpecProblems(s *spec.Sandbox, file string) error {
	home := s.Namespaces()[0]
	var list spec.ErrorList
	for i, l := range s.Spec.Local {
		if l.From.Namespace != home {
			list = append(list, &spec.FieldError{File: file, Field: fmt.Sprintf("spec.local[%d].from.namespace", i),
				Message: fmt.Sprintf("%s is not the sandbox's home namespace %s: with mesh: gateway-api sbx routes keyed requests only to a sandbox Service in the routed Service's namespace (another would need a ReferenceGrant); use one namespace per sandbox, or mesh: istio", l.From.Namespace, home)})
		}
	}
	if len(list) == 0 {
		return nil
	}
	return userError(&invalidSpecError{file: file, list: list}, "fix the fields listed above, or check with --mesh istio")
}

// specSummary is the text output of a valid spec: one headline and one
// line per mapping.
func specSummary(s *spec.Sandbox) string {
	var b strings.Builder
	ns := s.Namespaces()
	fmt.Fprintf(&b, "spec OK: sandbox %s, %s in %s (%s)", s.Name,
		plural(len(s.Spec.Local), "workload"), plural(len(ns), "namespace"), strings.Join(ns, ", "))
	if s.Spec.Cluster != "" {
		fmt.Fprintf(&b, ", cluster %s", s.Spec.Cluster)
	}
	b.WriteString("\n")
	tw := tabwriter.NewWriter(&b, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "  WORKLOAD\tFROM\tPORT\tTO LOCAL")
	for _, l := range s.Spec.Local {
		for _, m := range l.Mappings {
			fmt.Fprintf(tw, "  %s\t%s %s/%s\t%d\t%s\n", l.Name, l.From.Kind, l.From.Namespace, l.From.Name, m.Port, m.ToLocal)
		}
	}
	tw.Flush()
	return strings.TrimSuffix(b.String(), "\n")
}

func plural(n int, noun string) string {
	if n == 1 {
		return "1 " + noun
	}
	return fmt.Sprintf("%d %ss", n, noun)
}

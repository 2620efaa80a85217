package main

import (
	"encoding/json"
	"fmt"
	"runtime"
	"runtime/debug"

	"github.com/spf13/cobra"
	"sigs.k8s.io/yaml"
)

// buildInfo describes this binary. The version is stamped by the Makefile;
// `go run` and `go install` builds fall back to the module version.
type buildInfo struct {
	Version   string `json:"version"`
	GoVersion string `json:"goVersion"`
	Platform  string `json:"platform"`
}

func newBuildInfo(stamped string) buildInfo {
	v := stamped
	if v == "" {
		v = "dev"
		if bi, ok := debug.ReadBuildInfo(); ok && bi.Main.Version != "" && bi.Main.Version != "(devel)" {
			v = bi.Main.Version
		}
	}
	return buildInfo{Version: v, GoVersion: runtime.Version(), Platform: runtime.GOOS + "/" + runtime.GOARCH}
}

func newVersionCmd(g *globalOptions) *cobra.Command {
	return &cobra.Command{
		Use:   "version",
		Short: "Print the sbx version",
		Example: `  sbx version
  sbx version -o json`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			format, err := g.outputFormat("text", "json", "yaml")
			if err != nil {
				return err
			}
			return printValue(g.stdout, format, g.build, func() string {
				return fmt.Sprintf("sbx %s (%s, %s)", g.build.Version, g.build.GoVersion, g.build.Platform)
			})
		},
	}
}

// printValue writes v as JSON or YAML, or the text rendering for "text".
func printValue(w interface{ Write([]byte) (int, error) }, format string, v any, text func() string) error {
	switch format {
	case "json":
		b, err := json.MarshalIndent(v, "", "  ")
		if err != nil {
			return err
		}
		_, err = fmt.Fprintf(w, "%s\n", b)
		return err
	case "yaml":
		b, err := yaml.Marshal(v)
		if err != nil {
			return err
		}
		_, err = w.Write(b)
		return err
	default:
		_, err := fmt.Fprintln(w, text())
		return err
	}
}

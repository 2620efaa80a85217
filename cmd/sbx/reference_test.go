package main

import (
	"bytes"
	"fmt"
	"os"
	"strings"
	"testing"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
	"github.com/stretchr/testify/require"
)

// referencePath is the CLI reference the README links: every command and
// every flag, as --help has them.
const referencePath = "../../docs/cli.md"

// TestCLIReferenceUpToDate: docs/cli.md is what the commands say about
// themselves; `SBX_UPDATE_REFERENCE=1 go test ./cmd/sbx -run
// TestCLIReferenceUpToDate` writes it after a change.
func TestCLIReferenceUpToDate(t *testing.T) {
	root := newRootCmd(buildInfo{Version: "dev"}, nil, &bytes.Buffer{}, &bytes.Buffer{})
	root.InitDefaultHelpCmd()
	var b strings.Builder
	b.WriteString("# sbx command reference\n\n<!-- Generated from the commands' own help by TestCLIReferenceUpToDate (cmd/sbx/reference_test.go); do not edit. -->\n\n")
	b.WriteString("Global flags (every command): \n\n```\n" + flagUsages(root.PersistentFlags()) + "```\n")
	var walk func(c *cobra.Command)
	walk = func(c *cobra.Command) {
		for _, sub := range c.Commands() {
			if sub.Hidden || sub.Name() == "help" || c.Name() == "completion" {
				continue // the shells' completion scripts are alike: `sbx completion --help`
			}
			fmt.Fprintf(&b, "\n## %s\n\n%s\n", sub.CommandPath(), sub.Short)
			if sub.Long != "" {
				fmt.Fprintf(&b, "\n%s\n", sub.Long)
			}
			fmt.Fprintf(&b, "\n```\n%s\n", sub.UseLine())
			if sub.Example != "" {
				fmt.Fprintf(&b, "\nExamples:\n%s\n", sub.Example)
			}
			if f := flagUsages(sub.LocalNonPersistentFlags()); f != "" {
				fmt.Fprintf(&b, "\nFlags:\n%s", f)
			}
			b.WriteString("```\n")
			walk(sub)
		}
	}
	walk(root)
	got := b.String()
	if os.Getenv("SBX_UPDATE_REFERENCE") != "" {
		require.NoError(t, os.WriteFile(referencePath, []byte(got), 0o644))
	}
	want, err := os.ReadFile(referencePath)
	require.NoError(t, err, "run SBX_UPDATE_REFERENCE=1 go test ./cmd/sbx -run TestCLIReferenceUpToDate")
	require.Equal(t, string(want), got, "docs/cli.md is stale: run SBX_UPDATE_REFERENCE=1 go test ./cmd/sbx -run TestCLIReferenceUpToDate")
}

func flagUsages(fs *pflag.FlagSet) string {
	var out pflag.FlagSet
	fs.VisitAll(func(f *pflag.Flag) {
		if !f.Hidden && f.Name != "help" {
			out.AddFlag(f)
		}
	})
	return out.FlagUsages()
}

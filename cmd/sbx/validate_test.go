package main

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/sbx-dev/sbx/cluster/spec"
)

const specs = "../../testdata/specs"

func TestValidateValid(t *testing.T) {
	code, out, errOut := runCLI(t, "validate", "-f", filepath.Join(specs, "valid", "two-namespaces.yaml"))
	require.Equal(t, 0, code, errOut)
	require.Empty(t, errOut)
	require.True(t, strings.HasPrefix(out, "spec OK: sandbox carol, 2 workloads in 2 namespaces (shop, payments)\n"), out)
	require.Contains(t, out, "checkout  Rollout payments/checkout-v2")
	require.Contains(t, out, "host.docker.internal:8080")
}

func TestValidateTemplated(t *testing.T) {
	f := filepath.Join(specs, "valid", "templated.yaml")
	code, out, errOut := runCLI(t, "validate", "-f", f, "--set", "name=zoe", "--set", "ns=hotrod", "--set", "port=9000", "-o", "json")
	require.Equal(t, 0, code, errOut)
	var s spec.Sandbox
	require.NoError(t, json.Unmarshal([]byte(out), &s))
	require.Equal(t, "zoe", s.Name)
	require.Equal(t, int32(9000), s.Spec.Local[0].Mappings[0].Port)
	require.Equal(t, "localhost:9000", s.Spec.Local[0].Mappings[0].ToLocal)

	// A missing variable names the variable and the place that needs it.
	code, out, errOut = runCLI(t, "validate", "-f", f, "--set", "name=zoe", "--set", "port=9000")
	require.Equal(t, 2, code)
	require.Empty(t, out)
	require.Contains(t, errOut, `templated.yaml:9:43: spec.local[0].from.namespace: variable "ns" is not set; pass --set ns=VALUE`)

	// Conflicting values for one variable.
	code, _, errOut = runCLI(t, "validate", "-f", f, "--set", "name=zoe", "--set", "name=amy")
	require.Equal(t, 2, code)
	require.Contains(t, errOut, `variable "name" is set twice with different values ("zoe" and "amy")`)
	require.Contains(t, errOut, "hint:")
}

func TestValidateInvalid(t *testing.T) {
	f := filepath.Join(specs, "invalid", "many-errors.yaml")
	code, out, errOut := runCLI(t, "validate", "-f", f)
	require.Equal(t, 2, code)
	require.Empty(t, out)
	require.Contains(t, errOut, "sbx: sandbox spec "+f+" is invalid (8 problems):\n  "+f+":2:7: name: \"Alice\"")
	require.Contains(t, errOut, f+":13:17: spec.local[1].mappings: at least one mapping is required")
	require.Contains(t, errOut, "hint: fix the fields listed above")

	// -o json: the problems as data on stdout, the message on stderr.
	code, out, errOut = runCLI(t, "validate", "-f", f, "-o", "json")
	require.Equal(t, 2, code)
	require.Contains(t, errOut, "is invalid (8 problems)")
	var got struct{ Errors []spec.FieldError }
	require.NoError(t, json.Unmarshal([]byte(out), &got), out)
	require.Len(t, got.Errors, 8)
	require.Equal(t, spec.FieldError{File: f, Line: 9, Column: 17, Field: "spec.local[0].mappings[0].port",
		Message: "port 0 is out of range; allowed 1-65535"}, got.Errors[2])
}

func TestValidateUsageErrors(t *testing.T) {
	tests := []struct {
		name string
		args []string
		want string
	}{
		{"no file", []string{"validate"}, "no sandbox spec given"},
		{"missing file", []string{"validate", "-f", "nope/sandbox.yaml"}, "nope/sandbox.yaml: no such file or directory"},
		{"bad set", []string{"validate", "-f", filepath.Join(specs, "valid", "single.yaml"), "--set", "oops"}, `--set "oops": want name=value`},
		{"bad output", []string{"validate", "-f", filepath.Join(specs, "valid", "single.yaml"), "-o", "xml"}, `output format "xml" is not supported`},
		{"extra args", []string{"validate", "x.yaml"}, `sbx validate takes no arguments, got "x.yaml"`},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			code, _, errOut := runCLI(t, tc.args...)
			require.NotEqual(t, 0, code)
			require.Contains(t, errOut, tc.want)
		})
	}
}

func TestValidateStdin(t *testing.T) {
	data, err := os.ReadFile(filepath.Join(specs, "valid", "single.yaml"))
	require.NoError(t, err)
	var out, errb bytes.Buffer
	code := run(context.Background(), []string{"validate", "-f", "-"}, bytes.NewReader(data), &out, &errb)
	require.Equal(t, 0, code, errb.String())
	require.True(t, strings.HasPrefix(out.String(), "spec OK: sandbox alice, 1 workload in 1 namespace (hotrod), cluster staging-1\n"), out.String())

	code = run(context.Background(), []string{"validate", "-f", "-"}, strings.NewReader("name: Bad\n"), &out, &errb)
	require.Equal(t, 2, code)
	require.Contains(t, errb.String(), `<stdin>:1:7: name: "Bad" is not a valid sandbox name`)
	require.Contains(t, errb.String(), "sbx: sandbox spec <stdin> is invalid (", "the heading names standard input, not \"-\"")
}

// TestValidateAllExamples runs the command over every example spec so that
// the CLI and the package agree on what is valid.
func TestValidateAllExamples(t *testing.T) {
	for _, kind := range []string{"valid", "invalid"} {
		files, err := filepath.Glob(filepath.Join(specs, kind, "*.yaml"))
		require.NoError(t, err)
		for _, f := range files {
			data, err := os.ReadFile(f)
			require.NoError(t, err)
			args := []string{"validate", "-f", f}
			for _, line := range strings.Split(string(data), "\n") {
				if rest, ok := strings.CutPrefix(line, "# set: "); ok {
					for _, kv := range strings.Fields(rest) {
						args = append(args, "--set", kv)
					}
				}
			}
			code, _, errOut := runCLI(t, args...)
			if kind == "valid" {
				require.Equal(t, 0, code, "%s: %s", f, errOut)
			} else {
				require.Equal(t, 2, code, f)
				require.Contains(t, errOut, f, "errors name the file")
			}
		}
	}
}

func TestValidateWarnsAboutUnusedSet(t *testing.T) {
	f := filepath.Join(specs, "valid", "templated.yaml")
	code, _, errOut := runCLI(t, "validate", "-f", f, "--set", "name=zoe", "--set", "ns=hotrod", "--set", "port=9000", "--set", "nmae=x")
	require.Equal(t, 0, code, errOut)
	require.Equal(t, "warning: --set nmae is not used: the spec has no @{nmae} placeholder\n", errOut)
}

// TestConnectHelpSpecIsValid: the spec `sbx connect --help` shows (which
// the empty-file error points to) is a valid spec.
func TestConnectHelpSpecIsValid(t *testing.T) {
	long := newConnectCmd(&globalOptions{}).Long
	_, rest, ok := strings.Cut(long, "A sandbox spec (YAML")
	require.True(t, ok, "connect --help shows a spec")
	_, rest, _ = strings.Cut(rest, "\n\n")
	example, _, ok := strings.Cut(rest, "\n\n")
	require.True(t, ok)
	var lines []string
	for _, l := range strings.Split(example, "\n") {
		lines = append(lines, strings.TrimPrefix(l, "  "))
	}
	f := filepath.Join(t.TempDir(), "sandbox.yaml")
	require.NoError(t, os.WriteFile(f, []byte(strings.Join(lines, "\n")+"\n"), 0o600))
	code, out, errOut := runCLI(t, "validate", "-f", f, "--set", "name=alice")
	require.Equal(t, 0, code, errOut)
	require.Contains(t, out, "spec OK: sandbox alice")
}

// TestValidateMesh: --mesh gateway-api checks what that routing needs of
// the spec (one namespace), located like the spec's own problems; the
// same spec is fine for istio; a bad mode is refused.
func TestValidateMesh(t *testing.T) {
	spec := "../../testdata/specs/valid/two-namespaces.yaml"
	code, _, errOut := runCLI(t, "validate", "-f", spec, "--mesh", "gateway-api")
	require.Equal(t, 2, code)
	require.Contains(t, errOut, spec+": spec.local[1].from.namespace: payments is not the sandbox's home namespace shop: with mesh: gateway-api")
	code, _, errOut = runCLI(t, "validate", "-f", spec, "--mesh", "istio")
	require.Equal(t, 0, code, errOut)
	code, _, errOut = runCLI(t, "validate", "-f", "../../testdata/specs/valid/single.yaml", "--mesh", "gateway-api")
	require.Equal(t, 0, code, errOut)
	code, _, errOut = runCLI(t, "validate", "-f", spec, "--mesh", "linkerd")
	require.Equal(t, 2, code)
	require.Contains(t, errOut, `--mesh: mesh "linkerd" is not one of auto, istio, gateway-api`)
}

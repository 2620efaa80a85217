package main

import (
	"errors"
	"fmt"
	"os"

	"github.com/spf13/cobra"

	"github.com/sbx-dev/sbx/cluster/spec"
	"github.com/sbx-dev/sbx/cluster/spec/specfile"
)

// specFlags are the flags of every command that reads a sandbox spec
// (validate, render, connect): -f FILE and repeatable --set name=value.
type specFlags struct {
	file string
	sets []string
}

// register adds -f and --set to cmd.
func (f *specFlags) register(cmd *cobra.Command) {
	cmd.Flags().StringVarP(&f.file, "file", "f", "", "sandbox spec file (YAML); - reads standard input")
	// StringArray, not StringSlice: a value may contain commas.
	cmd.Flags().StringArrayVar(&f.sets, "set", nil, "fill the spec's @{name} placeholders: --set name=value (repeatable)")
}

// load reads, templates and validates the spec. A spec that does not
// validate comes back as a user error that keeps the spec.ErrorList
// reachable with errors.As.
func (f *specFlags) load(g *globalOptions) (*spec.Sandbox, error) {
	if f.file == "" {
		return nil, userError(errors.New("no sandbox spec given"), "pass -f FILE (or -f - to read it from standard input)")
	}
	vars, err := specfile.ParseSetFlags(f.sets)
	if err != nil {
		return nil, userError(err, "each --set takes name=value, e.g. --set name=alice")
	}
	var data []byte
	name := f.file
	if f.file == "-" {
		name = "<stdin>"
		data, err = specfile.Read(name, g.stdin)
	} else {
		data, err = readSpecFile(f.file)
	}
	if err != nil {
		return nil, userError(err, "check the path given to -f")
	}
	for _, v := range specfile.UnusedVars(data, vars) {
		fmt.Fprintf(g.stderr, "warning: --set %s is not used: the spec has no @{%s} placeholder\n", v, v)
	}
	s, err := specfile.Parse(name, data, vars)
	if err == nil {
		return s, nil
	}
	var list spec.ErrorList
	if errors.As(err, &list) {
		return nil, userError(&invalidSpecError{file: name, list: list},
			"fix the fields listed above; `sbx validate -f FILE` checks a spec without a cluster")
	}
	return nil, userError(err, "check the path given to -f")
}

func readSpecFile(path string) ([]byte, error) {
	fh, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("reading sandbox spec: %w", err)
	}
	defer fh.Close()
	return specfile.Read(path, fh)
}

// invalidSpecError presents a spec's problems under one heading, one per
// line.
type invalidSpecError struct {
	file string
	list spec.ErrorList
}

func (e *invalidSpecError) Error() string {
	noun := "problem"
	if len(e.list) > 1 {
		noun = "problems"
	}
	msg := fmt.Sprintf("sandbox spec %s is invalid (%d %s):", e.file, len(e.list), noun)
	for _, fe := range e.list {
		msg += "\n  " + fe.Error()
	}
	return msg
}

func (e *invalidSpecError) Unwrap() error { return e.list }

package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"sync"
	"testing"

	"github.com/spf13/cobra"
	"github.com/stretchr/testify/require"
)

// runCLI runs the CLI in-process and returns exit code, stdout and stderr.
func runCLI(t *testing.T, args ...string) (int, string, string) {
	t.Helper()
	var out, errb bytes.Buffer
	code := run(context.Background(), args, strings.NewReader(""), &out, &errb)
	return code, out.String(), errb.String()
}

// runCLICanceled runs the CLI in-process with its context already
// cancelled, as after Ctrl-C, and returns exit code and stderr.
func runCLICanceled(t *testing.T, args ...string) (int, string) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	cancel() // as main does on SIGINT
	var out, errb bytes.Buffer
	code := run(ctx, args, strings.NewReader(""), &out, &errb)
	return code, errb.String()
}

func TestVersion(t *testing.T) {
	code, out, _ := runCLI(t, "version")
	require.Equal(t, 0, code)
	require.True(t, strings.HasPrefix(out, "sbx "), out)

	code, out, _ = runCLI(t, "version", "-o", "json")
	require.Equal(t, 0, code)
	var bi buildInfo
	require.NoError(t, json.Unmarshal([]byte(out), &bi))
	require.NotEmpty(t, bi.Version)
	require.NotEmpty(t, bi.Platform)

	code, _, errOut := runCLI(t, "version", "-o", "xml")
	require.Equal(t, 2, code)
	require.Contains(t, errOut, `output format "xml" is not supported`)
	require.Contains(t, errOut, "hint:")
}

func TestCompletion(t *testing.T) {
	for _, shell := range []string{"bash", "zsh", "fish", "powershell"} {
		code, out, errOut := runCLI(t, "completion", shell)
		require.Equal(t, 0, code, errOut)
		require.Contains(t, out, "sbx", shell)
	}
}

func TestOutputRefusedWhereNothingIsPrinted(t *testing.T) {
	for _, args := range [][]string{
		{"tray", "-o", "json"},
		{"daemon", "stop", "-o", "json"},
		{"daemon", "-o", "json"},
		{"relay", "-o", "yaml"},
		{"completion", "bash", "-o", "json"},
	} {
		code, _, errOut := runCLI(t, args...)
		require.Equal(t, 2, code, args)
		// The whole command: "sbx daemon stop", not "sbx stop".
		require.Contains(t, errOut, "sbx: sbx "+strings.Join(args[:len(args)-2], " ")+" prints no state", args)
		require.Contains(t, errOut, "hint: drop -o", args)
	}
}

func TestUnknownCommand(t *testing.T) {
	code, _, errOut := runCLI(t, "frobnicate")
	require.NotEqual(t, 0, code)
	require.Contains(t, errOut, "unknown command")
}

// lockedBuffer collects a command's output while it runs; safe for the
// command's goroutines and the test reading it concurrently.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// TestOnlyTheTrayKeepsTheMainThread: fyne.io/systray locks the main
// goroutine to the main OS thread at init; every command but the tray must
// give it back (see releaseMainThread).
func TestOnlyTheTrayKeepsTheMainThread(t *testing.T) {
	root := newRootCmd(newBuildInfo("test"), strings.NewReader(""), &bytes.Buffer{}, &bytes.Buffer{})
	var walk func(c *cobra.Command)
	seen := 0
	walk = func(c *cobra.Command) {
		seen++
		want := c.Name() == "tray"
		require.Equal(t, want, needsMainThread(c), c.CommandPath())
		for _, sub := range c.Commands() {
			walk(sub)
		}
	}
	walk(root)
	require.Greater(t, seen, 20)
}

// TestReleaseMainThreadOnlyFromMain: main's execute gives the thread back
// once before every command but the tray; run, which tests call from
// goroutines of their own, never touches the caller's thread lock.
func TestReleaseMainThreadOnlyFromMain(t *testing.T) {
	tests := []struct {
		args    []string
		unlocks int
	}{
		{[]string{"version"}, 1},
		{[]string{"completion", "bash"}, 1},
		{[]string{"tray", "--install", "--uninstall"}, 0}, // fails in RunE, after the hooks
		{[]string{"--help"}, 0},                           // exits before the hooks
	}
	for _, tt := range tests {
		t.Run(strings.Join(tt.args, " "), func(t *testing.T) {
			unlocks := 0
			execute(context.Background(), tt.args, strings.NewReader(""), &bytes.Buffer{}, &bytes.Buffer{}, func() { unlocks++ })
			require.Equal(t, tt.unlocks, unlocks)
		})
	}
}

// TestUsageErrors: what cobra and pflag reject before a command runs is a
// usage error (exit 2) with a hint, in words rather than strconv's, and a
// mistyped subcommand of a group is refused rather than answered with the
// group's help and exit 0.
func TestUsageErrors(t *testing.T) {
	tests := []struct {
		args []string
		want []string // in stderr
	}{
		{[]string{"frobnicate"}, []string{`unknown command "frobnicate" for "sbx"`, "hint: `sbx --help` lists the commands"}},
		{[]string{"stauts"}, []string{"did you mean `sbx status`?"}},
		{[]string{"status", "a", "b"}, []string{"accepts at most 1 arg(s)", "hint: usage: sbx status [NAME]"}},
		{[]string{"list", "extra"}, []string{`sbx list takes no arguments, got "extra"`}},
		{[]string{"env"}, []string{"accepts 1 arg(s), received 0", "usage: sbx env NAME"}},
		{[]string{"status", "--bogus"}, []string{"unknown flag: --bogus", "sbx status --help"}},
		{[]string{"connect", "-f"}, []string{"flag needs an argument", "usage: sbx connect -f FILE"}},
		{[]string{"bench", "tunnel", "--reps", "x"}, []string{`invalid argument "x" for "--reps" flag: not a whole number`}},
		{[]string{"bench", "tunnel", "--stream-window", "-1"}, []string{"not a whole number of 0 or more"}},
		{[]string{"bench", "nosuch"}, []string{`unknown command "nosuch" for "sbx bench"`, "its commands: ", "connect, portforward, tunnel"}},
		{[]string{"bench", "tunel"}, []string{"did you mean `sbx bench tunnel`?"}},
		{[]string{"completion", "tcsh"}, []string{`unknown command "tcsh" for "sbx completion"`}},
		{[]string{"daemon", "x"}, []string{"its commands: stop"}},
	}
	for _, tt := range tests {
		t.Run(strings.Join(tt.args, " "), func(t *testing.T) {
			code, out, errOut := runCLI(t, tt.args...)
			require.Equal(t, 2, code, errOut)
			require.Empty(t, out)
			for _, w := range tt.want {
				require.Contains(t, errOut, w)
			}
			require.NotContains(t, errOut, "strconv")
		})
	}
	// A group without a subcommand still shows its help.
	code, out, _ := runCLI(t, "bench")
	require.Equal(t, 0, code)
	require.Contains(t, out, "Available Commands")
}

// TestOutputFormatHints: a refused -o names the formats in words, and a
// command that only prints text says to drop -o rather than suggest
// `-o text`.
func TestOutputFormatHints(t *testing.T) {
	cliEnv(t)
	code, _, errOut := runCLI(t, "status", "-o", "xml")
	require.Equal(t, 2, code)
	require.Contains(t, errOut, "hint: use -o with one of: text, json, yaml\n")

	for _, args := range [][]string{{"logs", "-o", "json"}, {"run", "-o", "json", "alice", "--", "true"}} {
		code, _, errOut = runCLI(t, args...)
		require.Equal(t, 2, code, args)
		require.Contains(t, errOut, `output format "json" is not supported here: this command prints text`, args)
		require.Contains(t, errOut, "hint: drop -o\n", args)
	}
}

// TestBadNamespaceRefused: -n with a name no namespace can have is a
// usage error, not an empty answer from the cluster ("nothing to collect").
func TestBadNamespaceRefused(t *testing.T) {
	cliEnv(t)
	for _, args := range [][]string{{"gc", "-n", "bad ns"}, {"list", "-n", "Hotrod"}, {"disconnect", "x", "--orphan", "-n", "a_b"}} {
		code, out, errOut := runCLI(t, args...)
		require.Equal(t, 2, code, args)
		require.Empty(t, out, args)
		require.Contains(t, errOut, fmt.Sprintf("sbx: -n %q is not a namespace name\n  hint: a namespace name is at most 63 lowercase letters", args[len(args)-1]), args)
	}
}

// TestClusterFlagsRefusedWhereUnused: --kubeconfig, --context and -n given
// to a command that does not read them are refused, not ignored: `sbx
// status --context prod` must not look like it showed prod.
func TestClusterFlagsRefusedWhereUnused(t *testing.T) {
	cliEnv(t)
	for _, args := range [][]string{{"status", "--context", "prod"}, {"version", "-n", "hotrod"}, {"logs", "--kubeconfig", "/tmp/k"}, {"validate", "-f", "x.yaml", "--context", "c"}} {
		code, _, errOut := runCLI(t, args...)
		require.Equal(t, 2, code, args)
		require.Contains(t, errOut, "does not use", args)
		require.Contains(t, errOut, "hint: drop it", args)
	}
	code, _, errOut := runCLI(t, "version", "-o", "json")
	require.Equal(t, 0, code, errOut)
}

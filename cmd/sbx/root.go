package main

import (
	"fmt"
	"io"
	"log/slog"

	"github.com/spf13/cobra"
)

// globalOptions are the flags every command shares. One value is created per
// root command and passed to the subcommand constructors; there are no flag
// globals.
type globalOptions struct {
	kubeconfig string
	context    string
	namespace  string
	output     string
	verbosity  int

	build  buildInfo
	stdin  io.Reader
	stdout io.Writer
	stderr io.Writer
}

func newRootCmd(build buildInfo, stdin io.Reader, stdout, stderr io.Writer) *cobra.Command {
	g := &globalOptions{build: build, stdin: stdin, stdout: stdout, stderr: stderr}
	root := &cobra.Command{
		Use:   "sbx",
		Short: "Run one microservice on your laptop as part of a shared Kubernetes cluster",
		Long: `sbx makes a process on your laptop part of a Kubernetes sandbox.

Requests that carry the sandbox's routing key in the W3C baggage header are
routed by the service mesh to a small relay pod, which sends them through a
reverse tunnel to your laptop. Your process's own calls to cluster service
names travel back through the same tunnel to the baseline services.`,
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	root.SetIn(stdin)
	root.SetOut(stdout)
	root.SetErr(stderr)

	pf := root.PersistentFlags()
	pf.StringVar(&g.kubeconfig, "kubeconfig", "", "path to the kubeconfig file (default: $KUBECONFIG or ~/.kube/config)")
	pf.StringVar(&g.context, "context", "", "kubeconfig context to use (default: the current context)")
	pf.StringVarP(&g.namespace, "namespace", "n", "", "namespace for list, gc and disconnect --orphan (default: every namespace you may list, else the context's) and for render's baseline objects")
	pf.StringVarP(&g.output, "output", "o", "", "output format for commands that print state: text, json or yaml")
	pf.CountVarP(&g.verbosity, "verbose", "v", "debug-level logs from sbx daemon, relay and tray; progress from sbx bench portforward")

	root.AddCommand(
		newVersionCmd(g),
		newValidateCmd(g),
		newRenderCmd(g),
		newRelayCmd(g),
		newBenchCmd(g),
		newDaemonCmd(g),
		newConnectCmd(g),
		newDisconnectCmd(g),
		newStatusCmd(g),
		newListCmd(g),
		newGCCmd(g),
		newLogsCmd(g),
		newTrayCmd(g),
		newRunCmd(g),
		newEnvCmd(g),
		newDemoCmd(g),
	)

	// Commands that print no state refuse -o rather than ignore it; the
	// others validate it themselves through g.outputFormat.
	root.InitDefaultCompletionCmd()
	for _, c := range root.Commands() {
		switch c.Name() {
		case "tray", "daemon", "relay", "demo", "completion":
			markNoOutput(c)
		}
		if c.Name() == "tray" {
			c.Annotations[mainThreadAnnotation] = "true"
		}
	}
	root.PersistentPreRunE = func(cmd *cobra.Command, _ []string) error {
		if g.output == "" {
			return nil
		}
		for c := cmd; c != nil; c = c.Parent() {
			if c.Annotations[noOutputAnnotation] == "true" {
				return userError(fmt.Errorf("sbx %s prints no state, so -o %s has no effect", cmd.Name(), g.output),
					"drop -o; commands such as status, list, version and env take it")
			}
		}
		return nil
	}
	return root
}

// noOutputAnnotation marks a command (and its subcommands) that takes no -o.
const noOutputAnnotation = "sbx.dev/no-output"

func markNoOutput(c *cobra.Command) {
	if c.Annotations == nil {
		c.Annotations = map[string]string{}
	}
	c.Annotations[noOutputAnnotation] = "true"
}

// logger returns the slog text logger long-running commands (daemon, relay,
// tray) write to w: info by default, debug with -v.
func (g *globalOptions) logger(w io.Writer) *slog.Logger {
	level := slog.LevelInfo
	if g.verbosity > 0 {
		level = slog.LevelDebug
	}
	return slog.New(slog.NewTextHandler(w, &slog.HandlerOptions{Level: level}))
}

// outputFormat validates the global -o flag against what a command supports.
func (g *globalOptions) outputFormat(allowed ...string) (string, error) {
	if g.output == "" {
		return "text", nil
	}
	for _, a := range allowed {
		if g.output == a {
			return a, nil
		}
	}
	return "", userError(fmt.Errorf("output format %q is not supported here", g.output),
		fmt.Sprintf("use -o with one of: %v", allowed))
}

package main

import (
	"errors"
	"fmt"
	"io"
	"log/slog"
	"slices"
	"strconv"
	"strings"

	"github.com/spf13/cobra"

	"github.com/sbx-dev/sbx/cluster/spec"
	"github.com/sbx-dev/sbx/daemon/service"
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

	// services is the OS's service manager (`sbx daemon --install`, and
	// commands that find the daemon installed as a service); executable
	// is the sbx binary a service runs. Tests swap both.
	services   func() service.Host
	executable func() (string, error)
}

func newRootCmd(build buildInfo, stdin io.Reader, stdout, stderr io.Writer, opts ...func(*globalOptions)) *cobra.Command {
	g := &globalOptions{build: build, stdin: stdin, stdout: stdout, stderr: stderr,
		services: service.Local, executable: installedExecutable}
	for _, o := range opts {
		o(g)
	}
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
		newRoutesCmd(g),
		newListCmd(g),
		newGCCmd(g),
		newLogsCmd(g),
		newTrayCmd(g),
		newRunCmd(g),
		newEnvCmd(g),
		newDemoCmd(g),
		newDoctorCmd(g),
	)

	// Commands that print no state refuse -o rather than ignore it; the
	// others validate it themselves through g.outputFormat.
	root.InitDefaultCompletionCmd()
	for _, c := range root.Commands() {
		switch c.Name() {
		case "tray", "relay", "demo", "completion":
			markNoOutput(c)
		case "daemon":
			// --install and --uninstall print what they did in any
			// format; the daemon itself and `daemon stop` refuse -o
			// (newDaemonCmd).
			for _, sub := range c.Commands() {
				markNoOutput(sub)
			}
		}
		if c.Name() == "tray" {
			c.Annotations[mainThreadAnnotation] = "true"
		}
	}
	// Which commands read the cluster flags; the others refuse them
	// rather than ignore them (a --context that does nothing misleads).
	for _, c := range root.Commands() {
		switch c.Name() {
		case "list", "gc", "disconnect", "doctor":
			clusterFlags(c, "kubeconfig", "context", "namespace")
		case "connect", "env", "run":
			clusterFlags(c, "kubeconfig", "context")
		case "render":
			clusterFlags(c, "namespace")
		case "__complete", "__completeNoDesc":
			clusterFlags(c, "kubeconfig", "context", "namespace")
		}
	}
	markUsageErrors(root)
	root.PersistentPreRunE = func(cmd *cobra.Command, _ []string) error {
		if err := checkClusterFlags(cmd); err != nil {
			return err
		}
		// A namespace name that cannot exist would only come back as
		// "nothing found" from the cluster.
		if g.namespace != "" && !spec.IsDNS1123Label(g.namespace) {
			return userError(fmt.Errorf("-n %q is not a namespace name", g.namespace),
				"a namespace name is at most 63 lowercase letters, digits and '-', starting and ending with a letter or digit (`kubectl get namespaces` lists them)")
		}
		if g.output == "" {
			return nil
		}
		for c := cmd; c != nil; c = c.Parent() {
			if c.Annotations[noOutputAnnotation] == "true" {
				return noOutputError(cmd, g)
			}
		}
		return nil
	}
	return root
}

// clusterFlagsAnnotation lists the global cluster flags a command reads.
const clusterFlagsAnnotation = "sbx.dev/cluster-flags"

func clusterFlags(c *cobra.Command, names ...string) {
	if c.Annotations == nil {
		c.Annotations = map[string]string{}
	}
	c.Annotations[clusterFlagsAnnotation] = strings.Join(names, ",")
}

// checkClusterFlags refuses --kubeconfig, --context or -n given to a
// command that does not read it.
func checkClusterFlags(cmd *cobra.Command) error {
	var allowed string
	for c := cmd; c != nil; c = c.Parent() {
		if a, ok := c.Annotations[clusterFlagsAnnotation]; ok {
			allowed = a
			break
		}
	}
	for _, name := range []string{"kubeconfig", "context", "namespace"} {
		f := cmd.Flag(name)
		if f == nil || !f.Changed || slices.Contains(strings.Split(allowed, ","), name) {
			continue
		}
		flag := "--" + name
		if f.Shorthand != "" {
			flag = "-" + f.Shorthand + "/" + flag
		}
		return userError(fmt.Errorf("%s does not use %s", cmd.CommandPath(), flag),
			"drop it: the cluster flags apply to connect, disconnect --orphan, list, gc, doctor, env and run (--env-from-baseline), and -n to render; a sandbox stays in the cluster it was connected to")
	}
	return nil
}

// noOutputError refuses -o for a command that prints no state.
func noOutputError(cmd *cobra.Command, g *globalOptions) error {
	return userError(fmt.Errorf("%s prints no state, so -o %s has no effect", cmd.CommandPath(), g.output),
		"drop -o; commands such as status, list, version and env take it")
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
	if len(allowed) == 1 && allowed[0] == "text" {
		// -o text would be the only "fix": say what the command prints.
		return "", userError(fmt.Errorf("output format %q is not supported here: this command prints text (a log, or a process's own output)", g.output),
			"drop -o")
	}
	return "", userError(fmt.Errorf("output format %q is not supported here", g.output),
		"use -o with one of: "+strings.Join(allowed, ", "))
}

// markUsageErrors makes what cobra and pflag reject before a command runs
// (an unknown command, flag or flag value, a wrong number of arguments) a
// usage error: exit code 2 and a hint with the command's usage, not exit
// code 1 and a bare message. The root and the parents without a command
// of their own (bench, completion) get a RunE that prints their help, so
// that a mistyped subcommand is checked as an argument instead of cobra
// printing the help and exiting 0.
func markUsageErrors(root *cobra.Command) {
	root.SetFlagErrorFunc(func(cmd *cobra.Command, err error) error {
		return userError(plainFlagError(err), usageHint(cmd))
	})
	var walk func(c *cobra.Command)
	walk = func(c *cobra.Command) {
		c.SuggestionsMinimumDistance = 2 // cobra's default, which SuggestionsFor does not apply
		if !c.Runnable() && c.HasSubCommands() {
			c.RunE = func(cmd *cobra.Command, _ []string) error { return cmd.Help() }
			if c.Args == nil {
				c.Args = unknownSubcommand
			}
		}
		if args := c.Args; args != nil {
			c.Args = func(cmd *cobra.Command, a []string) error {
				err := args(cmd, a)
				var ce *cliError
				if err == nil || errors.As(err, &ce) {
					return err
				}
				if len(a) > 0 && strings.HasPrefix(err.Error(), "unknown command") {
					if cmd.HasSubCommands() {
						return unknownSubcommand(cmd, a)
					}
					err = fmt.Errorf("%s takes no arguments, got %q", cmd.CommandPath(), a[0])
				}
				return userError(err, usageHint(cmd))
			}
		}
		for _, sub := range c.Commands() {
			walk(sub)
		}
	}
	walk(root)
}

// unknownSubcommand is the argument check of a command that only groups
// subcommands: any argument is a subcommand that does not exist.
func unknownSubcommand(cmd *cobra.Command, args []string) error {
	if len(args) == 0 {
		return nil
	}
	err := fmt.Errorf("unknown command %q for %q", args[0], cmd.CommandPath())
	if s := cmd.SuggestionsFor(args[0]); len(s) > 0 {
		for i := range s {
			s[i] = "`" + cmd.CommandPath() + " " + s[i] + "`"
		}
		return userError(err, "did you mean "+strings.Join(s, " or ")+"?")
	}
	return userError(err, usageHint(cmd))
}

// usageHint points at the command's usage: its subcommands for a group
// (bench, daemon), else its usage line.
func usageHint(cmd *cobra.Command) string {
	var subs []string
	for _, c := range cmd.Commands() {
		if c.IsAvailableCommand() {
			subs = append(subs, c.Name())
		}
	}
	if len(subs) > 0 && !cmd.HasParent() {
		return fmt.Sprintf("`%s --help` lists the commands", cmd.CommandPath())
	}
	if len(subs) > 0 {
		return fmt.Sprintf("its commands: %s (`%s --help` says more)", strings.Join(subs, ", "), cmd.CommandPath())
	}
	return fmt.Sprintf("usage: %s (`%s --help` has the flags and examples)", cmd.UseLine(), cmd.CommandPath())
}

// plainFlagError says what is wrong with a flag's value in words rather
// than with strconv's (`strconv.ParseInt: parsing "x": invalid syntax`).
func plainFlagError(err error) error {
	var ne *strconv.NumError
	if !errors.As(err, &ne) {
		return err
	}
	why := "not a number"
	switch {
	case errors.Is(ne.Err, strconv.ErrRange):
		why = "out of range"
	case strings.Contains(ne.Func, "Uint"):
		why = "not a whole number of 0 or more"
	case strings.Contains(ne.Func, "Int"):
		why = "not a whole number"
	case strings.Contains(ne.Func, "Bool"):
		why = "not true or false"
	}
	return errors.New(strings.Replace(err.Error(), ne.Error(), why, 1))
}

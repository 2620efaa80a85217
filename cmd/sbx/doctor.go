package main

import (
	"cmp"
	"context"
	"fmt"
	"net"
	"os"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/sbx-dev/sbx/cluster"
	"github.com/sbx-dev/sbx/cluster/kube"
	"github.com/sbx-dev/sbx/cluster/live"
	"github.com/sbx-dev/sbx/cluster/spec"
	"github.com/sbx-dev/sbx/daemon"
	"github.com/sbx-dev/sbx/daemon/api"
	"github.com/sbx-dev/sbx/daemon/client"
	"github.com/sbx-dev/sbx/daemon/config"
	"github.com/sbx-dev/sbx/daemon/hostsfile"
	"github.com/sbx-dev/sbx/daemon/outbound"
)

func newDoctorCmd(g *globalOptions) *cobra.Command {
	var sf specFlags
	var noProbe bool
	cmd := &cobra.Command{
		Use:   "doctor [-f FILE [--set name=value]...]",
		Short: "Check, in order, what sbx connect needs: kubeconfig, API server, permissions, relay image, mesh, routes, local ports, outbound access",
		Long: `Doctor checks what sbx connect needs, in the order it needs it, and says
for each thing either that it holds or how to fix it: the sbx config; the
kubeconfig and context; that the API server answers; every permission sbx
uses (asked of the API server with SelfSubjectAccessReviews: the Role of
deploy/rbac.yaml in the spec's namespaces, or -n, or the context's; the
read-only ClusterRole cluster-wide); that the cluster pulls and runs the
relay image; that the cluster serves Istio VirtualServices; with -f, that
each local workload resolves to a baseline workload and Service port, where
keyed requests to each mapped port would go (the route plan sbx connect
would write, previewed from every client namespace; nothing is written),
and whether something listens on each toLocal address; and the daemon, or,
when none runs, the outbound access one would get (hosts mode needs a hosts
file you may write whose sbx block no other daemon holds).

To try the relay image, doctor starts a short-lived relay, as sbx connect
would, in the first namespace: a sandbox named doctor-XXXXXXXX with no
Service and no route (nothing can reach it), deleted as soon as its pod is
ready or cannot start (at most 2 minutes). --no-relay-probe skips it; doctor
then changes nothing in the cluster. Exit 0 when nothing fails (warnings
allowed), 1 otherwise.`,
		Example: `  sbx doctor
  sbx doctor -f sandbox.yaml --set name=alice
  sbx doctor --context staging -n hotrod -o json`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			format, err := g.outputFormat("text", "json", "yaml")
			if err != nil {
				return err
			}
			var sb *spec.Sandbox
			if sf.file != "" {
				if sb, err = sf.load(g); err != nil {
					return err
				}
			}
			checks := runDoctor(cmd.Context(), g, sb, !noProbe)
			if err := printValue(g.stdout, format, checks, func() string { return renderChecks(checks) }); err != nil {
				return err
			}
			for _, c := range checks {
				if c.Level == live.LevelFail {
					return exitError(1)
				}
			}
			return nil
		},
	}
	sf.register(cmd)
	cmd.Flags().BoolVar(&noProbe, "no-relay-probe", false, "do not start the short-lived relay that checks the relay image")
	return cmd
}

// runDoctor runs the checks in order; the cluster's are skipped when the
// kubeconfig cannot be used.
func runDoctor(ctx context.Context, g *globalOptions, sb *spec.Sandbox, probe bool) []live.Check {
	var out []live.Check
	src := daemon.LiveSource(kubeconfigSource(g))
	// The sbx config, as the daemon reads it: spec.cluster's context and
	// the relay image.
	conf := config.Default()
	path, err := config.DefaultPath(os.Getenv)
	if err == nil {
		conf, err = config.Load(path)
	}
	if err != nil {
		out = append(out, live.Check{Name: "sbx config", Level: live.LevelFail, Detail: err.Error(),
			Fix: "fix the sbx config at " + path + " (the daemon refuses it too); doctor goes on with the defaults"})
		conf = config.Default()
	}
	kctx := g.context
	if sb != nil && sb.Spec.Cluster != "" && kctx == "" {
		// The spec's cluster, through the user config's contexts, as the
		// daemon resolves it.
		opts := src.Options
		opts.Cluster = sb.Spec.Cluster
		opts.ClusterContexts, opts.ConfigFile = conf.Contexts, path
		name, _, err := kube.ChooseContext(opts)
		if err != nil {
			return append(out, live.Check{Name: "kubeconfig", Level: live.LevelFail, Detail: err.Error(),
				Fix: "map spec.cluster to a context in the sbx config's contexts, or pass --context"}, daemonCheck(ctx, conf.Outbound))
		}
		kctx = name
	}
	clusters := live.NewClusters(live.Options{})
	defer clusters.Close()
	c, err := clusters.Open(src, kctx)
	if err != nil {
		out = append(out, live.Check{Name: "kubeconfig", Level: live.LevelFail, Detail: live.Cause(err).Error(),
			Fix: "pass --kubeconfig/--context, or set KUBECONFIG (`kubectl config get-contexts` lists the contexts)"})
	} else {
		detail := "context " + c.Context()
		if kctx == "" {
			detail += " (the current context)"
		}
		out = append(out, live.Check{Name: "kubeconfig", Level: live.LevelOK, Detail: detail + ", from " + src.Name})
		o := live.DoctorOptions{Sandbox: sb, Routes: cluster.RouteOptions{BaggageKey: conf.BaggageKey, ClusterDomain: conf.ClusterDomain}}
		switch {
		case sb != nil:
			o.Namespaces = sb.Namespaces()
		case g.namespace != "":
			o.Namespaces = []string{g.namespace}
		}
		timeout := 30 * time.Second
		if probe {
			o.RelayImage = cmp.Or(conf.RelayImage, relayImageFor(g.build.Version))
			o.ProbeTimeout = 2 * time.Minute
			o.Progress = func(msg string) { fmt.Fprintln(g.stderr, msg) }
			timeout += o.ProbeTimeout
		}
		cctx, cancel := context.WithTimeout(ctx, timeout)
		out = append(out, c.Doctor(cctx, o)...)
		cancel()
	}
	if sb != nil {
		out = append(out, localChecks(ctx, sb)...)
	}
	return append(out, daemonCheck(ctx, conf.Outbound))
}

// localChecks says whether something listens on each mapping's toLocal.
func localChecks(ctx context.Context, sb *spec.Sandbox) []live.Check {
	var out []live.Check
	for _, l := range sb.Spec.Local {
		for _, m := range l.Mappings {
			name := fmt.Sprintf("local %s:%d", l.Name, m.Port)
			dctx, cancel := context.WithTimeout(ctx, 500*time.Millisecond)
			var d net.Dialer
			conn, err := d.DialContext(dctx, "tcp", m.ToLocal)
			cancel()
			if err != nil {
				out = append(out, live.Check{Name: name, Level: live.LevelWarn,
					Detail: "nothing listens on " + m.ToLocal + " yet: keyed requests get a 502 until it does",
					Fix:    "start your service there (sbx run NAME -- CMD gives it the sandbox's env)"})
				continue
			}
			_ = conn.Close()
			out = append(out, live.Check{Name: name, Level: live.LevelOK, Detail: "something listens on " + m.ToLocal})
		}
	}
	return out
}

// daemonCheck reports the daemon and its outbound access, without
// starting one; when none runs, what the sbx config's outbound access
// will get.
func daemonCheck(ctx context.Context, ob config.Outbound) live.Check {
	c, err := client.Open(ctx, daemonPaths())
	if err != nil {
		if api.IsNotRunning(err) {
			return outboundCheck(ob)
		}
		return live.Check{Name: "daemon", Level: live.LevelFail, Detail: err.Error(), Fix: "`sbx logs` shows the daemon's log; `sbx daemon stop` and a new command restart it"}
	}
	defer c.Close()
	st, err := c.Status(ctx)
	if err != nil {
		return live.Check{Name: "daemon", Level: live.LevelFail, Detail: err.Error(), Fix: "`sbx logs` shows the daemon's log"}
	}
	detail := fmt.Sprintf("running (version %s, %d sandbox(es))", st.Version, len(st.Sandboxes))
	if ob := st.Outbound; ob != nil {
		detail += "; outbound access: " + ob.Mode
		if ob.ProxyAddr != "" {
			detail += " at " + ob.ProxyAddr
		}
		if ob.Note != "" {
			detail += " (" + ob.Note + ")"
		}
		if ob.Error != "" {
			return live.Check{Name: "daemon", Level: live.LevelWarn, Detail: detail + ": " + ob.Error, Fix: "fix outbound in the sbx config (`sbx status` shows it)"}
		}
	}
	return live.Check{Name: "daemon", Level: live.LevelOK, Detail: detail}
}

// outboundCheck says what outbound access a daemon started now would
// get, as outbound.Runner decides it: hosts mode needs a hosts file the
// daemon may write whose sbx block no other live daemon owns; auto falls
// back to proxy mode otherwise.
func outboundCheck(ob config.Outbound) live.Check {
	const name = "daemon"
	detail := "not running; sbx connect starts it; outbound access: "
	mode := cmp.Or(ob.Mode, config.ModeAuto)
	hostsFile := cmp.Or(ob.HostsFile, config.DefaultHostsFile)
	switch mode {
	case config.ModeOff:
		return live.Check{Name: name, Level: live.LevelOK, Detail: detail + "off (outbound.mode: off): local processes reach cluster names only through sbx run's env"}
	case config.ModeProxy:
		return live.Check{Name: name, Level: live.LevelOK, Detail: detail + "proxy (outbound.mode: proxy); sbx run and sbx env give processes its address"}
	}
	auto := mode == config.ModeAuto
	if auto {
		ob.HostsFile = hostsFile
		if m, why := outbound.ResolveMode(ob); m == config.ModeProxy {
			return live.Check{Name: name, Level: live.LevelOK, Detail: detail + "proxy (auto: " + why + "); sbx run and sbx env give processes its address"}
		}
	} else if !hostsfile.Writable(hostsFile) {
		return live.Check{Name: name, Level: live.LevelFail, Detail: detail + "hosts mode, but the hosts file " + hostsFile + " is not writable by you",
			Fix: "run the daemon as a user who may write it (see the README's outbound access), or set outbound.mode: proxy in the sbx config"}
	}
	owned, err := hostsfile.Owned(hostsFile)
	switch {
	case err != nil:
		return live.Check{Name: name, Level: live.LevelFail, Detail: detail + "hosts mode: " + err.Error(),
			Fix: "fix the hosts file (its sbx block is between # BEGIN sbx and # END sbx), or set outbound.mode: proxy"}
	case owned != nil && auto:
		return live.Check{Name: name, Level: live.LevelWarn, Detail: detail + "proxy, not hosts mode: " + owned.Error(),
			Fix: "stop the other daemon to get hosts mode; proxy mode works meanwhile"}
	case owned != nil:
		return live.Check{Name: name, Level: live.LevelFail, Detail: detail + owned.Error(),
			Fix: "stop the other sbx daemon (another user or state directory), or set outbound.mode: proxy"}
	}
	return live.Check{Name: name, Level: live.LevelOK, Detail: detail + "hosts mode: the daemon keeps cluster names in a marked block of " + hostsFile + ", which no other daemon holds"}
}

// renderChecks is doctor's text output: one line per check, its fix
// below a failed or limited one.
func renderChecks(checks []live.Check) string {
	var b strings.Builder
	mark := map[string]string{live.LevelOK: "✓", live.LevelWarn: "!", live.LevelFail: "✗"}
	for _, c := range checks {
		fmt.Fprintf(&b, "%s %s: %s\n", mark[c.Level], c.Name, c.Detail)
		if c.Fix != "" && c.Level != live.LevelOK {
			fmt.Fprintf(&b, "    fix: %s\n", c.Fix)
		}
	}
	return strings.TrimRight(b.String(), "\n")
}

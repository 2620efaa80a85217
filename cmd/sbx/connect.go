package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"sync"
	"time"

	"github.com/spf13/cobra"

	"github.com/sbx-dev/sbx/cluster/kube"
	"github.com/sbx-dev/sbx/cluster/spec"
	"github.com/sbx-dev/sbx/daemon"
	"github.com/sbx-dev/sbx/daemon/api"
	"github.com/sbx-dev/sbx/daemon/client"
	"github.com/sbx-dev/sbx/daemon/config"
)

func newConnectCmd(g *globalOptions) *cobra.Command {
	var (
		sf      specFlags
		wait    bool
		timeout time.Duration
		watch   bool
		rotate  bool
	)
	cmd := &cobra.Command{
		Use:   "connect -f FILE [--set name=value]... | connect NAME --rotate-token",
		Short: "Connect a sandbox: route its keyed traffic to processes on this laptop",
		Long: `Connect validates the sandbox spec, hands it to the sbx daemon (starting the
daemon if needed), and shows each step: cluster objects applied, relay pod
ready, tunnel up. It ends with the sandbox's routing key and curl lines that
send keyed requests to your laptop.

Connecting a sandbox that is already connected updates it in place and keeps
its routing key. With --watch, connect stays running and re-applies the spec
each time the file changes; an invalid edit is reported and the sandbox keeps
its last good spec.

A sandbox spec (YAML; @{name} is filled from --set name=...):

  name: '@{name}'
  spec:
    description: route service on my laptop
    cluster: staging-1        # optional: a kube context, or a name mapped to one in the config
    local:
      - name: route
        from: {kind: Deployment, namespace: hotrod, name: route}
        mappings:
          - port: 8083        # the baseline Service's port
            toLocal: localhost:8083

Keyed requests to the route Service's port 8083 then reach localhost:8083.
` + "`sbx validate -f FILE`" + ` checks a spec without connecting.

The daemon mints the sandbox's tunnel token and keeps it in its state file;
the cluster gets only the token's SHA-256, which the relay checks. With
--rotate-token the daemon mints a new token: the relay rolls to a pod that
accepts only the new one, and the tunnel moves to it without dropping
requests. ` + "`sbx connect NAME --rotate-token`" + ` rotates a connected sandbox's token
and keeps its spec; it is also how you take a sandbox back that another
daemon connected since.`,
		Example: `  sbx connect -f sandbox.yaml --set name=alice
  sbx connect -f sandbox.yaml --set name=alice --watch
  sbx connect -f sandbox.yaml --set name=alice --wait=false   # return at once; see sbx status
  sbx connect alice --rotate-token                            # new tunnel token, same spec`,
		Args: func(cmd *cobra.Command, args []string) error {
			switch {
			case len(args) > 1:
				return userError(fmt.Errorf("connect takes at most one NAME, got %q", args), "pass -f FILE, or NAME with --rotate-token")
			case len(args) == 1 && !rotate:
				return userError(fmt.Errorf("connect %s: a sandbox is connected from its spec", args[0]),
					"pass -f FILE (with --set name=...), or add --rotate-token to rotate the token of connected sandbox "+args[0])
			case len(args) == 1 && sf.file != "":
				return userError(errors.New("give either NAME or -f FILE, not both"), "sbx connect NAME --rotate-token keeps the spec it has")
			case len(args) == 1 && watch:
				return userError(errors.New("--watch needs a spec file"), "pass -f FILE")
			}
			return nil
		},
		ValidArgsFunction: completeSandboxNames,
		RunE: func(cmd *cobra.Command, args []string) error {
			format, err := g.outputFormat("text", "json", "yaml")
			if err != nil {
				return err
			}
			if len(args) == 1 {
				return rotateToken(cmd.Context(), g, args[0], wait, timeout, format)
			}
			if watch && sf.file == "-" {
				return userError(errors.New("--watch needs a spec file, not standard input"), "pass -f FILE")
			}
			if timeout < 0 {
				return userError(fmt.Errorf("--timeout %s is negative", timeout), "pass a duration such as --timeout 3m")
			}
			sb, err := sf.load(g)
			if err != nil {
				return err
			}
			if err := checkKubeContext(g, sb); err != nil {
				return err
			}
			ctx := cmd.Context()
			c, err := needDaemon(ctx, g)
			if err != nil {
				return err
			}
			defer c.Close()
			req := api.ConnectRequest{KubeconfigSource: kubeconfigSource(g), Context: g.context, Wait: wait, Timeout: timeout, RotateToken: rotate}
			if err := connectOnce(ctx, g, c, req, sb, format); err != nil {
				return err
			}
			if !watch {
				return nil
			}
			req.RotateToken = false // once, not on every edit
			return watchSpec(ctx, g, c, req, &sf, format)
		},
	}
	sf.register(cmd)
	cmd.Flags().BoolVar(&rotate, "rotate-token", false, "mint a new tunnel token: the relay rolls to a pod that accepts only the new one and the tunnel moves there; with NAME instead of -f, the connected sandbox keeps its spec (e.g. after a colleague or another laptop connected it)")
	cmd.Flags().BoolVar(&wait, "wait", true, "wait until the sandbox is ready, showing progress (--wait=false returns at once)")
	cmd.Flags().DurationVar(&timeout, "timeout", 3*time.Minute, "how long --wait waits; the daemon keeps trying afterwards")
	cmd.Flags().BoolVar(&watch, "watch", false, "keep running and re-apply the spec whenever the file changes")
	return cmd
}

// checkKubeContext reads the kubeconfig and picks the context as the
// daemon will, so that a missing or broken kubeconfig or an unknown
// --context is refused at once, as the daemon refuses an unknown
// spec.cluster, rather than becoming a sandbox that fails in the
// background and stays in the daemon until disconnected. A spec.cluster
// without --context is the daemon's to resolve (through the user
// config's contexts).
func checkKubeContext(g *globalOptions, sb *spec.Sandbox) error {
	if sb.Spec.Cluster != "" && g.context == "" {
		return nil
	}
	if err := readKubeconfig(g); err != nil {
		return userError(fmt.Errorf("cannot connect sandbox %s: %w", sb.Name, err),
			"fix "+kubeconfigFlags+" and connect again; nothing was sent to the daemon")
	}
	return nil
}

// kubeconfigFlags names what selects the cluster, for hints.
const kubeconfigFlags = "--kubeconfig, $KUBECONFIG or --context (`kubectl config get-contexts` lists the contexts)"

// readKubeconfig reads the kubeconfig the global flags select and picks
// the context as the daemon will (without contacting the cluster), so
// that a missing or broken kubeconfig or an unknown --context is reported
// plainly before the daemon is asked.
func readKubeconfig(g *globalOptions) error {
	opts := daemon.SourceOptions(kubeconfigSource(g))
	opts.Context = g.context
	_, _, err := kube.ChooseContext(opts)
	return err
}

// daemonStoppedConnecting is connect's error when the daemon stopped
// (was stopped, killed or crashed) before the sandbox was ready: the
// daemon says so when it stops gracefully, otherwise its socket goes away.
func daemonStoppedConnecting(name string) error {
	return &cliError{kind: kindUser, code: 1,
		err:  fmt.Errorf("the sbx daemon stopped while connecting sandbox %s (killed, crashed or stopped)", name),
		hint: fmt.Sprintf("connect again: a new daemon resumes %s with its routing key; `sbx logs` shows why the old one stopped", name)}
}

// rotateToken is `sbx connect NAME --rotate-token`: a connect that only
// gives the connected sandbox a new token.
func rotateToken(ctx context.Context, g *globalOptions, name string, wait bool, timeout time.Duration, format string) error {
	if !spec.IsDNS1123Label(name) {
		return userError(fmt.Errorf("%q is not a sandbox name", name), "`sbx status` lists the connected sandboxes")
	}
	c, err := needDaemon(ctx, g)
	if err != nil {
		return err
	}
	defer c.Close()
	req := api.ConnectRequest{RotateToken: true, Wait: wait, Timeout: timeout}
	err = connectOnce(ctx, g, c, req, &spec.Sandbox{Name: name}, format)
	var ae *api.APIError
	if errors.As(err, &ae) && ae.StatusCode == 404 {
		return userError(err, "connect it with `sbx connect -f FILE`: a new sandbox gets a new token anyway")
	}
	return err
}

// connectOnce sends one connect and prints its progress and result.
func connectOnce(ctx context.Context, g *globalOptions, c *client.Client, req api.ConnectRequest, sb *spec.Sandbox, format string) error {
	req.Spec = *sb
	if format == "text" {
		if req.RotateToken {
			fmt.Fprintf(g.stderr, "Rotating the tunnel token of sandbox %s\n", sb.Name)
		} else {
			fmt.Fprintf(g.stderr, "Connecting sandbox %s\n", sb.Name)
		}
	}
	var pr progressPrinter
	q := newQuietWait(g.stderr)
	stop := func() {}
	if req.Wait {
		left := ""
		if req.Timeout > 0 {
			left = fmt.Sprintf(" of --timeout %s", req.Timeout)
		}
		stop = q.heartbeat(ctx, quietEvery(req.Timeout), func(waited time.Duration) string {
			return fmt.Sprintf("  %-14s still waiting: %s%s so far, no news from the daemon (Ctrl-C stops waiting; the daemon keeps trying)", "", waited, left)
		})
	}
	st, err := c.Connect(ctx, req, func(p api.Progress) {
		q.do(func(w io.Writer) { pr.print(w, p) })
	})
	stop()
	if err != nil {
		var ce *api.ConnectError
		var ae *api.APIError
		switch {
		case ctx.Err() != nil && errors.Is(err, context.Canceled):
			return interruptedConnect(sb.Name, pr.phase)
		case errors.As(err, &ce) && ce.DaemonStopping:
			return daemonStoppedConnecting(sb.Name)
		case errors.As(err, &ce) && ce.Kind == api.KindUser:
			// The spec does not fit the cluster: the user's input.
			return userError(err, "fix the spec (`sbx render -f FILE` shows what sbx would write, `kubectl get deploy,svc -n NAMESPACE` what the cluster has) and run connect again")
		case errors.As(err, &ce):
			// Not ready in time, or failed: not a usage error.
			return &cliError{kind: kindUser, err: err, code: 1,
				hint: fmt.Sprintf("`sbx status %s` shows its state, `sbx logs` the daemon's log", sb.Name)}
		case api.IsNotRunning(err):
			// needDaemon found it, so it went away since.
			return daemonStoppedConnecting(sb.Name)
		case errors.As(err, &ae) && ae.StatusCode == 409:
			return userError(err, "")
		}
		return classifyStopped(err, "fix the spec (`sbx validate -f FILE`) and run connect again", daemonStoppedConnecting(sb.Name))
	}
	if format != "text" {
		return printValue(g.stdout, format, st, nil)
	}
	if !req.Wait && req.RotateToken {
		fmt.Fprintf(g.stdout, "The tunnel token of sandbox %s is being rotated in the background.\nFollow it with `sbx status %s --watch`.\n", st.Name, st.Name)
		return nil
	}
	if !req.Wait {
		fmt.Fprintf(g.stdout, "Sandbox %s is connecting in the background (routing key %s).\nFollow it with `sbx status %s --watch`.\n", st.Name, st.RoutingKey, st.Name)
		return nil
	}
	if req.RotateToken {
		fmt.Fprintf(g.stdout, "Rotated the tunnel token of sandbox %s: its relay accepts only the new one.\n", st.Name)
	}
	printReady(g.stdout, st)
	return nil
}

// quietEvery is how long a connect --wait may go without news before it
// says it still waits: a quarter of the timeout, at most 15s, so that a
// wait the daemon has nothing to report about (an image pull, a pending
// pod) still shows that it goes on.
func quietEvery(timeout time.Duration) time.Duration {
	const most = 15 * time.Second
	if timeout <= 0 || timeout/4 > most {
		return most
	}
	return timeout / 4
}

// quietWait serialises progress output and notes, from the heartbeat
// goroutine, that a wait goes on when nothing was printed for a while.
type quietWait struct {
	mu    sync.Mutex
	w     io.Writer
	start time.Time
	last  time.Time // of the last line printed
}

func newQuietWait(w io.Writer) *quietWait {
	now := time.Now()
	return &quietWait{w: w, start: now, last: now}
}

// do runs print with the output to itself and notes the time.
func (q *quietWait) do(print func(io.Writer)) {
	q.mu.Lock()
	defer q.mu.Unlock()
	print(q.w)
	q.last = time.Now()
}

// heartbeat prints note(time waited so far) after every quiet spell of
// every until the returned stop is called; stop waits for its goroutine.
// It looks four times per spell, at least every minHeartbeatTick: a tiny
// spell (connect --timeout 10ns) must not make a ticker of 0, which panics.
func (q *quietWait) heartbeat(ctx context.Context, every time.Duration, note func(waited time.Duration) string) (stop func()) {
	ctx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() {
		defer close(done)
		tick := time.NewTicker(max(every/4, minHeartbeatTick))
		defer tick.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-tick.C:
			}
			q.mu.Lock()
			if now := time.Now(); now.Sub(q.last) >= every {
				fmt.Fprintln(q.w, note(now.Sub(q.start).Round(time.Second)))
				q.last = now
			}
			q.mu.Unlock()
		}
	}()
	return func() { cancel(); <-done }
}

// minHeartbeatTick is the shortest interval heartbeat looks at the clock.
const minHeartbeatTick = 10 * time.Millisecond

// interruptedConnect is connect's answer to Ctrl-C: the daemon goes on
// with a sandbox it has been given, so say so and how to follow or stop it.
func interruptedConnect(name string, phase api.Phase) error {
	msg := fmt.Sprintf("interrupted while connecting sandbox %s", name)
	hint := fmt.Sprintf("`sbx status %s` shows whether the daemon got it", name)
	if phase != "" {
		msg += fmt.Sprintf(" (phase %s); the daemon keeps connecting it in the background", phase)
		hint = fmt.Sprintf("`sbx status %s --watch` follows it, `sbx disconnect %s` removes it", name, name)
	}
	return &cliError{kind: kindUser, err: errors.New(msg), hint: hint, code: exitInterrupted}
}

// clusterWaitEvery is how long a command that waits for the daemon to
// work on the cluster (disconnect, gc, list) stays silent before it says
// it still waits.
const clusterWaitEvery = 5 * time.Second

// whileClusterWork prints to stderr, after every quiet clusterWaitEvery,
// that the command is still doing what (and the note in parentheses);
// stop ends it and waits for its goroutine.
func whileClusterWork(ctx context.Context, g *globalOptions, what, note string) (stop func()) {
	return newQuietWait(g.stderr).heartbeat(ctx, clusterWaitEvery, func(waited time.Duration) string {
		return fmt.Sprintf("still %s: %s so far (%s)", what, waited, note)
	})
}

// progressPrinter prints a connect's progress: a phase's name when it
// changes, and each error once: retries that fail the same way say so in
// a short line instead of repeating a long message.
type progressPrinter struct {
	phase   api.Phase
	err     string
	repeats int
}

func (pr *progressPrinter) print(w io.Writer, p api.Progress) {
	if p.Error != "" {
		if p.Error == pr.err {
			pr.repeats++
			fmt.Fprintf(w, "  ! the same error again (%d times now)\n", pr.repeats+1)
			return
		}
		pr.err, pr.repeats = p.Error, 0
		fmt.Fprintf(w, "  ! %s\n", p.Error)
		return
	}
	label := ""
	if p.Phase != pr.phase {
		label = string(p.Phase)
		pr.phase = p.Phase
	}
	if p.Phase == api.PhaseReady {
		pr.err, pr.repeats = "", 0
	}
	if p.Message == "" {
		if label != "" {
			fmt.Fprintf(w, "  %-14s\n", label)
		}
		return
	}
	fmt.Fprintf(w, "  %-14s %s\n", label, p.Message)
}

// printReady ends a connect: the key and lines to paste.
func printReady(w io.Writer, st api.SandboxStatus) {
	fmt.Fprintf(w, "Sandbox %s is ready.\n", st.Name)
	fmt.Fprintf(w, "  routing key: %s\n", st.RoutingKey)
	fmt.Fprintf(w, "  requests carrying 'baggage: %s=%s' now reach this laptop:\n", st.BaggageKey, st.RoutingKey)
	for _, m := range st.Mappings {
		note := ""
		if !m.Listening {
			note = fmt.Sprintf("   # nothing listening on %s yet: start your service there", m.ToLocal)
		}
		hosts := m.Services
		if len(hosts) == 0 { // not resolved yet: the workload's usual Service name
			hosts = []string{m.Workload + "." + m.Namespace}
		}
		for _, h := range hosts {
			fmt.Fprintf(w, "    curl -H 'baggage: %s=%s' http://%s:%d/%s\n", st.BaggageKey, st.RoutingKey, h, m.Port, note)
		}
	}
	fmt.Fprintf(w, "  (run curl from a pod in the cluster; a service that propagates baggage carries the key further)\n")
	if r := st.Routes; r != nil && r.Keyed != api.KeyedSandbox {
		// Never a silent "ready": say where the key does not work.
		fmt.Fprintf(w, "  BUT %s\n  (`sbx routes %s` shows every Service port and client namespace)\n", r.Message, st.Name)
	}
}

// watchSpec re-applies the spec whenever its file changes, until ctx ends.
// config.WatchFile follows the file as editors save it (a new file renamed
// over the old one) and through a symlink to its target.
func watchSpec(ctx context.Context, g *globalOptions, c *client.Client, req api.ConnectRequest, sf *specFlags, format string) error {
	err := config.WatchFile(ctx, sf.file, config.FileWatchOptions{
		// Said only once the watch is in place, so an edit made after
		// the message is re-applied.
		OnReady: func() {
			fmt.Fprintf(g.stderr, "Watching %s for changes (Ctrl-C stops watching; the sandbox stays connected).\n", sf.file)
		},
		OnChange: func() {
			sb, err := sf.load(g)
			if err != nil {
				fmt.Fprintf(g.stderr, "%s\n  the sandbox keeps its last good spec; save the file again to retry\n", formatError(err))
				return
			}
			fmt.Fprintf(g.stderr, "%s changed: re-applying\n", sf.file)
			if err := connectOnce(ctx, g, c, req, sb, format); err != nil && ctx.Err() == nil {
				fmt.Fprintln(g.stderr, formatError(err))
			}
		},
		OnWatchError: func(err error) { fmt.Fprintf(g.stderr, "  ! watching %s: %v\n", sf.file, err) },
	})
	if err != nil {
		return fmt.Errorf("watch %s: %w (the sandbox stays connected; connect again to re-apply an edit)", sf.file, err)
	}
	fmt.Fprintf(g.stderr, "Stopped watching. The sandbox stays connected; `sbx disconnect` removes it.\n")
	return nil
}

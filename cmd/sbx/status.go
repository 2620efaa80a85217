package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/sbx-dev/sbx/daemon"
	"github.com/sbx-dev/sbx/daemon/api"
	"github.com/sbx-dev/sbx/daemon/client"
	"github.com/sbx-dev/sbx/daemon/config"
	"github.com/sbx-dev/sbx/daemon/service"
)

func newStatusCmd(g *globalOptions) *cobra.Command {
	var watch bool
	cmd := &cobra.Command{
		Use:   "status [NAME]",
		Short: "Show the daemon's sandboxes: phase, routing key, mappings, tunnel",
		Long: `Status shows each connected sandbox: its phase, routing key, each mapping
with whether something listens on its local address, and the tunnel (sessions,
round-trip time, bytes, streams, reconnects, last error).

With --watch it keeps printing: in text, the status again after each change;
with -o json, one JSON event per line (the first a full snapshot).`,
		Example: `  sbx status
  sbx status alice -o json
  sbx status --watch`,
		Args:              cobra.MaximumNArgs(1),
		ValidArgsFunction: completeSandboxNames,
		RunE: func(cmd *cobra.Command, args []string) error {
			format, err := g.outputFormat("text", "json", "yaml")
			if err != nil {
				return err
			}
			ctx := cmd.Context()
			c, err := connectDaemon(ctx)
			if err != nil {
				if !errors.Is(err, errDaemonNotRunning) {
					return err // stuck, or interrupted: not "not running"
				}
				if svc := g.services(); svc.Installed() {
					m, _ := svc.Manager()
					return stateError(errDaemonNotRunning,
						fmt.Sprintf("it is installed as a %s (%s) but not running (stopped by `sbx daemon stop`, or it failed too often): %s; any command such as `sbx list` asks %s to start it",
							serviceKind(m), m.Name(), m.Diagnose(), m))
				}
				if names, serr := daemon.SavedSandboxes(daemonPaths()); serr == nil && len(names) > 0 {
					saved := fmt.Sprintf("sandboxes %s are saved and reconnect (same routing keys)", strings.Join(names, ", "))
					if len(names) == 1 {
						saved = fmt.Sprintf("sandbox %s is saved and reconnects (same routing key)", names[0])
					}
					return stateError(errDaemonNotRunning, saved+" when it starts: run `sbx daemon`, or any command such as `sbx list`")
				}
				return err
			}
			defer c.Close()
			name := ""
			if len(args) == 1 {
				name = args[0]
			}
			if !watch {
				if name != "" {
					sb, err := connectedSandbox(ctx, c, name)
					if err != nil {
						return err
					}
					return printValue(g.stdout, format, sb, func() string { return renderSandbox(sb, time.Now()) })
				}
				st, err := c.Status(ctx)
				if err != nil {
					return classify(err, "")
				}
				return printValue(g.stdout, format, st, func() string { return renderStatus(st, time.Now()) })
			}
			return watchStatus(cmd, g, c, name, format)
		},
	}
	cmd.Flags().BoolVarP(&watch, "watch", "w", false, "keep printing changes until interrupted")
	return cmd
}

// connectedSandbox asks the daemon for one sandbox; one it does not know
// is a usage error that says how to connect it.
func connectedSandbox(ctx context.Context, c *client.Client, name string) (api.SandboxStatus, error) {
	sb, err := c.Sandbox(ctx, name)
	if err != nil {
		if api.IsNotFound(err) {
			return sb, userError(err, "connect it with `sbx connect -f FILE`")
		}
		return sb, classify(err, "")
	}
	return sb, nil
}

// watchStatus follows the daemon's watch stream. Text re-renders the whole
// (or the named sandbox's) status after each change; json/yaml print each
// event.
func watchStatus(cmd *cobra.Command, g *globalOptions, c *client.Client, name, format string) error {
	ctx := cmd.Context()
	for {
		w, err := c.Watch(ctx)
		if err != nil {
			if ctx.Err() != nil {
				return exitError(exitInterrupted) // Ctrl-C ends a watch: 130
			}
			return err
		}
		var st api.Status
		err = func() error {
			defer w.Close()
			for {
				ev, err := w.Next()
				if err != nil {
					return err
				}
				st.Apply(ev)
				if format != "text" {
					if name != "" && ev.Snapshot == nil && (ev.Sandbox == nil || ev.Sandbox.Name != name) && ev.Removed != name {
						continue
					}
					if err := printEvent(g.stdout, format, ev); err != nil {
						return err
					}
					continue
				}
				now := time.Now()
				text := renderStatus(st, now)
				if name != "" {
					text = fmt.Sprintf("sandbox %s is not connected", name)
					for _, sb := range st.Sandboxes {
						if sb.Name == name {
							text = renderSandbox(sb, now)
						}
					}
				}
				fmt.Fprintf(g.stdout, "── %s ──\n%s\n", now.Format("15:04:05"), text)
			}
		}()
		switch {
		case ctx.Err() != nil:
			return exitError(exitInterrupted)
		case errors.Is(err, api.ErrWatchDropped):
			continue // fell behind: start over with a fresh snapshot
		case errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF):
			// A failure, not a usage error: exit 1.
			return &cliError{kind: kindUser, code: 1, err: errors.New("the sbx daemon ended the watch (it stopped)"),
				hint: "start it again with `sbx daemon` or any connect; its sandboxes reconnect with their routing keys"}
		default:
			return err
		}
	}
}

// renderOutbound says how local processes reach cluster names: the mode,
// where (hosts file or proxy address), how many Services, and what is
// wrong.
func renderOutbound(o api.OutboundStatus) string {
	var b strings.Builder
	b.WriteString("outbound: ")
	switch {
	case o.Error != "":
		fmt.Fprintf(&b, "%s, NOT running: %s", o.Mode, o.Error)
	case o.HostsFile != "":
		fmt.Fprintf(&b, "hosts file %s, %d Service(s)", o.HostsFile, len(o.Services))
	case o.ProxyAddr != "":
		fmt.Fprintf(&b, "proxy %s (HTTP and SOCKS5, password-protected; `sbx run` and `sbx env` pass it), %d Service(s)", o.ProxyAddr, o.Discovered)
	case o.Mode == string(config.ModeOff):
		b.WriteString("off (outbound.mode in the sbx config)")
	default:
		b.WriteString(string(o.Mode))
	}
	if len(o.Namespaces) > 0 && o.Error == "" {
		fmt.Fprintf(&b, " in %s", strings.Join(o.Namespaces, ", "))
	}
	if o.Note != "" {
		fmt.Fprintf(&b, " (%s)", o.Note)
	}
	b.WriteString("\n")
	if len(o.Pending) > 0 {
		fmt.Fprintf(&b, "  Services of %s not listed yet (can your kube user list and watch Services there?)\n", strings.Join(o.Pending, ", "))
	}
	for _, s := range o.Services {
		for _, p := range s.Ports {
			if p.Error != "" {
				fmt.Fprintf(&b, "  %s port %d not reachable: %s\n", s.Service, p.Port, p.Error)
			}
		}
	}
	return b.String()
}

func renderStatus(st api.Status, now time.Time) string {
	var b strings.Builder
	fmt.Fprintf(&b, "sbx daemon %s (pid %d), log %s\n", st.Version, st.PID, st.LogPath)
	b.WriteString(renderManaged(st.Managed) + "\n")
	if st.ConfigError != "" {
		fmt.Fprintf(&b, "! %s\n", st.ConfigError)
	}
	if st.Outbound != nil {
		b.WriteString(renderOutbound(*st.Outbound))
	}
	if len(st.Sandboxes) == 0 {
		b.WriteString("no sandboxes connected; connect one with `sbx connect -f FILE`")
		return b.String()
	}
	for i, sb := range st.Sandboxes {
		if i > 0 {
			b.WriteString("\n")
		}
		b.WriteString(renderSandbox(sb, now))
	}
	return strings.TrimRight(b.String(), "\n")
}

// renderManaged says in one line whether something restarts the daemon
// when it fails.
func renderManaged(manager string) string {
	switch m := service.Manager(manager); {
	case m == "":
		return "daemon: started on demand or by hand, nothing restarts it if it stops; `sbx daemon --install` keeps it running"
	case m.RestartsOnFailure():
		return fmt.Sprintf("daemon: managed by %s (restarts on failure)", m)
	default:
		return fmt.Sprintf("daemon: managed by %s", m)
	}
}

func renderSandbox(sb api.SandboxStatus, now time.Time) string {
	var b strings.Builder
	fmt.Fprintf(&b, "%s  %s", sb.Name, sb.Phase)
	if !sb.ReadySince.IsZero() {
		fmt.Fprintf(&b, " for %s", now.Sub(sb.ReadySince).Round(time.Second))
	}
	fmt.Fprintf(&b, "  key %s", sb.RoutingKey)
	if sb.Context != "" {
		fmt.Fprintf(&b, "  context %s", sb.Context)
	}
	b.WriteString("\n")
	for _, m := range sb.Mappings {
		state := "listening"
		if !m.Listening {
			state = "NOT listening (start your service there)"
		}
		fmt.Fprintf(&b, "  %s.%s:%d -> %s  %s\n", m.Workload, m.Namespace, m.Port, m.ToLocal, state)
	}
	fmt.Fprintf(&b, "  tunnel: %d session(s), rtt %s, %d stream(s), in %s, out %s, %d reconnect(s)\n",
		sb.Sessions, sb.RTT.Round(10*time.Microsecond), sb.Streams, humanBytes(sb.BytesIn), humanBytes(sb.BytesOut), sb.Reconnects)
	if r := sb.Routes; r != nil {
		b.WriteString("  routes: " + renderRouteState(sb.Name, *r, now) + "\n")
	}
	if sb.LastError != "" {
		fmt.Fprintf(&b, "  last error (%s ago): %s\n", now.Sub(sb.LastErrorAt).Round(time.Second), sb.LastError)
	}
	return strings.TrimRight(b.String(), "\n")
}

// renderRouteState says in one line whether keyed requests reach the
// sandbox and how often the daemon had to put its routes back.
func renderRouteState(name string, r api.RouteState, now time.Time) string {
	var b strings.Builder
	switch r.Keyed {
	case api.KeyedSandbox:
		b.WriteString("effective (keyed requests reach the sandbox from every namespace)")
	case api.KeyedPartial:
		b.WriteString("PARTIAL: " + r.Message)
	default:
		b.WriteString("NOT effective: " + r.Message)
	}
	if r.Restored > 0 {
		fmt.Fprintf(&b, "; restored %d time(s), last %s ago in %s", r.Restored, now.Sub(r.RestoredAt).Round(time.Second), strings.Join(r.RestoredIn, ", "))
	}
	if r.Error != "" {
		fmt.Fprintf(&b, "; last check failed: %s", r.Error)
	}
	if r.Keyed != api.KeyedSandbox || len(r.Warnings) > 0 {
		b.WriteString(" (`sbx routes " + name + "` shows each client namespace)")
	}
	return b.String()
}

func humanBytes(n int64) string {
	const unit = 1024
	if n < unit {
		return fmt.Sprintf("%d B", n)
	}
	div, exp := int64(unit), 0
	for m := n / unit; m >= unit; m /= unit {
		div *= unit
		exp++
	}
	return fmt.Sprintf("%.1f %ciB", float64(n)/float64(div), "KMGTPE"[exp])
}

// printEvent writes one watch event: a single line of JSON (NDJSON, for
// jq and scripts) or a YAML document.
func printEvent(w io.Writer, format string, ev api.Event) error {
	if format == "json" {
		return json.NewEncoder(w).Encode(ev)
	}
	if _, err := io.WriteString(w, "---\n"); err != nil {
		return err
	}
	return printValue(w, format, ev, nil)
}

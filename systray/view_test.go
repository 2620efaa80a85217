package systray

import (
	"strings"
	"testing"

	"github.com/sbx-dev/sbx/daemon/api"
	"github.com/stretchr/testify/require"
)

// renderMenu draws a menu as indented text: "-" for separators, "[x]" for
// disabled entries and "{kind}" for entries with an action.
func renderMenu(items []Item) string {
	var b strings.Builder
	var walk func([]Item, int)
	walk = func(items []Item, depth int) {
		for _, it := range items {
			b.WriteString(strings.Repeat("  ", depth))
			switch {
			case it.Separator:
				b.WriteString("-")
			default:
				b.WriteString(it.Label)
				if it.Disabled {
					b.WriteString(" [x]")
				}
				if it.Action.Kind != ActionNone {
					b.WriteString(" {" + it.Action.Kind.String() + "}")
				}
			}
			b.WriteString("\n")
			walk(it.Children, depth+1)
		}
	}
	walk(items, 0)
	return b.String()
}

// findItem returns the item reached by following labels from the top.
func findItem(items []Item, path ...string) (Item, bool) {
	for i, label := range path {
		found := false
		for _, it := range items {
			if it.Label == label {
				if i == len(path)-1 {
					return it, true
				}
				items, found = it.Children, true
				break
			}
		}
		if !found {
			return Item{}, false
		}
	}
	return Item{}, false
}

func withSandboxes(sbs ...api.SandboxStatus) api.Status {
	st := sampleStatus()
	st.Sandboxes = sbs
	return st
}

func sandbox(name string, phase api.Phase, listening ...bool) api.SandboxStatus {
	sb := sampleStatus().Sandboxes[0]
	sb.Name, sb.Phase = name, phase
	sb.Mappings = nil
	ports := []int32{8083, 8081, 8082}
	for i, l := range listening {
		sb.Mappings = append(sb.Mappings, api.MappingStatus{Workload: []string{"route", "customer", "driver"}[i],
			Namespace: "hotrod", Port: ports[i], ToLocal: "localhost:" + []string{"8083", "8081", "8082"}[i], Listening: l})
	}
	return sb
}

func TestBuildViewStates(t *testing.T) {
	failed := sandbox("bob", api.PhaseFailed, true)
	failed.LastError = "relay pod hotrod/route-sbx-k3x not ready after 60s: ImagePullBackOff"
	cases := []struct {
		name    string
		snap    Snapshot
		icon    IconState
		tooltip string
	}{
		{"connecting", Snapshot{Daemon: DaemonConnecting}, IconDisconnected, "sbx: connecting to the daemon"},
		{"down", Snapshot{Daemon: DaemonDown, DownReason: "no socket"}, IconDisconnected, "sbx: daemon not running"},
		{"no sandboxes", Snapshot{Daemon: DaemonRunning, Status: withSandboxes()}, IconDisconnected, "sbx: no sandboxes"},
		{"one ready", Snapshot{Daemon: DaemonRunning, Status: withSandboxes(sandbox("alice", api.PhaseReady, true))},
			IconConnected, "sbx: 1 sandbox · ready"},
		{"two ready", Snapshot{Daemon: DaemonRunning, Status: withSandboxes(
			sandbox("alice", api.PhaseReady, true), sandbox("bob", api.PhaseReady))},
			IconConnected, "sbx: 2 sandboxes · all ready"},
		{"one reconnecting", Snapshot{Daemon: DaemonRunning, Status: withSandboxes(
			sandbox("alice", api.PhaseReady, true), sandbox("bob", api.PhaseReconnecting, true))},
			IconDegraded, "sbx: 2 sandboxes · 1 reconnecting"},
		{"target down", Snapshot{Daemon: DaemonRunning, Status: withSandboxes(sandbox("alice", api.PhaseReady, true, false, false))},
			IconDegraded, "sbx: 1 sandbox · 2 targets not listening"},
		{"connecting phases merge", Snapshot{Daemon: DaemonRunning, Status: withSandboxes(
			sandbox("a", api.PhaseApplying), sandbox("b", api.PhaseWaitingRelay), sandbox("c", api.PhaseConnecting))},
			IconDegraded, "sbx: 3 sandboxes · 3 connecting"},
		{"failed wins", Snapshot{Daemon: DaemonRunning, Status: withSandboxes(
			sandbox("alice", api.PhaseReconnecting, false), failed)},
			IconError, "sbx: 2 sandboxes · 1 reconnecting · 1 failed · 1 target not listening"},
		{"config error", Snapshot{Daemon: DaemonRunning, Status: func() api.Status {
			st := withSandboxes(sandbox("alice", api.PhaseReady, true))
			st.ConfigError = "config.yaml line 3: unknown field relayImg"
			return st
		}()}, IconError, "sbx: 1 sandbox · ready · config error"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			v := BuildView(tc.snap)
			require.Equal(t, tc.icon, v.Icon)
			require.Equal(t, tc.tooltip, v.Tooltip)
			require.Equal(t, "sbx", v.Title)
			// Every menu ends with the log and quit entries.
			n := len(v.Items)
			require.GreaterOrEqual(t, n, 3)
			require.True(t, v.Items[n-3].Separator)
			require.Equal(t, labelOpenLog, v.Items[n-2].Label)
			require.Equal(t, Action{Kind: ActionQuit}, v.Items[n-1].Action)
		})
	}
}

func TestBuildViewMenu(t *testing.T) {
	st := withSandboxes(sandbox("alice", api.PhaseReady, true, false))
	got := renderMenu(BuildView(Snapshot{Daemon: DaemonRunning, Status: st}).Items)
	want := `alice — ready, 1 target not listening
  Routing key: k3x9a0b1c2d3e [x]
  Copy routing key {copy}
  Copy baggage header {copy}
  Copy curl example {copy}
  -
  route :8083 → localhost:8083 ● [x]
  customer :8081 → localhost:8081 ○ [x]
  -
  Disconnect {disconnect}
-
Open log {open-log}
Quit tray {quit}
`
	require.Equal(t, want, got)
}

func TestBuildViewActions(t *testing.T) {
	st := sampleStatus()
	v := BuildView(Snapshot{Daemon: DaemonRunning, Status: st})
	cases := []struct {
		path []string
		want Action
	}{
		{[]string{"alice — ready", labelCopyKey}, Action{Kind: ActionCopy, Sandbox: "alice", Text: "k3x9a0b1c2d3e", What: "routing key"}},
		{[]string{"alice — ready", labelCopyBaggage}, Action{Kind: ActionCopy, Sandbox: "alice",
			Text: "baggage: sbx-routing-key=k3x9a0b1c2d3e", What: "baggage header"}},
		{[]string{"alice — ready", labelCopyCurl}, Action{Kind: ActionCopy, Sandbox: "alice",
			Text: "curl -H 'baggage: sbx-routing-key=k3x9a0b1c2d3e' http://route.hotrod:8083/", What: "curl example"}},
		{[]string{"alice — ready", labelDisconnect}, Action{Kind: ActionDisconnect, Sandbox: "alice"}},
		{[]string{labelOpenLog}, Action{Kind: ActionOpenLog, Text: st.LogPath}},
		{[]string{labelQuit}, Action{Kind: ActionQuit}},
	}
	for _, tc := range cases {
		t.Run(strings.Join(tc.path, "/"), func(t *testing.T) {
			it, ok := findItem(v.Items, tc.path...)
			require.True(t, ok, renderMenu(v.Items))
			require.False(t, it.Disabled)
			require.Equal(t, tc.want, it.Action)
		})
	}
}

func TestBuildViewDaemonDown(t *testing.T) {
	v := BuildView(Snapshot{Daemon: DaemonDown, DownReason: "dial unix: no such file", LogPath: "/tmp/daemon.log"})
	require.Equal(t, `Daemon not running [x]
Start daemon {start-daemon}
-
Open log {open-log}
Quit tray {quit}
`, renderMenu(v.Items))
	require.Equal(t, "dial unix: no such file", v.Items[0].Tooltip)
	require.Equal(t, "/tmp/daemon.log", v.Items[3].Action.Text)

	// While a start is in flight the entry cannot be clicked twice; without
	// a known log path "Open log" is disabled rather than broken.
	v = BuildView(Snapshot{Daemon: DaemonDown, Starting: true})
	require.Equal(t, `Daemon not running [x]
Starting daemon… [x]
-
Open log [x]
Quit tray {quit}
`, renderMenu(v.Items))
}

func TestBuildViewSandboxDetails(t *testing.T) {
	t.Run("no routing key yet", func(t *testing.T) {
		sb := sandbox("alice", api.PhaseApplying)
		sb.RoutingKey = ""
		v := BuildView(Snapshot{Daemon: DaemonRunning, Status: withSandboxes(sb)})
		require.Equal(t, `alice — connecting
  Routing key: (not assigned yet) [x]
  -
  Disconnect {disconnect}
`, renderMenu(v.Items[:1]))
	})
	t.Run("disconnecting", func(t *testing.T) {
		v := BuildView(Snapshot{Daemon: DaemonRunning, Status: withSandboxes(sandbox("alice", api.PhaseDisconnecting))})
		it, ok := findItem(v.Items, "alice — disconnecting", labelDisconnecting)
		require.True(t, ok, renderMenu(v.Items))
		require.True(t, it.Disabled)
	})
	t.Run("last error and namespaces", func(t *testing.T) {
		sb := sandbox("alice", api.PhaseReconnecting, true)
		sb.Namespaces = []string{"hotrod", "payments"}
		sb.LastError = "port-forward to relay pod hotrod/route-sbx-k3x: connection reset by peer; retrying in 2s with a much longer explanation"
		sb.BaggageKey = "x-sandbox"
		v := BuildView(Snapshot{Daemon: DaemonRunning, Status: withSandboxes(sb)})
		require.Equal(t, sb.LastError, v.Items[0].Tooltip)
		_, ok := findItem(v.Items, "alice — reconnecting", "route.hotrod :8083 → localhost:8083 ●")
		require.True(t, ok, renderMenu(v.Items))
		it, ok := findItem(v.Items, "alice — reconnecting", labelCopyBaggage)
		require.True(t, ok)
		require.Equal(t, "baggage: x-sandbox=k3x9a0b1c2d3e", it.Action.Text)
		var lastErr Item
		for _, c := range v.Items[0].Children {
			if strings.HasPrefix(c.Label, "Last error: ") {
				lastErr = c
			}
		}
		require.Equal(t, sb.LastError, lastErr.Tooltip)
		require.LessOrEqual(t, len([]rune(lastErr.Label)), len("Last error: ")+60)
		require.True(t, strings.HasSuffix(lastErr.Label, "…"))
	})
	t.Run("routes", func(t *testing.T) {
		sb := sandbox("alice", api.PhaseReady, true)
		sb.Routes = &api.RouteState{Keyed: api.KeyedSandbox, Restored: 2, RestoredIn: []string{"hotrod/route"}}
		v := BuildView(Snapshot{Daemon: DaemonRunning, Status: withSandboxes(sb)})
		it, ok := findItem(v.Items, "alice — ready", "Routes: effective (restored 2×)")
		require.True(t, ok, renderMenu(v.Items))
		require.True(t, it.Disabled)
		require.Contains(t, it.Tooltip, "hotrod/route")

		sb.Routes = &api.RouteState{Keyed: api.KeyedPartial,
			Message: "keyed requests to route.hotrod:8083 from other namespaces reach the baseline: VirtualService platform/wild routes route"}
		v = BuildView(Snapshot{Daemon: DaemonRunning, Status: withSandboxes(sb)})
		var got Item
		for _, c := range v.Items[0].Children {
			if strings.HasPrefix(c.Label, "Routes: ") {
				got = c
			}
		}
		require.True(t, strings.HasPrefix(got.Label, "Routes: partial: keyed requests"), got.Label)
		require.Equal(t, sb.Routes.Message, got.Tooltip)
	})
	t.Run("config error", func(t *testing.T) {
		st := withSandboxes()
		st.ConfigError = "config.yaml:3: unknown field"
		v := BuildView(Snapshot{Daemon: DaemonRunning, Status: st})
		require.Equal(t, `No sandboxes (run `+"`sbx connect`"+`) [x]
Config error: config.yaml:3: unknown field [x]
-
Open log {open-log}
Quit tray {quit}
`, renderMenu(v.Items))
		require.Equal(t, "sbx: no sandboxes · config error", v.Tooltip)
	})
}

func TestCurlExample(t *testing.T) {
	sb := sampleStatus().Sandboxes[0]
	sb.Mappings[0].Namespace = ""
	require.Equal(t, "curl -H 'baggage: sbx-routing-key=k3x9a0b1c2d3e' http://route:8083/", CurlExample(sb))
	sb.Mappings = nil
	require.Empty(t, CurlExample(sb))
}

func TestEscapeMnemonic(t *testing.T) {
	require.Equal(t, "/home/a__b/x__y", escapeMnemonic("_")("/home/a_b/x_y"))
	require.Equal(t, "R&&D", escapeMnemonic("&")("R&D"))
	require.Equal(t, "plain", escapeMnemonic("_")("plain"))
}

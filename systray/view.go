package systray

import (
	"fmt"
	"net"
	"strconv"
	"strings"

	"github.com/sbx-dev/sbx/cluster/routingkey"
	"github.com/sbx-dev/sbx/daemon/api"
)

// IconState is what the tray icon shows at a glance.
type IconState int

// Icon states, from "nothing to see" to "look at me".
const (
	// IconDisconnected: the daemon is not running or holds no sandbox.
	IconDisconnected IconState = iota
	// IconConnected: every sandbox is ready and every local target listens.
	IconConnected
	// IconDegraded: a sandbox is on its way up or reconnecting, or a local
	// target does not accept connections.
	IconDegraded
	// IconError: a sandbox failed or the daemon's config does not load.
	IconError
)

func (s IconState) String() string {
	switch s {
	case IconConnected:
		return "connected"
	case IconDegraded:
		return "degraded"
	case IconError:
		return "error"
	default:
		return "disconnected"
	}
}

// DaemonState is whether the tray currently talks to a daemon.
type DaemonState int

// Daemon states as the tray sees them.
const (
	// DaemonConnecting: the tray has not reached the daemon yet.
	DaemonConnecting DaemonState = iota
	// DaemonRunning: the watch stream is up and Status holds its state.
	DaemonRunning
	// DaemonDown: the daemon did not answer; the tray keeps retrying.
	DaemonDown
)

// Snapshot is everything the view is built from. It is plain data so the
// menu can be derived (and tested) as a pure function.
type Snapshot struct {
	Daemon DaemonState
	// Status is the daemon's last full status; meaningful when Daemon is
	// DaemonRunning.
	Status api.Status
	// DownReason says why the daemon is unreachable (DaemonDown).
	DownReason string
	// Starting is set while a "Start daemon" click is being carried out.
	Starting bool
	// LogPath is where the daemon logs when Status does not say (daemon
	// down): the default log location.
	LogPath string
}

// ActionKind says what a menu click does.
type ActionKind int

// Menu actions.
const (
	ActionNone ActionKind = iota
	ActionCopy
	ActionDisconnect
	ActionStartDaemon
	ActionOpenLog
	ActionQuit
)

func (k ActionKind) String() string {
	switch k {
	case ActionCopy:
		return "copy"
	case ActionDisconnect:
		return "disconnect"
	case ActionStartDaemon:
		return "start-daemon"
	case ActionOpenLog:
		return "open-log"
	case ActionQuit:
		return "quit"
	default:
		return "none"
	}
}

// Action is what a click on a menu item asks for. It carries all the data
// needed to carry it out, so a click on a menu that has since been rebuilt
// still does what the user saw.
type Action struct {
	Kind ActionKind
	// Sandbox names the sandbox for ActionDisconnect (and ActionCopy).
	Sandbox string
	// Text is what ActionCopy puts on the clipboard; the log path for
	// ActionOpenLog.
	Text string
	// What names the copied thing for messages ("routing key").
	What string
}

// Item is one menu entry. A zero Action means the entry is informational.
type Item struct {
	Label     string
	Tooltip   string
	Disabled  bool
	Separator bool
	Action    Action
	Children  []Item
}

// View is everything the tray shows: icon, texts and menu.
type View struct {
	Icon    IconState
	Title   string
	Tooltip string
	Items   []Item
}

// Menu labels the tests and the D-Bus checks look for.
const (
	labelNoSandboxes   = "No sandboxes (run `sbx connect`)"
	labelConnecting    = "Connecting to the sbx daemon…"
	labelDaemonDown    = "Daemon not running"
	labelStartDaemon   = "Start daemon"
	labelStarting      = "Starting daemon…"
	labelOpenLog       = "Open log"
	labelQuit          = "Quit tray"
	labelCopyKey       = "Copy routing key"
	labelCopyBaggage   = "Copy baggage header"
	labelCopyCurl      = "Copy curl example"
	labelDisconnect    = "Disconnect"
	labelDisconnecting = "Disconnecting…"
)

// BuildView derives the whole tray view from a snapshot. It is pure: the
// event loop calls it after every change and applies the result only when
// it differs from what is shown.
func BuildView(s Snapshot) View {
	v := View{Title: "sbx"}
	var items []Item
	logPath := s.LogPath

	switch s.Daemon {
	case DaemonConnecting:
		v.Icon = IconDisconnected
		v.Tooltip = "sbx: connecting to the daemon"
		items = append(items, Item{Label: labelConnecting, Disabled: true})
	case DaemonDown:
		v.Icon = IconDisconnected
		v.Tooltip = "sbx: daemon not running"
		items = append(items, Item{Label: labelDaemonDown, Tooltip: s.DownReason, Disabled: true})
		if s.Starting {
			items = append(items, Item{Label: labelStarting, Disabled: true})
		} else {
			items = append(items, Item{Label: labelStartDaemon, Tooltip: "start `sbx daemon` in the background",
				Action: Action{Kind: ActionStartDaemon}})
		}
	default:
		st := s.Status
		if st.LogPath != "" {
			logPath = st.LogPath
		}
		v.Icon = iconFor(st)
		v.Tooltip = "sbx: " + Summary(st)
		if len(st.Sandboxes) == 0 {
			items = append(items, Item{Label: labelNoSandboxes, Disabled: true})
		}
		for _, sb := range st.Sandboxes {
			items = append(items, sandboxItem(sb))
		}
		if st.ConfigError != "" {
			items = append(items, Item{Label: "Config error: " + ellipsize(st.ConfigError, 60),
				Tooltip: st.ConfigError, Disabled: true})
		}
	}

	items = append(items, Item{Separator: true})
	openLog := Item{Label: labelOpenLog, Tooltip: logPath, Action: Action{Kind: ActionOpenLog, Text: logPath}}
	if logPath == "" {
		openLog = Item{Label: labelOpenLog, Tooltip: "the daemon's log location is not known yet", Disabled: true}
	}
	items = append(items, openLog, Item{Label: labelQuit, Tooltip: "close the tray icon; sandboxes stay connected",
		Action: Action{Kind: ActionQuit}})
	v.Items = items
	return v
}

// iconFor picks the icon for a running daemon's status: the worst sandbox
// decides.
func iconFor(st api.Status) IconState {
	if st.ConfigError != "" {
		return IconError
	}
	if len(st.Sandboxes) == 0 {
		return IconDisconnected
	}
	icon := IconConnected
	for _, sb := range st.Sandboxes {
		switch {
		case sb.Phase == api.PhaseFailed:
			return IconError
		case sb.Phase != api.PhaseReady || targetsDown(sb) > 0:
			icon = IconDegraded
		}
	}
	return icon
}

// Summary is the one-line state used in the tooltip, e.g.
// "2 sandboxes · 1 reconnecting".
func Summary(st api.Status) string {
	n := len(st.Sandboxes)
	if n == 0 {
		s := "no sandboxes"
		if st.ConfigError != "" {
			s += " · config error"
		}
		return s
	}
	parts := []string{plural(n, "sandbox", "sandboxes")}
	counts := map[string]int{}
	var order []string
	down := 0
	for _, sb := range st.Sandboxes {
		if sb.Phase != api.PhaseReady {
			w := phaseWord(sb.Phase)
			if counts[w] == 0 {
				order = append(order, w)
			}
			counts[w]++
		}
		down += targetsDown(sb)
	}
	for _, w := range order {
		parts = append(parts, fmt.Sprintf("%d %s", counts[w], w))
	}
	if down > 0 {
		parts = append(parts, plural(down, "target not listening", "targets not listening"))
	}
	if len(order) == 0 && down == 0 {
		if n == 1 {
			parts = append(parts, "ready")
		} else {
			parts = append(parts, "all ready")
		}
	}
	if st.ConfigError != "" {
		parts = append(parts, "config error")
	}
	return strings.Join(parts, " · ")
}

// phaseWord is how a phase reads in a sentence; the steps towards ready
// are all "connecting" to the user.
func phaseWord(p api.Phase) string {
	switch p {
	case api.PhaseApplying, api.PhaseWaitingRelay, api.PhaseConnecting:
		return "connecting"
	case "":
		return "unknown"
	default:
		return string(p)
	}
}

func plural(n int, one, many string) string {
	if n == 1 {
		return "1 " + one
	}
	return strconv.Itoa(n) + " " + many
}

func targetsDown(sb api.SandboxStatus) int {
	n := 0
	for _, m := range sb.Mappings {
		if !m.Listening {
			n++
		}
	}
	return n
}

// sandboxItem is the entry of one sandbox with its submenu.
func sandboxItem(sb api.SandboxStatus) Item {
	state := phaseWord(sb.Phase)
	if sb.Phase == api.PhaseReady {
		state = "ready"
		if d := targetsDown(sb); d > 0 {
			state = "ready, " + plural(d, "target not listening", "targets not listening")
		}
	}
	it := Item{Label: sb.Name + " — " + state}
	if sb.LastError != "" {
		it.Tooltip = sb.LastError
	}

	key := sb.RoutingKey
	var sub []Item
	if key == "" {
		sub = append(sub, Item{Label: "Routing key: (not assigned yet)", Disabled: true})
	} else {
		sub = append(sub,
			Item{Label: "Routing key: " + key, Disabled: true},
			Item{Label: labelCopyKey, Action: Action{Kind: ActionCopy, Sandbox: sb.Name, Text: key, What: "routing key"}},
			Item{Label: labelCopyBaggage, Action: Action{Kind: ActionCopy, Sandbox: sb.Name,
				Text: BaggageHeader(sb), What: "baggage header"}})
		if curl := CurlExample(sb); curl != "" {
			sub = append(sub, Item{Label: labelCopyCurl, Tooltip: curl,
				Action: Action{Kind: ActionCopy, Sandbox: sb.Name, Text: curl, What: "curl example"}})
		}
	}
	if len(sb.Mappings) > 0 {
		sub = append(sub, Item{Separator: true})
		multiNS := len(sb.Namespaces) > 1
		for _, m := range sb.Mappings {
			sub = append(sub, mappingItem(m, multiNS))
		}
	}
	if it := routesItem(sb.Routes); it != nil {
		sub = append(sub, Item{Separator: true}, *it)
	}
	if sb.LastError != "" {
		sub = append(sub, Item{Separator: true},
			Item{Label: "Last error: " + ellipsize(sb.LastError, 60), Tooltip: sb.LastError, Disabled: true})
	}
	sub = append(sub, Item{Separator: true})
	if sb.Phase == api.PhaseDisconnecting {
		sub = append(sub, Item{Label: labelDisconnecting, Disabled: true})
	} else {
		sub = append(sub, Item{Label: labelDisconnect, Tooltip: "remove the sandbox's cluster objects and close its tunnel",
			Action: Action{Kind: ActionDisconnect, Sandbox: sb.Name}})
	}
	it.Children = sub
	return it
}

// routesItem says whether keyed requests reach the sandbox, and how often
// the daemon had to put its routes back: "Routes: effective (restored 2×)"
// or "Routes: partial: keyed requests to … reach the baseline".
func routesItem(r *api.RouteState) *Item {
	if r == nil {
		return nil
	}
	label := "Routes: effective"
	tip := "keyed requests reach the sandbox from every namespace"
	switch r.Keyed {
	case api.KeyedSandbox:
	case api.KeyedPartial:
		label, tip = "Routes: partial: "+ellipsize(r.Message, 50), r.Message
	default:
		label, tip = "Routes: NOT effective: "+ellipsize(r.Message, 50), r.Message
	}
	if r.Restored > 0 {
		label += fmt.Sprintf(" (restored %d×)", r.Restored)
		tip += "; the daemon put the routes back after something removed them (" + strings.Join(r.RestoredIn, ", ") + ")"
	}
	if r.Error != "" {
		tip += "; last check failed: " + r.Error
	}
	return &Item{Label: label, Tooltip: tip, Disabled: true}
}

// mappingItem reads like `route :8083 → localhost:8083 ●`; the dot is
// filled when the local target accepts connections.
func mappingItem(m api.MappingStatus, withNamespace bool) Item {
	name := m.Workload
	if withNamespace && m.Namespace != "" {
		name += "." + m.Namespace
	}
	dot, tip := "○", "nothing accepts connections on "+m.ToLocal+": start your service there"
	if m.Listening {
		dot, tip = "●", "your service accepts connections on "+m.ToLocal
	}
	return Item{Label: fmt.Sprintf("%s :%d → %s %s", name, m.Port, m.ToLocal, dot), Tooltip: tip, Disabled: true}
}

// BaggageHeader is the header line that routes a request to the sandbox.
func BaggageHeader(sb api.SandboxStatus) string {
	k := sb.BaggageKey
	if k == "" {
		k = routingkey.DefaultBaggageKey
	}
	return "baggage: " + k + "=" + sb.RoutingKey
}

// CurlExample is a ready-to-paste request to the sandbox's first mapped
// workload through its cluster name, or "" when nothing is mapped.
func CurlExample(sb api.SandboxStatus) string {
	if len(sb.Mappings) == 0 || sb.RoutingKey == "" {
		return ""
	}
	m := sb.Mappings[0]
	// workload.namespace, as `sbx connect` prints it: it resolves in the
	// cluster and through the daemon's outbound access on the laptop.
	host := m.Workload
	if m.Namespace != "" {
		host += "." + m.Namespace
	}
	url := "http://" + net.JoinHostPort(host, strconv.Itoa(int(m.Port))) + "/"
	return fmt.Sprintf("curl -H '%s' %s", BaggageHeader(sb), url)
}

// ellipsize keeps menu labels short; the full text goes in the tooltip.
func ellipsize(s string, n int) string {
	s = strings.Join(strings.Fields(s), " ")
	r := []rune(s)
	if len(r) <= n {
		return s
	}
	return string(r[:n-1]) + "…"
}

// escapeMnemonic returns a function that doubles marker in menu labels, so
// a label shows it literally instead of underlining the next letter.
func escapeMnemonic(marker string) func(string) string {
	return func(s string) string { return strings.ReplaceAll(s, marker, marker+marker) }
}

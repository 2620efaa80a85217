//go:build linux && !race

package systray

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/godbus/dbus/v5"
	"github.com/godbus/dbus/v5/prop"
	"github.com/stretchr/testify/require"
)

// startSessionBus starts a private dbus-daemon for the test and returns its
// address. The config is a session bus without service activation, so no
// desktop service on the machine can interfere.
func startSessionBus(t *testing.T) string {
	t.Helper()
	bin, err := exec.LookPath("dbus-daemon")
	if err != nil {
		t.Skip("dbus-daemon is not installed, so the tray cannot be tested on a real session bus; " +
			"install it with `apt-get install -y dbus` (.ci/run does)")
	}
	// A short directory: unix socket paths are limited to 108 bytes.
	dir, err := os.MkdirTemp("", "sbx-dbus-")
	require.NoError(t, err)
	t.Cleanup(func() { _ = os.RemoveAll(dir) })
	cfg := filepath.Join(dir, "session.conf")
	require.NoError(t, os.WriteFile(cfg, []byte(`<!DOCTYPE busconfig PUBLIC "-//freedesktop//DTD D-Bus Bus Configuration 1.0//EN"
 "http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd">
<busconfig>
  <type>session</type>
  <listen>unix:dir=`+dir+`</listen>
  <auth>EXTERNAL</auth>
  <policy context="default">
    <allow send_destination="*" eavesdrop="true"/>
    <allow eavesdrop="true"/>
    <allow own="*"/>
  </policy>
</busconfig>
`), 0o600))

	cmd := exec.Command(bin, "--config-file="+cfg, "--nofork", "--nopidfile", "--print-address=1")
	stdout, err := cmd.StdoutPipe()
	require.NoError(t, err)
	var stderr strings.Builder
	cmd.Stderr = &stderr
	require.NoError(t, cmd.Start())
	waited := make(chan struct{})
	go func() {
		_ = cmd.Wait()
		close(waited)
	}()
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		<-waited
	})

	addr := make(chan string, 1)
	go func() {
		line, _ := bufio.NewReader(stdout).ReadString('\n')
		addr <- strings.TrimSpace(line)
	}()
	select {
	case a := <-addr:
		require.NotEmpty(t, a, "dbus-daemon printed no address: %s", stderr.String())
		return a
	case <-time.After(20 * time.Second):
		t.Fatalf("dbus-daemon did not print its address: %s", stderr.String())
		return ""
	}
}

// snWatcher is a minimal org.kde.StatusNotifierWatcher (what a panel such as
// KDE's or waybar runs) that records registrations. It also plays the
// freedesktop Notifications service to catch the tray's fallback messages.
type snWatcher struct {
	conn *dbus.Conn

	mu    sync.Mutex
	items []string // "sender/path"
	notes []string // "summary\nbody"
}

func startWatcher(t *testing.T, addr string) *snWatcher {
	t.Helper()
	conn, err := dbus.Connect(addr)
	require.NoError(t, err)
	w := &snWatcher{conn: conn}
	t.Cleanup(func() { _ = conn.Close() })

	require.NoError(t, conn.Export(watcherMethods{w}, "/StatusNotifierWatcher", "org.kde.StatusNotifierWatcher"))
	_, err = prop.Export(conn, "/StatusNotifierWatcher", map[string]map[string]*prop.Prop{
		"org.kde.StatusNotifierWatcher": {
			"RegisteredStatusNotifierItems":  {Value: []string{}, Emit: prop.EmitTrue},
			"IsStatusNotifierHostRegistered": {Value: true, Emit: prop.EmitTrue},
			"ProtocolVersion":                {Value: int32(0), Emit: prop.EmitTrue},
		},
	})
	require.NoError(t, err)
	require.NoError(t, conn.Export(notifierMethods{w}, "/org/freedesktop/Notifications", "org.freedesktop.Notifications"))
	for _, name := range []string{"org.kde.StatusNotifierWatcher", "org.freedesktop.Notifications"} {
		reply, err := conn.RequestName(name, dbus.NameFlagDoNotQueue)
		require.NoError(t, err)
		require.Equal(t, dbus.RequestNameReplyPrimaryOwner, reply, name)
	}
	return w
}

type watcherMethods struct{ w *snWatcher }

// RegisterStatusNotifierItem records an item. Per the spec the argument is a
// bus name or, as fyne.io/systray sends it, an object path on the sender.
func (m watcherMethods) RegisterStatusNotifierItem(sender dbus.Sender, service string) *dbus.Error {
	item := service
	if strings.HasPrefix(service, "/") {
		item = string(sender) + service
	}
	m.w.mu.Lock()
	m.w.items = append(m.w.items, item)
	m.w.mu.Unlock()
	_ = m.w.conn.Emit("/StatusNotifierWatcher", "org.kde.StatusNotifierWatcher.StatusNotifierItemRegistered", item)
	return nil
}

func (m watcherMethods) RegisterStatusNotifierHost(service string) *dbus.Error { return nil }

type notifierMethods struct{ w *snWatcher }

// Notify is org.freedesktop.Notifications.Notify.
func (m notifierMethods) Notify(app string, replaces uint32, icon, summary, body string,
	actions []string, hints map[string]dbus.Variant, timeout int32) (uint32, *dbus.Error) {
	m.w.mu.Lock()
	defer m.w.mu.Unlock()
	m.w.notes = append(m.w.notes, summary+"\n"+body)
	return uint32(len(m.w.notes)), nil
}

func (w *snWatcher) Items() []string {
	w.mu.Lock()
	defer w.mu.Unlock()
	return append([]string(nil), w.items...)
}

func (w *snWatcher) Notes() []string {
	w.mu.Lock()
	defer w.mu.Unlock()
	return append([]string(nil), w.notes...)
}

// trayHost reads a registered item the way a panel does.
type trayHost struct {
	t    *testing.T
	conn *dbus.Conn
	item dbus.BusObject
	menu dbus.BusObject
}

func newTrayHost(t *testing.T, addr, registered string) *trayHost {
	conn, err := dbus.Connect(addr)
	require.NoError(t, err)
	t.Cleanup(func() { _ = conn.Close() })
	i := strings.Index(registered, "/")
	require.Positive(t, i, registered)
	dest, path := registered[:i], dbus.ObjectPath(registered[i:])
	h := &trayHost{t: t, conn: conn, item: conn.Object(dest, path)}
	var menuPath dbus.ObjectPath
	require.NoError(t, h.prop("Menu").Store(&menuPath))
	h.menu = conn.Object(dest, menuPath)
	return h
}

func (h *trayHost) prop(name string) dbus.Variant {
	h.t.Helper()
	v, err := h.item.GetProperty("org.kde.StatusNotifierItem." + name)
	require.NoError(h.t, err, name)
	return v
}

func (h *trayHost) str(name string) string {
	h.t.Helper()
	var s string
	require.NoError(h.t, h.prop(name).Store(&s), name)
	return s
}

// toolTip is the (sa(iiay)ss) ToolTip property.
type toolTip struct {
	Icon        string
	Pixmaps     []pixmap
	Title, Body string
}

type pixmap struct {
	W, H int32
	Pix  []byte // ARGB32, network byte order
}

func (h *trayHost) tooltip() string {
	h.t.Helper()
	var tt toolTip
	require.NoError(h.t, h.prop("ToolTip").Store(&tt))
	return tt.Title
}

func (h *trayHost) pixmaps() []pixmap {
	h.t.Helper()
	var px []pixmap
	require.NoError(h.t, h.prop("IconPixmap").Store(&px))
	return px
}

// menuNode is one com.canonical.dbusmenu layout entry.
type menuNode struct {
	ID       int32
	Label    string
	Disabled bool
	Sep      bool
	Children []menuNode
}

func parseLayout(v []interface{}) (menuNode, error) {
	if len(v) != 3 {
		return menuNode{}, fmt.Errorf("layout entry has %d fields, want 3", len(v))
	}
	n := menuNode{}
	var ok bool
	if n.ID, ok = v[0].(int32); !ok {
		return n, fmt.Errorf("id is %T", v[0])
	}
	props, ok := v[1].(map[string]dbus.Variant)
	if !ok {
		return n, fmt.Errorf("properties are %T", v[1])
	}
	if l, ok := props["label"]; ok {
		raw, _ := l.Value().(string)
		n.Label = displayLabel(raw)
	}
	if e, ok := props["enabled"]; ok {
		en, _ := e.Value().(bool)
		n.Disabled = !en
	}
	if ty, ok := props["type"]; ok {
		n.Sep = ty.Value() == "separator"
	}
	children, ok := v[2].([]dbus.Variant)
	if !ok {
		return n, fmt.Errorf("children are %T", v[2])
	}
	for _, c := range children {
		cv, ok := c.Value().([]interface{})
		if !ok {
			return n, fmt.Errorf("child is %T", c.Value())
		}
		cn, err := parseLayout(cv)
		if err != nil {
			return n, err
		}
		n.Children = append(n.Children, cn)
	}
	return n, nil
}

// displayLabel is a dbusmenu label as a host shows it: "_" marks the
// access key and is hidden, "__" is a literal underscore.
func displayLabel(raw string) string {
	var b strings.Builder
	for i := 0; i < len(raw); i++ {
		if raw[i] == '_' {
			if i+1 < len(raw) && raw[i+1] == '_' {
				b.WriteByte('_')
				i++
			}
			continue
		}
		b.WriteByte(raw[i])
	}
	return b.String()
}

// layout reads the whole menu with GetLayout.
func (h *trayHost) layout() (menuNode, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	call := h.menu.CallWithContext(ctx, "com.canonical.dbusmenu.GetLayout", 0, int32(0), int32(-1), []string{})
	if call.Err != nil {
		return menuNode{}, call.Err
	}
	var rev uint32
	var raw []interface{}
	if err := call.Store(&rev, &raw); err != nil {
		return menuNode{}, err
	}
	return parseLayout(raw)
}

// renderNodes draws a D-Bus menu in the format of renderMenu, without
// actions (D-Bus does not carry them).
func renderNodes(nodes []menuNode) string {
	var b strings.Builder
	var walk func([]menuNode, int)
	walk = func(nodes []menuNode, depth int) {
		for _, n := range nodes {
			b.WriteString(strings.Repeat("  ", depth))
			if n.Sep {
				b.WriteString("-")
			} else {
				b.WriteString(n.Label)
				if n.Disabled {
					b.WriteString(" [x]")
				}
			}
			b.WriteString("\n")
			walk(n.Children, depth+1)
		}
	}
	walk(nodes, 0)
	return b.String()
}

// renderView is renderMenu without the action markers.
func renderView(v View) string {
	var strip func([]Item) []Item
	strip = func(items []Item) []Item {
		out := make([]Item, len(items))
		for i, it := range items {
			it.Action = Action{}
			it.Children = strip(it.Children)
			out[i] = it
		}
		return out
	}
	return renderMenu(strip(v.Items))
}

// waitMenu waits until the menu read over D-Bus renders as want. The first
// GetLayout after a rebuild may return only the top level (fyne.io/systray
// does that for libdbusmenu-gtk3), hence the polling.
func (h *trayHost) waitMenu(want string) menuNode {
	h.t.Helper()
	var got string
	var root menuNode
	ok := poll(15*time.Second, func() bool {
		n, err := h.layout()
		if err != nil {
			got = err.Error()
			return false
		}
		root, got = n, renderNodes(n.Children)
		return got == want
	})
	require.True(h.t, ok, "menu over D-Bus; want\n%s\ngot\n%s", want, got)
	return root
}

// find returns the id of the entry reached by following labels.
func (n menuNode) find(path ...string) (int32, bool) {
	cur := n
	for _, l := range path {
		found := false
		for _, c := range cur.Children {
			if c.Label == l {
				cur, found = c, true
				break
			}
		}
		if !found {
			return 0, false
		}
	}
	return cur.ID, true
}

// click sends the "clicked" event a panel sends when the user picks path.
func (h *trayHost) click(root menuNode, path ...string) {
	h.t.Helper()
	id, ok := root.find(path...)
	require.True(h.t, ok, "no menu entry %q", path)
	require.NoError(h.t, h.sendClick(id))
}

// clickQuit clicks an entry that ends the tray. fyne.io/systray hands the
// click to the tray without waiting (a non-blocking channel send) and
// replies afterwards, so the tray may close its bus connection before the
// reply is written: the bus then answers the panel with NoReply in its
// place. Panels call Event without waiting for the answer, so both
// outcomes are what a user sees as a working Quit; the caller checks that
// the tray really ended.
func (h *trayHost) clickQuit(root menuNode, path ...string) {
	h.t.Helper()
	id, ok := root.find(path...)
	require.True(h.t, ok, "no menu entry %q", path)
	err := h.sendClick(id)
	var derr dbus.Error
	if errors.As(err, &derr) && derr.Name == "org.freedesktop.DBus.Error.NoReply" {
		return
	}
	require.NoError(h.t, err)
}

func (h *trayHost) sendClick(id int32) error {
	return h.menu.Call("com.canonical.dbusmenu.Event", 0, id, "clicked", dbus.MakeVariant(""), uint32(time.Now().Unix())).Err
}

// iconPixel is the colour at (x, y) of the first pixmap, from ARGB32.
func iconPixel(px pixmap, x, y int) [4]byte {
	i := (y*int(px.W) + x) * 4
	return [4]byte{px.Pix[i+1], px.Pix[i+2], px.Pix[i+3], px.Pix[i]} // RGBA
}

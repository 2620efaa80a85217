//go:build linux && !race

package main

import (
	"bufio"
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/godbus/dbus/v5"
	"github.com/stretchr/testify/require"
)

// background runs the CLI in-process until its context is cancelled.
func background(t *testing.T, args ...string) (cancel func() int, out *lockedBuffer) {
	ctx, stop := context.WithCancel(context.Background())
	out = &lockedBuffer{}
	done := make(chan int, 1)
	go func() { done <- run(ctx, args, strings.NewReader(""), out, out) }()
	var once sync.Once
	code := -1
	cancel = func() int {
		once.Do(func() {
			stop()
			select {
			case code = <-done:
			case <-time.After(20 * time.Second):
				t.Errorf("sbx %v did not stop; output:\n%s", args, out)
			}
		})
		return code
	}
	t.Cleanup(func() { cancel() })
	return cancel, out
}

// registrar is a minimal StatusNotifierWatcher.
type registrar struct {
	mu    sync.Mutex
	items []string
}

func (r *registrar) RegisterStatusNotifierItem(sender dbus.Sender, path string) *dbus.Error {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.items = append(r.items, string(sender)+"|"+path)
	return nil
}

func (r *registrar) first() string {
	r.mu.Lock()
	defer r.mu.Unlock()
	if len(r.items) == 0 {
		return ""
	}
	return r.items[0]
}

// trayRan is set by the one test that starts the real tray in this process.
var trayRan atomic.Bool

// TestTrayCommandOverDBus runs `sbx tray` and `sbx daemon` in-process with a
// private session bus and runtime directory, and reads the tray's tooltip
// over D-Bus while the daemon starts, stops and comes back.
func TestTrayCommandOverDBus(t *testing.T) {
	bin, err := exec.LookPath("dbus-daemon")
	if err != nil {
		t.Skip("dbus-daemon is not installed; install it with `apt-get install -y dbus` (.ci/run does)")
	}
	// Only once the tray will really start: a run skipped for want of
	// dbus-daemon must not make the next one claim it ran already.
	if !trayRan.CompareAndSwap(false, true) {
		t.Skip("fyne.io/systray starts once per process; this test ran already (-count > 1)")
	}
	dir, err := os.MkdirTemp("", "sbx-tray-")
	require.NoError(t, err)
	t.Cleanup(func() { _ = os.RemoveAll(dir) })
	// The daemon reads its config from HOME/XDG_CONFIG_HOME: keep the
	// real user's config (and whatever hosts file it names) out of it.
	t.Setenv("HOME", dir)
	t.Setenv("XDG_CONFIG_HOME", filepath.Join(dir, "config"))
	t.Setenv("XDG_RUNTIME_DIR", filepath.Join(dir, "run"))
	t.Setenv("XDG_STATE_HOME", filepath.Join(dir, "state"))
	t.Setenv("SBX_DAEMON_AUTOSTART", "0")
	writeTestConfig(t, dir)
	require.NoError(t, os.MkdirAll(filepath.Join(dir, "run"), 0o700))

	cfg := filepath.Join(dir, "bus.conf")
	require.NoError(t, os.WriteFile(cfg, []byte(`<busconfig><type>session</type><listen>unix:dir=`+dir+`</listen>
<auth>EXTERNAL</auth><policy context="default"><allow send_destination="*" eavesdrop="true"/><allow eavesdrop="true"/><allow own="*"/></policy></busconfig>`), 0o600))
	bus := exec.Command(bin, "--config-file="+cfg, "--nofork", "--nopidfile", "--print-address=1")
	stdout, err := bus.StdoutPipe()
	require.NoError(t, err)
	require.NoError(t, bus.Start())
	t.Cleanup(func() { _ = bus.Process.Kill(); _ = bus.Wait() })
	line, err := bufio.NewReader(stdout).ReadString('\n')
	require.NoError(t, err)
	addr := strings.TrimSpace(line)
	t.Setenv("DBUS_SESSION_BUS_ADDRESS", addr)

	conn, err := dbus.Connect(addr)
	require.NoError(t, err)
	t.Cleanup(func() { _ = conn.Close() })
	reg := &registrar{}
	require.NoError(t, conn.Export(reg, "/StatusNotifierWatcher", "org.kde.StatusNotifierWatcher"))
	_, err = conn.RequestName("org.kde.StatusNotifierWatcher", dbus.NameFlagDoNotQueue)
	require.NoError(t, err)

	stopTray, trayOut := background(t, "tray")
	require.Eventually(t, func() bool { return reg.first() != "" }, 15*time.Second, 10*time.Millisecond, "tray output: %s", trayOut)
	dest, path, _ := strings.Cut(reg.first(), "|")
	item := conn.Object(dest, dbus.ObjectPath(path))
	tooltip := func() string {
		v, err := item.GetProperty("org.kde.StatusNotifierItem.ToolTip")
		if err != nil {
			return err.Error()
		}
		var tt struct {
			Icon    string
			Pixmaps []struct {
				W, H int32
				Pix  []byte
			}
			Title, Body string
		}
		if err := v.Store(&tt); err != nil {
			return err.Error()
		}
		return tt.Title
	}
	waitTooltip := func(want string) {
		t.Helper()
		require.Eventually(t, func() bool { return tooltip() == want }, 15*time.Second, 10*time.Millisecond,
			"want tooltip %q; tray output: %s", want, trayOut)
	}

	waitTooltip("sbx: daemon not running")
	stopDaemon, daemonOut := background(t, "daemon")
	waitTooltip("sbx: no sandboxes")

	code, out, errOut := runCLI(t, "daemon", "stop")
	require.Equal(t, 0, code, errOut)
	require.Contains(t, out, "stopped")
	require.Equal(t, 0, stopDaemon(), "daemon output: %s", daemonOut)
	waitTooltip("sbx: daemon not running")

	stopDaemon, daemonOut = background(t, "daemon")
	waitTooltip("sbx: no sandboxes")
	require.Equal(t, 0, stopTray(), "tray output: %s", trayOut)
	require.Equal(t, exitInterrupted, stopDaemon(), "Ctrl-C on a daemon run by hand; output: %s", daemonOut)
}

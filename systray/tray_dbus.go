//go:build linux && !android

package systray

import (
	"context"
	"errors"
	"fmt"
	"sync/atomic"

	fyne "fyne.io/systray"
	"github.com/godbus/dbus/v5"
)

// started guards the one tray a process can show: fyne.io/systray keeps its
// menu, D-Bus objects and quit channel in package globals that cannot be
// reset, so a second Run would half-work. It mirrors that library state.
var started atomic.Bool

var errOncePerProcess = errors.New("the sbx tray runs once per process; start another `sbx tray` process instead")

// Run shows the tray icon until ctx ends or the user picks "Quit tray". On
// Linux and the BSDs it is a StatusNotifierItem with a com.canonical.dbusmenu
// menu on the session bus; it may run on any goroutine but only once per
// process.
func Run(ctx context.Context, o Options) error {
	o, err := o.withDefaults()
	if err != nil {
		return err
	}
	// fyne.io/systray only logs a missing bus; check first so the user
	// gets a reason and the exit code says it failed.
	conn, err := dbus.SessionBus()
	if err != nil {
		return fmt.Errorf("the tray needs a D-Bus session bus: %w (run it inside your desktop session, where DBUS_SESSION_BUS_ADDRESS is set)", err)
	}
	if !started.CompareAndSwap(false, true) {
		return errOncePerProcess
	}
	var hasWatcher bool
	if err := conn.BusObject().CallWithContext(ctx, "org.freedesktop.DBus.NameHasOwner", 0,
		"org.kde.StatusNotifierWatcher").Store(&hasWatcher); err == nil && !hasWatcher {
		o.Logger.Warn("no StatusNotifierWatcher on the session bus; the icon appears once a tray host starts " +
			"(GNOME needs the AppIndicator extension)")
	}

	// With the external loop, start exports the D-Bus objects before it
	// returns, so the first Apply cannot race the export and be lost.
	start, end := fyne.RunWithExternalLoop(nil, nil)
	start()
	defer end()
	u := newFyneUI(func(s IconState) []byte { return IconPNG(s, 32) }, true, escapeMnemonic("_"))
	defer u.stopForwarders()
	return runLoop(ctx, o, u)
}

// Package systray is the sbx tray icon. It talks to the daemon only through
// the daemon's Go client, behind the narrow Client interface.
//
// The design follows Tailscale's tray: one event loop (runLoop) receives
// "something changed" from the daemon's watch stream, watch failures,
// retry timers, clicks and finished click tasks in a single select, and on
// any change re-derives the whole view from a fresh Status. The view (icon
// state, tooltip, menu) is a pure function of a Snapshot (BuildView), so
// the menu logic is tested without a desktop; the platform surface only
// applies a View and reports clicks as Actions.
//
// Platforms: fyne.io/systray draws the icon. On Linux that is a
// StatusNotifierItem with a com.canonical.dbusmenu menu on the session bus
// (tested end to end against a private dbus-daemon); on Windows the
// notification area; on macOS the menu bar, which needs a cgo build —
// builds without cgo (all cross-compiled ones) get a Run that says the tray
// is not supported in this build.
package systray

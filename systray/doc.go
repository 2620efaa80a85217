// Package systray is the sbx tray icon. It talks to the daemon only through
// the daemon's Go client.
package systray

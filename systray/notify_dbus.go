//go:build linux && !android

package systray

import (
	"context"
	"fmt"

	"github.com/godbus/dbus/v5"
)

// notify shows a desktop notification through the freedesktop
// Notifications service on the session bus.
func notify(ctx context.Context, summary, body string) error {
	conn, err := dbus.SessionBus()
	if err != nil {
		return fmt.Errorf("notify: no session bus: %w", err)
	}
	obj := conn.Object("org.freedesktop.Notifications", "/org/freedesktop/Notifications")
	call := obj.CallWithContext(ctx, "org.freedesktop.Notifications.Notify", 0,
		"sbx", uint32(0), "", summary, body, []string{}, map[string]dbus.Variant{}, int32(-1))
	if call.Err != nil {
		return fmt.Errorf("notify through org.freedesktop.Notifications: %w", call.Err)
	}
	return nil
}

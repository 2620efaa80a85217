package systray

import (
	"context"

	"github.com/sbx-dev/sbx/daemon/api"
)

// Client is what the tray needs from the daemon. The daemon's Go client
// (daemon/client) satisfies it through DaemonClient; tests use a double. It
// is kept this narrow so the tray can be driven without a daemon at all.
type Client interface {
	// Status returns the daemon's whole current state. An error means the
	// daemon could not be asked (not running, socket gone).
	Status(ctx context.Context) (api.Status, error)
	// Watch streams events to fn until ctx ends, the stream breaks or fn
	// returns an error. The first event is a full snapshot. It returns a
	// non-nil error whenever the stream ends for a reason other than ctx.
	Watch(ctx context.Context, fn func(api.Event) error) error
	// Disconnect tears down the named sandbox (cluster objects included).
	Disconnect(ctx context.Context, name string) error
	// StartDaemon starts the daemon in the background and returns once it
	// answers, or with an error that says why it did not come up.
	StartDaemon(ctx context.Context) error
}

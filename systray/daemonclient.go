package systray

import (
	"context"
	"errors"
	"fmt"
	"io"

	"github.com/sbx-dev/sbx/daemon/api"
	"github.com/sbx-dev/sbx/daemon/client"
)

// DaemonClient adapts the daemon's Go client to the tray's Client.
type DaemonClient struct {
	// C is the daemon's client.
	C *client.Client
	// Start starts the daemon in the background and waits until it
	// answers; nil makes "Start daemon" report that it cannot.
	Start func(ctx context.Context) error
}

var _ Client = DaemonClient{}

// Status returns the daemon's whole state.
func (a DaemonClient) Status(ctx context.Context) (api.Status, error) { return a.C.Status(ctx) }

// Watch streams the daemon's events to fn. A stream the daemon ends (it is
// shutting down, or dropped us) is an error, so the tray re-checks.
func (a DaemonClient) Watch(ctx context.Context, fn func(api.Event) error) error {
	w, err := a.C.Watch(ctx)
	if err != nil {
		return err
	}
	defer w.Close()
	// Next blocks in a read; closing the stream is what ends it on cancel.
	stop := context.AfterFunc(ctx, func() { _ = w.Close() })
	defer stop()
	for {
		ev, err := w.Next()
		if err != nil {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			if errors.Is(err, io.EOF) {
				return fmt.Errorf("the daemon ended the watch stream: %w", err)
			}
			return err
		}
		if err := fn(ev); err != nil {
			return err
		}
	}
}

// Disconnect asks the daemon to tear the sandbox down.
func (a DaemonClient) Disconnect(ctx context.Context, name string) error {
	_, err := a.C.Disconnect(ctx, name)
	return err
}

// StartDaemon starts the daemon through Start.
func (a DaemonClient) StartDaemon(ctx context.Context) error {
	if a.Start == nil {
		return errors.New("this tray cannot start the daemon; run `sbx daemon` in a terminal")
	}
	return a.Start(ctx)
}

package daemon

import (
	"context"
	"fmt"
	"time"

	"github.com/sbx-dev/sbx/daemon/api"
)

// awaitConnect streams a connecting sandbox's progress to send until it is
// ready, fails, the request's timeout (0: none) passes or reqCtx ends
// (the client went away, or the daemon is stopping). sub is the
// sandbox's progress subscription; restarted says the connect changed
// something, so a sandbox that is already ready is not answered at once.
// The last Progress sent has Done set, except when the client is gone.
func (d *Daemon) awaitConnect(reqCtx context.Context, name string, timeout time.Duration, restarted bool, sub <-chan api.Progress, send func(api.Progress) error) error {
	ctx := reqCtx
	if timeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, timeout)
		defer cancel()
	}
	if st, _ := d.store.Sandbox(name); !restarted && st.Phase == api.PhaseReady {
		// Nothing changed and it is up: answer at once.
		return send(api.Progress{Time: d.now(), Phase: api.PhaseReady, Done: true, Sandbox: &st})
	}
	var lastErr string
	for {
		select {
		case <-ctx.Done():
			if err := reqCtx.Err(); err != nil {
				if d.mgr.stopping(err) {
					// Say so: the client could not tell a silent end
					// from a crash.
					return send(stoppedConnecting(d.now(), name))
				}
				return nil // the client went away
			}
			st, _ := d.store.Sandbox(name)
			if lastErr == "" {
				lastErr = st.LastError
			}
			msg := fmt.Sprintf("sandbox %s not ready after %s (phase %s)", name, timeout, st.Phase)
			if lastErr != "" {
				msg += ": " + lastErr
			}
			msg += fmt.Sprintf("; it keeps retrying in the background: watch it with `sbx status %s --watch`, or stop with `sbx disconnect %s`", name, name)
			return send(api.Progress{Time: d.now(), Phase: st.Phase, Done: true, Error: msg})
		case p, ok := <-sub:
			if !ok {
				if err := reqCtx.Err(); err != nil && d.mgr.stopping(err) {
					return send(stoppedConnecting(d.now(), name))
				}
				st, found := d.store.Sandbox(name)
				if !found {
					return send(api.Progress{Time: d.now(), Done: true, Error: fmt.Sprintf("sandbox %s was disconnected while connecting", name)})
				}
				if st.Phase == api.PhaseReady {
					return send(api.Progress{Time: d.now(), Phase: api.PhaseReady, Done: true, Sandbox: &st})
				}
				return send(api.Progress{Time: d.now(), Phase: st.Phase, Done: true, Error: "progress stream fell behind; the sandbox keeps connecting: see `sbx status " + name + "`"})
			}
			if p.Error != "" {
				lastErr = p.Error
			}
			if p.Phase == api.PhaseFailed {
				cause := p.Error
				if cause == "" {
					cause = p.Message
				}
				p.Done = true
				// The cause ends with how to recover (failedMessage).
				p.Error = fmt.Sprintf("sandbox %s failed: %s; or remove it with `sbx disconnect %s`", name, cause, name)
				return send(p)
			}
			if err := send(p); err != nil {
				return nil
			}
			if p.Done {
				return nil
			}
		}
	}
}

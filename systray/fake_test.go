package systray

import (
	"context"
	"errors"
	"slices"
	"sync"

	"github.com/sbx-dev/sbx/daemon/api"
)

// errDaemonDown is what the double answers while it is "stopped", like the
// real client's dial error on a missing socket.
var errDaemonDown = errors.New("dial unix /run/user/1000/sbx/sbx.sock: connect: no such file or directory")

// fakeDaemon is a daemon double behind the Client interface: it holds a
// status, streams a snapshot and then one event per change to every
// watcher, records Disconnect and StartDaemon calls, and can be stopped and
// restarted to test reconnection.
type fakeDaemon struct {
	mu          sync.Mutex
	up          bool
	st          api.Status
	changed     chan struct{} // closed and replaced on every change
	disconnects []string
	starts      int
	watches     int
	epoch       int // bumped by drop: watchers of an older epoch end
	// keepOnDisconnect leaves the sandbox in phase disconnecting instead of
	// removing it.
	keepOnDisconnect bool
}

func newFakeDaemon(st api.Status) *fakeDaemon {
	return &fakeDaemon{up: true, st: st, changed: make(chan struct{})}
}

func (f *fakeDaemon) broadcastLocked() {
	close(f.changed)
	f.changed = make(chan struct{})
}

// set replaces the status and notifies watchers.
func (f *fakeDaemon) set(st api.Status) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.st = st
	f.broadcastLocked()
}

// update changes one sandbox in place and notifies watchers.
func (f *fakeDaemon) update(name string, fn func(*api.SandboxStatus)) {
	f.mu.Lock()
	defer f.mu.Unlock()
	for i := range f.st.Sandboxes {
		if f.st.Sandboxes[i].Name == name {
			fn(&f.st.Sandboxes[i])
		}
	}
	f.broadcastLocked()
}

// stop makes the double behave like a daemon that exited: watches end,
// calls fail.
func (f *fakeDaemon) stop() {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.up = false
	f.broadcastLocked()
}

// drop ends every watch stream while the daemon stays up, as the real
// daemon does with a watcher that falls behind.
func (f *fakeDaemon) drop() {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.epoch++
	f.broadcastLocked()
}

// start brings a stopped double back.
func (f *fakeDaemon) start() {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.up = true
	f.broadcastLocked()
}

func (f *fakeDaemon) Disconnects() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Clone(f.disconnects)
}

func (f *fakeDaemon) Starts() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.starts
}

func (f *fakeDaemon) Watches() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.watches
}

func cloneStatus(st api.Status) api.Status {
	st.Sandboxes = slices.Clone(st.Sandboxes)
	for i := range st.Sandboxes {
		st.Sandboxes[i].Mappings = slices.Clone(st.Sandboxes[i].Mappings)
	}
	return st
}

func (f *fakeDaemon) Status(ctx context.Context) (api.Status, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if !f.up {
		return api.Status{}, errDaemonDown
	}
	return cloneStatus(f.st), nil
}

func (f *fakeDaemon) Watch(ctx context.Context, fn func(api.Event) error) error {
	f.mu.Lock()
	if !f.up {
		f.mu.Unlock()
		return errDaemonDown
	}
	f.watches++
	snap := cloneStatus(f.st)
	ch := f.changed
	epoch := f.epoch
	f.mu.Unlock()
	if err := fn(api.Event{Snapshot: &snap}); err != nil {
		return err
	}
	for {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-ch:
		}
		f.mu.Lock()
		up, dropped := f.up, f.epoch != epoch
		snap := cloneStatus(f.st)
		ch = f.changed
		f.mu.Unlock()
		if !up {
			return errors.New("read watch stream: unexpected EOF")
		}
		if dropped {
			return errors.New("watch stream: dropped by the daemon (reader too slow)")
		}
		// The real daemon sends deltas; the tray only needs to know that
		// something changed, so the double sends the whole state.
		if err := fn(api.Event{Snapshot: &snap}); err != nil {
			return err
		}
	}
}

func (f *fakeDaemon) Disconnect(ctx context.Context, name string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if !f.up {
		return errDaemonDown
	}
	f.disconnects = append(f.disconnects, name)
	i := slices.IndexFunc(f.st.Sandboxes, func(s api.SandboxStatus) bool { return s.Name == name })
	if i < 0 {
		return errors.New("sandbox " + name + " not found")
	}
	if f.keepOnDisconnect {
		f.st.Sandboxes[i].Phase = api.PhaseDisconnecting
	} else {
		f.st.Sandboxes = slices.Delete(f.st.Sandboxes, i, i+1)
	}
	f.broadcastLocked()
	return nil
}

func (f *fakeDaemon) StartDaemon(ctx context.Context) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.starts++
	f.up = true
	f.broadcastLocked()
	return nil
}

// sampleStatus is one ready sandbox "alice" with a listening mapping.
func sampleStatus() api.Status {
	return api.Status{
		Version: "v0.1.0", PID: 4242, LogPath: "/home/alice/.local/state/sbx/daemon.log",
		Sandboxes: []api.SandboxStatus{{
			Name: "alice", RoutingKey: "k3x9a0b1c2d3e", BaggageKey: "sbx-routing-key",
			Namespaces: []string{"hotrod"}, Phase: api.PhaseReady, Sessions: 2,
			Mappings: []api.MappingStatus{{Workload: "route", Namespace: "hotrod", Port: 8083, ToLocal: "localhost:8083", Listening: true}},
		}},
	}
}

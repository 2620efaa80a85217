package daemon

import (
	"reflect"
	"slices"
	"strings"
	"sync"

	"github.com/sbx-dev/sbx/daemon/api"
)

// defaultWatchQueue is how many events a watcher may have unread before it
// is dropped. A tray or `sbx status --watch` reads far faster than sessions
// change; only a stuck reader fills it.
const defaultWatchQueue = 256

// store is the daemon's published state: the status every client sees and
// the watch bus that carries its changes. Updates and subscriptions happen
// under one lock, so a new watcher's snapshot and the changes after it never
// overlap or leave a gap. Publishing never blocks: a watcher whose queue is
// full is dropped.
type store struct {
	mu           sync.Mutex
	base         api.Status // Version, PID, LogPath, Managed
	configError  string
	stateError   string
	outbound     *api.OutboundStatus
	sandboxes    map[string]api.SandboxStatus
	watchers     map[*watcher]struct{}
	queue        int
	droppedCount int
}

func newStore(base api.Status, queue int) *store {
	if queue <= 0 {
		queue = defaultWatchQueue
	}
	return &store{base: base, sandboxes: map[string]api.SandboxStatus{}, watchers: map[*watcher]struct{}{}, queue: queue}
}

// watcher is one subscriber. Events arrive on C; C is closed when the
// watcher is dropped (Dropped reports true) or unsubscribed.
type watcher struct {
	C       chan api.Event
	dropped bool // guarded by store.mu
	closed  bool // guarded by store.mu
}

func (s *store) snapshotLocked() api.Status {
	st := s.base
	st.ConfigError = s.problemsLocked()
	st.Outbound = cloneOutbound(s.outbound)
	st.Sandboxes = make([]api.SandboxStatus, 0, len(s.sandboxes))
	for _, sb := range s.sandboxes {
		st.Sandboxes = append(st.Sandboxes, cloneSandbox(sb))
	}
	slices.SortFunc(st.Sandboxes, func(a, b api.SandboxStatus) int { return strings.Compare(a.Name, b.Name) })
	return st
}

// Status returns the whole current state.
func (s *store) Status() api.Status {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.snapshotLocked()
}

// Sandbox returns one sandbox's status.
func (s *store) Sandbox(name string) (api.SandboxStatus, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	sb, ok := s.sandboxes[name]
	return cloneSandbox(sb), ok
}

// Subscribe registers a watcher whose first event is the full snapshot.
func (s *store) Subscribe() *watcher {
	s.mu.Lock()
	defer s.mu.Unlock()
	w := &watcher{C: make(chan api.Event, s.queue+1)}
	snap := s.snapshotLocked()
	w.C <- api.Event{Snapshot: &snap}
	s.watchers[w] = struct{}{}
	return w
}

// Unsubscribe removes w and closes its channel; safe to call twice.
func (s *store) Unsubscribe(w *watcher) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.closeLocked(w)
}

// Dropped reports whether w was dropped for falling behind.
func (s *store) Dropped(w *watcher) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return w.dropped
}

func (s *store) closeLocked(w *watcher) {
	if w.closed {
		return
	}
	w.closed = true
	delete(s.watchers, w)
	close(w.C)
}

func (s *store) publishLocked(ev api.Event) {
	for w := range s.watchers {
		select {
		case w.C <- ev:
		default:
			w.dropped = true
			s.droppedCount++
			s.closeLocked(w)
		}
	}
}

// SetSandbox adds or replaces a sandbox's status and tells watchers, unless
// nothing changed.
func (s *store) SetSandbox(sb api.SandboxStatus) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if old, ok := s.sandboxes[sb.Name]; ok && reflect.DeepEqual(old, sb) {
		return
	}
	sb = cloneSandbox(sb)
	s.sandboxes[sb.Name] = sb
	ev := cloneSandbox(sb)
	s.publishLocked(api.Event{Sandbox: &ev})
}

// UpdateSandbox applies fn to the named sandbox's status, if it exists, and
// publishes the result when it changed.
func (s *store) UpdateSandbox(name string, fn func(*api.SandboxStatus)) {
	s.mu.Lock()
	defer s.mu.Unlock()
	old, ok := s.sandboxes[name]
	if !ok {
		return
	}
	sb := cloneSandbox(old)
	fn(&sb)
	if reflect.DeepEqual(old, sb) {
		return
	}
	s.sandboxes[name] = sb
	ev := cloneSandbox(sb)
	s.publishLocked(api.Event{Sandbox: &ev})
}

// RemoveSandbox forgets a sandbox and tells watchers.
func (s *store) RemoveSandbox(name string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, ok := s.sandboxes[name]; !ok {
		return
	}
	delete(s.sandboxes, name)
	s.publishLocked(api.Event{Removed: name})
}

// SetConfigError records the user config's current error ("" when valid).
func (s *store) SetConfigError(msg string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.setProblemLocked(&s.configError, msg)
}

// SetStateError records why the state file could not be loaded.
func (s *store) SetStateError(msg string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.setProblemLocked(&s.stateError, msg)
}

func (s *store) setProblemLocked(field *string, msg string) {
	before := s.problemsLocked()
	*field = msg
	after := s.problemsLocked()
	if before == after {
		return
	}
	s.publishLocked(api.Event{Config: &after})
}

// problemsLocked is what Status.ConfigError shows: the config's error and
// the state file's, whichever exist.
func (s *store) problemsLocked() string {
	switch {
	case s.configError != "" && s.stateError != "":
		return s.configError + "; " + s.stateError
	case s.configError != "":
		return s.configError
	}
	return s.stateError
}

// SetOutbound records outbound access's status and tells watchers,
// unless nothing changed.
func (s *store) SetOutbound(o *api.OutboundStatus) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if reflect.DeepEqual(s.outbound, o) {
		return
	}
	s.outbound = cloneOutbound(o)
	s.publishLocked(api.Event{Outbound: cloneOutbound(o)})
}

// CloseAll ends every watch stream (daemon shutdown).
func (s *store) CloseAll() {
	s.mu.Lock()
	defer s.mu.Unlock()
	for w := range s.watchers {
		s.closeLocked(w)
	}
}

func cloneSandbox(sb api.SandboxStatus) api.SandboxStatus {
	sb.Namespaces = slices.Clone(sb.Namespaces)
	sb.Mappings = slices.Clone(sb.Mappings)
	for i := range sb.Mappings {
		sb.Mappings[i].Services = slices.Clone(sb.Mappings[i].Services)
		if f := sb.Mappings[i].From; f != nil {
			c := *f
			sb.Mappings[i].From = &c
		}
	}
	sb.Kubeconfig.KubeconfigEnv = slices.Clone(sb.Kubeconfig.KubeconfigEnv)
	return sb
}

// dropAny reports whether any watcher has been dropped since the store was
// made (tests).
func (s *store) dropAny() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.droppedCount > 0
}

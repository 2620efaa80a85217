package daemon

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"reflect"
	"slices"
	"strings"
	"sync"

	"github.com/sbx-dev/sbx/cluster/live"
	"github.com/sbx-dev/sbx/cluster/routingkey"
	"github.com/sbx-dev/sbx/daemon/api"
	"github.com/sbx-dev/sbx/daemon/config"
)

// manager owns the sessions: it creates, updates, restores and removes
// them, and persists their identities.
type manager struct {
	log      *slog.Logger
	store    *store
	state    *stateFile
	clusters ClusterProvider
	link     linker
	// newToken mints a sandbox's tunnel token (cluster.NewToken).
	newToken func() (string, error)
	cfg      sessionConfig
	conf     func() *config.Config // the live user config
	// configPath is the user config file (for errors that say where to
	// map a cluster name); empty without one.
	configPath string
	// changed is told whenever sandboxes come, go or change spec
	// (outbound access follows their namespaces); it must not block.
	changed func()

	ctx context.Context // daemon lifetime: sessions run under it

	mu       sync.Mutex
	sessions map[string]*session
	wg       sync.WaitGroup
}

// errNotFound is returned for a sandbox the daemon does not know.
type notFoundError struct{ name string }

func (e *notFoundError) Error() string {
	return fmt.Sprintf("sandbox %q is not connected (see `sbx status` for the connected ones)", e.name)
}

// clusterError is a failure of the cluster behind the daemon (unreachable,
// refused); the API answers it with 502.
type clusterError struct{ err error }

func (e *clusterError) Error() string { return e.err.Error() }
func (e *clusterError) Unwrap() error { return e.err }

// stoppingError is a request the daemon's shutdown broke off; the API
// answers it with 503 and says what is left to do, rather than the bare
// "context canceled" the cut-off call returned.
type stoppingError struct{ msg string }

func (e *stoppingError) Error() string { return e.msg }

// errStopping is the answer to a request the shutdown broke off when
// nothing more specific is known.
var errStopping = &stoppingError{"the sbx daemon is stopping and broke off this request; run the command again to start a new daemon"}

// stopping reports whether err is the daemon's shutdown cutting a call
// short (rather than the client going away or the cluster failing).
func (m *manager) stopping(err error) bool {
	return m.ctx != nil && m.ctx.Err() != nil && errors.Is(err, context.Canceled)
}

// conflictError is a request that contradicts the current state.
type conflictError struct{ msg string }

func (e *conflictError) Error() string { return e.msg }

// startLocked creates and launches a session for saved. With subscribe,
// a progress subscription is taken before the supervisor starts, so the
// caller sees every step. takeover lets its first apply replace a relay
// that checks another token (see session.takeover). m.mu must be held.
func (m *manager) startLocked(saved savedSandbox, takeover, subscribe bool) (*session, chan api.Progress) {
	ctx, cancel := context.WithCancel(m.ctx)
	s := &session{
		m:        m,
		name:     saved.Name,
		log:      m.log.With("sandbox", saved.Name),
		saved:    saved,
		takeover: takeover,
		subs:     map[chan api.Progress]struct{}{},
		kick:     make(chan struct{}, 1),
		rotate:   make(chan struct{}, 1),
		cancel:   cancel,
		done:     make(chan struct{}),
	}
	var sub chan api.Progress
	if subscribe {
		sub = s.subscribe()
	}
	m.sessions[saved.Name] = s
	m.store.SetSandbox(initialStatus(saved, m.conf().BaggageKey))
	m.wg.Add(1)
	go func() {
		defer m.wg.Done()
		s.run(ctx)
	}()
	m.notify()
	return s, sub
}

// notify tells the changed hook, if any.
func (m *manager) notify() {
	if m.changed != nil {
		m.changed()
	}
}

// Connect starts a session for req, or updates the spec of an existing one
// (keeping its routing key and token) and re-applies. With RotateToken a
// new token replaces the sandbox's; see rotateLocked. The returned channel
// carries the session's progress from before its first step; the caller
// must unsubscribe it.
//
// restarted reports whether a connection attempt, or a rotation, starts
// because of this call (new sandbox, changed spec, retry of a failed one,
// new token).
func (m *manager) Connect(req api.ConnectRequest) (s *session, sub chan api.Progress, restarted bool, err error) {
	name := req.Spec.Name
	if req.RotateOnly() {
		m.mu.Lock()
		defer m.mu.Unlock()
		if m.ctx.Err() != nil {
			return nil, nil, false, errStopping
		}
		s, ok := m.sessions[name]
		if !ok {
			return nil, nil, false, &notFoundError{name}
		}
		sub := s.subscribe()
		if err := m.rotateLocked(s, false); err != nil {
			s.unsubscribe(sub)
			return nil, nil, false, err
		}
		return s, sub, true, nil
	}
	// --context wins over spec.cluster, which the user config may map to
	// a context name (as kubectl-style tools do); without either, the
	// current context is pinned now (see currentContext).
	kctx := req.Context
	switch {
	case kctx == "" && req.Spec.Spec.Cluster != "":
		var err error
		if kctx, err = specContext(req, m.conf().Contexts, m.configPath); err != nil {
			return nil, nil, false, err
		}
	case kctx == "":
		kctx = currentContext(req.KubeconfigSource)
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.ctx.Err() != nil {
		return nil, nil, false, errStopping // a 503, not a 500 the CLI takes for a bug
	}
	if s, ok := m.sessions[name]; ok {
		cur, _ := m.store.Sandbox(name)
		s.mu.Lock()
		old := s.saved
		moved := old.Context != kctx || old.KubeconfigSource.Key() != req.KubeconfigSource.Key()
		// A failed sandbox may be pointed at another cluster (the usual
		// fix for a wrong --kubeconfig or --context); a working one must
		// be disconnected first, or its objects would be left behind.
		if moved && cur.Phase != api.PhaseFailed {
			s.mu.Unlock()
			// Since a connect without --context pins the current one,
			// the usual cause is a `kubectl config use-context` since.
			return nil, nil, false, &conflictError{fmt.Sprintf("sandbox %q is connected to context %q of %s, and this connect asks for context %q of %s; pass --context %s (and that kubeconfig) to update it where it is, disconnect it first (`sbx disconnect %s`), or pick another name",
				name, old.Context, describeSource(old.KubeconfigSource), kctx, describeSource(req.KubeconfigSource), old.Context, name)}
		}
		changed := moved || !reflect.DeepEqual(old.Spec, req.Spec)
		s.saved.Spec = req.Spec
		s.saved.Context, s.saved.KubeconfigSource = kctx, req.KubeconfigSource
		saved := s.saved
		s.mu.Unlock()
		sub := s.subscribe()
		st, _ := m.store.Sandbox(name)
		restarted = changed || st.Phase == api.PhaseFailed || req.RotateToken
		if req.RotateToken {
			if err := m.rotateLocked(s, changed); err != nil {
				s.unsubscribe(sub)
				return nil, nil, false, err
			}
		} else if changed || st.Phase == api.PhaseFailed {
			// The user asked for the sandbox here: its next apply may
			// take it back from another daemon.
			s.setTakeover()
		}
		if changed {
			m.store.UpdateSandbox(name, func(st *api.SandboxStatus) {
				fresh := initialStatus(saved, m.conf().BaggageKey)
				st.Namespaces, st.Mappings, st.Context, st.Kubeconfig = fresh.Namespaces, fresh.Mappings, fresh.Context, fresh.Kubeconfig
			})
			m.persistLocked()
			m.notify()
			select {
			case s.kick <- struct{}{}:
			default:
			}
		} else if st.Phase == api.PhaseFailed && !req.RotateToken {
			select { // connecting again is how a user retries a failed sandbox
			case s.kick <- struct{}{}:
			default:
			}
		}
		return s, sub, restarted, nil
	}
	token, err := m.newToken()
	if err != nil {
		return nil, nil, false, fmt.Errorf("sandbox %s: %w", name, err)
	}
	saved := savedSandbox{
		Name:             name,
		RoutingKey:       routingkey.New(),
		Token:            token,
		KubeconfigSource: req.KubeconfigSource,
		Context:          kctx,
		Spec:             req.Spec,
		CreatedAt:        m.cfg.Now(),
	}
	if ns := req.Spec.Namespaces(); len(ns) > 0 {
		saved.Namespace = ns[0]
	}
	// A new token: the first apply writes its verifier, whoever's relay
	// was there (a daemon that lost its state connects the sandbox again).
	s, sub = m.startLocked(saved, true, true)
	m.persistLocked()
	return s, sub, true, nil
}

// rotateLocked gives s a new tunnel token, saved before anything uses it,
// and tells the supervisor: a connected sandbox applies the new verifier
// and moves its tunnel to the relay pod that replaces the old one without
// dropping it; any other retries at once with the new token. restarting
// says the caller already kicked s (a changed spec), whose next attempt
// applies the new token anyway. m.mu must be held.
func (m *manager) rotateLocked(s *session, restarting bool) error {
	token, err := m.newToken()
	if err != nil {
		return fmt.Errorf("sandbox %s: %w", s.name, err)
	}
	s.mu.Lock()
	s.saved.Token = token
	s.takeover = true
	s.mu.Unlock()
	m.persistLocked()
	s.log.Info("tunnel token rotated; applying its verifier")
	if !restarting {
		select {
		case s.rotate <- struct{}{}:
		default:
		}
	}
	return nil
}

// Restore starts sessions for the sandboxes saved by a previous daemon, with
// their routing keys.
func (m *manager) Restore(saved []savedSandbox) {
	m.mu.Lock()
	defer m.mu.Unlock()
	pinned := false
	for _, sv := range saved {
		if _, ok := m.sessions[sv.Name]; ok || sv.Name == "" || sv.RoutingKey == "" {
			continue
		}
		if err := sv.Spec.Validate(); err != nil {
			msg := fmt.Sprintf("state file: sandbox %s not restored, its saved spec is invalid: %v (connect it again with `sbx connect -f FILE`)", sv.Name, err)
			m.log.Error(msg)
			m.store.SetStateError(msg)
			continue
		}
		if sv.Context == "" {
			// Connected while the kubeconfig could not be read: pin
			// the context current now, as a connect does.
			sv.Context = currentContext(sv.KubeconfigSource)
			pinned = pinned || sv.Context != ""
		}
		// The saved token keeps the relay as it is: no rollout. A state
		// file without one (edited by hand) loses no sandbox: a new
		// token is minted and its first apply rolls the relay.
		minted := false
		if sv.Token == "" {
			token, err := m.newToken()
			if err != nil {
				msg := fmt.Sprintf("sandbox %s not restored: %v (connect it again with `sbx connect -f FILE`)", sv.Name, err)
				m.log.Error(msg)
				m.store.SetStateError(msg)
				continue
			}
			sv.Token, minted = token, true
		}
		m.log.Info("restoring sandbox", "sandbox", sv.Name, "routingKey", sv.RoutingKey, "newToken", minted)
		m.startLocked(sv, minted, false)
		pinned = pinned || minted
	}
	if pinned {
		// Saved now, or the next restart would pin whatever context is
		// current then (and mint yet another token), and the sandbox
		// would move (or its relay roll).
		m.persistLocked()
	}
}

// Get returns the named session.
func (m *manager) Get(name string) (*session, bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	s, ok := m.sessions[name]
	return s, ok
}

// Names lists the sessions' names, sorted.
func (m *manager) Names() []string {
	m.mu.Lock()
	defer m.mu.Unlock()
	var names []string
	for n := range m.sessions {
		names = append(names, n)
	}
	slices.Sort(names)
	return names
}

// sessionsByName returns the sessions sorted by name.
func (m *manager) sessionsByName() []*session {
	m.mu.Lock()
	defer m.mu.Unlock()
	out := make([]*session, 0, len(m.sessions))
	for _, s := range m.sessions {
		out = append(out, s)
	}
	slices.SortFunc(out, func(a, b *session) int { return strings.Compare(a.name, b.name) })
	return out
}

// snapshots returns the saved identity of every session, sorted by name.
func (m *manager) snapshots() []savedSandbox {
	ss := m.sessionsByName()
	out := make([]savedSandbox, len(ss))
	for i, s := range ss {
		out[i] = s.snapshot()
	}
	return out
}

// Disconnect stops the named session and deletes its cluster objects. If
// the delete fails the session stays, stopped, in PhaseFailed so that the
// user can retry; its objects are also collected by gc once the lease
// expires.
//
// With forget, the cluster is not touched: the session stops and the
// sandbox is dropped from the daemon, its objects left for gc (for a
// cluster that is gone or unreachable).
func (m *manager) Disconnect(ctx context.Context, name string, forget bool) error {
	m.mu.Lock()
	s, ok := m.sessions[name]
	m.mu.Unlock()
	if !ok {
		return &notFoundError{name}
	}
	s.cancel()
	interrupted := func() error {
		// The state file keeps the sandbox: a new daemon reconnects it,
		// and a disconnect then deletes its objects.
		return &stoppingError{fmt.Sprintf("the sbx daemon is stopping, so sandbox %s was not disconnected and its cluster objects may remain: run `sbx disconnect %s` again (it starts a new daemon), or let `sbx gc` collect them once the lease expired", name, name)}
	}
	select {
	case <-s.done:
	case <-ctx.Done():
		if m.stopping(ctx.Err()) {
			return interrupted()
		}
		return ctx.Err()
	}
	saved := s.snapshot()
	s.setPhase(api.PhaseDisconnecting, fmt.Sprintf("deleting the objects of sandbox %s", name))
	err := func() error {
		if forget {
			return nil
		}
		cl, err := m.clusters(ctx, saved.KubeconfigSource, saved.Context)
		if err != nil {
			// Not Open's "connect again" or "retrying": the hint
			// below says what a failed disconnect needs.
			return fmt.Errorf("open the cluster: %w", live.Cause(err))
		}
		return cl.Delete(ctx, saved.ref())
	}()
	if err != nil && m.stopping(err) {
		return interrupted()
	}
	if err != nil {
		err = &clusterError{fmt.Errorf("delete the cluster objects of sandbox %s: %w (retry `sbx disconnect %s`; if the cluster is gone, `sbx disconnect %s --forget` drops the sandbox here and `sbx gc` removes its objects once the lease expired)", name, err, name, name)}
		s.recordError(err)
		m.store.UpdateSandbox(name, func(st *api.SandboxStatus) { st.Phase = api.PhaseFailed })
		return err
	}
	m.mu.Lock()
	if m.sessions[name] == s {
		delete(m.sessions, name)
	}
	m.persistLocked()
	m.mu.Unlock()
	s.closeSubs()
	m.store.RemoveSandbox(name)
	m.notify()
	m.log.Info("sandbox disconnected", "sandbox", name, "forget", forget)
	return nil
}

// persistLocked writes the sessions to the state file. m.mu must be held.
func (m *manager) persistLocked() {
	var sbs []savedSandbox
	for _, s := range m.sessions {
		sbs = append(sbs, s.snapshot())
	}
	slices.SortFunc(sbs, func(a, b savedSandbox) int { return strings.Compare(a.Name, b.Name) })
	if err := m.state.Save(sbs); err != nil {
		m.log.Error("saving state failed; a restarted daemon may not reconnect these sandboxes", "err", err)
	}
}

func (m *manager) persist() {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.persistLocked()
}

// Wait waits for every session's supervisor to end (after the daemon's
// context is cancelled).
func (m *manager) Wait() { m.wg.Wait() }

// Reapply makes every session re-apply its objects now (the user config
// changed something the objects depend on). Keys stay.
func (m *manager) Reapply() {
	m.mu.Lock()
	defer m.mu.Unlock()
	for _, s := range m.sessions {
		select {
		case s.kick <- struct{}{}:
		default:
		}
	}
}

package daemon

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/sbx-dev/sbx/cluster"
	"github.com/sbx-dev/sbx/daemon/api"
	"github.com/sbx-dev/sbx/relay/relayargs"
	"github.com/sbx-dev/sbx/tunnel"
)

// sessionConfig tunes sessions; zero fields take defaults (withDefaults).
type sessionConfig struct {
	PoolSize      int // 0: from the user config
	Backoff       Backoff
	StatsInterval time.Duration // how often RTT, bytes and mapping probes refresh
	LeaseInterval time.Duration // how often the Lease is renewed while connected or waiting for the relay
	ProbeTimeout  time.Duration // dial timeout of a mapping probe
	ClientID      string
	User          string
	Now           func() time.Time
}

func (c sessionConfig) withDefaults() sessionConfig {
	if c.Backoff.Min <= 0 {
		c.Backoff = DefaultBackoff()
	}
	if c.StatsInterval <= 0 {
		c.StatsInterval = 2 * time.Second
	}
	if c.LeaseInterval <= 0 {
		// Three renewals per lease: one lost renewal never lets it expire.
		c.LeaseInterval = cluster.LeaseDuration / 3
	}
	if c.ProbeTimeout <= 0 {
		c.ProbeTimeout = 300 * time.Millisecond
	}
	if c.Now == nil {
		c.Now = time.Now
	}
	return c
}

// errRestart ends a connection attempt because the spec changed.
var errRestart = errors.New("spec changed; re-applying")

// PermanentError marks a failure that retrying cannot fix (an invalid spec,
// a workload that does not exist, a protocol version mismatch). The
// supervisor stops in PhaseFailed until the user connects again. Errors
// of other packages say the same with an IsPermanent method (see
// isPermanent).
type PermanentError struct{ Err error }

// IsPermanent is always true.
func (e *PermanentError) IsPermanent() bool { return true }

// Error returns the wrapped error's message.
func (e *PermanentError) Error() string { return e.Err.Error() }

// Unwrap returns the wrapped error.
func (e *PermanentError) Unwrap() error { return e.Err }

// nextStepper is an error that says itself how to recover from it.
type nextStepper interface{ NextStep() string }

// nextStepError is err with the step that recovers from it, for errors
// whose remedy is not the generic one of a failed sandbox.
type nextStepError struct {
	err  error
	next string
}

func (e *nextStepError) Error() string    { return e.err.Error() + " (" + e.next + ")" }
func (e *nextStepError) Unwrap() error    { return e.err }
func (e *nextStepError) NextStep() string { return e.next }

// failedMessage is what a sandbox that stopped retrying says: the error,
// with the generic remedy unless the error carries its own.
func failedMessage(err error) string {
	var ns nextStepper
	if errors.As(err, &ns) {
		return err.Error()
	}
	return err.Error() + " (fix the cause and run connect again)"
}

// session is one sandbox: its saved identity and the supervisor goroutine
// that keeps it connected.
type session struct {
	m    *manager
	name string
	log  *slog.Logger

	mu    sync.Mutex
	saved savedSandbox
	// takeover lets the next apply replace a relay that checks another
	// token's verifier: set when this daemon minted the token (a new
	// sandbox, a rotation, lost state) or the user connected again, and
	// cleared once that token is applied. The supervisor's own re-applies
	// (after a lost tunnel, a config change) never take a sandbox from a
	// daemon that applied its token since: the two would take turns, each
	// rollout breaking the other's tunnel.
	takeover bool
	subs     map[chan api.Progress]struct{}

	kick   chan struct{}              // cap 1: the spec changed, re-apply now
	rotate chan struct{}              // cap 1: saved.Token is new, apply it
	link   atomic.Pointer[linkHolder] // the live link while ready
	// benching is set while `sbx bench cluster` runs (bench.go): one
	// at a time.
	benching atomic.Bool
	cancel   context.CancelFunc
	done     chan struct{}
}

func (s *session) snapshot() savedSandbox {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.saved
}

// setTakeover lets the next apply take the sandbox over.
func (s *session) setTakeover() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.takeover = true
}

// mayTakeOver reports whether the next apply may replace another verifier.
func (s *session) mayTakeOver() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.takeover
}

// appliedToken records that token's verifier is in the cluster: from now
// on the sandbox is this daemon's to keep, not to take.
func (s *session) appliedToken(token string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.saved.Token == token {
		s.takeover = false
	}
}

func (s *session) routes() []route {
	s.mu.Lock()
	defer s.mu.Unlock()
	var rs []route
	for _, l := range s.saved.Spec.Spec.Local {
		for _, mp := range l.Mappings {
			rs = append(rs, route{Workload: l.Name, Port: mp.Port, ToLocal: mp.ToLocal})
		}
	}
	return rs
}

// subscribe returns a channel of this session's progress. It is closed
// when unsubscribed or when the reader fell behind.
func (s *session) subscribe() chan api.Progress {
	s.mu.Lock()
	defer s.mu.Unlock()
	ch := make(chan api.Progress, 256)
	s.subs[ch] = struct{}{}
	return ch
}

func (s *session) unsubscribe(ch chan api.Progress) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, ok := s.subs[ch]; ok {
		delete(s.subs, ch)
		close(ch)
	}
}

func (s *session) emit(p api.Progress) {
	if p.Time.IsZero() {
		p.Time = s.m.cfg.Now()
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	for ch := range s.subs {
		select {
		case ch <- p:
		default: // a stuck reader loses its stream, never stalls the session
			delete(s.subs, ch)
			close(ch)
		}
	}
}

func (s *session) setPhase(ph api.Phase, msg string) { s.setPhaseKind(ph, msg, "") }

// setPhaseKind is setPhase with whose a failure is (Progress.ErrorKind).
func (s *session) setPhaseKind(ph api.Phase, msg string, kind api.ErrorKind) {
	s.m.store.UpdateSandbox(s.name, func(st *api.SandboxStatus) {
		st.Phase = ph
		if ph != api.PhaseReady {
			st.ReadySince = time.Time{}
			st.Sessions, st.Streams, st.RTT = 0, 0, 0
		}
	})
	s.log.Info("session phase", "phase", ph, "msg", msg)
	s.emit(api.Progress{Phase: ph, Message: msg, ErrorKind: kind})
}

func (s *session) progressFn(ph api.Phase) func(cluster.Event) {
	return func(e cluster.Event) {
		msg := e.String()
		s.log.Debug("progress", "phase", ph, "msg", msg)
		s.emit(api.Progress{Phase: ph, Message: msg})
	}
}

func (s *session) recordError(err error) {
	now := s.m.cfg.Now()
	s.m.store.UpdateSandbox(s.name, func(st *api.SandboxStatus) {
		st.LastError = err.Error()
		st.LastErrorAt = now
	})
}

// run is the supervisor: connect, stay connected, and on any failure
// reconnect after a jittered exponential backoff, re-applying and
// re-finding the relay pod each time.
func (s *session) run(ctx context.Context) {
	defer close(s.done)
	// Whether each mapping's local address accepts connections is the
	// laptop's matter: it is probed in every phase, so that a sandbox
	// that failed or is still connecting does not tell the user to start
	// a service that is running.
	probed := make(chan struct{})
	go func() {
		defer close(probed)
		s.probeLocal(ctx)
	}()
	defer func() { <-probed }()
	cfg := s.m.cfg
	attempt := 0
	for {
		connectedAt, err := s.connectOnce(ctx)
		if ctx.Err() != nil {
			return
		}
		if errors.Is(err, errRestart) {
			attempt = 0
			continue
		}
		var upFor time.Duration
		if !connectedAt.IsZero() {
			attempt = 0 // it was up: the next failure is a first one (see Backoff)
			upFor = cfg.Now().Sub(connectedAt)
		}
		s.log.Warn("session attempt failed", "err", err)
		permanent := isPermanent(err)
		// One update: watchers never see "ready" next to the new error or
		// count.
		now := cfg.Now()
		s.m.store.UpdateSandbox(s.name, func(st *api.SandboxStatus) {
			st.LastError, st.LastErrorAt = err.Error(), now
			st.Phase = api.PhaseReconnecting
			if permanent {
				st.Phase = api.PhaseFailed
			} else {
				st.Reconnects++
			}
			st.ReadySince = time.Time{}
			st.Sessions, st.Streams, st.RTT = 0, 0, 0
		})
		if permanent {
			var kind api.ErrorKind
			if se := (*cluster.SpecError)(nil); errors.As(err, &se) {
				kind = api.KindUser
			}
			s.setPhaseKind(api.PhaseFailed, failedMessage(err), kind)
			select {
			case <-ctx.Done():
				return
			case <-s.kick:
				attempt = 0
				continue
			case <-s.rotate: // a new token is a new attempt
				attempt = 0
				continue
			}
		}
		delay := cfg.Backoff.Delay(attempt)
		if !connectedAt.IsZero() {
			delay = cfg.Backoff.AfterUp(upFor)
		}
		attempt++
		s.emit(api.Progress{Phase: api.PhaseReconnecting, Error: err.Error()})
		s.setPhase(api.PhaseReconnecting, fmt.Sprintf("retrying in %s", delay.Round(time.Millisecond)))
		t := time.NewTimer(delay)
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-s.kick:
			t.Stop()
			attempt = 0
		case <-s.rotate:
			t.Stop()
			attempt = 0
		case <-t.C:
		}
	}
}

// initialStatus is a sandbox's status before its first connection.
func initialStatus(saved savedSandbox, baggageKey string) api.SandboxStatus {
	st := api.SandboxStatus{
		Name:       saved.Name,
		RoutingKey: saved.RoutingKey,
		BaggageKey: baggageKey,
		Context:    saved.Context,
		Kubeconfig: saved.KubeconfigSource,
		Namespaces: slices.Clone(saved.Spec.Namespaces()),
		Phase:      api.PhaseApplying,
		Mappings:   []api.MappingStatus{},
	}
	for _, l := range saved.Spec.Spec.Local {
		for _, mp := range l.Mappings {
			from := l.From
			st.Mappings = append(st.Mappings, api.MappingStatus{
				Workload: l.Name, Namespace: l.From.Namespace, Port: mp.Port, ToLocal: mp.ToLocal, From: &from,
			})
		}
	}
	return st
}

// closeSubs ends every progress stream (the session is gone).
func (s *session) closeSubs() {
	s.mu.Lock()
	defer s.mu.Unlock()
	for ch := range s.subs {
		delete(s.subs, ch)
		close(ch)
	}
}

// linkHolder lets an interface value live in an atomic.Pointer.
type linkHolder struct{ link }

// dialOutbound opens an outbound stream over the session's live link.
func (s *session) dialOutbound(ctx context.Context, target, source string) (net.Conn, error) {
	if s.link.Load() == nil {
		st, _ := s.m.store.Sandbox(s.name)
		return nil, fmt.Errorf("sandbox %s is not connected (phase %s); `sbx status %s` shows why", s.name, st.Phase, s.name)
	}
	current := func() link {
		if h := s.link.Load(); h != nil {
			return h.link
		}
		return nil
	}
	c, err := dialThroughGrace(ctx, current, relayargs.DefaultGrace, func(l link) (net.Conn, error) {
		return l.DialOutbound(ctx, target, source)
	})
	if errors.Is(err, tunnel.ErrNoSession) {
		return nil, fmt.Errorf("sandbox %s has no tunnel session to its relay for %s: %w; `sbx status %s` shows why (a relay that does not come back after a rollout or a cut: `sbx connect %s` again)",
			s.name, target, err, s.name, s.name)
	}
	return c, err
}

// dialThroughGrace dials through the current link. While the link has no
// live session (the relay rolled out or the port-forward was cut, and
// sessions are being replaced), it tries again every 20 ms, on whichever
// link is current, for up to grace: the relay holds keyed requests that
// long for the same reasons, and a local process's call should not fail
// where the cluster's would not.
func dialThroughGrace(ctx context.Context, current func() link, grace time.Duration, dial func(link) (net.Conn, error)) (net.Conn, error) {
	l := current()
	if l == nil {
		return nil, tunnel.ErrNoSession
	}
	c, err := dial(l)
	if !errors.Is(err, tunnel.ErrNoSession) {
		return c, err
	}
	deadline := time.NewTimer(grace)
	defer deadline.Stop()
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil, fmt.Errorf("%w (waited for a tunnel session: %w)", err, ctx.Err())
		case <-deadline.C:
			return nil, fmt.Errorf("%w for %s", err, grace)
		case <-tick.C:
		}
		if l = current(); l == nil {
			continue
		}
		if c, err = dial(l); !errors.Is(err, tunnel.ErrNoSession) {
			return c, err
		}
	}
}

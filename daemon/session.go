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
	"github.com/sbx-dev/sbx/daemon/config"
	"github.com/sbx-dev/sbx/tunnel"
)

// sessionConfig tunes sessions; zero fields take defaults (withDefaults).
type sessionConfig struct {
	PoolSize      int // 0: from the user config
	Backoff       Backoff
	StatsInterval time.Duration // how often RTT, bytes and mapping probes refresh
	LeaseInterval time.Duration // how often the Lease is renewed while connected
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
// supervisor stops in PhaseFailed until the user connects again. Cluster
// implementations wrap such errors in it.
type PermanentError struct{ Err error }

// Error returns the wrapped error's message.
func (e *PermanentError) Error() string { return e.Err.Error() }

// Unwrap returns the wrapped error.
func (e *PermanentError) Unwrap() error { return e.Err }

// nextStepper is an error that says itself how to recover from it.
type nextStepper interface{ nextStep() string }

// nextStepError is err with the step that recovers from it, for errors
// whose remedy is not the generic one of a failed sandbox.
type nextStepError struct {
	err  error
	next string
}

func (e *nextStepError) Error() string    { return e.err.Error() + " (" + e.next + ")" }
func (e *nextStepError) Unwrap() error    { return e.err }
func (e *nextStepError) nextStep() string { return e.next }

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
	cancel context.CancelFunc
	done   chan struct{}
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

func (s *session) setPhase(ph api.Phase, msg string) {
	s.m.store.UpdateSandbox(s.name, func(st *api.SandboxStatus) {
		st.Phase = ph
		if ph != api.PhaseReady {
			st.ReadySince = time.Time{}
			st.Sessions, st.Streams, st.RTT = 0, 0, 0
		}
	})
	s.log.Info("session phase", "phase", ph, "msg", msg)
	s.emit(api.Progress{Phase: ph, Message: msg})
}

func (s *session) progressFn(ph api.Phase) func(string) {
	return func(msg string) {
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
		var perm *PermanentError
		permanent := errors.As(err, &perm)
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
			s.setPhase(api.PhaseFailed, failedMessage(err))
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

// connectOnce makes one connection and holds it until it breaks. It returns
// when it became ready (zero if never) and why it ended.
func (s *session) connectOnce(ctx context.Context) (time.Time, error) {
	cfg := s.m.cfg
	saved := s.snapshot()
	takeover := s.mayTakeOver()
	if saved.Token == "" {
		return time.Time{}, &PermanentError{errors.New("no tunnel token (a bug in the daemon: connect the sandbox again)")}
	}
	s.setPhase(api.PhaseApplying, fmt.Sprintf("applying sandbox %s (routing key %s)", saved.Name, saved.RoutingKey))
	cl, err := s.m.clusters(ctx, saved.KubeconfigSource, saved.Context)
	if err != nil {
		return time.Time{}, fmt.Errorf("open cluster (context %q): %w", saved.Context, err)
	}
	conf := s.m.conf()
	ao := ApplyOptions{
		RoutingKey:          saved.RoutingKey,
		TokenVerifier:       tunnel.VerifierOf(saved.Token).String(),
		RefuseOtherVerifier: !takeover,
		BaggageKey:          conf.BaggageKey,
		RelayImage:          conf.RelayImage,
		RelayMaxStreams:     conf.RelayMaxStreams,
		RelayDeny:           conf.Outbound.Deny,
		Holder:              cfg.User,
		ClusterDomain:       conf.ClusterDomain,
	}
	applied, err := cl.Apply(ctx, &saved.Spec, ao, s.progressFn(api.PhaseApplying))
	if err != nil {
		// Every place this shows (status, connect's answer, the log)
		// already names the sandbox.
		return time.Time{}, fmt.Errorf("apply the cluster objects: %w", err)
	}
	s.appliedToken(saved.Token)
	if applied.Sandbox == "" {
		applied.Sandbox, applied.RoutingKey = saved.Name, saved.RoutingKey
	}
	if len(applied.Namespaces) == 0 {
		applied.Namespaces = saved.Spec.Namespaces()
	}
	if applied.Namespace != "" && applied.Namespace != saved.Namespace {
		s.mu.Lock()
		s.saved.Namespace = applied.Namespace
		s.mu.Unlock()
		s.m.persist()
	}
	s.m.store.UpdateSandbox(s.name, func(st *api.SandboxStatus) {
		for i, mp := range st.Mappings {
			st.Mappings[i].Services = slices.Clone(applied.Services[MappingKey{Workload: mp.Workload, Port: mp.Port}])
		}
		if applied.Routes != nil {
			st.Routes = routeState(st.Routes, *applied.Routes, cfg.Now(), true)
		}
	})
	t := applied.Target
	t.TokenVerifier = ao.TokenVerifier
	// The token the link's sessions authenticate with: a rotation while
	// connected switches it for the sessions dialed from then on.
	var token atomic.Pointer[string]
	token.Store(&saved.Token)
	// While this connection lasts, the daemon keeps the routes in place
	// (a CD sync replaces VirtualServices' routes).
	if rw, ok := cl.(RouteWatcher); ok {
		wctx, stopWatch := context.WithCancel(ctx)
		watched := make(chan struct{})
		go func() {
			defer close(watched)
			rw.WatchRoutes(wctx, &saved.Spec, t, ao, s.routeChecked)
		}()
		defer func() {
			stopWatch()
			<-watched
		}()
	}
	s.setPhase(api.PhaseWaitingRelay, fmt.Sprintf("waiting for relay pod of %s in namespace %s", t.Sandbox, t.Namespace))
	if err := cl.WaitRelay(ctx, t, s.progressFn(api.PhaseWaitingRelay)); err != nil {
		return time.Time{}, fmt.Errorf("relay of sandbox %s: %w", t.Sandbox, err)
	}
	poolSize := cfg.PoolSize
	if poolSize <= 0 {
		poolSize = conf.PoolSize
	}
	if poolSize <= 0 {
		poolSize = config.DefaultPoolSize
	}
	s.m.store.UpdateSandbox(s.name, func(st *api.SandboxStatus) { st.BaggageKey = conf.BaggageKey })
	s.setPhase(api.PhaseConnecting, fmt.Sprintf("opening %d tunnel session(s) through port-forward", poolSize))
	lk, err := s.m.link(ctx, linkParams{
		Target:   t,
		Token:    func() string { return *token.Load() },
		ClientID: cfg.ClientID,
		User:     cfg.User,
		PoolSize: poolSize,
		Dial:     func(ctx context.Context) (net.Conn, error) { return cl.DialRelay(ctx, t) },
		Routes:   s.routes,
		Logger:   s.log,
	})
	if err != nil {
		return time.Time{}, fmt.Errorf("tunnel to relay of sandbox %s: %w", t.Sandbox, err)
	}
	s.link.Store(&linkHolder{lk})
	defer func() {
		s.link.Store(nil)
		_ = lk.Close()
	}()
	connectedAt := cfg.Now()
	s.refresh(ctx, lk, connectedAt)
	s.m.store.UpdateSandbox(s.name, func(st *api.SandboxStatus) { st.Phase, st.ReadySince = api.PhaseReady, connectedAt })
	s.log.Info("session phase", "phase", api.PhaseReady, "routingKey", t.RoutingKey)
	st, _ := s.m.store.Sandbox(s.name)
	// A connect that rotated the token while this attempt was under way
	// is done when the rotation below is.
	s.emit(api.Progress{Phase: api.PhaseReady, Done: s.snapshot().Token == saved.Token, Sandbox: &st})
	if err := cl.RenewLease(ctx, t); err != nil {
		if errors.Is(err, ErrSandboxGone) {
			return connectedAt, fmt.Errorf("renew lease of sandbox %s: %w; re-applying", t.Sandbox, err)
		}
		s.log.Warn("lease renewal failed", "err", err)
	}

	statsT := time.NewTicker(cfg.StatsInterval)
	defer statsT.Stop()
	leaseT := time.NewTicker(cfg.LeaseInterval)
	defer leaseT.Stop()
	// A rotation waits for the new token's relay pod in the background,
	// so the lease and the status go on meanwhile.
	rctx, stopRotation := context.WithCancel(ctx)
	var rotations sync.WaitGroup
	defer func() {
		stopRotation()
		rotations.Wait()
	}()
	var rotated chan error // non-nil while a rotation waits for its relay
	for {
		select {
		case <-ctx.Done():
			return connectedAt, ctx.Err()
		case <-s.kick:
			return connectedAt, errRestart
		case <-s.rotate:
			cur := s.snapshot()
			if cur.Token == *token.Load() {
				continue // this attempt applied it already
			}
			wt, err := s.rotateLive(ctx, cl, cur, ao, t)
			if err != nil {
				return connectedAt, err
			}
			token.Store(&cur.Token)
			// A later rotation replaces the channel: only the last
			// one's relay is waited for.
			ch := make(chan error, 1)
			rotated = ch
			rotations.Add(1)
			go func() {
				defer rotations.Done()
				ch <- cl.WaitRelay(rctx, wt, s.progressFn(api.PhaseReady))
			}()
		case err := <-rotated:
			rotated = nil
			if err != nil {
				return connectedAt, fmt.Errorf("relay of sandbox %s for the rotated token: %w", t.Sandbox, err)
			}
			s.log.Info("tunnel token rotated: the new relay pod is ready; sessions move to it as the old one drains")
			st, _ := s.m.store.Sandbox(s.name)
			s.emit(api.Progress{Phase: api.PhaseReady, Done: true, Sandbox: &st,
				Message: "token rotated: the relay checks the new token; the tunnel moves to its new pod as the old one drains"})
		case <-lk.Done():
			return connectedAt, fmt.Errorf("tunnel to relay of sandbox %s lost: %w", t.Sandbox, lk.Err())
		case <-statsT.C:
			s.refresh(ctx, lk, connectedAt)
		case <-leaseT.C:
			if err := cl.RenewLease(ctx, t); err != nil && ctx.Err() == nil {
				if errors.Is(err, ErrSandboxGone) {
					return connectedAt, fmt.Errorf("renew lease of sandbox %s: %w; re-applying", t.Sandbox, err)
				}
				s.log.Warn("lease renewal failed", "err", err)
				s.recordError(fmt.Errorf("renew lease of sandbox %s: %w (gc may remove it if this persists)", t.Sandbox, err))
			}
		}
	}
}

// rotateLive applies the verifier of cur's new token while the tunnel is
// up and returns the relay to wait for. The relay Deployment rolls: its new
// pod checks the new token, and the old one, still serving the sessions it
// has, drains once the new one is ready; the link then opens sessions to
// the new pod with the new token (its Token func) and the old ones finish,
// as in any rollout, so no request is dropped. Until then a session the
// link replaces may meet the old pod and be refused, which it survives
// with the others.
func (s *session) rotateLive(ctx context.Context, cl Cluster, cur savedSandbox, ao ApplyOptions, t Target) (Target, error) {
	s.emit(api.Progress{Phase: api.PhaseReady, Message: fmt.Sprintf("rotating the tunnel token of sandbox %s: applying its verifier (the relay rolls; the tunnel stays up)", cur.Name)})
	ao.TokenVerifier = tunnel.VerifierOf(cur.Token).String()
	ao.RefuseOtherVerifier = false // the user asked for a new token here
	if _, err := cl.Apply(ctx, &cur.Spec, ao, s.progressFn(api.PhaseReady)); err != nil {
		return Target{}, fmt.Errorf("rotate the tunnel token: apply the cluster objects: %w", err)
	}
	s.appliedToken(cur.Token)
	t.TokenVerifier = ao.TokenVerifier
	return t, nil
}

// routeChecked records a check of the sandbox's routes, and says so when
// the daemon had to put them back.
func (s *session) routeChecked(rc RouteCheck) {
	if rc.Err != nil {
		s.log.Warn("checking the sandbox's routes failed", "err", rc.Err)
	} else if len(rc.Changed) > 0 {
		s.log.Info("sandbox routes restored", "virtualServices", rc.Changed)
	}
	s.m.store.UpdateSandbox(s.name, func(st *api.SandboxStatus) {
		st.Routes = routeState(st.Routes, rc, s.m.cfg.Now(), false)
	})
}

// refresh samples the link and probes each mapping's local address.
func (s *session) refresh(ctx context.Context, lk link, since time.Time) {
	ls := lk.Stats()
	listening := map[string]bool{}
	for _, r := range s.routes() {
		if _, ok := listening[r.ToLocal]; !ok {
			listening[r.ToLocal] = canDial(ctx, "tcp", r.ToLocal, s.m.cfg.ProbeTimeout)
		}
	}
	s.m.store.UpdateSandbox(s.name, func(st *api.SandboxStatus) {
		st.Sessions, st.RTT, st.BytesIn, st.BytesOut, st.Streams = ls.Sessions, ls.RTT, ls.BytesIn, ls.BytesOut, ls.Streams
		for i := range st.Mappings {
			st.Mappings[i].Listening = listening[st.Mappings[i].ToLocal]
		}
	})
}

// canDial reports whether something accepts connections at addr (a local
// app's TCP address, the daemon's unix socket) within timeout. It gives up
// when ctx ends so a disconnect never waits for probes.
func canDial(ctx context.Context, network, addr string, timeout time.Duration) bool {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	var d net.Dialer
	c, err := d.DialContext(ctx, network, addr)
	if err != nil {
		return false
	}
	_ = c.Close()
	return true
}

// initialStatus is a sandbox's status before its first connection.
func initialStatus(saved savedSandbox, baggageKey string) api.SandboxStatus {
	src := saved.KubeconfigSource
	st := api.SandboxStatus{
		Name:       saved.Name,
		RoutingKey: saved.RoutingKey,
		BaggageKey: baggageKey,
		Context:    saved.Context,
		Kubeconfig: &src,
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
	h := s.link.Load()
	if h == nil {
		st, _ := s.m.store.Sandbox(s.name)
		return nil, fmt.Errorf("sandbox %s is not connected (phase %s); `sbx status %s` shows why", s.name, st.Phase, s.name)
	}
	return h.DialOutbound(ctx, target, source)
}

package daemon

import (
	"context"
	"errors"
	"fmt"
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

// One connection of a session: apply, wait for the relay, open the
// tunnel pool and hold it until it breaks (session.go supervises and
// retries).

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
	ao := cluster.Options{
		RoutingKey:          saved.RoutingKey,
		TokenVerifier:       tunnel.VerifierOf(saved.Token).String(),
		RefuseOtherVerifier: !takeover,
		BaggageKey:          conf.BaggageKey,
		RelayImage:          conf.RelayImage,
		RelayMaxStreams:     conf.RelayMaxStreams,
		RelayDeny:           conf.Outbound.Deny,
		Holder:              cfg.User,
		ClusterDomain:       conf.ClusterDomain,
		Mesh:                conf.Mesh,
	}
	applied, err := cl.Apply(ctx, &saved.Spec, ao, s.progressFn(api.PhaseApplying))
	if err != nil {
		// Every place this shows (status, connect's answer, the log)
		// already names the sandbox.
		return time.Time{}, supervisorError(saved.Name, fmt.Errorf("apply the cluster objects: %w", err))
	}
	s.appliedToken(saved.Token)
	t := applied.Ref
	if t.Namespace != "" && t.Namespace != saved.Namespace {
		s.mu.Lock()
		s.saved.Namespace = t.Namespace
		s.mu.Unlock()
		s.m.persist()
	}
	s.m.store.UpdateSandbox(s.name, func(st *api.SandboxStatus) {
		for i, mp := range st.Mappings {
			st.Mappings[i].Services = slices.Clone(applied.Services[cluster.Mapping{Workload: mp.Workload, Port: mp.Port}])
		}
		if applied.Routes != nil {
			st.Routes = routeState(st.Routes, applied.Routes, nil, cfg.Now(), true)
		}
	})
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
	s.setPhase(api.PhaseWaitingRelay, fmt.Sprintf("waiting for relay pod of %s in namespace %s", t.Name, t.Namespace))
	stopRenewing := s.renewWhileWaiting(ctx, cl, t)
	err = cl.WaitRelay(ctx, t, s.progressFn(api.PhaseWaitingRelay))
	stopRenewing()
	if err != nil {
		return time.Time{}, supervisorError(t.Name, fmt.Errorf("relay of sandbox %s: %w", t.Name, err))
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
		Ref:      t,
		Token:    func() string { return *token.Load() },
		ClientID: cfg.ClientID,
		User:     cfg.User,
		PoolSize: poolSize,
		Dial:     func(ctx context.Context) (net.Conn, error) { return cl.DialRelay(ctx, t) },
		Routes:   s.routes,
		Logger:   s.log,
	})
	if err != nil {
		return time.Time{}, fmt.Errorf("tunnel to relay of sandbox %s: %w", t.Name, err)
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
		if errors.Is(err, cluster.ErrSandboxGone) {
			return connectedAt, fmt.Errorf("renew lease of sandbox %s: %w; re-applying", t.Name, err)
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
				return connectedAt, supervisorError(t.Name, fmt.Errorf("relay of sandbox %s for the rotated token: %w", t.Name, err))
			}
			s.log.Info("tunnel token rotated: the new relay pod is ready; sessions move to it as the old one drains")
			st, _ := s.m.store.Sandbox(s.name)
			s.emit(api.Progress{Phase: api.PhaseReady, Done: true, Sandbox: &st,
				Message: "token rotated: the relay checks the new token; the tunnel moves to its new pod as the old one drains"})
		case <-lk.Done():
			return connectedAt, fmt.Errorf("tunnel to relay of sandbox %s lost: %w", t.Name, lk.Err())
		case <-statsT.C:
			s.refresh(ctx, lk, connectedAt)
		case <-leaseT.C:
			if err := cl.RenewLease(ctx, t); err != nil && ctx.Err() == nil {
				if errors.Is(err, cluster.ErrSandboxGone) {
					return connectedAt, fmt.Errorf("renew lease of sandbox %s: %w; re-applying", t.Name, err)
				}
				s.log.Warn("lease renewal failed", "err", err)
				s.recordError(fmt.Errorf("renew lease of sandbox %s: %w (gc may remove it if this persists)", t.Name, err))
			}
		}
	}
}

// renewWhileWaiting renews the sandbox's Lease every LeaseInterval until
// the returned func is called (which waits for it to stop): a relay that
// takes minutes to start (an image pull, a busy node) must not make the
// sandbox look expired to others' `sbx list`, or to their `sbx gc`.
func (s *session) renewWhileWaiting(ctx context.Context, cl Cluster, t cluster.Ref) (stop func()) {
	ctx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() {
		defer close(done)
		tick := time.NewTicker(s.m.cfg.LeaseInterval)
		defer tick.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-tick.C:
				if err := cl.RenewLease(ctx, t); err != nil && ctx.Err() == nil {
					s.log.Warn("lease renewal while waiting for the relay failed", "err", err)
				}
			}
		}
	}()
	return func() {
		cancel()
		<-done
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
func (s *session) rotateLive(ctx context.Context, cl Cluster, cur savedSandbox, ao cluster.Options, t cluster.Ref) (cluster.Ref, error) {
	s.emit(api.Progress{Phase: api.PhaseReady, Message: fmt.Sprintf("rotating the tunnel token of sandbox %s: applying its verifier (the relay rolls; the tunnel stays up)", cur.Name)})
	ao.TokenVerifier = tunnel.VerifierOf(cur.Token).String()
	ao.RefuseOtherVerifier = false // the user asked for a new token here
	if _, err := cl.Apply(ctx, &cur.Spec, ao, s.progressFn(api.PhaseReady)); err != nil {
		return cluster.Ref{}, supervisorError(cur.Name, fmt.Errorf("rotate the tunnel token: apply the cluster objects: %w", err))
	}
	s.appliedToken(cur.Token)
	t.TokenVerifier = ao.TokenVerifier
	return t, nil
}

// routeChecked records a check of the sandbox's routes, and says so when
// the daemon had to put them back.
func (s *session) routeChecked(rs *cluster.RouteStatus, err error) {
	if err != nil {
		s.log.Warn("checking the sandbox's routes failed", "err", err)
	} else if rs != nil && len(rs.Changed) > 0 {
		s.log.Info("sandbox routes restored", "virtualServices", rs.Changed)
	}
	s.m.store.UpdateSandbox(s.name, func(st *api.SandboxStatus) {
		st.Routes = routeState(st.Routes, rs, err, s.m.cfg.Now(), false)
	})
}

// supervisorError is err of a call to the sandbox's Cluster as the
// supervisor handles it: a relay of another daemon's token ends the
// sandbox with the steps to take it back (verifierConflict), and what
// the Cluster says retrying cannot cure stops the retries.
func supervisorError(sandbox string, err error) error {
	switch {
	case err == nil:
		return nil
	case errors.Is(err, cluster.ErrVerifierMismatch):
		return verifierConflict(sandbox, err)
	case isPermanent(err):
		return &PermanentError{err}
	}
	return err
}

// verifierConflict is the end of a sandbox whose relay another daemon
// applied with its own token since (or someone edited): this daemon stops
// rather than take it back by itself, which would break the other's
// tunnel and make the two take turns; the user decides.
func verifierConflict(sandbox string, err error) error {
	return &PermanentError{&nextStepError{
		fmt.Errorf("%w; this daemon stopped reconnecting so that two daemons do not take turns", err),
		fmt.Sprintf("to take the sandbox back here, run `sbx connect %s --rotate-token` (or connect it again with -f FILE); the other daemon then stops the same way", sandbox)}}
}

// refresh samples the link.
func (s *session) refresh(ctx context.Context, lk link, since time.Time) {
	ls := lk.Stats()
	s.m.store.UpdateSandbox(s.name, func(st *api.SandboxStatus) {
		st.Sessions, st.RTT, st.BytesIn, st.BytesOut, st.Streams = ls.Sessions, ls.RTT, ls.BytesIn, ls.BytesOut, ls.Streams
	})
}

// probeLocal probes each mapping's local address now and every
// StatsInterval until ctx ends, whatever the phase.
func (s *session) probeLocal(ctx context.Context) {
	t := time.NewTicker(s.m.cfg.StatsInterval)
	defer t.Stop()
	for {
		listening := map[string]bool{}
		for _, r := range s.routes() {
			if _, ok := listening[r.ToLocal]; !ok {
				listening[r.ToLocal] = canDial(ctx, "tcp", r.ToLocal, s.m.cfg.ProbeTimeout)
			}
		}
		if ctx.Err() != nil {
			return
		}
		s.m.store.UpdateSandbox(s.name, func(st *api.SandboxStatus) {
			for i := range st.Mappings {
				st.Mappings[i].Listening = listening[st.Mappings[i].ToLocal]
			}
		})
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
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

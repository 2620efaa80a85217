package outbound

import (
	"context"
	"log/slog"
	"sync"
	"time"

	"github.com/sbx-dev/sbx/daemon/api"
	"github.com/sbx-dev/sbx/daemon/config"
)

// DefaultRetry is how soon a Runner that failed to start is tried again
// (the hosts file's owner may exit, a proxy port may free up).
const DefaultRetry = 30 * time.Second

// ManagerOptions are Options without the config, which the Manager
// follows live.
type ManagerOptions struct {
	Catalog             *Catalog
	Dial                Dialer
	LockPath, StatePath string
	ProxyPortPath       string
	Baggage             func() (key, value string)
	ProxyPassword       func() (string, error)
	Logger              *slog.Logger
	// Retry overrides DefaultRetry.
	Retry time.Duration
	// Changed, when set, is called (without blocking for long) after a
	// Runner started or failed to start and after one stopped: Status
	// changed, so whoever shows it can read it again.
	Changed func()
}

// Manager keeps one Runner in step with the user config: the daemon calls
// SetConfig from its config Watcher's OnChange, and a change to the
// outbound section replaces the Runner (the old one is fully undone
// first: hosts block removed, proxy closed). A Runner that cannot start is
// reported in Status().Error and retried.
type Manager struct {
	opts ManagerOptions
	log  *slog.Logger
	// started is closed once Run's first attempt to start a Runner has
	// finished, either way (WaitStarted).
	started     chan struct{}
	startedOnce sync.Once

	mu      sync.Mutex
	cfg     config.Outbound
	kick    chan struct{}
	current *Runner
	err     string
}

// NewManager returns a Manager for the initial config; Run starts it.
func NewManager(opts ManagerOptions, cfg config.Outbound) *Manager {
	if opts.Retry <= 0 {
		opts.Retry = DefaultRetry
	}
	log := opts.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Manager{opts: opts, log: log, cfg: cfg, kick: make(chan struct{}, 1), started: make(chan struct{})}
}

// WaitStarted blocks until Run's first attempt to start a Runner has
// finished, so that Status reports a Runner or the reason there is none
// (Error), or until ctx ends (it then returns ctx.Err()). The daemon holds
// its readiness back on it, so that a client's first status already shows
// the proxy address. Only the first attempt counts: after that it returns
// at once, also across later Runs.
func (m *Manager) WaitStarted(ctx context.Context) error {
	select {
	case <-m.started:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// SetConfig applies a new outbound config; it never blocks.
func (m *Manager) SetConfig(cfg config.Outbound) {
	m.mu.Lock()
	m.cfg = cfg
	m.mu.Unlock()
	select {
	case m.kick <- struct{}{}:
	default:
	}
}

// Status is the current Runner's Status, or the reason there is none.
func (m *Manager) Status() api.OutboundStatus {
	m.mu.Lock()
	r, errMsg, cfg := m.current, m.err, m.cfg
	m.mu.Unlock()
	if r == nil {
		return api.OutboundStatus{Mode: string(cfg.Mode), Error: errMsg}
	}
	return r.Status()
}

func (m *Manager) changed() {
	if m.opts.Changed != nil {
		m.opts.Changed()
	}
}

// Run serves until ctx ends, then undoes the current Runner and returns.
func (m *Manager) Run(ctx context.Context) error {
	var (
		running config.Outbound
		stop    context.CancelFunc
		done    chan struct{}
	)
	halt := func() {
		if stop == nil {
			return
		}
		stop()
		<-done
		stop, done = nil, nil
		m.mu.Lock()
		m.current = nil
		m.mu.Unlock()
		m.changed()
	}
	defer halt()
	retry := time.NewTimer(time.Hour)
	retry.Stop()
	defer retry.Stop()
	for {
		m.mu.Lock()
		cfg := m.cfg
		m.mu.Unlock()
		if stop == nil || NeedsRestart(running, cfg) {
			halt()
			r, err := Start(Options{Config: cfg, Catalog: m.opts.Catalog, Dial: m.opts.Dial,
				LockPath: m.opts.LockPath, StatePath: m.opts.StatePath, ProxyPortPath: m.opts.ProxyPortPath, Baggage: m.opts.Baggage,
				ProxyPassword: m.opts.ProxyPassword, Logger: m.log})
			m.mu.Lock()
			if err != nil {
				m.err = err.Error()
				m.mu.Unlock()
				m.log.Warn("outbound access is off until this is fixed", "err", err)
				retry.Reset(m.opts.Retry)
			} else {
				retry.Stop()
				m.err = ""
				m.current = r
				m.mu.Unlock()
				running = cfg
				rctx, cancel := context.WithCancel(ctx)
				stop, done = cancel, make(chan struct{})
				go func(d chan struct{}) {
					defer close(d)
					if err := r.Run(rctx); err != nil {
						m.log.Warn("outbound access stopped with an error", "err", err)
					}
				}(done)
				st := r.Status()
				m.log.Info("outbound access ready", "mode", st.Mode, "proxy", st.ProxyAddr, "hostsFile", st.HostsFile)
			}
			m.startedOnce.Do(func() { close(m.started) })
			m.changed()
		}
		select {
		case <-ctx.Done():
			return nil
		case <-m.kick:
		case <-retry.C: // no Runner: try the same config again
		}
	}
}

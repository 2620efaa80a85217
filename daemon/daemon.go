package daemon

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"os"
	"os/user"
	"path/filepath"
	"slices"
	"sync"
	"time"

	"github.com/sbx-dev/sbx/cluster"
	"github.com/sbx-dev/sbx/daemon/api"
	"github.com/sbx-dev/sbx/daemon/config"
	"github.com/sbx-dev/sbx/tunnel"
)

// Options configure a Daemon. Zero fields take defaults.
type Options struct {
	Paths   api.Paths
	Logger  *slog.Logger
	Version string
	// LogPath is reported to clients (`sbx logs`); the caller decides where
	// the logger writes.
	LogPath string
	// Clusters opens the Cluster for a kube context. Required.
	Clusters ClusterProvider
	// ConfigPath is the user config file (config.DefaultPath); it is
	// watched and applied live. Empty means the defaults, unwatched.
	ConfigPath string
	// PoolSize overrides the config's number of tunnel sessions per
	// sandbox when positive.
	PoolSize int
	// Backoff of the reconnect supervisor (default 0.5 s → 30 s).
	Backoff Backoff
	// StatsInterval, LeaseInterval tune how often sessions refresh their
	// status and renew their Lease.
	StatsInterval time.Duration
	LeaseInterval time.Duration
	// Now is the clock (tests).
	Now func() time.Time
	// Tunnel tunes the tunnel sessions; nil means tunnel.DefaultConfig.
	Tunnel *tunnel.Config
	// HostsFile and HostsRange, when set, override the user config's
	// outbound.hostsFile and outbound.hostsRange (tests, and embedders
	// that must never edit /etc/hosts).
	HostsFile string
	// SystemHostsFile is the machine's hosts file, which an unset
	// outbound.hostsFile means; the sbx command sets config.DefaultHostsFile.
	// Left empty (a test, an embedding program), hosts mode edits only a
	// hosts file that HostsFile or the config names: nothing detects a test
	// binary, the machine's file is simply never the default.
	SystemHostsFile string
	HostsRange      netip.Prefix
	// Manager is the service manager that runs this daemon (see
	// Status.Managed); empty when it is not run by one.
	Manager string

	// link builds tunnel links; nil uses the tunnel package. Tests swap it.
	link linker
	// newToken mints tunnel tokens; nil is cluster.NewToken. Tests whose
	// relay starts before the daemon connects pin it.
	newToken func() (string, error)
	// beforeReady runs after the socket is open and before the daemon is
	// ready (tests hold readiness back with it).
	beforeReady func()
	// watchQueue bounds each watcher's queue (tests make it small).
	watchQueue int
	// peerUID reads a client's uid (tests fake it); nil means SO_PEERCRED.
	peerUID func(net.Conn) (int, bool)
}

// Daemon is the laptop daemon: the local API on its unix socket and the
// sandbox sessions behind it.
type Daemon struct {
	opts    Options
	log     *slog.Logger
	store   *store
	mgr     *manager
	logPath string
	now     func() time.Time
	peerUID func(net.Conn) (int, bool)

	out       *outboundCtl
	proxyCred *proxyCredential
	confW     *config.Watcher // nil without Options.ConfigPath
	cfgMu     sync.Mutex
	applied   *config.Config // the config sessions were last applied with

	ready    chan struct{} // closed once state is loaded and sessions restored
	stopping chan struct{} // closed when shutdown was requested
	stopOnce sync.Once
}

// New returns a daemon; Run starts it.
func New(opts Options) (*Daemon, error) {
	if opts.Clusters == nil {
		return nil, errors.New("daemon: Options.Clusters is required")
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	if opts.Paths.RuntimeDir == "" {
		opts.Paths = api.DefaultPaths(nil)
	}
	if opts.LogPath == "" {
		opts.LogPath = opts.Paths.Log()
	}
	if opts.link == nil {
		opts.link = newTunnelLinker(opts.Tunnel)
	}
	if opts.newToken == nil {
		opts.newToken = cluster.NewToken
	}
	cfg := sessionConfig{
		PoolSize:      opts.PoolSize,
		Backoff:       opts.Backoff,
		StatsInterval: opts.StatsInterval,
		LeaseInterval: opts.LeaseInterval,
		ClientID:      newClientID(),
		User:          userAtHost(),
		Now:           opts.Now,
	}.withDefaults()
	if opts.peerUID == nil {
		opts.peerUID = peerUID
	}
	d := &Daemon{
		peerUID:  opts.peerUID,
		opts:     opts,
		log:      opts.Logger,
		logPath:  opts.LogPath,
		now:      cfg.Now,
		ready:    make(chan struct{}),
		stopping: make(chan struct{}),
	}
	d.proxyCred = &proxyCredential{path: filepath.Join(opts.Paths.StateDir, proxyCredentialFile), log: opts.Logger}
	d.store = newStore(api.Status{Version: opts.Version, PID: os.Getpid(), LogPath: opts.LogPath, Managed: opts.Manager}, opts.watchQueue)
	if opts.ConfigPath != "" {
		d.confW = config.NewWatcher(opts.ConfigPath, config.WatcherOptions{
			Logger:   opts.Logger,
			OnChange: d.configChanged,
			OnError:  d.configError,
		})
		if err := d.confW.Err(); err != nil {
			d.store.SetConfigError(configErrorText(opts.ConfigPath, err))
		}
		// What sessions start with: the first edit is compared with it,
		// not taken as a change of everything.
		d.applied = d.confW.Config()
	}
	d.mgr = &manager{
		conf:       d.config,
		configPath: opts.ConfigPath,
		log:        opts.Logger,
		store:      d.store,
		state:      &stateFile{path: opts.Paths.State()},
		clusters:   opts.Clusters,
		link:       opts.link,
		newToken:   opts.newToken,
		cfg:        cfg,
		sessions:   map[string]*session{},
	}
	d.out = newOutboundCtl(d, d.outboundConfig(d.config()))
	d.mgr.changed = d.out.changed
	return d, nil
}

// Run opens the socket first (so clients can connect at once and wait for
// readiness), loads the saved state, restores its sandboxes, and serves
// until ctx is cancelled or a client asks for shutdown. Sessions are
// stopped on the way out but their cluster objects stay: the next daemon
// reconnects them with the same routing keys.
func (d *Daemon) Run(ctx context.Context) error {
	ln, err := listenSocket(d.opts.Paths)
	if err != nil {
		return err
	}
	d.log.Info("daemon listening", "socket", d.opts.Paths.Socket(), "pid", os.Getpid(), "version", d.opts.Version)

	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	d.mgr.ctx = ctx

	srv := &http.Server{
		Handler:           d.newHandler(),
		ReadHeaderTimeout: 10 * time.Second,
		BaseContext:       func(_ net.Listener) context.Context { return ctx },
		ConnContext: func(ctx context.Context, c net.Conn) context.Context {
			if uid, ok := d.peerUID(c); ok {
				ctx = context.WithValue(ctx, peerUIDKey{}, uid)
			}
			return ctx
		},
		ErrorLog: slog.NewLogLogger(d.log.Handler(), slog.LevelDebug),
	}
	serveErr := make(chan error, 1)
	go func() { serveErr <- srv.Serve(ln) }()
	var bg sync.WaitGroup
	if d.confW != nil {
		bg.Add(1)
		go func() {
			defer bg.Done()
			if err := d.confW.Run(ctx); err != nil {
				d.log.Warn("config watch stopped", "err", err)
				d.store.SetConfigError(err.Error())
			}
		}()
	}

	if d.opts.beforeReady != nil {
		d.opts.beforeReady()
	}
	saved, loadErr := d.mgr.state.Load()
	if loadErr != nil {
		// Keep serving: the user needs the daemon to see the error and
		// to fix things; the state file is left untouched.
		d.log.Error("state not loaded", "err", loadErr)
		d.store.SetStateError(loadErr.Error())
	} else {
		d.mgr.Restore(saved)
	}
	// Outbound access comes up before readiness, so that the first
	// client (`sbx run` starting the daemon) sees the proxy address.
	d.out.start(ctx, &bg)
	close(d.ready)

	var runErr error
	select {
	case <-ctx.Done():
	case <-d.stopping:
		d.log.Info("shutdown requested by a client")
	case err := <-serveErr:
		runErr = fmt.Errorf("serve the local API: %w", err)
	}
	d.requestStop()
	cancel()
	d.mgr.Wait()
	bg.Wait()
	d.store.CloseAll()
	shCtx, shCancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer shCancel()
	_ = srv.Shutdown(shCtx)
	_ = ln.Close()
	if runErr == nil {
		if err := <-serveErr; err != nil && !errors.Is(err, http.ErrServerClosed) {
			runErr = err
		}
	}
	d.log.Info("daemon stopped")
	return runErr
}

func (d *Daemon) requestStop() {
	d.stopOnce.Do(func() { close(d.stopping) })
}

func newClientID() string {
	b := make([]byte, 8)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

func userAtHost() string {
	name := "unknown"
	if u, err := user.Current(); err == nil {
		name = u.Username
	}
	host, _ := os.Hostname()
	return name + "@" + host
}

// config returns the user config in use.
func (d *Daemon) config() *config.Config {
	if d.confW == nil {
		return config.Default()
	}
	return d.confW.Config()
}

// configChanged applies a new valid config: sessions re-apply when their
// cluster objects depend on what changed (relay image, relay stream cap,
// the relay's deny list, baggage key); the pool size applies from the next
// connection; outbound access follows the rest of its section live (a mode
// change swaps hosts file and proxy).
func (d *Daemon) configChanged(c *config.Config) {
	d.log.Info("config changed", "relayImage", c.RelayImage, "relayMaxStreams", c.RelayMaxStreams,
		"relayDeny", c.Outbound.Deny, "baggageKey", c.BaggageKey, "poolSize", c.PoolSize, "mesh", c.Mesh)
	d.cfgMu.Lock()
	prev := d.applied
	d.applied = c
	d.cfgMu.Unlock()
	if prev.RelayImage != c.RelayImage || prev.RelayMaxStreams != c.RelayMaxStreams || prev.BaggageKey != c.BaggageKey ||
		prev.Mesh != c.Mesh || !slices.Equal(prev.Outbound.Deny, c.Outbound.Deny) {
		d.mgr.Reapply()
	}
	d.out.setConfig(c)
}

func (d *Daemon) configError(err error) {
	if err == nil {
		d.store.SetConfigError("")
		return
	}
	d.store.SetConfigError(configErrorText(d.opts.ConfigPath, err))
}

func configErrorText(path string, err error) string {
	return fmt.Sprintf("config %s: %v (the previous configuration stays in use until the file is fixed)", path, err)
}

// DialOutbound opens a connection from this laptop to target (host:port,
// a cluster name such as driver.hotrod.svc.cluster.local:8082) through the
// named sandbox's tunnel: the relay dials it inside the cluster. It is the
// seam for outbound access (hosts-file listeners, SOCKS5/HTTP proxy);
// source names the local peer for the relay's logs. A dial the relay could
// not make returns a *tunnel.DialError with its reason; for a ctx marked
// with outbound.WithEarlyOpen (hosts mode) the connection's first Read
// does, and the first bytes written go out without waiting.
func (d *Daemon) DialOutbound(ctx context.Context, sandbox, target, source string) (net.Conn, error) {
	s, ok := d.mgr.Get(sandbox)
	if !ok {
		return nil, &notFoundError{sandbox}
	}
	return s.dialOutbound(ctx, target, source)
}

// Status returns the daemon's current state (as GET /v1/status).
func (d *Daemon) Status() api.Status { return d.store.Status() }

package outbound

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"reflect"
	"sync"

	"github.com/sbx-dev/sbx/daemon/api"
	"github.com/sbx-dev/sbx/daemon/config"
	"github.com/sbx-dev/sbx/daemon/hostsfile"
	"github.com/sbx-dev/sbx/daemon/proxy"
)

// Options configure outbound access as a whole (what the daemon starts
// from the user config).
type Options struct {
	// Config is the user config's outbound section.
	Config config.Outbound
	// Catalog is fed by service discovery. Required unless Mode is off.
	Catalog *Catalog
	// Dial opens a tunnel stream (daemon.DialOutbound for the sandbox).
	// Required unless Mode is off.
	Dial Dialer
	// LockPath is the hosts file ownership lock and StatePath the file
	// keeping hosts-mode IPs stable; both belong in the daemon's state
	// directory.
	LockPath, StatePath string
	// ProxyPortPath remembers the proxy's port when outbound.proxyListen
	// lets the system pick one (port 0): the next start takes the same
	// port if it is free, so that an environment a debugger was started
	// with (`sbx env > .env`) keeps working across daemon restarts, config
	// changes and the last sandbox's disconnect. "" = not remembered.
	ProxyPortPath string
	// Baggage returns the baggage key and routing key added to plain HTTP
	// requests (proxy mode: absolute-URI requests; hosts mode: HTTP/1.x
	// Service ports), used only with Config.InjectBaggage.
	Baggage func() (key, value string)
	// ProxyPassword returns the credential the proxy asks of its
	// clients (the daemon's, kept in its state directory). Required in
	// proxy mode, which fails to start when it returns an error; called
	// only then.
	ProxyPassword func() (string, error)
	Logger        *slog.Logger
}

// Runner is outbound access in the mode the config asks for.
type Runner struct {
	opts  Options
	log   *slog.Logger
	mode  config.OutboundMode
	note  string
	hosts *Hosts
	proxy *proxy.Server

	mu      sync.Mutex
	started bool
}

// Start resolves the mode and takes what it needs: in hosts mode the
// hosts file (a block a crashed daemon left is removed), in proxy mode
// the listening port. In auto mode a hosts file that is not writable or
// that another sbx daemon owns means proxy mode, with Status().Note saying
// why; in hosts mode those are errors. Call Run to serve.
//
// An empty Config.HostsFile names no hosts file: hosts mode is then an
// error and auto mode is proxy mode (the daemon fills in the machine's
// hosts file only when its Options.SystemHostsFile says so).
func Start(opts Options) (*Runner, error) {
	log := opts.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	r := &Runner{opts: opts, log: log, mode: opts.Config.Mode}
	if r.mode == "" {
		r.mode = config.ModeAuto
	}
	if r.mode == config.ModeOff {
		return r, nil
	}
	if opts.Catalog == nil || opts.Dial == nil {
		return nil, errors.New("outbound: Options.Catalog and Options.Dial are required")
	}
	// auto, not the config's spelling of it: an unset mode is auto too, and
	// may fall back to proxy mode below.
	auto := r.mode == config.ModeAuto
	if auto {
		r.mode, r.note = ResolveMode(opts.Config)
	}
	var baggage func() (string, string)
	if opts.Config.InjectBaggage {
		baggage = opts.Baggage
	}
	if r.mode == config.ModeHosts && opts.Config.HostsFile == "" {
		return nil, errors.New("outbound hosts mode: no hosts file is configured; set outbound.hostsFile in the sbx config to the hosts file to edit")
	}
	if r.mode == config.ModeHosts {
		if err := probeRange(opts.Config.HostsRange); err != nil {
			if !auto {
				return nil, fmt.Errorf("outbound hosts mode: %w", err)
			}
			r.mode = config.ModeProxy
			r.note = err.Error() + "; using proxy mode"
		}
	}
	if r.mode == config.ModeHosts {
		h, err := NewHosts(HostsOptions{Baggage: baggage,
			Catalog: opts.Catalog, Dial: opts.Dial, HostsFile: opts.Config.HostsFile, LockPath: opts.LockPath,
			Range: opts.Config.HostsRange, StatePath: opts.StatePath, Logger: log,
		})
		switch {
		case err == nil:
			r.hosts = h
			return r, nil
		case auto && errors.Is(err, hostsfile.ErrOwned):
			r.mode = config.ModeProxy
			r.note = err.Error() + "; using proxy mode"
		default:
			return nil, fmt.Errorf("outbound hosts mode: %w", err)
		}
	}
	if opts.ProxyPassword == nil {
		return nil, errors.New("outbound proxy mode: Options.ProxyPassword is required")
	}
	password, err := opts.ProxyPassword()
	if err != nil {
		return nil, fmt.Errorf("outbound proxy mode: %w", err)
	}
	po := proxy.Options{
		Listen: opts.Config.ProxyListen, Lookup: opts.Catalog.Lookup, Cluster: proxy.Dialer(opts.Dial),
		Baggage: baggage, Password: password, Logger: log,
	}
	p, err := startProxy(po, opts.ProxyPortPath, log)
	if err != nil {
		return nil, fmt.Errorf("outbound proxy mode: %w", err)
	}
	r.proxy = p
	if r.note != "" {
		log.Info("outbound access falls back to proxy mode", "reason", r.note, "proxy", p.Addr())
	}
	return r, nil
}

// Run serves until ctx ends, then undoes everything (hosts block removed,
// listeners closed, connections ended) before returning. Call it once.
func (r *Runner) Run(ctx context.Context) error {
	r.mu.Lock()
	if r.started {
		r.mu.Unlock()
		return errors.New("outbound: Runner.Run called twice")
	}
	r.started = true
	r.mu.Unlock()
	switch {
	case r.hosts != nil:
		return r.hosts.Run(ctx)
	case r.proxy != nil:
		return r.proxy.Run(ctx)
	}
	<-ctx.Done()
	return nil
}

// Close releases what Start took when Run is never called.
func (r *Runner) Close() error {
	switch {
	case r.hosts != nil:
		return r.hosts.Close()
	case r.proxy != nil:
		return r.proxy.Close()
	}
	return nil
}

// Status reports the mode in effect and its details.
func (r *Runner) Status() api.OutboundStatus {
	st := api.OutboundStatus{Mode: string(r.mode), Note: r.note}
	if r.hosts != nil {
		st.HostsFile = r.hosts.HostsFile()
		st.Services = r.hosts.Status()
	}
	if r.proxy != nil {
		st.ProxyAddr = r.proxy.Addr().String()
	}
	return st
}

// ProxyAddr is the proxy's address in proxy mode, else nil.
func (r *Runner) ProxyAddr() net.Addr {
	if r.proxy == nil {
		return nil
	}
	return r.proxy.Addr()
}

// NeedsRestart reports whether a config change requires a new Runner
// (any change of the outbound section does; the baggage key and routing
// key are read per request through Options.Baggage).
func NeedsRestart(old, new config.Outbound) bool {
	return !reflect.DeepEqual(old, new)
}

// probeRange checks that this machine accepts listeners on the hosts
// range. Linux routes all of 127.0.0.0/8 to the loopback interface; macOS
// configures only 127.0.0.1, so each address needs an alias first.
func probeRange(p netip.Prefix) error {
	a, err := newAllocator(p, "")
	if err != nil {
		return err
	}
	ip := a.addr(0)
	ln, err := net.Listen("tcp", netip.AddrPortFrom(ip, 0).String())
	if err != nil {
		return fmt.Errorf("cannot listen on %s from outbound.hostsRange %s (%w); on macOS add loopback aliases (sudo ifconfig lo0 alias %s up) or use outbound.mode: proxy",
			ip, p, err, ip)
	}
	return ln.Close()
}

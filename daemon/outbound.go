package daemon

import (
	"context"
	"errors"
	"log/slog"
	"net"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/sbx-dev/sbx/cluster/discovery"
	"github.com/sbx-dev/sbx/daemon/api"
	"github.com/sbx-dev/sbx/daemon/config"
	"github.com/sbx-dev/sbx/daemon/outbound"
)

// outboundSelector keeps sbx's own Services (the sandboxes' routes to
// relays) out of the names offered on the laptop.
const outboundSelector = "app.kubernetes.io/managed-by!=sbx"

// outboundStartWait bounds how long the daemon holds its readiness back
// for outbound access to come up, so that `sbx run` right after the
// daemon started already sees the proxy address.
const outboundStartWait = 2 * time.Second

func cloneOutbound(o *api.OutboundStatus) *api.OutboundStatus {
	if o == nil {
		return nil
	}
	c := *o
	c.Namespaces = slices.Clone(o.Namespaces)
	c.Pending = slices.Clone(o.Pending)
	c.Services = slices.Clone(o.Services)
	for i := range c.Services {
		c.Services[i].Names = slices.Clone(c.Services[i].Names)
		c.Services[i].Ports = slices.Clone(c.Services[i].Ports)
	}
	return &c
}

// outboundCtl wires outbound access into the daemon. Discovery watchers
// (one per namespace, so that a namespace the user may not list does not
// hold back the others) feed one Catalog; an outbound.Manager serves it
// in the configured mode and dials through the sandboxes' tunnels.
//
// Outbound access runs only while the daemon has at least one sandbox and
// the mode is not off: a daemon started by `sbx list` leaves the hosts
// file alone, and disconnecting the last sandbox puts the laptop back as
// it was (hosts block removed, proxy closed).
//
// Which sandbox dials: the one whose namespaces include the target's
// namespace when it is ready, else any ready one (by name). Baggage
// injection (outbound.injectBaggage) adds a routing key only while the
// daemon has exactly one sandbox: with several, a request cannot be told
// apart, and a wrong key would send it to someone else's sandbox.
type outboundCtl struct {
	d    *Daemon
	log  *slog.Logger
	cat  *outbound.Catalog
	m    *outbound.Manager
	kick chan struct{}
	// statusChanged: the Manager's status changed (a Runner started or
	// stopped); the run loop publishes it.
	statusChanged chan struct{}

	// catMu orders Catalog writes: watcher events and the Replace that
	// follows stopping a watcher.
	catMu sync.Mutex

	// Owned by the run loop (and by start before the loop exists).
	watches  map[string]*nsWatch // by namespace
	order    []string            // watched namespaces, in plan order
	mgrStop  context.CancelFunc
	mgrDone  chan struct{}
	noSource map[string]bool // cluster keys already reported as without discovery
}

// nsWatch is the discovery watcher of one namespace.
type nsWatch struct {
	cluster string // clusterKey of the sandbox it was opened for
	w       *discovery.Watcher
	cancel  context.CancelFunc
	done    chan struct{}
}

func newOutboundCtl(d *Daemon, initial config.Outbound) *outboundCtl {
	o := &outboundCtl{
		d:             d,
		log:           d.log.With("component", "outbound"),
		cat:           outbound.NewCatalog("", nil),
		kick:          make(chan struct{}, 1),
		watches:       map[string]*nsWatch{},
		statusChanged: make(chan struct{}, 1),
		noSource:      map[string]bool{},
	}
	o.m = outbound.NewManager(outbound.ManagerOptions{
		Catalog: o.cat,
		Dial: func(ctx context.Context, target string) (net.Conn, error) {
			sandbox, err := o.pickSandbox(target)
			if err != nil {
				return nil, err
			}
			return d.DialOutbound(ctx, sandbox, target, outbound.SourceFromContext(ctx))
		},
		LockPath:      filepath.Join(d.opts.Paths.StateDir, "hosts.lock"),
		StatePath:     filepath.Join(d.opts.Paths.StateDir, "hosts-ips.json"),
		ProxyPortPath: filepath.Join(d.opts.Paths.StateDir, "proxy-port"),
		Baggage:       o.baggage,
		ProxyPassword: d.proxyCred.get,
		Logger:        o.log,
		// A Runner starts after reconcile has published the status it
		// found (no proxy yet): publish again once it is up, or a client
		// reading the status (sbx env, sbx run) misses the proxy until
		// the next event.
		Changed: func() {
			select {
			case o.statusChanged <- struct{}{}:
			default:
			}
		},
	}, initial)
	return o
}

// outboundConfig is the user config's outbound section with the
// daemon's overrides applied.
func (d *Daemon) outboundConfig(c *config.Config) config.Outbound {
	out := c.Outbound
	out.Namespaces = slices.Clone(out.Namespaces)
	if d.opts.HostsFile != "" {
		out.HostsFile = d.opts.HostsFile
	}
	if out.HostsFile == "" {
		out.HostsFile = d.opts.SystemHostsFile
	}
	if d.opts.HostsRange.IsValid() {
		out.HostsRange = d.opts.HostsRange
	}
	return out
}

// changed asks the run loop to reconcile (sandboxes or config changed).
// It never blocks.
func (o *outboundCtl) changed() {
	select {
	case o.kick <- struct{}{}:
	default:
	}
}

// setConfig applies a new user config live.
func (o *outboundCtl) setConfig(c *config.Config) {
	o.m.SetConfig(o.d.outboundConfig(c))
	o.changed()
}

// start reconciles once, waits (briefly) for outbound access to come up,
// publishes its status and then follows changes in a goroutine wg owns.
func (o *outboundCtl) start(ctx context.Context, wg *sync.WaitGroup) {
	failed := o.reconcile(ctx)
	if o.mgrStop != nil {
		o.waitStarted(ctx)
	}
	o.publish()
	wg.Add(1)
	go func() {
		defer wg.Done()
		o.run(ctx, failed)
	}()
}

// waitStarted returns once the Manager made its first attempt (a Runner
// is up or its error is known), or after outboundStartWait.
func (o *outboundCtl) waitStarted(ctx context.Context) {
	wctx, cancel := context.WithTimeout(ctx, outboundStartWait)
	defer cancel()
	if o.m.WaitStarted(wctx) != nil && ctx.Err() == nil {
		o.log.Warn("outbound access is slow to start; carrying on")
	}
}

// run follows sandbox and config changes until ctx ends, then stops the
// Manager (hosts block removed, listeners closed) and every watcher.
func (o *outboundCtl) run(ctx context.Context, failed bool) {
	defer o.stopAll()
	stats := time.NewTicker(o.d.mgr.cfg.StatsInterval)
	defer stats.Stop()
	catChanged, unsubscribe := o.cat.Subscribe()
	defer unsubscribe()
	retry := time.NewTimer(time.Hour)
	retry.Stop()
	defer retry.Stop()
	if failed {
		retry.Reset(DefaultBackoff().Max)
	}
	for {
		again := false
		select {
		case <-ctx.Done():
			return
		case <-o.kick:
			again = true
		case <-retry.C:
			again = true
		case <-catChanged:
		case <-o.statusChanged:
		case <-stats.C:
		}
		if again && o.reconcile(ctx) {
			retry.Reset(DefaultBackoff().Max)
		}
		o.publish()
	}
}

// clusterKey identifies the cluster a sandbox lives in.
func clusterKey(sv savedSandbox) string { return sv.KubeconfigSource.Key() + "\x00" + sv.Context }

// reconcile makes the Manager and the watchers match the sandboxes and
// the config. It reports whether something failed and is worth a retry.
func (o *outboundCtl) reconcile(ctx context.Context) (failed bool) {
	cfg := o.d.outboundConfig(o.d.config())
	sandboxes := o.d.mgr.snapshots()
	active := cfg.Mode != config.ModeOff && len(sandboxes) > 0

	// The plan: each namespace with the sandbox whose cluster it is
	// watched in; own namespaces first (they get short names).
	type want struct {
		ns string
		sb savedSandbox
	}
	var plan []want
	var own []string
	has := func(ns string) bool { return slices.ContainsFunc(plan, func(w want) bool { return w.ns == ns }) }
	if active {
		for _, sb := range sandboxes {
			for _, ns := range sb.Spec.Namespaces() {
				if !has(ns) {
					plan = append(plan, want{ns, sb})
					own = append(own, ns)
				}
			}
		}
		for _, ns := range cfg.Namespaces {
			if ns != "" && !has(ns) {
				plan = append(plan, want{ns, sandboxes[0]})
			}
		}
	}
	o.cat.SetOwnNamespaces(own)

	// Stop what is no longer wanted, then start what is missing.
	stopped := false
	for ns, w := range o.watches {
		i := slices.IndexFunc(plan, func(p want) bool { return p.ns == ns })
		if i < 0 || clusterKey(plan[i].sb) != w.cluster {
			w.cancel()
			<-w.done
			delete(o.watches, ns)
			stopped = true
		}
	}
	if stopped {
		// Forget the Services of the namespaces no longer watched; the
		// remaining watchers' events are serialized with this by catMu.
		o.catMu.Lock()
		var keep []discovery.Service
		for _, w := range o.watches {
			keep = append(keep, w.w.Services()...)
		}
		o.cat.Replace(keep)
		o.catMu.Unlock()
	}
	o.order = o.order[:0]
	for _, p := range plan {
		if _, ok := o.watches[p.ns]; ok {
			o.order = append(o.order, p.ns)
			continue
		}
		started, err := o.watch(ctx, p.ns, p.sb)
		if err != nil {
			o.log.Warn("cannot watch the Services of a namespace; retrying", "namespace", p.ns, "sandbox", p.sb.Name, "err", err)
			failed = true
		}
		if started {
			o.order = append(o.order, p.ns)
		}
	}

	switch {
	case active && o.mgrStop == nil:
		mctx, cancel := context.WithCancel(ctx)
		done := make(chan struct{})
		go func() {
			defer close(done)
			if err := o.m.Run(mctx); err != nil {
				o.log.Warn("outbound access stopped", "err", err)
			}
		}()
		o.mgrStop, o.mgrDone = cancel, done
	case !active && o.mgrStop != nil:
		o.stopManager()
	}
	return failed
}

// watch starts the discovery watcher of ns in sb's cluster. started is
// false (with a nil error) for a cluster that offers no discovery.
func (o *outboundCtl) watch(ctx context.Context, ns string, sb savedSandbox) (started bool, err error) {
	cl, err := o.d.mgr.clusters(ctx, sb.KubeconfigSource, sb.Context)
	if err != nil {
		return false, err
	}
	var w *discovery.Watcher
	if sd, ok := cl.(ServiceDiscoverer); ok {
		w, err = sd.WatchServices(discovery.Options{
			Namespaces: []string{ns},
			Selector:   outboundSelector,
			OnEvent: func(ev discovery.Event) {
				o.catMu.Lock()
				defer o.catMu.Unlock()
				o.cat.Apply(ev)
			},
			Logger: o.log.With("namespace", ns),
		})
		if err != nil {
			return false, err
		}
	}
	if w == nil {
		key := clusterKey(sb)
		if !o.noSource[key] {
			o.noSource[key] = true
			o.log.Info("the cluster offers no Service discovery; only names ending in .svc reach it (proxy mode)", "sandbox", sb.Name, "context", sb.Context)
		}
		return false, nil
	}
	wctx, cancel := context.WithCancel(ctx)
	nw := &nsWatch{cluster: clusterKey(sb), w: w, cancel: cancel, done: make(chan struct{})}
	go func() {
		defer close(nw.done)
		// Run fails only when ctx ended before the first list.
		_ = w.Run(wctx)
	}()
	o.watches[ns] = nw
	return true, nil
}

func (o *outboundCtl) stopManager() {
	if o.mgrStop == nil {
		return
	}
	o.mgrStop()
	<-o.mgrDone
	o.mgrStop, o.mgrDone = nil, nil
}

func (o *outboundCtl) stopAll() {
	o.stopManager()
	for ns, w := range o.watches {
		w.cancel()
		<-w.done
		delete(o.watches, ns)
	}
}

// publish puts the current outbound status into the daemon's status.
func (o *outboundCtl) publish() {
	cfg := o.d.outboundConfig(o.d.config())
	var st api.OutboundStatus
	switch {
	case o.mgrStop != nil:
		st = o.m.Status()
	case cfg.Mode == config.ModeOff:
		st = api.OutboundStatus{Mode: string(config.ModeOff)}
	default:
		st = api.OutboundStatus{Mode: string(cfg.Mode), Note: "starts when a sandbox is connected"}
	}
	st.Namespaces = slices.Clone(o.order)
	for _, ns := range o.order {
		select {
		case <-o.watches[ns].w.Synced():
		default:
			st.Pending = append(st.Pending, ns)
		}
	}
	st.Discovered = o.cat.Len()
	o.d.store.SetOutbound(&st)
}

// pickSandbox chooses the sandbox whose tunnel carries a connection to
// target: a ready sandbox owning the target's namespace, else any ready
// one, else (so that the error says why) the owner or the first one.
func (o *outboundCtl) pickSandbox(target string) (string, error) {
	ns := targetNamespace(target)
	var owner, ready, first *session
	for _, s := range o.d.mgr.sessionsByName() {
		isReady := s.link.Load() != nil
		sv := s.snapshot()
		owns := ns != "" && slices.Contains(sv.Spec.Namespaces(), ns)
		if owns && isReady {
			return s.name, nil
		}
		if owns && owner == nil {
			owner = s
		}
		if isReady && ready == nil {
			ready = s
		}
		if first == nil {
			first = s
		}
	}
	for _, s := range []*session{ready, owner, first} {
		if s != nil {
			return s.name, nil
		}
	}
	return "", errors.New("no sandbox is connected: connections to cluster names go through a sandbox's tunnel (connect one with `sbx connect -f FILE`)")
}

// targetNamespace is the namespace of a cluster target
// "svc.ns.svc.<domain>:port", "" for anything else.
func targetNamespace(target string) string {
	host, _, err := net.SplitHostPort(target)
	if err != nil {
		host = target
	}
	labels := strings.Split(strings.TrimSuffix(strings.ToLower(host), "."), ".")
	if len(labels) >= 3 && labels[2] == "svc" {
		return labels[1]
	}
	return ""
}

// baggage is the member injected into plain HTTP requests: the routing
// key of the daemon's only sandbox, nothing with none or several.
func (o *outboundCtl) baggage() (key, value string) {
	names := o.d.mgr.Names()
	if len(names) != 1 {
		return "", ""
	}
	st, ok := o.d.store.Sandbox(names[0])
	if !ok {
		return "", ""
	}
	key = st.BaggageKey
	if key == "" {
		key = o.d.config().BaggageKey
	}
	return key, st.RoutingKey
}

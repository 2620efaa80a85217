// Package outbound lets local processes reach cluster Services by their
// cluster names. In hosts mode (Hosts) each Service gets a stable loopback
// IP, its names go into the hosts file, and the daemon listens on each of
// its ports there; in proxy mode (package daemon/proxy) a SOCKS5/HTTP proxy
// asks the Catalog which names are cluster names. Either way a connection
// ends up in a Dialer, which the daemon backs with a tunnel stream
// {outbound, "svc.ns.svc.cluster.local:port"}.
package outbound

import (
	"context"
	"fmt"
	"net"
	"slices"
	"strings"
	"sync"

	"github.com/sbx-dev/sbx/cluster/discovery"
	"github.com/sbx-dev/sbx/daemon/config"
	"github.com/sbx-dev/sbx/daemon/hostsfile"
	"github.com/sbx-dev/sbx/daemon/peeruid"
)

// Dialer opens a connection to target ("host:port" as a pod in the cluster
// would dial it). The daemon backs it with its tunnel pool; a dial the
// relay refused comes back as a *tunnel.DialError.
type Dialer func(ctx context.Context, target string) (net.Conn, error)

// Catalog is the set of cluster Services local processes may reach, fed by
// service discovery (Apply, Replace), and the names each one answers to.
// Short names ("svc") exist only for the sandbox's own namespaces, in their
// order: the first own namespace with a Service of that name wins, as for a
// pod in that namespace. It is safe for concurrent use.
type Catalog struct {
	domain string

	mu       sync.Mutex
	own      []string
	services map[string]discovery.Service // by Key
	subs     map[chan struct{}]struct{}
}

// NewCatalog returns an empty catalog. clusterDomain defaults to
// discovery.DefaultClusterDomain; own are the sandbox's namespaces.
func NewCatalog(clusterDomain string, own []string) *Catalog {
	if clusterDomain == "" {
		clusterDomain = discovery.DefaultClusterDomain
	}
	return &Catalog{
		domain:   clusterDomain,
		own:      slices.Clone(own),
		services: map[string]discovery.Service{},
		subs:     map[chan struct{}]struct{}{},
	}
}

// ClusterDomain is the DNS domain names are built with.
func (c *Catalog) ClusterDomain() string { return c.domain }

// Apply records one discovery event. It never blocks: pass it as
// discovery.Options.OnEvent.
func (c *Catalog) Apply(ev discovery.Event) {
	c.mu.Lock()
	defer c.mu.Unlock()
	switch ev.Type {
	case discovery.Deleted:
		if _, ok := c.services[ev.Service.Key()]; !ok {
			return
		}
		delete(c.services, ev.Service.Key())
	default:
		c.services[ev.Service.Key()] = ev.Service
	}
	c.notifyLocked()
}

// Replace sets the whole set of Services (after restarting discovery with
// other namespaces, say).
func (c *Catalog) Replace(services []discovery.Service) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.services = make(map[string]discovery.Service, len(services))
	for _, s := range services {
		c.services[s.Key()] = s
	}
	c.notifyLocked()
}

// SetOwnNamespaces changes which namespaces get short names.
func (c *Catalog) SetOwnNamespaces(own []string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if slices.Equal(own, c.own) {
		return
	}
	c.own = slices.Clone(own)
	c.notifyLocked()
}

// Subscribe returns a channel that receives a value after each change
// (changes coalesce while the receiver is busy) and a function that ends
// the subscription.
func (c *Catalog) Subscribe() (<-chan struct{}, func()) {
	ch := make(chan struct{}, 1)
	c.mu.Lock()
	c.subs[ch] = struct{}{}
	c.mu.Unlock()
	return ch, func() {
		c.mu.Lock()
		delete(c.subs, ch)
		c.mu.Unlock()
	}
}

func (c *Catalog) notifyLocked() {
	for ch := range c.subs {
		select {
		case ch <- struct{}{}:
		default:
		}
	}
}

// Named is a Service with the names local processes use for it.
type Named struct {
	discovery.Service
	// Names are svc (own namespaces only), svc.ns, svc.ns.svc and
	// svc.ns.svc.<domain>.
	Names []string
}

// FQDN is the name the relay dials: svc.ns.svc.<domain>.
func (n Named) FQDN() string { return n.Names[len(n.Names)-1] }

// Len is the number of Services, without building their names (the
// daemon's status counts them every few seconds).
func (c *Catalog) Len() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.services)
}

// Services returns every Service with its names, sorted by namespace and
// name.
func (c *Catalog) Services() []Named {
	c.mu.Lock()
	defer c.mu.Unlock()
	out := make([]Named, 0, len(c.services))
	for _, s := range c.services {
		out = append(out, Named{Service: s, Names: c.namesLocked(s)})
	}
	slices.SortFunc(out, func(a, b Named) int { return strings.Compare(a.Key(), b.Key()) })
	return out
}

func (c *Catalog) namesLocked(s discovery.Service) []string {
	full := discovery.Hosts(s.Namespace, s.Name, c.domain)
	if c.shortOwnerLocked(s.Name) == s.Namespace {
		return full
	}
	return full[1:]
}

// shortOwnerLocked is the namespace whose Service the short name means,
// "" when none.
func (c *Catalog) shortOwnerLocked(name string) string {
	for _, ns := range c.own {
		if _, ok := c.services[ns+"/"+name]; ok {
			return ns
		}
	}
	return ""
}

// Lookup maps a host name a local process used to the cluster name the
// relay should dial. It knows the discovered Services' names (case
// insensitive, trailing dot allowed) and, beyond them, treats any name
// ending in .svc or .svc.<domain> as a cluster name (a Service discovery
// does not watch may still exist). ok is false for anything else.
func (c *Catalog) Lookup(host string) (target string, ok bool) {
	h := strings.TrimSuffix(strings.ToLower(host), ".")
	if h == "" || strings.HasPrefix(h, ".") || strings.Contains(h, "..") || net.ParseIP(h) != nil {
		return "", false // an IP, or a name with an empty label
	}
	name, rest, _ := strings.Cut(h, ".")
	c.mu.Lock()
	defer c.mu.Unlock()
	if rest == "" {
		if ns := c.shortOwnerLocked(name); ns != "" {
			return discovery.Hosts(ns, name, c.domain)[3], true
		}
		return "", false
	}
	ns, _, _ := strings.Cut(rest, ".")
	if s, found := c.services[ns+"/"+name]; found {
		names := discovery.Hosts(s.Namespace, s.Name, c.domain)
		if slices.Contains(names[1:], h) {
			return names[3], true
		}
	}
	if strings.HasSuffix(h, ".svc") {
		return h + "." + c.domain, true
	}
	if strings.HasSuffix(h, ".svc."+c.domain) {
		return h, true
	}
	return "", false
}

// ResolveMode turns outbound.mode auto into hosts or proxy, and says why
// when auto falls back to proxy: hosts mode needs a configured hosts file
// this process may write, and an OS on which the daemon can refuse other
// users' connections to the hosts-mode addresses (peeruid.Supported);
// elsewhere any local user could reach the cluster through them, while the
// proxy asks for a password.
func ResolveMode(o config.Outbound) (config.OutboundMode, string) {
	if o.Mode != config.ModeAuto && o.Mode != "" {
		return o.Mode, ""
	}
	switch {
	case o.HostsFile == "":
		return config.ModeProxy, "no hosts file is configured (outbound.hostsFile); using proxy mode"
	case !peerUIDSupported:
		return config.ModeProxy, "on this OS the daemon cannot tell which user opens a connection, so hosts-mode addresses would be open to every local user; using proxy mode (it asks for a password; set outbound.mode: hosts to accept the risk)"
	case !hostsfile.Writable(o.HostsFile):
		return config.ModeProxy, fmt.Sprintf("hosts file %s is not writable by the daemon; using proxy mode", o.HostsFile)
	}
	return config.ModeHosts, ""
}

// peerUIDSupported is peeruid.Supported; tests set it.
var peerUIDSupported = peeruid.Supported

package sim

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"strconv"
	"strings"
	"sync"
	"syscall"
)

// Network is the simulated cluster network. It plays three parts of a real
// cluster:
//
//   - cluster DNS: Service names resolve to a ClusterIP (from 10.96.0.0/16);
//   - kube-proxy (plus the caller's sidecar): ClusterIP:port is delivered to
//     the loopback listener of that Service port's mesh router;
//   - the pod network: podIP:port is delivered to the loopback listener that
//     plays the pod's socket (a baseline server, a relay inbound port).
//
// The addresses handed out are fake cluster addresses, not loopback, so code
// under test that refuses loopback destinations (the relay's dial policy)
// sees what it would see in a cluster. Only Dial knows the loopback
// addresses behind them.
type Network struct {
	domain string

	mu       sync.RWMutex
	services map[string]netip.Addr          // "name.ns" -> ClusterIP
	vips     map[netip.AddrPort]string      // ClusterIP:port -> loopback address
	pods     map[string]*podNet             // "ns/name" -> pod
	podIPs   map[netip.Addr]*podNet         // pod IP -> pod
	nextSvc  uint32                         // last allocated ClusterIP offset
	nextPod  uint32                         // last allocated pod IP offset
	onUnbind []func(ip netip.Addr, p int32) // observers of removed pod sockets

	// sources maps the local address of every open connection dialed
	// through a Resolver to the identity of the pod that dialed it, so the
	// mesh can evaluate sourceNamespace/sourceLabels matches as the
	// client's sidecar would.
	sources sync.Map // string -> Source
}

// Source is the identity of a pod as the mesh sees its outgoing requests.
type Source struct {
	Namespace string
	Labels    map[string]string
}

// podNet is one pod's network namespace: its IP and the ports something
// listens on inside it.
type podNet struct {
	ns, name string
	ip       netip.Addr
	ports    map[int32]portBinding
}

// portBinding is one listening socket inside a pod.
type portBinding struct {
	addr string // the real loopback address
	// local is true for sockets bound to the pod's loopback: reachable
	// through a port-forward only, never from other pods.
	local bool
}

// DefaultClusterDomain is the DNS domain of the simulated cluster.
const DefaultClusterDomain = "cluster.local"

var (
	serviceCIDR = netip.MustParsePrefix("10.96.0.0/16")
	podCIDR     = netip.MustParsePrefix("10.244.0.0/16")
)

// NewNetwork returns an empty network for the given cluster domain ("" means
// cluster.local).
func NewNetwork(domain string) *Network {
	if domain == "" {
		domain = DefaultClusterDomain
	}
	return &Network{
		domain:   strings.ToLower(strings.TrimSuffix(domain, ".")),
		services: map[string]netip.Addr{},
		vips:     map[netip.AddrPort]string{},
		pods:     map[string]*podNet{},
		podIPs:   map[netip.Addr]*podNet{},
	}
}

// Domain is the cluster DNS domain, e.g. "cluster.local".
func (n *Network) Domain() string { return n.domain }

// ServiceFQDN is the fully qualified DNS name of a Service.
func (n *Network) ServiceFQDN(ns, name string) string {
	return name + "." + ns + ".svc." + n.domain
}

// AllocateServiceIP returns the ClusterIP of Service ns/name, allocating one
// the first time. It fails when the service range is exhausted.
func (n *Network) AllocateServiceIP(ns, name string) (netip.Addr, error) {
	n.mu.Lock()
	defer n.mu.Unlock()
	key := name + "." + ns
	if ip, ok := n.services[key]; ok {
		return ip, nil
	}
	ip, err := nextAddr(serviceCIDR, &n.nextSvc)
	if err != nil {
		return netip.Addr{}, fmt.Errorf("allocate a ClusterIP for service %s/%s: %w", ns, name, err)
	}
	n.services[key] = ip
	return ip, nil
}

// ServiceIP returns the ClusterIP of Service ns/name, if it has one.
func (n *Network) ServiceIP(ns, name string) (netip.Addr, bool) {
	n.mu.RLock()
	defer n.mu.RUnlock()
	ip, ok := n.services[name+"."+ns]
	return ip, ok
}

// RemoveService forgets the Service's DNS name and every port of its
// ClusterIP.
func (n *Network) RemoveService(ns, name string) {
	n.mu.Lock()
	defer n.mu.Unlock()
	key := name + "." + ns
	ip, ok := n.services[key]
	if !ok {
		return
	}
	delete(n.services, key)
	for ap := range n.vips {
		if ap.Addr() == ip {
			delete(n.vips, ap)
		}
	}
}

// SetServicePort delivers ClusterIP:port of Service ns/name to addr (a
// loopback listener); an empty addr removes the port.
func (n *Network) SetServicePort(ns, name string, port int32, addr string) error {
	n.mu.Lock()
	defer n.mu.Unlock()
	ip, ok := n.services[name+"."+ns]
	if !ok {
		return fmt.Errorf("service %s/%s has no ClusterIP in the simulated network", ns, name)
	}
	ap := netip.AddrPortFrom(ip, uint16(port))
	if addr == "" {
		delete(n.vips, ap)
	} else {
		n.vips[ap] = addr
	}
	return nil
}

// AddPod gives pod ns/name an IP (the same one again if it already has one).
func (n *Network) AddPod(ns, name string) (netip.Addr, error) {
	n.mu.Lock()
	defer n.mu.Unlock()
	if p, ok := n.pods[ns+"/"+name]; ok {
		return p.ip, nil
	}
	ip, err := nextAddr(podCIDR, &n.nextPod)
	if err != nil {
		return netip.Addr{}, fmt.Errorf("allocate a pod IP for %s/%s: %w", ns, name, err)
	}
	p := &podNet{ns: ns, name: name, ip: ip, ports: map[int32]portBinding{}}
	n.pods[ns+"/"+name] = p
	n.podIPs[ip] = p
	return ip, nil
}

// RemovePod forgets pod ns/name, its IP and all its sockets.
func (n *Network) RemovePod(ns, name string) {
	n.mu.Lock()
	p, ok := n.pods[ns+"/"+name]
	if ok {
		delete(n.pods, ns+"/"+name)
		delete(n.podIPs, p.ip)
	}
	obs := n.onUnbind
	n.mu.Unlock()
	if ok {
		for port := range p.ports {
			for _, f := range obs {
				f(p.ip, port)
			}
		}
	}
}

// BindPodPort records that something listens on port inside pod ns/name, at
// the real loopback address addr. local marks a socket bound to the pod's own
// loopback interface (reachable only through a port-forward).
func (n *Network) BindPodPort(ns, name string, port int32, addr string, local bool) error {
	n.mu.Lock()
	defer n.mu.Unlock()
	p, ok := n.pods[ns+"/"+name]
	if !ok {
		return fmt.Errorf("pod %s/%s is not in the simulated network", ns, name)
	}
	p.ports[port] = portBinding{addr: addr, local: local}
	return nil
}

// UnbindPodPort removes a socket added by BindPodPort.
func (n *Network) UnbindPodPort(ns, name string, port int32) {
	n.mu.Lock()
	p, ok := n.pods[ns+"/"+name]
	var ip netip.Addr
	if ok {
		ip = p.ip
		delete(p.ports, port)
	}
	obs := n.onUnbind
	n.mu.Unlock()
	if ok {
		for _, f := range obs {
			f(ip, port)
		}
	}
}

// OnUnbind registers f to be called after a pod socket disappears (for
// example so that an HTTP transport drops its idle connections to it).
func (n *Network) OnUnbind(f func(ip netip.Addr, port int32)) {
	n.mu.Lock()
	defer n.mu.Unlock()
	n.onUnbind = append(n.onUnbind, f)
}

// PodPortAddr returns the real address of the socket listening on port
// inside pod ns/name, including sockets bound to the pod's loopback. This is
// what the kubelet's port-forward connects to.
func (n *Network) PodPortAddr(ns, name string, port int32) (string, error) {
	n.mu.RLock()
	defer n.mu.RUnlock()
	p, ok := n.pods[ns+"/"+name]
	if !ok {
		return "", fmt.Errorf("pod %s/%s not found in the simulated network", ns, name)
	}
	b, ok := p.ports[port]
	if !ok {
		return "", fmt.Errorf("nothing listens on port %d in pod %s/%s", port, ns, name)
	}
	return b.addr, nil
}

// nextAddr hands out the next host address of prefix, skipping the
// network and broadcast-looking addresses (.0, .255).
func nextAddr(prefix netip.Prefix, last *uint32) (netip.Addr, error) {
	base := prefix.Addr().As4()
	start := uint32(base[0])<<24 | uint32(base[1])<<16 | uint32(base[2])<<8 | uint32(base[3])
	for {
		*last++
		v := start + *last
		ip := netip.AddrFrom4([4]byte{byte(v >> 24), byte(v >> 16), byte(v >> 8), byte(v)})
		if !prefix.Contains(ip) {
			return netip.Addr{}, errors.New("address range " + prefix.String() + " exhausted")
		}
		if b := byte(v); b != 0 && b != 0xff {
			return ip, nil
		}
	}
}

// Resolver returns the view of the network from a pod in namespace ns: its
// DNS search path is ns.svc.<domain>, svc.<domain>, <domain> (ndots 5), as
// in a Kubernetes pod's resolv.conf.
func (n *Network) Resolver(ns string) *Resolver {
	return &Resolver{net: n, ns: ns, src: Source{Namespace: ns}}
}

// PodResolver is Resolver for a pod with the given labels; the mesh sees
// connections it dials as coming from that pod.
func (n *Network) PodResolver(ns string, labels map[string]string) *Resolver {
	return &Resolver{net: n, ns: ns, src: Source{Namespace: ns, Labels: labels}}
}

// SourceOf returns the identity of the pod that dialed the connection whose
// local address is remoteAddr (as seen by the accepting side), if it was
// dialed through a Resolver and is still open.
func (n *Network) SourceOf(remoteAddr string) (Source, bool) {
	v, ok := n.sources.Load(remoteAddr)
	if !ok {
		return Source{}, false
	}
	return v.(Source), true
}

// Resolver resolves cluster names and dials cluster addresses as seen from a
// pod in one namespace. Its methods match net.Resolver and net.Dialer so it
// can be injected where those are expected.
type Resolver struct {
	net *Network
	ns  string
	src Source
	// track, if set, sees every connection this resolver dials (the
	// simulated kubelet closes a crashed relay's connections).
	track func(net.Conn) net.Conn
}

// Namespace is the namespace this resolver's pod lives in.
func (r *Resolver) Namespace() string { return r.ns }

// candidates returns the names the pod's resolver would try, in order.
func (r *Resolver) candidates(host string) []string {
	host = strings.ToLower(host)
	if strings.HasSuffix(host, ".") {
		return []string{strings.TrimSuffix(host, ".")}
	}
	search := []string{r.ns + ".svc." + r.net.domain, "svc." + r.net.domain, r.net.domain}
	if r.ns == "" {
		search = search[1:]
	}
	var out []string
	if strings.Count(host, ".") >= 5 {
		out = append(out, host)
	}
	for _, s := range search {
		out = append(out, host+"."+s)
	}
	if strings.Count(host, ".") < 5 {
		out = append(out, host)
	}
	return out
}

// LookupNetIP resolves host to the ClusterIP of the Service it names. IP
// literals are returned as they are. An unknown name is a *net.DNSError
// with IsNotFound set.
func (r *Resolver) LookupNetIP(ctx context.Context, network, host string) ([]netip.Addr, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	if ip, err := netip.ParseAddr(strings.Trim(host, "[]")); err == nil {
		return []netip.Addr{ip.Unmap()}, nil
	}
	suffix := ".svc." + r.net.domain
	r.net.mu.RLock()
	defer r.net.mu.RUnlock()
	for _, c := range r.candidates(host) {
		rest, ok := strings.CutSuffix(c, suffix)
		if !ok {
			continue
		}
		if ip, ok := r.net.services[rest]; ok {
			if network == "ip6" {
				return nil, &net.DNSError{Err: "no AAAA record", Name: host, IsNotFound: true}
			}
			return []netip.Addr{ip}, nil
		}
	}
	return nil, &net.DNSError{Err: "no such host", Name: host, IsNotFound: true}
}

// LookupIPAddr is LookupNetIP in the shape of net.Resolver.LookupIPAddr.
func (r *Resolver) LookupIPAddr(ctx context.Context, host string) ([]net.IPAddr, error) {
	ips, err := r.LookupNetIP(ctx, "ip", host)
	if err != nil {
		return nil, err
	}
	out := make([]net.IPAddr, len(ips))
	for i, ip := range ips {
		out[i] = net.IPAddr{IP: ip.AsSlice()}
	}
	return out, nil
}

// LookupHost is LookupNetIP in the shape of net.Resolver.LookupHost.
func (r *Resolver) LookupHost(ctx context.Context, host string) ([]string, error) {
	ips, err := r.LookupNetIP(ctx, "ip", host)
	if err != nil {
		return nil, err
	}
	out := make([]string, len(ips))
	for i, ip := range ips {
		out[i] = ip.String()
	}
	return out, nil
}

// DialContext connects to address ("host:port", host a cluster name, a
// ClusterIP or a pod IP) over the simulated network. Only "tcp", "tcp4" and
// "tcp6" are supported. A name that does not resolve fails with a
// *net.DNSError, an address nothing listens on with ECONNREFUSED inside a
// *net.OpError, as a real dial would.
func (r *Resolver) DialContext(ctx context.Context, network, address string) (net.Conn, error) {
	switch network {
	case "tcp", "tcp4", "tcp6":
	default:
		return nil, &net.OpError{Op: "dial", Net: network, Err: fmt.Errorf("network %q is not simulated", network)}
	}
	host, portStr, err := net.SplitHostPort(address)
	if err != nil {
		return nil, &net.OpError{Op: "dial", Net: network, Err: err}
	}
	port, err := strconv.ParseUint(portStr, 10, 16)
	if err != nil {
		return nil, &net.OpError{Op: "dial", Net: network, Err: fmt.Errorf("bad port %q", portStr)}
	}
	ips, err := r.LookupNetIP(ctx, "ip", host)
	if err != nil {
		return nil, &net.OpError{Op: "dial", Net: network, Err: err}
	}
	ap := netip.AddrPortFrom(ips[0], uint16(port))
	real, ok := r.net.deliver(ap)
	if !ok {
		return nil, &net.OpError{Op: "dial", Net: network, Addr: net.TCPAddrFromAddrPort(ap),
			Err: os.NewSyscallError("connect", syscall.ECONNREFUSED)}
	}
	var d net.Dialer
	c, err := d.DialContext(ctx, "tcp", real)
	if err != nil {
		return nil, err
	}
	key := c.LocalAddr().String()
	r.net.sources.Store(key, r.src)
	sc := &simConn{Conn: c, remote: net.TCPAddrFromAddrPort(ap), forget: func() { r.net.sources.Delete(key) }}
	if r.track != nil {
		return r.track(sc), nil
	}
	return sc, nil
}

// Dial is DialContext without a context.
func (r *Resolver) Dial(network, address string) (net.Conn, error) {
	return r.DialContext(context.Background(), network, address)
}

// deliver maps a cluster address to the real loopback address behind it.
func (n *Network) deliver(ap netip.AddrPort) (string, bool) {
	n.mu.RLock()
	defer n.mu.RUnlock()
	if a, ok := n.vips[ap]; ok {
		return a, true
	}
	if p, ok := n.podIPs[ap.Addr()]; ok {
		if b, ok := p.ports[int32(ap.Port())]; ok && !b.local {
			return b.addr, true
		}
	}
	return "", false
}

// simConn reports the cluster address it was dialed at as its remote
// address, so logs and errors name cluster addresses.
type simConn struct {
	net.Conn
	remote net.Addr
	once   sync.Once
	forget func()
}

func (c *simConn) RemoteAddr() net.Addr { return c.remote }

// Close closes the connection and forgets its source identity.
func (c *simConn) Close() error {
	c.once.Do(c.forget)
	return c.Conn.Close()
}

// CloseWrite half-closes the underlying TCP connection.
func (c *simConn) CloseWrite() error {
	if cw, ok := c.Conn.(interface{ CloseWrite() error }); ok {
		return cw.CloseWrite()
	}
	return errors.New("half-close not supported")
}

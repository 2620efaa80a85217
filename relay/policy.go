package relay

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strconv"
	"time"
)

// Resolver looks up a host name; *net.Resolver satisfies it. Tests and the
// simulated cluster inject stand-ins.
type Resolver interface {
	LookupNetIP(ctx context.Context, network, host string) ([]netip.Addr, error)
}

// Dialer opens TCP connections; *net.Dialer satisfies it.
type Dialer interface {
	DialContext(ctx context.Context, network, address string) (net.Conn, error)
}

// Built-in ranges the relay never dials: link-local (which holds the cloud
// metadata service at 169.254.169.254) and AWS's IPv6 metadata address.
var builtinDeny = []struct {
	prefix netip.Prefix
	why    string
}{
	{netip.MustParsePrefix("169.254.0.0/16"), "link-local (cloud metadata service)"},
	{netip.MustParsePrefix("fe80::/10"), "IPv6 link-local"},
	{netip.MustParsePrefix("fd00:ec2::254/128"), "AWS IPv6 metadata service"},
}

// PolicyError says why the dial policy refused a destination. The relay
// reports it to the laptop as a "denied" dial error.
type PolicyError struct {
	Target string     // what the laptop asked for (host:port)
	Addr   netip.Addr // the resolved address that is refused
	Why    string
}

func (e *PolicyError) Error() string {
	if e.Addr.IsValid() && !targetIsAddr(e.Target, e.Addr) {
		return fmt.Sprintf("relay refuses to dial %s: it resolves to %s; %s", e.Target, e.Addr, e.Why)
	}
	return fmt.Sprintf("relay refuses to dial %s: %s", e.Target, e.Why)
}

// targetIsAddr reports whether target names addr literally, so the message
// does not repeat it.
func targetIsAddr(target string, a netip.Addr) bool {
	host, _, err := net.SplitHostPort(target)
	if err != nil {
		return false
	}
	h, err := netip.ParseAddr(host)
	return err == nil && h.Unmap() == a
}

// policy decides which resolved addresses the relay may dial for an outbound
// stream. It runs after DNS resolution and the relay then dials the checked
// address itself, so a name cannot be re-resolved to a forbidden address
// between the check and the dial.
type policy struct {
	deny          []netip.Prefix
	allowLoopback bool
	// ownPorts are the relay's bound ports, refused on loopback when
	// loopback is allowed; localAddrs lists the pod's addresses, all refused.
	ownPorts   map[uint16]bool
	localAddrs func() ([]netip.Addr, error)
}

// check returns a *PolicyError if addr:port must not be dialed.
func (p *policy) check(target string, addr netip.Addr, port uint16) error {
	// Prefix.Contains never matches a zoned address ("fe80::1%eth0"), so the
	// zone is dropped before any comparison (and before dialing).
	addr = addr.Unmap().WithZone("")
	refuse := func(why string) error { return &PolicyError{Target: target, Addr: addr, Why: why} }
	for _, d := range builtinDeny {
		if d.prefix.Contains(addr) {
			return refuse(d.why + " addresses are never dialed")
		}
	}
	for _, d := range p.deny {
		if d.Contains(addr) {
			return refuse(fmt.Sprintf("%s is denied by --deny", d))
		}
	}
	switch {
	case addr.IsUnspecified():
		return refuse("the unspecified address reaches the relay pod itself")
	case addr.IsMulticast():
		return refuse("multicast addresses cannot be dialed")
	}
	if addr.IsLoopback() {
		if !p.allowLoopback {
			return refuse("loopback addresses are the relay pod itself")
		}
		if p.ownPorts[port] {
			return refuse(fmt.Sprintf("port %d is the relay's own", port))
		}
		return nil
	}
	// Nothing on the relay pod's own addresses is for the laptop: its ports
	// are the relay's (dialing them would loop traffic back into it) and the
	// mesh sidecar's.
	if p.localAddrs != nil {
		locals, err := p.localAddrs()
		if err != nil {
			// Undecidable: refusing is the safe answer, and says why.
			return refuse(fmt.Sprintf("the relay pod's own addresses are unknown (%v)", err))
		}
		for _, l := range locals {
			if l.Unmap().WithZone("") == addr {
				if p.ownPorts[port] {
					return refuse(fmt.Sprintf("%s:%d is the relay's own port", addr, port))
				}
				return refuse(fmt.Sprintf("%s is the relay pod's own address", addr))
			}
		}
	}
	return nil
}

// dnsError marks resolution failures so they are reported with reason "dns".
type dnsError struct{ err error }

func (e *dnsError) Error() string { return e.err.Error() }
func (e *dnsError) Unwrap() error { return e.err }

// dialer resolves, checks and dials outbound targets.
type dialer struct {
	policy   *policy
	resolver Resolver
	dial     Dialer
	timeout  time.Duration
}

// dialTarget resolves target (host:port), refuses it if any resolved address
// is forbidden, then dials the addresses in order until one answers. The
// whole operation is bounded by the dial timeout.
func (d *dialer) dialTarget(ctx context.Context, target string) (net.Conn, error) {
	host, portStr, err := net.SplitHostPort(target)
	if err != nil {
		return nil, &PolicyError{Target: target, Why: fmt.Sprintf("not host:port (%v)", err)}
	}
	port, err := strconv.ParseUint(portStr, 10, 16)
	if err != nil || port == 0 {
		return nil, &PolicyError{Target: target, Why: fmt.Sprintf("port %q is not in 1-65535", portStr)}
	}
	ctx, cancel := context.WithTimeout(ctx, d.timeout)
	defer cancel()

	var addrs []netip.Addr
	if a, err := netip.ParseAddr(host); err == nil {
		addrs = []netip.Addr{a}
	} else {
		addrs, err = d.resolver.LookupNetIP(ctx, "ip", host)
		if err != nil {
			return nil, &dnsError{fmt.Errorf("resolving %s in the cluster: %w", host, err)}
		}
		if len(addrs) == 0 {
			return nil, &dnsError{fmt.Errorf("resolving %s in the cluster: no addresses", host)}
		}
	}
	// A name with any forbidden address is refused as a whole: a legitimate
	// service never resolves to the metadata service, so such a name is
	// either an attack or a mistake worth a clear answer.
	for _, a := range addrs {
		if err := d.policy.check(target, a, uint16(port)); err != nil {
			return nil, err
		}
	}
	var errs []error
	for _, a := range addrs {
		c, err := d.dial.DialContext(ctx, "tcp", netip.AddrPortFrom(a.Unmap().WithZone(""), uint16(port)).String())
		if err == nil {
			return c, nil
		}
		errs = append(errs, err)
		if ctx.Err() != nil {
			break
		}
	}
	if len(errs) == 1 {
		return nil, fmt.Errorf("relay dialing %s in the cluster: %w", target, errs[0])
	}
	return nil, fmt.Errorf("relay dialing %s in the cluster: %w", target, errors.Join(errs...))
}

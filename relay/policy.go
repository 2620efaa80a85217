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

// denyRule is one built-in range the relay never dials.
type denyRule struct {
	prefix netip.Prefix
	what   string // what lives there, for the refusal
}

func (d denyRule) why() string {
	where := d.prefix.String()
	if d.prefix.IsSingleIP() {
		where = d.prefix.Addr().String()
	}
	return fmt.Sprintf("%s %s is never dialed", d.what, where)
}

// builtinDeny lists the ranges the relay never dials, whatever --deny
// says: the places a pod reaches its node's or its cloud's credentials
// and configuration. IPv4 rules also apply to the IPv4 address an IPv6
// address carries (embeddedIPv4), so a NAT64, 6to4 or IPv4-compatible
// spelling of a refused address is refused too; IPv6 rules apply as
// written. Loopback, unspecified, multicast and the pod's own addresses
// are refused by the checks in verdict.
var builtinDeny = []denyRule{
	// "This network" (RFC 1122 3.2.1.3, RFC 6890): a source address,
	// never a destination. Linux (since 5.3) may route 0.0.0.0/8 as
	// unicast, and dials 0.0.0.0 as the host itself.
	{netip.MustParsePrefix("0.0.0.0/8"), `"this network"`},
	// Link-local. It holds the instance metadata service (credentials,
	// user data) at 169.254.169.254 on AWS, GCP, Azure, Oracle Cloud,
	// DigitalOcean, OpenStack, Hetzner, IBM Cloud and more, AWS ECS task
	// credentials at 169.254.170.2, the EKS Pod Identity agent at
	// 169.254.170.23, Tencent Cloud's metadata at 169.254.0.23 and
	// Scaleway's at 169.254.42.42. Nothing a developer needs from the
	// cluster lives here.
	{netip.MustParsePrefix("169.254.0.0/16"), "link-local (cloud metadata service)"},
	// Metadata services outside link-local. 100.100.100.200 lies in the
	// CGNAT range 100.64.0.0/10, which some clusters use for pods: only the
	// one address is refused.
	{netip.MustParsePrefix("100.100.100.200/32"), "Alibaba Cloud metadata service"},
	// Azure's WireServer: VM agent goal state, extension settings and
	// certificates (it also answers Azure DNS, which the relay never needs
	// to dial: it resolves names itself).
	{netip.MustParsePrefix("168.63.129.16/32"), "Azure WireServer"},
	{netip.MustParsePrefix("192.0.0.192/32"), "Oracle Cloud (Classic) metadata service"},
	{netip.MustParsePrefix("fe80::/10"), "IPv6 link-local"},
	{netip.MustParsePrefix("fd00:ec2::254/128"), "AWS IPv6 metadata service"},
	{netip.MustParsePrefix("fd00:ec2::23/128"), "EKS Pod Identity agent (IPv6)"},
	{netip.MustParsePrefix("fd20:ce::254/128"), "GCP IPv6 metadata service"},
	{netip.MustParsePrefix("fd00:42::42/128"), "Scaleway IPv6 metadata service"},
}

// teredo is 2001::/32 (RFC 4380), refused whole; see check.
var teredo = netip.MustParsePrefix("2001::/32")

// An embedding is an IPv4 address an IPv6 address carries, and the rule
// that puts it there.
type embedding struct {
	v4   netip.Addr
	form string // "NAT64", "6to4", …: "the NAT64 form of 169.254.169.254"
}

// embeddedIPv4 returns the IPv4 addresses a gateway, translator or tunnel
// would reach for the IPv6 address a, by these rules:
//
//   - IPv4-compatible, ::a.b.c.d (::/96, RFC 4291 2.5.5.1, deprecated)
//     except :: and ::1, IPv6's own unspecified and loopback addresses;
//   - SIIT IPv4-translated, ::ffff:0:a.b.c.d (::ffff:0:0:0/96, RFC 2765);
//   - NAT64 with the well-known prefix, 64:ff9b::a.b.c.d (64:ff9b::/96,
//     RFC 6052);
//   - NAT64 with the local-use prefix 64:ff9b:1::/48 (RFC 8215), read as
//     a /96 layout: the IPv4 address in the last 32 bits. RFC 6052 also
//     allows /48, /56 and /64 layouts, which put it elsewhere; the address
//     does not say which one the network's translator uses, and reading
//     every layout at once refuses ordinary addresses of the others (a /64
//     layout's 10.96.0.127 reads as 127.0.0.0 in the /96 one). Translators
//     (Jool, Tayga, cloud NAT64) use /96 in practice; a network with a
//     shorter layout adds 64:ff9b:1::/48 to outbound.deny;
//   - 6to4, 2002:aabb:ccdd::/48 (2002::/16, RFC 3056): bits 16-47;
//   - Teredo, 2001:0:ssss:ssss:…:cccc:cccc (2001::/32, RFC 4380): the
//     server's address in bits 32-63 and the client's, inverted, in bits
//     96-127.
//
// IPv4-mapped addresses (::ffff:a.b.c.d) are IPv4 addresses to the socket
// API; the policy unmaps them before it gets here, and the relay dials the
// IPv4 address. ISATAP (an IPv4 address in the interface identifier of any
// /64, ::5efe:a.b.c.d) is not decoded: it is reached only through an
// ISATAP interface, which a pod does not have, and its form can occur in
// ordinary addresses.
func embeddedIPv4(a netip.Addr) []embedding {
	if !a.Is6() || a.Is4In6() {
		return nil
	}
	b := a.As16()
	v4 := func(i int) netip.Addr { return netip.AddrFrom4([4]byte(b[i : i+4])) }
	zero := func(from, to int) bool {
		for _, x := range b[from:to] {
			if x != 0 {
				return false
			}
		}
		return true
	}
	switch {
	case zero(0, 12):
		if a.WithZone("") == netip.IPv6Unspecified() || a.WithZone("") == netip.IPv6Loopback() {
			return nil
		}
		return []embedding{{v4(12), "IPv4-compatible"}}
	case zero(0, 8) && b[8] == 0xff && b[9] == 0xff && b[10] == 0 && b[11] == 0:
		return []embedding{{v4(12), "SIIT IPv4-translated"}}
	case b[0] == 0x00 && b[1] == 0x64 && b[2] == 0xff && b[3] == 0x9b:
		switch {
		case zero(4, 12):
			return []embedding{{v4(12), "NAT64"}}
		case b[4] == 0 && b[5] == 1:
			return []embedding{{v4(12), "local-use NAT64"}}
		}
	case b[0] == 0x20 && b[1] == 0x02:
		return []embedding{{v4(2), "6to4"}}
	case b[0] == 0x20 && b[1] == 0x01 && b[2] == 0 && b[3] == 0:
		c := [4]byte{^b[12], ^b[13], ^b[14], ^b[15]}
		return []embedding{{v4(4), "Teredo (server)"}, {netip.AddrFrom4(c), "Teredo (client)"}}
	}
	return nil
}

// PolicyError says why the dial policy refused a destination. The relay
// reports it to the laptop as a "denied" dial error.
type PolicyError struct {
	Target string     // what the laptop asked for (host:port)
	Addr   netip.Addr // the resolved address that is refused
	// Embedded is the IPv4 address inside Addr that a rule refused, and
	// Form how it is embedded ("NAT64", "6to4", …); zero when Addr itself
	// was refused.
	Embedded netip.Addr
	Form     string
	Why      string // the rule that refused it
}

func (e *PolicyError) Error() string {
	literal := !e.Addr.IsValid() || targetIsAddr(e.Target, e.Addr)
	switch {
	case e.Embedded.IsValid() && literal:
		return fmt.Sprintf("relay refuses to dial %s: it is the %s form of %s: %s", e.Target, e.Form, e.Embedded, e.Why)
	case e.Embedded.IsValid():
		return fmt.Sprintf("relay refuses to dial %s: it resolves to %s, the %s form of %s: %s", e.Target, e.Addr, e.Form, e.Embedded, e.Why)
	case literal:
		return fmt.Sprintf("relay refuses to dial %s: %s", e.Target, e.Why)
	}
	return fmt.Sprintf("relay refuses to dial %s: it resolves to %s; %s", e.Target, e.Addr, e.Why)
}

// targetIsAddr reports whether target names addr literally, so the message
// does not repeat it.
func targetIsAddr(target string, a netip.Addr) bool {
	host, _, err := net.SplitHostPort(target)
	if err != nil {
		return false
	}
	h, err := netip.ParseAddr(host)
	return err == nil && h.Unmap().WithZone("") == a
}

// policy decides which resolved addresses the relay may dial for an outbound
// stream. It runs after DNS resolution and the relay then dials the checked
// address itself, so a name cannot be re-resolved to a forbidden address
// between the check and the dial.
type policy struct {
	// deny are the --deny ranges: IPv4 ones apply to IPv4 addresses and to
	// the IPv4 addresses embedded in IPv6 ones, IPv6 ones as written.
	deny          []netip.Prefix
	allowLoopback bool
	// ownPorts are the relay's bound ports, refused on loopback when
	// loopback is allowed; localAddrs lists the pod's addresses, all refused.
	ownPorts   map[uint16]bool
	localAddrs func() ([]netip.Addr, error)
}

// check returns a *PolicyError if addr:port must not be dialed: when a
// rule refuses the address itself, or an IPv4 address it embeds (a NAT64
// gateway or a tunnel would deliver the connection there).
func (p *policy) check(target string, addr netip.Addr, port uint16) error {
	// Prefix.Contains never matches a zoned address ("fe80::1%eth0"), so the
	// zone is dropped before any comparison (and before dialing).
	addr = addr.Unmap().WithZone("")
	if why := p.verdict(addr, port, false); why != "" {
		return &PolicyError{Target: target, Addr: addr, Why: why}
	}
	for _, e := range embeddedIPv4(addr) {
		if why := p.verdict(e.v4, port, true); why != "" {
			return &PolicyError{Target: target, Addr: addr, Embedded: e.v4, Form: e.form, Why: why}
		}
	}
	// Teredo addresses are refused whole, even when neither IPv4 address
	// they carry is: they are Internet tunnel addresses of hosts behind
	// IPv4 NATs (the public Teredo service is gone), never a cluster's, and
	// a Teredo relay would send the connection over UDP to the client's
	// NAT mapping (address and port both taken from the address, not from
	// the dial), which no rule here can judge.
	if teredo.Contains(addr) {
		return &PolicyError{Target: target, Addr: addr, Why: "Teredo tunnel addresses (2001::/32) are never dialed"}
	}
	return nil
}

// verdict says why a must not be dialed on port, or "" when it may.
// embedded says a was found inside an IPv6 address: then it is reached
// through a translator or tunnel, so loopback is refused even for
// simulators (it would be the translator's own), and the unspecified
// address falls to the 0.0.0.0/8 rule.
func (p *policy) verdict(a netip.Addr, port uint16, embedded bool) string {
	if a.IsUnspecified() && !embedded {
		return "the unspecified address reaches the relay pod itself"
	}
	for _, d := range builtinDeny {
		if d.prefix.Contains(a) {
			return d.why()
		}
	}
	for _, d := range p.deny {
		if d.Contains(a) {
			return fmt.Sprintf("%s is denied by --deny (outbound.deny in the sbx config)", d)
		}
	}
	if a.IsMulticast() {
		return "multicast addresses cannot be dialed"
	}
	if a.IsLoopback() {
		switch {
		case embedded:
			return "loopback addresses are never dialed"
		case !p.allowLoopback:
			return "loopback addresses are the relay pod itself"
		case p.ownPorts[port]:
			return fmt.Sprintf("port %d is the relay's own", port)
		}
		return ""
	}
	// Nothing on the relay pod's own addresses is for the laptop: its ports
	// are the relay's (dialing them would loop traffic back into it) and the
	// mesh sidecar's.
	if p.localAddrs != nil {
		locals, err := p.localAddrs()
		if err != nil {
			// Undecidable: refusing is the safe answer, and says why.
			return fmt.Sprintf("the relay pod's own addresses are unknown (%v)", err)
		}
		for _, l := range locals {
			if l.Unmap().WithZone("") == a {
				if p.ownPorts[port] {
					return fmt.Sprintf("%s is the relay's own port", netip.AddrPortFrom(a, port))
				}
				return fmt.Sprintf("%s is the relay pod's own address", a)
			}
		}
	}
	return ""
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

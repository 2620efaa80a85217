package relayargs

import (
	"errors"
	"fmt"
	"net/netip"
	"strings"
)

// MaxDeny bounds the extra ranges sbx has the relay refuse (its --deny,
// one argument each in the relay Deployment; outbound.deny in the sbx
// config): enough for a cluster's node, control-plane and service
// networks and a few hosts, while the pod spec stays readable.
const MaxDeny = 64

// ParseDeny reads one --deny value (an entry of outbound.deny in the sbx
// config, of sbx render --relay-deny): an IP address or a CIDR prefix.
// Host bits are dropped (10.1.2.3/8 is 10.0.0.0/8) and an IPv4-mapped
// entry (::ffff:10.0.0.0/104) is its IPv4 range, since the relay's dial
// policy sees IPv4-mapped addresses as IPv4.
func ParseDeny(s string) (netip.Prefix, error) {
	bad := fmt.Errorf("%q is not an IP address or CIDR prefix; want an address or range the relay must never dial, e.g. 10.0.0.0/24 or 100.64.0.7", s)
	var p netip.Prefix
	if !strings.Contains(s, "/") {
		a, err := netip.ParseAddr(s)
		if err != nil || a.Zone() != "" {
			return netip.Prefix{}, bad
		}
		p = netip.PrefixFrom(a, a.BitLen())
	} else {
		var err error
		if p, err = netip.ParsePrefix(s); err != nil {
			return netip.Prefix{}, bad
		}
	}
	if p.Addr().Is4In6() && p.Bits() >= 96 {
		p = netip.PrefixFrom(p.Addr().Unmap(), p.Bits()-96)
	}
	return p.Masked(), nil
}

// ValidateDeny checks a deny list built by code: at most MaxDeny entries,
// each as ParseDeny returns it, none twice.
func ValidateDeny(deny []netip.Prefix) error {
	if len(deny) > MaxDeny {
		return fmt.Errorf("the relay deny list has %d entries; allowed at most %d (merge neighbouring ranges into wider CIDRs)", len(deny), MaxDeny)
	}
	seen := map[netip.Prefix]bool{}
	var errs []error
	for i, p := range deny {
		switch {
		case !p.IsValid():
			errs = append(errs, fmt.Errorf("relay deny entry %d is not a CIDR prefix", i))
		case p != p.Masked() || (p.Addr().Is4In6() && p.Bits() >= 96):
			canon, _ := ParseDeny(p.String())
			errs = append(errs, fmt.Errorf("relay deny entry %s is not in canonical form; write %s", p, canon))
		case seen[p]:
			errs = append(errs, fmt.Errorf("relay deny entry %s is listed twice", p))
		}
		seen[p] = true
	}
	return errors.Join(errs...)
}

package config

import (
	"fmt"
	"net"
	"net/netip"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"

	"go.yaml.in/yaml/v3"

	"github.com/sbx-dev/sbx/cluster/meshmode"
	"github.com/sbx-dev/sbx/cluster/routingkey"
	"github.com/sbx-dev/sbx/cluster/spec"
	"github.com/sbx-dev/sbx/cluster/spec/fieldpath"
	"github.com/sbx-dev/sbx/cluster/spec/strictyaml"
	"github.com/sbx-dev/sbx/relay/relayargs"
)

var (
	// imageRE is a container image reference: [domain[:port]/]path[:tag][@digest].
	imageRE = regexp.MustCompile(`^(?:[a-zA-Z0-9](?:[a-zA-Z0-9-]*[a-zA-Z0-9])?(?:\.[a-zA-Z0-9](?:[a-zA-Z0-9-]*[a-zA-Z0-9])?)*(?::[0-9]+)?/)?` +
		`[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*(?:/[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*)*` +
		`(?::[A-Za-z0-9_][A-Za-z0-9_.-]{0,127})?(?:@[A-Za-z][A-Za-z0-9]*(?:[-_+.][A-Za-z][A-Za-z0-9]*)*:[0-9a-fA-F]{32,})?$`)
	loopback8 = netip.MustParsePrefix("127.0.0.0/8")
	// domainRE is a lower-case DNS domain of one or more labels.
	domainRE = regexp.MustCompile(`^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?(\.[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?)*$`)
)

func decode(d *strictyaml.Decoder, root *yaml.Node, c *Config) {
	f := d.Fields(root, "", "relayImage", "relayMaxStreams", "baggageKey", "poolSize", "outbound", "contexts", "clusterDomain", "mesh")
	if n := f["mesh"]; n != nil {
		v := d.String(n, "mesh")
		switch {
		case d.Bad("mesh"):
		case meshmode.Validate(v) != nil || v == "":
			d.Errorf(n, "mesh", "%q is not auto, istio or gateway-api (auto, the default, picks per Service)", v)
		default:
			c.Mesh = v
		}
	}
	if n := f["clusterDomain"]; n != nil {
		v := d.String(n, "clusterDomain")
		switch {
		case d.Bad("clusterDomain"):
		case !domainRE.MatchString(v) || len(v) > 253:
			d.Errorf(n, "clusterDomain", "%q is not a DNS domain; want the cluster's DNS domain as kubelet's --cluster-domain has it, e.g. %s (leave it out for that default)", v, DefaultClusterDomain)
		default:
			c.ClusterDomain = v
		}
	}
	if n := f["relayImage"]; n != nil {
		img := d.String(n, "relayImage")
		if img != "" && (len(img) > 512 || !imageRE.MatchString(img)) {
			d.Errorf(n, "relayImage", "%q is not a container image reference; want [registry/]repository[:tag][@sha256:digest], e.g. ghcr.io/sbx-dev/sbx:v1.2.3", img)
		}
		c.RelayImage = img
	}
	if n := f["relayMaxStreams"]; n != nil {
		allowed := fmt.Sprintf("1-%d", relayargs.MaxStreamsLimit)
		if v, ok := d.Int(n, "relayMaxStreams", allowed); ok {
			// 0 would mean the default: leave the key out for that.
			if v < 1 || relayargs.ValidateMaxStreams(int(v)) != nil {
				d.Errorf(n, "relayMaxStreams", "%d is out of range; allowed %s streams the relay serves at once, each adding ~1 MiB to the relay pod's memory (leave it out for the default %d)",
					v, allowed, relayargs.DefaultMaxStreams)
			} else {
				c.RelayMaxStreams = int(v)
			}
		}
	}
	if n := f["baggageKey"]; n != nil {
		k := d.String(n, "baggageKey")
		switch {
		case d.Bad("baggageKey"):
		case k == "":
			d.Errorf(n, "baggageKey", "must not be empty; leave it out for the default %q", routingkey.DefaultBaggageKey)
		default:
			if err := routingkey.ValidateBaggageKey(k); err != nil {
				d.Errorf(n, "baggageKey", "%v", err)
			} else {
				c.BaggageKey = k
			}
		}
	}
	if n := f["poolSize"]; n != nil {
		allowed := fmt.Sprintf("1-%d", MaxPoolSize)
		if v, ok := d.Int(n, "poolSize", allowed); ok {
			if v < 1 || v > MaxPoolSize {
				d.Errorf(n, "poolSize", "%d is out of range; allowed %s tunnel sessions per sandbox (default %d)", v, allowed, DefaultPoolSize)
			} else {
				c.PoolSize = int(v)
			}
		}
	}
	decodeOutbound(d, f["outbound"], &c.Outbound)
	if n := f["contexts"]; n != nil {
		m := d.StringMap(n, "contexts")
		for _, k := range sortedKeys(m) {
			p := fieldpath.Key("contexts", k)
			switch v := m[k]; {
			case d.Bad(p):
			case strings.TrimSpace(k) == "":
				d.Errorf(nil, p, "a cluster name must not be empty")
			case strings.TrimSpace(v) == "" || strings.TrimSpace(v) != v:
				d.Errorf(nil, p, "%q is not a kube context name; map each cluster name to a context from `kubectl config get-contexts -o name`", v)
			}
		}
		if len(m) > 0 {
			c.Contexts = m
		}
	}
}

func decodeOutbound(d *strictyaml.Decoder, n *yaml.Node, o *Outbound) {
	const p = "outbound"
	f := d.Fields(n, p, "mode", "namespaces", "hostsFile", "hostsRange", "injectBaggage", "proxyListen", "deny")
	if n := f["mode"]; n != nil {
		m := d.String(n, p+".mode")
		switch {
		case d.Bad(p + ".mode"):
		case m == "":
			d.Errorf(n, p+".mode", "must not be empty; allowed: %s (default auto)", strings.Join(modes, ", "))
		case !slices.Contains(modes, m):
			msg := fmt.Sprintf("unknown mode %q", m)
			if s := fieldpath.Suggest(m, modes); s != "" {
				msg += fmt.Sprintf("; did you mean %q?", s)
			}
			d.Errorf(n, p+".mode", "%s (allowed: %s; auto = hosts when the hosts file is writable, else proxy)", msg, strings.Join(modes, ", "))
		default:
			o.Mode = OutboundMode(m)
		}
	}
	seen := map[string]int{}
	for i, nn := range d.Seq(f["namespaces"], p+".namespaces") {
		ip := fieldpath.Index(p+".namespaces", i)
		ns := d.String(nn, ip)
		switch {
		case d.Bad(ip):
		case !spec.IsDNS1123Label(ns):
			d.Errorf(nn, ip, "%q is not a valid namespace; it must be a DNS-1123 label: at most 63 lowercase letters, digits and '-', starting and ending with a letter or digit", ns)
		default:
			if j, dup := seen[ns]; dup {
				d.Errorf(nn, ip, "namespace %q is already listed at %s.namespaces[%d]", ns, p, j)
				continue
			}
			seen[ns] = i
			o.Namespaces = append(o.Namespaces, ns)
		}
	}
	if n := f["hostsFile"]; n != nil {
		h := d.String(n, p+".hostsFile")
		switch {
		case d.Bad(p + ".hostsFile"):
		case h == "" || !filepath.IsAbs(h):
			d.Errorf(n, p+".hostsFile", "%q is not an absolute path; give the hosts file's full path (default %s)", h, DefaultHostsFile)
		default:
			o.HostsFile = filepath.Clean(h)
		}
	}
	if n := f["hostsRange"]; n != nil {
		r := d.String(n, p+".hostsRange")
		if !d.Bad(p + ".hostsRange") {
			if pr, msg := checkHostsRange(r); msg != "" {
				d.Errorf(n, p+".hostsRange", "%s", msg)
			} else {
				o.HostsRange = pr
			}
		}
	}
	if n := f["injectBaggage"]; n != nil {
		if b, ok := d.Bool(n, p+".injectBaggage"); ok {
			o.InjectBaggage = b
		}
	}
	if n := f["proxyListen"]; n != nil {
		l := d.String(n, p+".proxyListen")
		if !d.Bad(p + ".proxyListen") {
			if msg := checkProxyListen(l); msg != "" {
				d.Errorf(n, p+".proxyListen", "%s", msg)
			} else {
				o.ProxyListen = l
			}
		}
	}
	decodeDeny(d, f["deny"], o)
}

// decodeDeny reads outbound.deny: addresses and CIDRs the relay must never
// dial, each read as the relay reads its --deny (relayargs.ParseDeny),
// none twice, at most relayargs.MaxDeny.
func decodeDeny(d *strictyaml.Decoder, n *yaml.Node, o *Outbound) {
	const p = "outbound.deny"
	items := d.Seq(n, p)
	if len(items) > relayargs.MaxDeny {
		d.Errorf(n, p, "has %d entries; allowed at most %d (merge neighbouring ranges into wider CIDRs)", len(items), relayargs.MaxDeny)
		return
	}
	seen := map[netip.Prefix]int{}
	for i, nn := range items {
		ip := fieldpath.Index(p, i)
		s := d.String(nn, ip)
		if d.Bad(ip) {
			continue
		}
		pr, err := relayargs.ParseDeny(s)
		if err != nil {
			d.Errorf(nn, ip, "%v", err)
			continue
		}
		if j, dup := seen[pr]; dup {
			d.Errorf(nn, ip, "%s is already listed at %s[%d]", pr, p, j)
			continue
		}
		seen[pr] = i
		o.Deny = append(o.Deny, pr)
	}
}

// checkHostsRange parses a hosts range; it must be IPv4 loopback, leave
// 127.0.0.1 alone and hold at least 4 addresses.
func checkHostsRange(s string) (netip.Prefix, string) {
	const want = "want an IPv4 CIDR inside 127.0.0.0/8 that does not contain 127.0.0.1, e.g. 127.241.0.0/16"
	pr, err := netip.ParsePrefix(strings.TrimSpace(s))
	switch {
	case err != nil:
		return pr, fmt.Sprintf("%q is not a CIDR range; %s", s, want)
	case !pr.Addr().Is4() || pr.Bits() < 8 || !loopback8.Contains(pr.Addr()):
		return pr, fmt.Sprintf("%q is not inside 127.0.0.0/8; %s", s, want)
	case pr.Masked().Contains(netip.MustParseAddr("127.0.0.1")):
		return pr, fmt.Sprintf("%q contains 127.0.0.1, which local services listen on; %s", s, want)
	case pr.Bits() > 30:
		return pr, fmt.Sprintf("%q holds fewer than 4 addresses; use a prefix of /30 or shorter, e.g. 127.241.0.0/16", s)
	}
	return pr.Masked(), ""
}

// checkProxyListen requires a loopback address: a proxy into the cluster
// must never be reachable from the network.
func checkProxyListen(s string) string {
	const want = "want a loopback host:port, e.g. 127.0.0.1:0 (any free port) or 127.0.0.1:1080"
	host, port, err := net.SplitHostPort(s)
	if err != nil {
		return fmt.Sprintf("%q is not host:port; %s", s, want)
	}
	if n, err := strconv.Atoi(port); err != nil || n < 0 || n > 65535 {
		return fmt.Sprintf("%q: port %q is not a number 0-65535; %s", s, port, want)
	}
	if host == "localhost" {
		return ""
	}
	a, err := netip.ParseAddr(host)
	if err != nil || !a.IsLoopback() {
		return fmt.Sprintf("%q is not a loopback address; the proxy reaches into the cluster and must not be exposed to the network; %s", s, want)
	}
	return ""
}

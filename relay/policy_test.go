package relay

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// fakeResolver resolves names from a table; unknown names fail like NXDOMAIN.
type fakeResolver map[string][]string

func (r fakeResolver) LookupNetIP(_ context.Context, _, host string) ([]netip.Addr, error) {
	ips, ok := r[host]
	if !ok {
		return nil, &net.DNSError{Err: "no such host", Name: host, IsNotFound: true}
	}
	out := make([]netip.Addr, len(ips))
	for i, s := range ips {
		out[i] = netip.MustParseAddr(s)
	}
	return out, nil
}

// recordingDialer records the addresses it was asked to dial and fails them
// all with "connection refused" unless a net.Conn is mapped for the address.
type recordingDialer struct {
	mu     sync.Mutex
	dialed []string
}

func (d *recordingDialer) DialContext(_ context.Context, _, addr string) (net.Conn, error) {
	d.mu.Lock()
	d.dialed = append(d.dialed, addr)
	d.mu.Unlock()
	return nil, &net.OpError{Op: "dial", Net: "tcp", Err: errors.New("connect: connection refused")}
}

func TestDialPolicy(t *testing.T) {
	podIP := netip.MustParseAddr("10.1.2.3")
	res := fakeResolver{
		"metadata.google.internal":         {"169.254.169.254"},
		"sneaky.example.com":               {"10.0.0.7", "169.254.169.254"},
		"aws6.example.com":                 {"fd00:ec2::254"},
		"local.example.com":                {"127.0.0.1"},
		"mapped.example.com":               {"::ffff:169.254.169.254"},
		"me.example.com":                   {"10.1.2.3"},
		"driver.hotrod.svc.cluster.local":  {"10.96.0.12"},
		"dual.hotrod.svc.cluster.local":    {"10.96.0.13", "fd00:10:96::13"},
		"linklocal6.example.com":           {"fe80::1"},
		"zero.example.com":                 {"0.0.0.0"},
		"denied-by-flag.example.com":       {"10.200.0.9"},
		"route.hotrod.svc.cluster.local.":  {"10.96.0.14"},
		"multicast.example.com":            {"224.0.0.1"},
		"ipv6-loopback.example.com":        {"::1"},
		"pod-health-by-name.example.com":   {"10.1.2.3"},
		"not-own-port-on-pod.example.com":  {"10.1.2.3"},
		"own-port-other-host.example.com":  {"10.96.0.15"},
		"own-port-mapped-pod.example.com":  {"::ffff:10.1.2.3"},
		"own-port-v6-loopback.example.com": {"::1"},
		"alibaba.example.com":              {"100.100.100.200"},
		"nat64-metadata.example.com":       {"10.96.0.16", "64:ff9b::a9fe:a9fe"},
		"nat64-denied.example.com":         {"64:ff9b::ac8:9"},
		"6to4-alibaba.example.com":         {"2002:6464:64c8::1"},
		"nat64.hotrod.svc.cluster.local":   {"64:ff9b::a60:11"},
	}
	p := &policy{
		deny:       []netip.Prefix{netip.MustParsePrefix("10.200.0.0/16")},
		ownPorts:   map[uint16]bool{7000: true, 7001: true, 20001: true},
		localAddrs: func() ([]netip.Addr, error) { return []netip.Addr{podIP}, nil },
	}
	tests := []struct {
		target string
		denied string // substring of the PolicyError, or "" when the dial must be attempted
		dialed []string
	}{
		{"169.254.169.254:80", ": link-local (cloud metadata service) 169.254.0.0/16 is never dialed", nil},
		{"169.254.170.2:80", "link-local (cloud metadata service)", nil},  // AWS ECS task credentials
		{"169.254.170.23:80", "link-local (cloud metadata service)", nil}, // EKS Pod Identity agent
		{"[fe80::1%eth0]:80", "IPv6 link-local", nil},                     // a zone must not hide the address from the prefix check
		{"[fe80::1]:80", ": IPv6 link-local fe80::/10 is never dialed", nil},
		{"[fd00:ec2::254]:80", ": AWS IPv6 metadata service fd00:ec2::254 is never dialed", nil},
		{"[fd00:ec2::23]:80", ": EKS Pod Identity agent (IPv6) fd00:ec2::23 is never dialed", nil},
		{"[fd20:ce::254]:80", ": GCP IPv6 metadata service fd20:ce::254 is never dialed", nil},
		{"[fd00:42::42]:80", ": Scaleway IPv6 metadata service fd00:42::42 is never dialed", nil},
		{"100.100.100.200:80", ": Alibaba Cloud metadata service 100.100.100.200 is never dialed", nil},
		{"alibaba.example.com:80", "it resolves to 100.100.100.200; Alibaba Cloud metadata service 100.100.100.200 is never dialed", nil},
		{"168.63.129.16:80", ": Azure WireServer 168.63.129.16 is never dialed", nil},
		{"192.0.0.192:80", ": Oracle Cloud (Classic) metadata service 192.0.0.192 is never dialed", nil},
		{"[::ffff:169.254.169.254]:80", "link-local", nil},
		{"metadata.google.internal:80", "it resolves to 169.254.169.254", nil},
		{"sneaky.example.com:80", "it resolves to 169.254.169.254", nil},
		{"aws6.example.com:80", "AWS IPv6 metadata", nil},
		{"mapped.example.com:80", "link-local", nil},
		{"linklocal6.example.com:443", "IPv6 link-local", nil},
		{"127.0.0.1:8080", "loopback addresses are the relay pod itself", nil},
		{"local.example.com:8080", "it resolves to 127.0.0.1; loopback", nil},
		{"[::1]:8080", "loopback", nil},
		{"0.0.0.0:8080", "unspecified address", nil},
		{"zero.example.com:8080", "unspecified address", nil},
		{"[::]:8080", "unspecified address", nil},
		{"0.1.2.3:80", `: "this network" 0.0.0.0/8 is never dialed`, nil},
		{"0.255.255.255:80", `"this network" 0.0.0.0/8`, nil},
		{"224.0.0.1:80", "multicast", nil},
		{"denied-by-flag.example.com:80", "10.200.0.0/16 is denied by --deny (outbound.deny in the sbx config)", nil},
		{"10.1.2.3:7001", "10.1.2.3:7001 is the relay's own port", nil},
		{"10.1.2.3:20001", "is the relay's own port", nil},
		{"pod-health-by-name.example.com:7001", "it resolves to 10.1.2.3; 10.1.2.3:7001 is the relay's own port", nil},
		{"own-port-mapped-pod.example.com:7000", "is the relay's own port", nil},
		{"nosuchport.example.com:http", `port "http" is not in 1-65535`, nil},
		{"host-without-port", "not host:port", nil},
		{"10.0.0.1:0", "not in 1-65535", nil},
		{"not-own-port-on-pod.example.com:15090", "10.1.2.3 is the relay pod's own address", nil},

		// IPv6 spellings of refused IPv4 addresses: the rule that refuses
		// the IPv4 address refuses them, and the message names both.
		{"[64:ff9b::a9fe:a9fe]:80", ": it is the NAT64 form of 169.254.169.254: link-local (cloud metadata service) 169.254.0.0/16 is never dialed", nil},
		{"[64:ff9b::169.254.169.254]:80", "it is the NAT64 form of 169.254.169.254: link-local", nil},
		{"nat64-metadata.example.com:80", "it resolves to 64:ff9b::a9fe:a9fe, the NAT64 form of 169.254.169.254: link-local (cloud metadata service)", nil},
		{"[64:ff9b:1::a9fe:a9fe]:80", "it is the local-use NAT64 form of 169.254.169.254: link-local", nil},
		{"[64:ff9b:1:ab:cdef::a9fe:a9fe]:80", "it is the local-use NAT64 form of 169.254.169.254: link-local", nil},
		{"[64:ff9b::6464:64c8]:80", "it is the NAT64 form of 100.100.100.200: Alibaba Cloud metadata service", nil},
		{"[64:ff9b::a83f:8110]:80", "it is the NAT64 form of 168.63.129.16: Azure WireServer", nil},
		{"[::a9fe:a9fe]:80", "it is the IPv4-compatible form of 169.254.169.254: link-local", nil},
		{"[::ffff:0:a9fe:a9fe]:80", "it is the SIIT IPv4-translated form of 169.254.169.254: link-local", nil},
		{"[2002:a9fe:a9fe::]:80", "it is the 6to4 form of 169.254.169.254: link-local", nil},
		{"[2002:a9fe:a9fe:1::5]:80", "it is the 6to4 form of 169.254.169.254: link-local", nil},
		{"6to4-alibaba.example.com:80", "it resolves to 2002:6464:64c8::1, the 6to4 form of 100.100.100.200: Alibaba Cloud", nil},
		{"[2001:0:a9fe:a9fe::1]:80", "it is the Teredo (server) form of 169.254.169.254: link-local", nil},
		{"[2001:0:102:304::5601:5601]:80", "it is the Teredo (client) form of 169.254.169.254: link-local", nil},
		// RFC 4380's example (server 65.54.227.120, client 192.0.2.45):
		// nothing refused inside, refused for being Teredo.
		{"[2001:0:4136:e378:8000:63bf:3fff:fdd2]:80", ": Teredo tunnel addresses (2001::/32) are never dialed", nil},
		{"[64:ff9b::]:80", `it is the NAT64 form of 0.0.0.0: "this network" 0.0.0.0/8 is never dialed`, nil},
		{"[64:ff9b::1]:80", `the NAT64 form of 0.0.0.1: "this network"`, nil},
		{"[2002::]:80", `the 6to4 form of 0.0.0.0: "this network"`, nil},
		{"[64:ff9b::7f00:1]:8080", "it is the NAT64 form of 127.0.0.1: loopback addresses are never dialed", nil},
		{"[::7f00:1]:8080", "it is the IPv4-compatible form of 127.0.0.1: loopback", nil},
		{"[64:ff9b::e000:1]:80", "it is the NAT64 form of 224.0.0.1: multicast", nil},
		{"[64:ff9b::a01:203]:7001", "it is the NAT64 form of 10.1.2.3: 10.1.2.3:7001 is the relay's own port", nil},
		{"[2002:a01:203::]:15090", "it is the 6to4 form of 10.1.2.3: 10.1.2.3 is the relay pod's own address", nil},
		{"nat64-denied.example.com:80", "it resolves to 64:ff9b::ac8:9, the NAT64 form of 10.200.0.9: 10.200.0.0/16 is denied by --deny", nil},

		// Allowed: these reach the dialer, by address, in resolution order.
		{"own-port-other-host.example.com:7001", "", []string{"10.96.0.15:7001"}},
		{"driver.hotrod.svc.cluster.local:8082", "", []string{"10.96.0.12:8082"}},
		{"dual.hotrod.svc.cluster.local:8082", "", []string{"10.96.0.13:8082", "[fd00:10:96::13]:8082"}},
		{"route.hotrod.svc.cluster.local.:8083", "", []string{"10.96.0.14:8083"}},
		{"10.96.0.1:443", "", []string{"10.96.0.1:443"}},
		{"10.244.1.5:8080", "", []string{"10.244.1.5:8080"}},             // a pod
		{"[fd00:10:244::5]:8080", "", []string{"[fd00:10:244::5]:8080"}}, // an IPv6 pod
		{"100.64.0.1:8080", "", []string{"100.64.0.1:8080"}},             // CGNAT, pods on some clusters
		{"100.100.100.199:80", "", []string{"100.100.100.199:80"}},       // only the metadata address itself
		{"1.0.0.0:80", "", []string{"1.0.0.0:80"}},                       // just past 0.0.0.0/8
		{"169.255.0.1:80", "", []string{"169.255.0.1:80"}},               // just past link-local
		{"[fd00:ec2::1]:80", "", []string{"[fd00:ec2::1]:80"}},           // not a known AWS service address
		{"[2001:db8::1]:80", "", []string{"[2001:db8::1]:80"}},           // not Teredo
		{"[64:ff9b::a60:11]:80", "", []string{"[64:ff9b::a60:11]:80"}},   // NAT64 of an allowed address
		{"nat64.hotrod.svc.cluster.local:80", "", []string{"[64:ff9b::a60:11]:80"}},
		{"[2002:a60:11::1]:80", "", []string{"[2002:a60:11::1]:80"}}, // 6to4 of an allowed address
	}
	for _, tt := range tests {
		t.Run(tt.target, func(t *testing.T) {
			rd := &recordingDialer{}
			d := &dialer{policy: p, resolver: res, dial: rd, timeout: 5 * time.Second}
			_, err := d.dialTarget(context.Background(), tt.target)
			require.Error(t, err)
			var pe *PolicyError
			if tt.denied != "" {
				require.ErrorAs(t, err, &pe, "%v", err)
				require.Contains(t, err.Error(), tt.denied)
				require.Contains(t, err.Error(), "relay refuses to dial "+tt.target)
				require.Empty(t, rd.dialed, "a refused target is never dialed")
				return
			}
			require.False(t, errors.As(err, &pe), "allowed target refused: %v", err)
			require.Equal(t, tt.dialed, rd.dialed)
			require.Contains(t, err.Error(), "connection refused")
		})
	}
}

// embed spells v4 in the IPv6 form embeddedIPv4 names form, with fill in
// the bits the form leaves free (6to4's subnet and interface, Teredo's
// flags and port and the other end, local-use NAT64's prefix bits).
func embed(t testing.TB, form string, v4 netip.Addr, fill [16]byte) netip.Addr {
	t.Helper()
	a := v4.As4()
	var b [16]byte
	switch form {
	case "IPv4-compatible":
		copy(b[12:], a[:])
	case "SIIT IPv4-translated":
		b[8], b[9] = 0xff, 0xff
		copy(b[12:], a[:])
	case "NAT64":
		b[0], b[1], b[2], b[3] = 0, 0x64, 0xff, 0x9b
		copy(b[12:], a[:])
	case "local-use NAT64":
		b = fill
		b[0], b[1], b[2], b[3], b[4], b[5] = 0, 0x64, 0xff, 0x9b, 0, 1
		copy(b[12:], a[:])
	case "6to4":
		b = fill
		b[0], b[1] = 0x20, 0x02
		copy(b[2:6], a[:])
	case "Teredo (server)":
		b = fill
		b[0], b[1], b[2], b[3] = 0x20, 0x01, 0, 0
		copy(b[4:8], a[:])
	case "Teredo (client)":
		b = fill
		b[0], b[1], b[2], b[3] = 0x20, 0x01, 0, 0
		for i := range 4 {
			b[12+i] = ^a[i]
		}
	default:
		t.Fatalf("unknown form %q", form)
	}
	return netip.AddrFrom16(b)
}

var embedForms = []string{"IPv4-compatible", "SIIT IPv4-translated", "NAT64", "local-use NAT64", "6to4", "Teredo (server)", "Teredo (client)"}

// TestBuiltinDenyEveryForm: every built-in IPv4 rule refuses its first,
// last and a middle address as written, IPv4-mapped, and in every IPv6
// form that embeds it; every IPv6 rule refuses its addresses as written.
func TestBuiltinDenyEveryForm(t *testing.T) {
	p := &policy{}
	// Free bits: Teredo's other end is 10.96.0.1 (server) or 10.96.0.2
	// (client), both allowed.
	fill := [16]byte{0: 0xff, 4: 10, 5: 96, 6: 0, 7: 1, 8: 0x80, 9: 0x01, 10: 0xab, 11: 0xcd, 12: ^byte(10), 13: ^byte(96), 14: ^byte(0), 15: ^byte(2)}
	for _, d := range builtinDeny {
		first := d.prefix.Addr()
		last := lastAddr(d.prefix)
		for _, a := range []netip.Addr{first, last, first.Next()} {
			if !d.prefix.Contains(a) {
				continue
			}
			target := netip.AddrPortFrom(a, 80).String()
			err := p.check(target, a, 80)
			var pe *PolicyError
			require.ErrorAs(t, err, &pe, "%s", a)
			if a != netip.IPv4Unspecified() { // refused as the unspecified address
				require.Equal(t, d.why(), pe.Why, "%s", a)
			}
			if !a.Is4() {
				continue
			}
			mapped := netip.AddrFrom16(a.As16())
			require.Error(t, p.check("x:80", mapped, 80), "IPv4-mapped %s", mapped)
			for _, form := range embedForms {
				six := embed(t, form, a, fill)
				if six == netip.IPv6Unspecified() || six == netip.IPv6Loopback() {
					continue // IPv6's own unspecified and loopback addresses, refused as such
				}
				err := p.check("name.example.com:80", six, 80)
				require.ErrorAs(t, err, &pe, "%s form of %s: %s", form, a, six)
				require.Equal(t, a, pe.Embedded, "%s", six)
				require.Equal(t, form, pe.Form, "%s", six)
				require.Equal(t, d.why(), pe.Why)
				require.Contains(t, err.Error(), fmt.Sprintf("it resolves to %s, the %s form of %s: %s", six, form, a, d.why()))
			}
		}
	}
}

func lastAddr(p netip.Prefix) netip.Addr {
	b := p.Addr().AsSlice()
	for i := p.Bits(); i < len(b)*8; i++ {
		b[i/8] |= 0x80 >> (i % 8)
	}
	a, _ := netip.AddrFromSlice(b)
	return a
}

// TestUserDenyAppliesToEmbeddings: a --deny IPv4 range refuses the range's
// IPv6 spellings too; a --deny IPv6 range applies as written.
func TestUserDenyAppliesToEmbeddings(t *testing.T) {
	p := &policy{deny: []netip.Prefix{netip.MustParsePrefix("100.64.0.0/10"), netip.MustParsePrefix("64:ff9b::/96")}}
	var pe *PolicyError
	err := p.check("100.64.0.1:80", netip.MustParseAddr("100.64.0.1"), 80)
	require.ErrorAs(t, err, &pe)
	require.Equal(t, "relay refuses to dial 100.64.0.1:80: 100.64.0.0/10 is denied by --deny (outbound.deny in the sbx config)", err.Error())
	err = p.check("[2002:6440:1::]:80", netip.MustParseAddr("2002:6440:1::"), 80)
	require.ErrorAs(t, err, &pe)
	require.Equal(t, "relay refuses to dial [2002:6440:1::]:80: it is the 6to4 form of 100.64.0.1: 100.64.0.0/10 is denied by --deny (outbound.deny in the sbx config)", err.Error())
	// The IPv6 rule matches the NAT64 address itself, whatever it embeds.
	err = p.check("[64:ff9b::a00:5]:80", netip.MustParseAddr("64:ff9b::a00:5"), 80)
	require.ErrorAs(t, err, &pe)
	require.False(t, pe.Embedded.IsValid())
	require.Equal(t, "relay refuses to dial [64:ff9b::a00:5]:80: 64:ff9b::/96 is denied by --deny (outbound.deny in the sbx config)", err.Error())
	require.NoError(t, p.check("[64:ff9b:1::a00:5]:80", netip.MustParseAddr("64:ff9b:1::a00:5"), 80))
	require.NoError(t, p.check("100.128.0.1:80", netip.MustParseAddr("100.128.0.1"), 80))
}

func TestEmbeddedIPv4(t *testing.T) {
	tests := []struct {
		addr string
		want []embedding
	}{
		{"64:ff9b::a9fe:a9fe", []embedding{{netip.MustParseAddr("169.254.169.254"), "NAT64"}}},
		{"64:ff9b:1:2:3:4:a9fe:a9fe", []embedding{{netip.MustParseAddr("169.254.169.254"), "local-use NAT64"}}},
		{"::a9fe:a9fe", []embedding{{netip.MustParseAddr("169.254.169.254"), "IPv4-compatible"}}},
		{"::2", []embedding{{netip.MustParseAddr("0.0.0.2"), "IPv4-compatible"}}},
		{"::ffff:0:a9fe:a9fe", []embedding{{netip.MustParseAddr("169.254.169.254"), "SIIT IPv4-translated"}}},
		{"2002:a9fe:a9fe:ffff:1:2:3:4", []embedding{{netip.MustParseAddr("169.254.169.254"), "6to4"}}},
		{"2001:0:4136:e378:8000:63bf:3fff:fdd2", []embedding{
			{netip.MustParseAddr("65.54.227.120"), "Teredo (server)"}, {netip.MustParseAddr("192.0.2.45"), "Teredo (client)"}}},
		// Not embeddings.
		{"::", nil}, {"::1", nil},
		{"::ffff:169.254.169.254", nil}, // IPv4-mapped: the policy unmaps it first
		{"169.254.169.254", nil},
		{"64:ff9b:2::a9fe:a9fe", nil}, // neither NAT64 prefix
		{"64:ff9b:0:1::a9fe:a9fe", nil},
		{"2001:db8::a9fe:a9fe", nil},
		{"2001:1::a9fe:a9fe", nil},
		{"2003:a9fe:a9fe::", nil},
		{"fd00:10:244::5", nil},
		{"fe80::5efe:a9fe:a9fe", nil}, // ISATAP: not decoded (and link-local anyway)
	}
	for _, tt := range tests {
		got := embeddedIPv4(netip.MustParseAddr(tt.addr))
		require.Equal(t, tt.want, got, tt.addr)
	}
}

// FuzzEmbeddedIPv4: extraction never panics and only yields IPv4
// addresses; any IPv4 address spelled in any form, whatever fills the free
// bits, is extracted again with that form; and the policy refuses the
// spelling exactly when it refuses the IPv4 address (Teredo: always).
func FuzzEmbeddedIPv4(f *testing.F) {
	f.Add(uint32(0xa9fea9fe), uint8(2), []byte{})
	f.Add(uint32(0x6464_64c8), uint8(4), []byte{1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16})
	f.Add(uint32(0x0a010203), uint8(6), []byte{0xff})
	f.Add(uint32(1), uint8(0), []byte{})
	local := netip.MustParseAddr("10.1.2.3")
	p := &policy{
		deny:     []netip.Prefix{netip.MustParsePrefix("10.200.0.0/16"), netip.MustParsePrefix("fd00:bad::/32")},
		ownPorts: map[uint16]bool{7001: true}, localAddrs: func() ([]netip.Addr, error) { return []netip.Addr{local}, nil },
	}
	f.Fuzz(func(t *testing.T, v4 uint32, formIdx uint8, fillBytes []byte) {
		var fill [16]byte
		copy(fill[:], fillBytes)
		for _, e := range embeddedIPv4(netip.AddrFrom16(fill)) {
			if !e.v4.Is4() || e.form == "" {
				t.Fatalf("%s: bad embedding %+v", netip.AddrFrom16(fill), e)
			}
		}
		a := netip.AddrFrom4([4]byte{byte(v4 >> 24), byte(v4 >> 16), byte(v4 >> 8), byte(v4)})
		form := embedForms[int(formIdx)%len(embedForms)]
		if form == "IPv4-compatible" && v4 <= 1 {
			return // :: and ::1 are IPv6's own
		}
		six := embed(t, form, a, fill)
		found := false
		for _, e := range embeddedIPv4(six) {
			found = found || e == embedding{a, form}
		}
		if !found {
			t.Fatalf("%s: %s form of %s not extracted: %+v", six, form, a, embeddedIPv4(six))
		}
		for _, port := range []uint16{80, 7001} {
			err := p.check("x:1", six, port)
			refused := p.verdict(a, port, true) != ""
			switch {
			case strings.HasPrefix(form, "Teredo"):
				if err == nil {
					t.Fatalf("Teredo %s allowed", six)
				}
			case refused && err == nil:
				t.Fatalf("%s (%s form of %s) allowed on port %d", six, form, a, port)
			case !refused && err != nil:
				t.Fatalf("%s (%s form of allowed %s) refused: %v", six, form, a, err)
			}
		}
	})
}

func TestDialPolicyLoopbackForSimulators(t *testing.T) {
	p := &policy{allowLoopback: true, ownPorts: map[uint16]bool{7001: true}}
	d := &dialer{policy: p, resolver: fakeResolver{}, dial: &recordingDialer{}, timeout: time.Second}
	_, err := d.dialTarget(context.Background(), "127.0.0.1:8080")
	var pe *PolicyError
	require.False(t, errors.As(err, &pe), "loopback is allowed when the simulator asks: %v", err)
	_, err = d.dialTarget(context.Background(), "127.0.0.1:7001")
	require.ErrorAs(t, err, &pe)
	require.Contains(t, err.Error(), "port 7001 is the relay's own")
	_, err = d.dialTarget(context.Background(), "169.254.169.254:80")
	require.ErrorAs(t, err, &pe, "metadata stays refused")
}

func TestDialPolicyUnknownLocalAddrs(t *testing.T) {
	p := &policy{ownPorts: map[uint16]bool{7001: true}, localAddrs: func() ([]netip.Addr, error) {
		return nil, fmt.Errorf("no interfaces")
	}}
	d := &dialer{policy: p, resolver: fakeResolver{}, dial: &recordingDialer{}, timeout: time.Second}
	_, err := d.dialTarget(context.Background(), "10.0.0.9:80")
	var pe *PolicyError
	require.ErrorAs(t, err, &pe)
	require.Contains(t, err.Error(), "the relay pod's own addresses are unknown (no interfaces)")
}

func TestDialDNSFailure(t *testing.T) {
	d := &dialer{policy: &policy{}, resolver: fakeResolver{}, dial: &recordingDialer{}, timeout: time.Second}
	_, err := d.dialTarget(context.Background(), "nope.hotrod.svc.cluster.local:80")
	var de *dnsError
	require.ErrorAs(t, err, &de)
	require.Contains(t, err.Error(), "resolving nope.hotrod.svc.cluster.local in the cluster")
	var dnsErr *net.DNSError
	require.ErrorAs(t, err, &dnsErr)
}

// FuzzDialPolicy checks the policy's promise for any target text: nothing
// in a forbidden range is ever handed to the dialer, whatever the spelling
// (zones, v4-mapped, IPv6 forms embedding a forbidden IPv4 address, names
// resolving there).
func FuzzDialPolicy(f *testing.F) {
	for _, s := range []string{"169.254.169.254:80", "[::ffff:169.254.169.254]:80", "[fe80::1%eth0]:443", "[fd00:ec2::254]:80",
		"metadata:80", "0.0.0.0:1", "[::]:1", "127.0.0.1:7001", "10.1.2.3:9", "driver.hotrod.svc.cluster.local:8082", "[::1]:80",
		"[64:ff9b::a9fe:a9fe]:80", "[2002:a9fe:a9fe::]:80", "[::a9fe:a9fe]:80", "[2001:0:a9fe:a9fe::]:80", "nat64:80",
		"100.100.100.200:80", "[64:ff9b:1::a01:203]:80"} {
		f.Add(s)
	}
	res := fakeResolver{
		"metadata":                        {"169.254.169.254"},
		"mixed":                           {"10.0.0.1", "fe80::1"},
		"nat64":                           {"10.0.0.1", "64:ff9b::a9fe:a9fe"},
		"driver.hotrod.svc.cluster.local": {"10.96.0.12"},
	}
	local := netip.MustParseAddr("10.1.2.3")
	p := &policy{ownPorts: map[uint16]bool{7001: true}, localAddrs: func() ([]netip.Addr, error) { return []netip.Addr{local}, nil }}
	forbidden := []netip.Prefix{
		netip.MustParsePrefix("127.0.0.0/8"), netip.MustParsePrefix("::1/128"), netip.MustParsePrefix("::/128"),
		netip.MustParsePrefix("10.1.2.3/32"), netip.MustParsePrefix("2001::/32"),
	}
	for _, d := range builtinDeny {
		forbidden = append(forbidden, d.prefix)
	}
	f.Fuzz(func(t *testing.T, target string) {
		rd := &recordingDialer{}
		d := &dialer{policy: p, resolver: res, dial: rd, timeout: time.Second}
		_, _ = d.dialTarget(context.Background(), target)
		for _, s := range rd.dialed {
			ap, err := netip.ParseAddrPort(s)
			if err != nil {
				t.Fatalf("dialer got %q, not ip:port", s)
			}
			a := ap.Addr().Unmap()
			reached := []netip.Addr{a}
			for _, e := range embeddedIPv4(a) {
				reached = append(reached, e.v4)
			}
			for _, r := range reached {
				for _, fp := range forbidden {
					if fp.Contains(r) {
						t.Fatalf("target %q dialed forbidden %s (reaching %s)", target, s, r)
					}
				}
			}
		}
	})
}

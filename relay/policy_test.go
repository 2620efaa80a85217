package relay

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
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
		"denied-by-flag.example.com":       {"100.100.100.200"},
		"route.hotrod.svc.cluster.local.":  {"10.96.0.14"},
		"multicast.example.com":            {"224.0.0.1"},
		"ipv6-loopback.example.com":        {"::1"},
		"pod-health-by-name.example.com":   {"10.1.2.3"},
		"not-own-port-on-pod.example.com":  {"10.1.2.3"},
		"own-port-other-host.example.com":  {"10.96.0.15"},
		"own-port-mapped-pod.example.com":  {"::ffff:10.1.2.3"},
		"own-port-v6-loopback.example.com": {"::1"},
	}
	p := &policy{
		deny:       []netip.Prefix{netip.MustParsePrefix("100.100.100.200/32")},
		ownPorts:   map[uint16]bool{7000: true, 7001: true, 20001: true},
		localAddrs: func() ([]netip.Addr, error) { return []netip.Addr{podIP}, nil },
	}
	tests := []struct {
		target string
		denied string // substring of the PolicyError, or "" when the dial must be attempted
		dialed []string
	}{
		{"169.254.169.254:80", "link-local (cloud metadata service)", nil},
		{"[fe80::1%eth0]:80", "IPv6 link-local", nil}, // a zone must not hide the address from the prefix check
		{"[fe80::1]:80", "IPv6 link-local", nil},
		{"[fd00:ec2::254]:80", "AWS IPv6 metadata", nil},
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
		{"224.0.0.1:80", "multicast", nil},
		{"denied-by-flag.example.com:80", "100.100.100.200/32 is denied by --deny", nil},
		{"10.1.2.3:7001", "10.1.2.3:7001 is the relay's own port", nil},
		{"10.1.2.3:20001", "is the relay's own port", nil},
		{"pod-health-by-name.example.com:7001", "it resolves to 10.1.2.3; 10.1.2.3:7001 is the relay's own port", nil},
		{"own-port-mapped-pod.example.com:7000", "is the relay's own port", nil},
		{"nosuchport.example.com:http", `port "http" is not in 1-65535`, nil},
		{"host-without-port", "not host:port", nil},
		{"10.0.0.1:0", "not in 1-65535", nil},
		{"not-own-port-on-pod.example.com:15090", "10.1.2.3 is the relay pod's own address", nil},
		// Allowed: these reach the dialer, by address, in resolution order.
		{"own-port-other-host.example.com:7001", "", []string{"10.96.0.15:7001"}},
		{"driver.hotrod.svc.cluster.local:8082", "", []string{"10.96.0.12:8082"}},
		{"dual.hotrod.svc.cluster.local:8082", "", []string{"10.96.0.13:8082", "[fd00:10:96::13]:8082"}},
		{"route.hotrod.svc.cluster.local.:8083", "", []string{"10.96.0.14:8083"}},
		{"10.96.0.1:443", "", []string{"10.96.0.1:443"}},
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
// (zones, v4-mapped, names resolving there).
func FuzzDialPolicy(f *testing.F) {
	for _, s := range []string{"169.254.169.254:80", "[::ffff:169.254.169.254]:80", "[fe80::1%eth0]:443", "[fd00:ec2::254]:80",
		"metadata:80", "0.0.0.0:1", "[::]:1", "127.0.0.1:7001", "10.1.2.3:9", "driver.hotrod.svc.cluster.local:8082", "[::1]:80"} {
		f.Add(s)
	}
	res := fakeResolver{
		"metadata":                        {"169.254.169.254"},
		"mixed":                           {"10.0.0.1", "fe80::1"},
		"driver.hotrod.svc.cluster.local": {"10.96.0.12"},
	}
	local := netip.MustParseAddr("10.1.2.3")
	p := &policy{ownPorts: map[uint16]bool{7001: true}, localAddrs: func() ([]netip.Addr, error) { return []netip.Addr{local}, nil }}
	forbidden := []netip.Prefix{
		netip.MustParsePrefix("169.254.0.0/16"), netip.MustParsePrefix("fe80::/10"), netip.MustParsePrefix("fd00:ec2::254/128"),
		netip.MustParsePrefix("127.0.0.0/8"), netip.MustParsePrefix("::1/128"), netip.MustParsePrefix("0.0.0.0/32"),
		netip.MustParsePrefix("::/128"), netip.MustParsePrefix("10.1.2.3/32"),
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
			for _, fp := range forbidden {
				if fp.Contains(a) {
					t.Fatalf("target %q dialed forbidden %s", target, s)
				}
			}
		}
	})
}

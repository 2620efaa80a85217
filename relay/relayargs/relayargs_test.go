package relayargs

import (
	"fmt"
	"net/netip"
	"testing"

	"github.com/stretchr/testify/require"
)

func TestEncode(t *testing.T) {
	a := Args{
		Sandbox: "alice", TokenSHA256: "ab12", Listen: DefaultListen(), HealthListen: DefaultHealthListen(),
		Inbound:    []Inbound{{20001, "route", 8083, ProtoHTTP}, {20002, "db", 5432, ""}},
		Grace:      DefaultGrace,
		MaxStreams: 256,
		Deny:       []netip.Prefix{netip.MustParsePrefix("10.0.0.0/8"), netip.MustParsePrefix("fd00::/8")},
	}
	require.Equal(t, []string{
		"--sandbox", "alice", "--token-sha256", "ab12", "--listen", "127.0.0.1:7000", "--health-listen", ":7001",
		"--inbound", "20001=route/8083/http", "--inbound", "20002=db/5432/tcp",
		"--grace", "10s", "--max-streams", "256", "--deny", "10.0.0.0/8", "--deny", "fd00::/8",
	}, a.Encode())

	// The default stream cap, like zero, adds no flag.
	require.Equal(t, []string{"--sandbox", "a"}, Args{Sandbox: "a", MaxStreams: DefaultMaxStreams}.Encode())
	require.Empty(t, Args{}.Encode())
}

func TestValidateMaxStreams(t *testing.T) {
	for _, n := range []int{0, 1, DefaultMaxStreams, MaxStreamsLimit} {
		require.NoError(t, ValidateMaxStreams(n), n)
	}
	for _, n := range []int{-1, MaxStreamsLimit + 1} {
		require.EqualError(t, ValidateMaxStreams(n), fmt.Sprintf("relay stream cap %d is out of range; allowed 1-4096 (0 or unset: the relay's default 128; each stream adds ~1 MiB to the relay pod's memory)", n))
	}
}

func TestParseDeny(t *testing.T) {
	for _, tt := range []struct{ in, want string }{
		{"10.0.0.0/24", "10.0.0.0/24"},
		{"10.1.2.3/8", "10.0.0.0/8"},
		{"100.64.0.7", "100.64.0.7/32"},
		{"fd00:bad::/32", "fd00:bad::/32"},
		{"fd00:bad::1", "fd00:bad::1/128"},
		{"::ffff:10.0.0.0/104", "10.0.0.0/8"},
		{"::ffff:1.2.3.4", "1.2.3.4/32"},
		{"::ffff:0:0/80", "::/80"}, // wider than IPv4-mapped: IPv6, masked
		{"0.0.0.0/0", "0.0.0.0/0"},
		{"10.0.0.0/33", ""},
		{"10.0.0.0/-1", ""},
		{"fe80::1%eth0", ""},
		{"metadata.google.internal", ""},
		{"10.0.0.0/ 8", ""},
		{"", ""},
	} {
		p, err := ParseDeny(tt.in)
		if tt.want == "" {
			require.EqualError(t, err, fmt.Sprintf("%q is not an IP address or CIDR prefix; want an address or range the relay must never dial, e.g. 10.0.0.0/24 or 100.64.0.7", tt.in))
			continue
		}
		require.NoError(t, err, tt.in)
		require.Equal(t, tt.want, p.String())
		require.NoError(t, ValidateDeny([]netip.Prefix{p}))
	}
}

func TestValidateDeny(t *testing.T) {
	for _, tt := range []struct {
		deny []netip.Prefix
		want string
	}{
		{[]netip.Prefix{netip.MustParsePrefix("10.1.2.3/8")}, "relay deny entry 10.1.2.3/8 is not in canonical form; write 10.0.0.0/8"},
		{[]netip.Prefix{netip.MustParsePrefix("::ffff:10.0.0.0/104")}, "relay deny entry ::ffff:10.0.0.0/104 is not in canonical form; write 10.0.0.0/8"},
		{[]netip.Prefix{netip.MustParsePrefix("10.0.0.0/8"), netip.MustParsePrefix("10.0.0.0/8")}, "relay deny entry 10.0.0.0/8 is listed twice"},
		{[]netip.Prefix{{}}, "relay deny entry 0 is not a CIDR prefix"},
		{make([]netip.Prefix, MaxDeny+1), "the relay deny list has 65 entries; allowed at most 64"},
	} {
		require.ErrorContains(t, ValidateDeny(tt.deny), tt.want)
	}
	require.NoError(t, ValidateDeny(nil))
}

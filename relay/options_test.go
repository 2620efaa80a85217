package relay

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/spf13/pflag"
	"github.com/stretchr/testify/require"

	"github.com/sbx-dev/sbx/relay/relayargs"
	"github.com/sbx-dev/sbx/tunnel"
)

func TestParseArgs(t *testing.T) {
	o, err := ParseArgs([]string{
		"--sandbox", "alice",
		"--token-sha256", strings.ToUpper(testVerifier),
		"--listen", "127.0.0.1:7000",
		"--health-listen", ":7001",
		"--inbound", "20001=route/8083/http",
		"--inbound=20002=driver/8082",
		"--inbound", "20003=a/1/grpc,20004=b/2",
		"--grace", "10s",
		"--drain-timeout", "20s",
		"--deny", "10.200.0.5",
		"--deny", "10.0.0.0/8",
		"--deny", "172.16.1.1/12,fd00:bad::/32", // host bits dropped
		"--deny", "::ffff:192.168.0.0/112,::ffff:1.2.3.4", // IPv4-mapped: the IPv4 range
	})
	require.NoError(t, err)
	require.Equal(t, Options{
		Sandbox:      "alice",
		Listen:       "127.0.0.1:7000",
		HealthListen: ":7001",
		Inbound: []relayargs.Inbound{
			{ContainerPort: 20001, Workload: "route", Port: 8083, AppProtocol: relayargs.ProtoHTTP},
			{ContainerPort: 20002, Workload: "driver", Port: 8082, AppProtocol: relayargs.ProtoTCP},
			{ContainerPort: 20003, Workload: "a", Port: 1, AppProtocol: relayargs.ProtoGRPC},
			{ContainerPort: 20004, Workload: "b", Port: 2, AppProtocol: relayargs.ProtoTCP},
		},
		Grace:        10 * time.Second,
		DrainTimeout: 20 * time.Second,
		DrainDelay:   DefaultDrainDelay,
		IdleTimeout:  DefaultIdleTimeout,
		DialTimeout:  DefaultDialTimeout,
		MaxHeld:      DefaultMaxHeld,
		MaxStreams:   relayargs.DefaultMaxStreams,
		Deny: []netip.Prefix{netip.MustParsePrefix("10.200.0.5/32"), netip.MustParsePrefix("10.0.0.0/8"),
			netip.MustParsePrefix("172.16.0.0/12"), netip.MustParsePrefix("fd00:bad::/32"),
			netip.MustParsePrefix("192.168.0.0/16"), netip.MustParsePrefix("1.2.3.4/32")},
		TokenVerifier: tunnel.VerifierOf(testToken),
	}, o)

	// Defaults.
	o, err = ParseArgs([]string{"--sandbox", "bob", "--token-sha256", testVerifier})
	require.NoError(t, err)
	require.Equal(t, "bob", o.Sandbox)
	require.Equal(t, "127.0.0.1:7000", o.Listen)
	require.Equal(t, ":7001", o.HealthListen)
	require.Equal(t, relayargs.DefaultGrace, o.Grace)
	require.Equal(t, relayargs.DefaultDrainTimeout, o.DrainTimeout)
	require.Equal(t, relayargs.DefaultMaxStreams, o.MaxStreams)
	require.Empty(t, o.Inbound)

	// IPv6 loopback is loopback too.
	_, err = ParseArgs([]string{"--sandbox", "bob", "--token-sha256", testVerifier, "--listen", "[::1]:0"})
	require.NoError(t, err)

	_, err = ParseArgs([]string{"--help"})
	require.ErrorIs(t, err, pflag.ErrHelp)
}

// TestParseArgsReadsEncodedArgs: what package cluster renders with
// relayargs.Args.Encode is what the relay parses, setting for setting.
func TestParseArgsReadsEncodedArgs(t *testing.T) {
	a := relayargs.Args{
		Sandbox: "alice", TokenSHA256: testVerifier,
		Listen: relayargs.DefaultListen(), HealthListen: relayargs.DefaultHealthListen(),
		Inbound: []relayargs.Inbound{
			{ContainerPort: 20001, Workload: "route", Port: 8083, AppProtocol: relayargs.ProtoHTTP},
			{ContainerPort: 20002, Workload: "db", Port: 5432, AppProtocol: relayargs.ProtoTCP},
			{ContainerPort: 20003, Workload: "api", Port: 9090, AppProtocol: relayargs.ProtoGRPC},
		},
		Grace: 3 * time.Second, DrainTimeout: 7 * time.Second, MaxStreams: 256,
		Deny: []netip.Prefix{netip.MustParsePrefix("10.0.0.0/24"), netip.MustParsePrefix("100.64.0.7/32"), netip.MustParsePrefix("fd00:bad::/32")},
	}
	o, err := ParseArgs(a.Encode())
	require.NoError(t, err)
	require.Equal(t, Options{
		Sandbox: a.Sandbox, Listen: a.Listen, HealthListen: a.HealthListen, Inbound: a.Inbound,
		Grace: a.Grace, DrainTimeout: a.DrainTimeout, MaxStreams: a.MaxStreams, Deny: a.Deny,
		DrainDelay: DefaultDrainDelay, IdleTimeout: DefaultIdleTimeout, DialTimeout: DefaultDialTimeout, MaxHeld: DefaultMaxHeld,
		TokenVerifier: tunnel.VerifierOf(testToken),
	}, o)

	// The default stream cap is not written, and is what the relay takes.
	a.MaxStreams = relayargs.DefaultMaxStreams
	o, err = ParseArgs(a.Encode())
	require.NoError(t, err)
	require.Equal(t, relayargs.DefaultMaxStreams, o.MaxStreams)
	require.NotContains(t, a.Encode(), "--"+relayargs.FlagMaxStreams)
}

func TestParseArgsErrors(t *testing.T) {
	tests := []struct {
		name string
		args []string
		want string
	}{
		{"no sandbox", []string{}, "--sandbox is required"},
		{"bad sandbox", []string{"--sandbox", "Alice"}, "--sandbox: name \"Alice\""},
		{"no verifier", []string{"--sandbox", "a"}, "--token-sha256 is required"},
		{"token instead of verifier", []string{"--sandbox", "a", "--token-sha256", testToken}, "--token-sha256: a token verifier is 64 hex digits"},
		{"verifier not hex", []string{"--sandbox", "a", "--token-sha256", strings.Repeat("z", 64)}, "--token-sha256: a token verifier is 64 hex digits"},
		{"token file is gone", []string{"--sandbox", "a", "--token-file", "/var/run/sbx/token"}, "unknown flag: --token-file"},
		{"listen all interfaces", []string{"--sandbox", "a", "--listen", ":7000"}, "is not a loopback address"},
		{"listen pod ip", []string{"--sandbox", "a", "--listen", "10.1.2.3:7000"}, "is not a loopback address"},
		{"listen name", []string{"--sandbox", "a", "--listen", "localhost:7000"}, "use 127.0.0.1:7000"},
		{"listen unspecified", []string{"--sandbox", "a", "--listen", "0.0.0.0:7000"}, "is not a loopback address"},
		{"listen no port", []string{"--sandbox", "a", "--listen", "127.0.0.1"}, "is not host:port"},
		{"health bad port", []string{"--sandbox", "a", "--health-listen", ":http"}, "not a number"},
		{"same port", []string{"--sandbox", "a", "--listen", "127.0.0.1:7001"}, "both use port 7001"},
		{"inbound dup", []string{"--sandbox", "a", "--inbound", "20001=a/1", "--inbound", "20001=b/2"}, "container port 20001 is given twice"},
		{"inbound on health", []string{"--sandbox", "a", "--inbound", "7001=a/1"}, "is the --health-listen port"},
		{"inbound on tunnel", []string{"--sandbox", "a", "--inbound", "7000=a/1"}, "is the tunnel --listen port"},
		{"inbound syntax", []string{"--sandbox", "a", "--inbound", "20001:route/8083"}, "want containerPort=workload/port"},
		{"negative grace", []string{"--sandbox", "a", "--grace", "-1s"}, "--grace -1s is negative"},
		{"negative max streams", []string{"--sandbox", "a", "--max-streams", "-1"}, "--max-streams -1 is negative"},
		{"zero dial timeout", []string{"--sandbox", "a", "--dial-timeout", "0s"}, "--dial-timeout 0s must be positive"},
		{"bad deny", []string{"--sandbox", "a", "--deny", "metadata"}, `"metadata" is not an IP address or CIDR prefix`},
		{"deny prefix too long", []string{"--sandbox", "a", "--deny", "10.0.0.0/33"}, `"10.0.0.0/33" is not an IP address or CIDR prefix`},
		{"deny zone", []string{"--sandbox", "a", "--deny", "fe80::1%eth0"}, `"fe80::1%eth0" is not an IP address or CIDR prefix`},
		{"positional", []string{"--sandbox", "a", "extra"}, "relay takes no arguments"},
		{"unknown flag", []string{"--sandbox", "a", "--frobnicate"}, "unknown flag: --frobnicate"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			args := tt.args
			if !slices.Contains(args, "--token-sha256") && tt.name != "no verifier" {
				args = append([]string{"--token-sha256", testVerifier}, args...)
			}
			_, err := ParseArgs(args)
			require.Error(t, err)
			require.Contains(t, err.Error(), tt.want)
		})
	}
}

// TestOptionsHoldNoToken: nothing the relay is started with can
// authenticate as the daemon; what it prints of its verifier is a hash.
func TestOptionsHoldNoToken(t *testing.T) {
	o, err := ParseArgs([]string{"--sandbox", "a", "--token-sha256", testVerifier})
	require.NoError(t, err)
	js, err := json.Marshal(o)
	require.NoError(t, err)
	for _, s := range []string{fmt.Sprintf("%+v", o), fmt.Sprintf("%#v", o), string(js)} {
		require.NotContains(t, s, testToken)
	}
	require.True(t, o.TokenVerifier.Verify(testToken))
}

func FuzzParseArgs(f *testing.F) {
	f.Add("--sandbox alice --inbound 20001=route/8083/http --grace 10s")
	f.Add("--sandbox=a --listen [::1]:0 --deny 10.0.0.0/8,fd00::/8")
	f.Add("--listen 127.0.0.1:7000 --health-listen :7001 x")
	f.Fuzz(func(t *testing.T, line string) {
		o, err := ParseArgs(append([]string{"--token-sha256", testVerifier}, strings.Fields(line)...))
		if err != nil {
			if errors.Is(err, pflag.ErrHelp) {
				return
			}
			require.NotEmpty(t, err.Error())
			return
		}
		require.NoError(t, o.Validate(), "accepted options validate")
		_, err = checkLoopback(o.Listen)
		require.NoError(t, err, "an accepted --listen is loopback")
	})
}

package relay

import (
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/spf13/pflag"
	"github.com/stretchr/testify/require"
)

func TestInboundSpecRoundTrip(t *testing.T) {
	tests := []struct {
		in      string
		parsed  InboundSpec
		encoded string
	}{
		{"20001=route/8083", InboundSpec{20001, "route", 8083, ProtoTCP}, "20001=route/8083"},
		{"20001=route/8083/tcp", InboundSpec{20001, "route", 8083, ProtoTCP}, "20001=route/8083"},
		{"20001=route/8083/http", InboundSpec{20001, "route", 8083, ProtoHTTP}, "20001=route/8083/http"},
		{"20002=driver/8082/HTTP2", InboundSpec{20002, "driver", 8082, ProtoHTTP2}, "20002=driver/8082/http2"},
		{"20003=my-svc-2/9090/grpc", InboundSpec{20003, "my-svc-2", 9090, ProtoGRPC}, "20003=my-svc-2/9090/grpc"},
		{"1=a/1", InboundSpec{1, "a", 1, ProtoTCP}, "1=a/1"},
		{"65535=" + strings.Repeat("x", 63) + "/65535/Grpc", InboundSpec{65535, strings.Repeat("x", 63), 65535, ProtoGRPC}, "65535=" + strings.Repeat("x", 63) + "/65535/grpc"},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			got, err := ParseInbound(tt.in)
			require.NoError(t, err)
			require.Equal(t, tt.parsed, got)
			require.Equal(t, tt.encoded, got.String())
			again, err := ParseInbound(got.String())
			require.NoError(t, err)
			require.Equal(t, got, again)
		})
	}
}

func TestInboundSpecErrors(t *testing.T) {
	tests := []struct {
		in, want string
	}{
		{"", "missing '='"},
		{"20001", "missing '='"},
		{"=route/8083", "container port: empty port"},
		{"0=route/8083", "not in 1-65535"},
		{"65536=route/8083", "not in 1-65535"},
		{"020001=route/8083", "leading zero"},
		{"+1=route/8083", "not a number"},
		{"20001=route", "want workload/port"},
		{"20001=route/8083/http/x", "want workload/port"},
		{"20001=/8083", "workload: empty name"},
		{"20001=Route/8083", "DNS-1123"},
		{"20001=-route/8083", "DNS-1123"},
		{"20001=route-/8083", "DNS-1123"},
		{"20001=ro_ute/8083", "DNS-1123"},
		{"20001=" + strings.Repeat("x", 64) + "/8083", "longer than 63"},
		{"20001=route/", "workload port: empty port"},
		{"20001=route/http", "not a number"},
		{"20001=route/8083/https", `appProtocol "https" is not one of tcp, http, http2, grpc`},
		{"20001=route/8083/", `appProtocol "" is not one of`},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			_, err := ParseInbound(tt.in)
			require.Error(t, err)
			require.Contains(t, err.Error(), tt.want)
			require.Contains(t, err.Error(), "e.g. 20001=route/8083/http", "every error shows the syntax")
		})
	}
}

func FuzzParseInbound(f *testing.F) {
	for _, s := range []string{"20001=route/8083", "20001=route/8083/http", "1=a/1/GRPC", "=//", "20001=route/8083/tcp/x", "0=a/0"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		spec, err := ParseInbound(s)
		if err != nil {
			return
		}
		enc := spec.String()
		again, err := ParseInbound(enc)
		if err != nil {
			t.Fatalf("ParseInbound(%q) = %+v encodes to %q which does not parse: %v", s, spec, enc, err)
		}
		if again != spec {
			t.Fatalf("round trip changed %+v to %+v", spec, again)
		}
		if again.String() != enc {
			t.Fatalf("encoding is not canonical: %q then %q", enc, again.String())
		}
	})
}

// env returns a getenv over a map.
func env(kv ...string) func(string) string {
	m := map[string]string{}
	for i := 0; i+1 < len(kv); i += 2 {
		m[kv[i]] = kv[i+1]
	}
	return func(k string) string { return m[k] }
}

func TestParseArgs(t *testing.T) {
	tokenFile := filepath.Join(t.TempDir(), "token")
	require.NoError(t, os.WriteFile(tokenFile, []byte("file-secret\n"), 0o600))

	o, err := ParseArgs([]string{
		"--sandbox", "alice",
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
	}, env(TokenEnv, "env-secret"))
	require.NoError(t, err)
	require.Equal(t, Options{
		Sandbox:      "alice",
		Listen:       "127.0.0.1:7000",
		HealthListen: ":7001",
		Inbound: []InboundSpec{
			{20001, "route", 8083, ProtoHTTP},
			{20002, "driver", 8082, ProtoTCP},
			{20003, "a", 1, ProtoGRPC},
			{20004, "b", 2, ProtoTCP},
		},
		Grace:        10 * time.Second,
		DrainTimeout: 20 * time.Second,
		DrainDelay:   DefaultDrainDelay,
		IdleTimeout:  DefaultIdleTimeout,
		DialTimeout:  DefaultDialTimeout,
		MaxHeld:      DefaultMaxHeld,
		MaxStreams:   DefaultMaxStreams,
		Deny: []netip.Prefix{netip.MustParsePrefix("10.200.0.5/32"), netip.MustParsePrefix("10.0.0.0/8"),
			netip.MustParsePrefix("172.16.0.0/12"), netip.MustParsePrefix("fd00:bad::/32"),
			netip.MustParsePrefix("192.168.0.0/16"), netip.MustParsePrefix("1.2.3.4/32")},
		Token:       "env-secret",
		TokenSource: "$SBX_RELAY_TOKEN",
	}, o)

	// Defaults, and the token file wins over the environment.
	o, err = ParseArgs([]string{"--sandbox", "bob", "--token-file", tokenFile}, env(TokenEnv, "env-secret"))
	require.NoError(t, err)
	require.Equal(t, "bob", o.Sandbox)
	require.Equal(t, DefaultListen, o.Listen)
	require.Equal(t, DefaultHealthListen, o.HealthListen)
	require.Equal(t, DefaultGrace, o.Grace)
	require.Equal(t, DefaultDrainTimeout, o.DrainTimeout)
	require.Equal(t, Secret("file-secret"), o.Token, "trailing newline of the mounted Secret is trimmed")
	require.Empty(t, o.Inbound)

	// IPv6 loopback is loopback too.
	_, err = ParseArgs([]string{"--sandbox", "bob", "--listen", "[::1]:0"}, env(TokenEnv, "t"))
	require.NoError(t, err)

	_, err = ParseArgs([]string{"--help"}, env())
	require.ErrorIs(t, err, pflag.ErrHelp)
}

func TestParseArgsErrors(t *testing.T) {
	tok := env(TokenEnv, "secret-token-value")
	tests := []struct {
		name   string
		args   []string
		getenv func(string) string
		want   string
	}{
		{"no sandbox", []string{}, tok, "--sandbox is required"},
		{"bad sandbox", []string{"--sandbox", "Alice"}, tok, "--sandbox: name \"Alice\""},
		{"no token", []string{"--sandbox", "a"}, env(), "no tunnel token: set SBX_RELAY_TOKEN or pass --token-file"},
		{"blank token", []string{"--sandbox", "a"}, env(TokenEnv, " \n"), "no tunnel token"},
		{"missing token file", []string{"--sandbox", "a", "--token-file", "/nonexistent/token"}, tok, "reading the tunnel token"},
		{"listen all interfaces", []string{"--sandbox", "a", "--listen", ":7000"}, tok, "is not a loopback address"},
		{"listen pod ip", []string{"--sandbox", "a", "--listen", "10.1.2.3:7000"}, tok, "is not a loopback address"},
		{"listen name", []string{"--sandbox", "a", "--listen", "localhost:7000"}, tok, "use 127.0.0.1:7000"},
		{"listen unspecified", []string{"--sandbox", "a", "--listen", "0.0.0.0:7000"}, tok, "is not a loopback address"},
		{"listen no port", []string{"--sandbox", "a", "--listen", "127.0.0.1"}, tok, "is not host:port"},
		{"health bad port", []string{"--sandbox", "a", "--health-listen", ":http"}, tok, "not a number"},
		{"same port", []string{"--sandbox", "a", "--listen", "127.0.0.1:7001"}, tok, "both use port 7001"},
		{"inbound dup", []string{"--sandbox", "a", "--inbound", "20001=a/1", "--inbound", "20001=b/2"}, tok, "container port 20001 is given twice"},
		{"inbound on health", []string{"--sandbox", "a", "--inbound", "7001=a/1"}, tok, "is the --health-listen port"},
		{"inbound on tunnel", []string{"--sandbox", "a", "--inbound", "7000=a/1"}, tok, "is the tunnel --listen port"},
		{"inbound syntax", []string{"--sandbox", "a", "--inbound", "20001:route/8083"}, tok, "want containerPort=workload/port"},
		{"negative grace", []string{"--sandbox", "a", "--grace", "-1s"}, tok, "--grace -1s is negative"},
		{"negative max streams", []string{"--sandbox", "a", "--max-streams", "-1"}, tok, "--max-streams -1 is negative"},
		{"zero dial timeout", []string{"--sandbox", "a", "--dial-timeout", "0s"}, tok, "--dial-timeout 0s must be positive"},
		{"bad deny", []string{"--sandbox", "a", "--deny", "metadata"}, tok, "neither an address nor a CIDR"},
		{"deny prefix too long", []string{"--sandbox", "a", "--deny", "10.0.0.0/33"}, tok, `"10.0.0.0/33" is not a CIDR`},
		{"deny zone", []string{"--sandbox", "a", "--deny", "fe80::1%eth0"}, tok, "neither an address nor a CIDR"},
		{"positional", []string{"--sandbox", "a", "extra"}, tok, "relay takes no arguments"},
		{"unknown flag", []string{"--sandbox", "a", "--frobnicate"}, tok, "unknown flag: --frobnicate"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := ParseArgs(tt.args, tt.getenv)
			require.Error(t, err)
			require.Contains(t, err.Error(), tt.want)
			require.NotContains(t, err.Error(), "secret-token-value")
		})
	}
}

func TestTokenNeverPrints(t *testing.T) {
	o, err := ParseArgs([]string{"--sandbox", "a"}, env(TokenEnv, "s3cr3t-tok"))
	require.NoError(t, err)
	var logs strings.Builder
	slog.New(slog.NewTextHandler(&logs, nil)).Info("options", "opts", o, "token", o.Token)
	js, err := json.Marshal(o)
	require.NoError(t, err)
	for _, s := range []string{fmt.Sprint(o), fmt.Sprintf("%+v", o), fmt.Sprintf("%#v", o), string(js), logs.String(), o.Token.String()} {
		require.NotContains(t, s, "s3cr3t-tok")
	}
	require.Equal(t, "s3cr3t-tok", o.Token.Reveal())
}

func FuzzParseArgs(f *testing.F) {
	f.Add("--sandbox alice --inbound 20001=route/8083/http --grace 10s")
	f.Add("--sandbox=a --listen [::1]:0 --deny 10.0.0.0/8,fd00::/8")
	f.Add("--listen 127.0.0.1:7000 --health-listen :7001 x")
	f.Fuzz(func(t *testing.T, line string) {
		o, err := ParseArgs(strings.Fields(line), env(TokenEnv, "tok"))
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

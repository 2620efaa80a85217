package relayargs

import (
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

func TestInboundRoundTrip(t *testing.T) {
	tests := []struct {
		in      string
		parsed  Inbound
		encoded string
	}{
		{"20001=route/8083", Inbound{20001, "route", 8083, ProtoTCP}, "20001=route/8083/tcp"},
		{"20001=route/8083/tcp", Inbound{20001, "route", 8083, ProtoTCP}, "20001=route/8083/tcp"},
		{"20001=route/8083/http", Inbound{20001, "route", 8083, ProtoHTTP}, "20001=route/8083/http"},
		{"20002=driver/8082/HTTP2", Inbound{20002, "driver", 8082, ProtoHTTP2}, "20002=driver/8082/http2"},
		{"20003=my-svc-2/9090/grpc", Inbound{20003, "my-svc-2", 9090, ProtoGRPC}, "20003=my-svc-2/9090/grpc"},
		{"1=a/1", Inbound{1, "a", 1, ProtoTCP}, "1=a/1/tcp"},
		{"65535=" + strings.Repeat("x", 63) + "/65535/Grpc", Inbound{65535, strings.Repeat("x", 63), 65535, ProtoGRPC}, "65535=" + strings.Repeat("x", 63) + "/65535/grpc"},
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
	// An unset protocol is written as the default it means.
	require.Equal(t, "20001=route/8083/tcp", Inbound{ContainerPort: 20001, Workload: "route", Port: 8083}.String())
}

func TestInboundErrors(t *testing.T) {
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
		in, err := ParseInbound(s)
		if err != nil {
			return
		}
		enc := in.String()
		again, err := ParseInbound(enc)
		if err != nil {
			t.Fatalf("ParseInbound(%q) = %+v encodes to %q which does not parse: %v", s, in, enc, err)
		}
		if again != in {
			t.Fatalf("round trip changed %+v to %+v", in, again)
		}
		if again.String() != enc {
			t.Fatalf("encoding is not canonical: %q then %q", enc, again.String())
		}
	})
}

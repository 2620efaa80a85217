package relay

import (
	"fmt"
	"strconv"
	"strings"
)

// AppProtocol says how the relay may answer on an inbound port when it cannot
// reach the laptop: HTTP-speaking ports get an explanatory 502/503 response,
// plain TCP ports are closed.
type AppProtocol string

// The application protocols an inbound port may declare. They mirror the
// Kubernetes Service port appProtocol values sbx copies from the baseline.
const (
	ProtoTCP   AppProtocol = "tcp"
	ProtoHTTP  AppProtocol = "http"
	ProtoHTTP2 AppProtocol = "http2"
	ProtoGRPC  AppProtocol = "grpc"
)

// appProtocols lists the accepted values in the order error messages name them.
var appProtocols = []AppProtocol{ProtoTCP, ProtoHTTP, ProtoHTTP2, ProtoGRPC}

// IsHTTP reports whether the port speaks HTTP (1.1, h2c or gRPC), so the relay
// can answer 502/503 in the protocol instead of dropping the connection.
func (p AppProtocol) IsHTTP() bool {
	return p == ProtoHTTP || p == ProtoHTTP2 || p == ProtoGRPC
}

// InboundSpec is one --inbound flag: the relay listens on ContainerPort and
// sends each connection to the laptop as an inbound stream for Workload/Port.
type InboundSpec struct {
	// ContainerPort is the relay pod port the sandbox Service targets.
	ContainerPort uint16
	// Workload is the sandbox's name for the local workload (DNS-1123 label).
	Workload string
	// Port is the baseline Service port the laptop maps to a local address.
	Port uint16
	// AppProtocol defaults to tcp.
	AppProtocol AppProtocol
}

// inboundSyntax is quoted in every parse error so the fix is obvious.
const inboundSyntax = "containerPort=workload/port[/appProtocol], e.g. 20001=route/8083/http"

// ParseInbound parses containerPort=workload/port[/appProtocol]; appProtocol
// is one of tcp, http, http2, grpc (case-insensitive, default tcp).
func ParseInbound(s string) (InboundSpec, error) {
	var spec InboundSpec
	bad := func(format string, args ...any) (InboundSpec, error) {
		return InboundSpec{}, fmt.Errorf("inbound %q: %s (want %s)", s, fmt.Sprintf(format, args...), inboundSyntax)
	}
	left, right, ok := strings.Cut(s, "=")
	if !ok {
		return bad("missing '='")
	}
	cp, err := parsePort(left)
	if err != nil {
		return bad("container port: %v", err)
	}
	spec.ContainerPort = cp
	parts := strings.Split(right, "/")
	if len(parts) < 2 || len(parts) > 3 {
		return bad("want workload/port or workload/port/appProtocol after '='")
	}
	if err := checkDNSLabel(parts[0]); err != nil {
		return bad("workload: %v", err)
	}
	spec.Workload = parts[0]
	if spec.Port, err = parsePort(parts[1]); err != nil {
		return bad("workload port: %v", err)
	}
	spec.AppProtocol = ProtoTCP
	if len(parts) == 3 {
		p, err := parseAppProtocol(parts[2])
		if err != nil {
			return bad("%v", err)
		}
		spec.AppProtocol = p
	}
	return spec, nil
}

// String encodes the spec in the --inbound syntax; ParseInbound(s.String())
// returns s. The default appProtocol tcp is left out.
func (s InboundSpec) String() string {
	out := strconv.Itoa(int(s.ContainerPort)) + "=" + s.Workload + "/" + strconv.Itoa(int(s.Port))
	if s.AppProtocol != "" && s.AppProtocol != ProtoTCP {
		out += "/" + string(s.AppProtocol)
	}
	return out
}

func parseAppProtocol(s string) (AppProtocol, error) {
	for _, p := range appProtocols {
		if strings.EqualFold(s, string(p)) {
			return p, nil
		}
	}
	return "", fmt.Errorf("appProtocol %q is not one of tcp, http, http2, grpc", s)
}

// parsePort accepts a decimal port 1-65535 without sign or leading zeros, so
// every port has exactly one spelling and encoding round-trips.
func parsePort(s string) (uint16, error) {
	if s == "" {
		return 0, fmt.Errorf("empty port")
	}
	if len(s) > 1 && s[0] == '0' {
		return 0, fmt.Errorf("port %q has a leading zero", s)
	}
	for _, c := range s {
		if c < '0' || c > '9' {
			return 0, fmt.Errorf("port %q is not a number", s)
		}
	}
	n, err := strconv.ParseUint(s, 10, 16)
	if err != nil || n == 0 {
		return 0, fmt.Errorf("port %q is not in 1-65535", s)
	}
	return uint16(n), nil
}

// checkDNSLabel enforces RFC 1123 labels: the names Kubernetes accepts for the
// objects a workload name ends up in.
func checkDNSLabel(s string) error {
	if s == "" {
		return fmt.Errorf("empty name")
	}
	if len(s) > 63 {
		return fmt.Errorf("name %q is longer than 63 characters", s)
	}
	for i, c := range s {
		switch {
		case c >= 'a' && c <= 'z', c >= '0' && c <= '9':
		case c == '-' && i != 0 && i != len(s)-1:
		default:
			return fmt.Errorf("name %q must be lowercase letters, digits and inner '-' (DNS-1123 label)", s)
		}
	}
	return nil
}

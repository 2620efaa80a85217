package relayargs

import (
	"fmt"
	"strconv"
	"strings"
)

// AppProtocol says how the relay may answer on an inbound port when it cannot
// reach the laptop: HTTP-speaking ports get an explanatory 502/503 response,
// plain TCP ports are closed.
type AppProtocol string

// The application protocols an inbound port may declare. Package cluster
// derives them from the appProtocol (or port name) of the baseline
// Service port.
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

// Inbound is one --inbound value: the relay listens on ContainerPort and
// sends each connection to the laptop as an inbound stream for
// Workload/Port.
type Inbound struct {
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
func ParseInbound(s string) (Inbound, error) {
	var in Inbound
	bad := func(format string, args ...any) (Inbound, error) {
		return Inbound{}, fmt.Errorf("inbound %q: %s (want %s)", s, fmt.Sprintf(format, args...), inboundSyntax)
	}
	left, right, ok := strings.Cut(s, "=")
	if !ok {
		return bad("missing '='")
	}
	cp, err := parsePort(left)
	if err != nil {
		return bad("container port: %v", err)
	}
	in.ContainerPort = cp
	parts := strings.Split(right, "/")
	if len(parts) < 2 || len(parts) > 3 {
		return bad("want workload/port or workload/port/appProtocol after '='")
	}
	if err := CheckName(parts[0]); err != nil {
		return bad("workload: %v", err)
	}
	in.Workload = parts[0]
	if in.Port, err = parsePort(parts[1]); err != nil {
		return bad("workload port: %v", err)
	}
	in.AppProtocol = ProtoTCP
	if len(parts) == 3 {
		p, err := parseAppProtocol(parts[2])
		if err != nil {
			return bad("%v", err)
		}
		in.AppProtocol = p
	}
	return in, nil
}

// String encodes in in the --inbound syntax, the one canonical form:
// containerPort=workload/port/appProtocol, the protocol always written
// (tcp when unset) so that a relay Deployment says what each port speaks.
// ParseInbound(in.String()) returns in (with tcp for an unset protocol).
func (in Inbound) String() string {
	p := in.AppProtocol
	if p == "" {
		p = ProtoTCP
	}
	return strconv.Itoa(int(in.ContainerPort)) + "=" + in.Workload + "/" + strconv.Itoa(int(in.Port)) + "/" + string(p)
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

// CheckName checks a --sandbox name or an --inbound workload: an RFC 1123
// label, what Kubernetes accepts for the objects these names end up in.
func CheckName(s string) error {
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

package proxy

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"strconv"

	"github.com/sbx-dev/sbx/tunnel"
)

// SOCKS5 (RFC 1928), the CONNECT command with username/password
// authentication (RFC 1929): what curl --socks5-hostname,
// ALL_PROXY=socks5h://user:password@…, Go's net/http and x/net/proxy
// and most SDKs speak. A client that offers no username/password method
// gets "no acceptable methods" (0xFF). A domain-name request is never
// resolved here: the name goes to the Dialer as it came, so cluster names
// resolve inside the cluster.
//
// Why not a library: the only SOCKS5 server module the Go proxy serves
// here is github.com/armon/go-socks5 (last change 2016). Its CONNECT path
// asserts the dialed conn's LocalAddr is a *net.TCPAddr (a tunnel stream
// would panic the daemon), picks reply codes by matching error strings,
// has no way to stop serving, and leaves its copy goroutines running after
// ServeConn returns. The part of the protocol sbx needs is small and is
// fuzzed (FuzzReadSocksRequest, FuzzReadSocksAuth).

const (
	socksVersion  = 5
	socksNoAuth   = 0x00
	socksUserPass = 0x02
	socksNoMethod = 0xff
	socksConnect  = 1

	// RFC 1929's sub-negotiation has its own version and status bytes.
	socksAuthVersion = 1
	socksAuthOK      = 0
	socksAuthFailed  = 1

	atypIPv4   = 1
	atypDomain = 3
	atypIPv6   = 4
)

// Reply codes.
const (
	repSuccess             = 0
	repGeneralFailure      = 1
	repNotAllowed          = 2
	repNetworkUnreachable  = 3
	repHostUnreachable     = 4
	repConnectionRefused   = 5
	repTTLExpired          = 6
	repCommandNotSupported = 7
	repAddrNotSupported    = 8
)

// socksError is a request the server answers with a reply code.
type socksError struct {
	code byte
	msg  string
}

func (e *socksError) Error() string { return e.msg }

// socksRequest is a decoded CONNECT request.
type socksRequest struct {
	host string // a domain name as sent, or an IP literal
	port uint16
}

func (r socksRequest) addr() string { return net.JoinHostPort(r.host, strconv.Itoa(int(r.port))) }

// errNoUserPass is a SOCKS5 client that offers no username/password
// method: one started without the proxy URL `sbx env` prints.
var errNoUserPass = errors.New("SOCKS5 client offers no username/password authentication (the sbx proxy needs its credential: use the ALL_PROXY URL `sbx env NAME` prints)")

// socksHandshake negotiates the method on rw: username/password, the only
// one the proxy accepts. It returns an error when the client does not
// offer it (after telling it so).
func socksHandshake(r *bufio.Reader, w io.Writer) error {
	var hdr [2]byte
	if _, err := io.ReadFull(r, hdr[:]); err != nil {
		return err
	}
	if hdr[0] != socksVersion {
		return fmt.Errorf("not SOCKS5 (version byte %d)", hdr[0])
	}
	methods := make([]byte, hdr[1])
	if _, err := io.ReadFull(r, methods); err != nil {
		return err
	}
	for _, m := range methods {
		if m == socksUserPass {
			_, err := w.Write([]byte{socksVersion, socksUserPass})
			return err
		}
	}
	_, _ = w.Write([]byte{socksVersion, socksNoMethod})
	return errNoUserPass
}

// readSocksAuth decodes the username/password sub-negotiation (RFC 1929):
// version 1, the user name and the password, each prefixed with its
// length.
func readSocksAuth(r io.Reader) (user, password string, err error) {
	var hdr [2]byte
	if _, err := io.ReadFull(r, hdr[:]); err != nil {
		return "", "", err
	}
	if hdr[0] != socksAuthVersion {
		return "", "", fmt.Errorf("SOCKS5 username/password request with version byte %d", hdr[0])
	}
	u := make([]byte, hdr[1])
	if _, err := io.ReadFull(r, u); err != nil {
		return "", "", err
	}
	var n [1]byte
	if _, err := io.ReadFull(r, n[:]); err != nil {
		return "", "", err
	}
	p := make([]byte, n[0])
	if _, err := io.ReadFull(r, p); err != nil {
		return "", "", err
	}
	return string(u), string(p), nil
}

// writeSocksAuthReply answers the sub-negotiation.
func writeSocksAuthReply(w io.Writer, ok bool) error {
	status := byte(socksAuthFailed)
	if ok {
		status = socksAuthOK
	}
	_, err := w.Write([]byte{socksAuthVersion, status})
	return err
}

// readSocksRequest decodes a request. Errors that deserve a reply are
// *socksError.
func readSocksRequest(r io.Reader) (socksRequest, error) {
	var hdr [4]byte
	if _, err := io.ReadFull(r, hdr[:]); err != nil {
		return socksRequest{}, err
	}
	if hdr[0] != socksVersion {
		return socksRequest{}, fmt.Errorf("SOCKS5 request with version byte %d", hdr[0])
	}
	var req socksRequest
	switch hdr[3] {
	case atypIPv4:
		var b [4]byte
		if _, err := io.ReadFull(r, b[:]); err != nil {
			return req, err
		}
		req.host = netip.AddrFrom4(b).String()
	case atypIPv6:
		var b [16]byte
		if _, err := io.ReadFull(r, b[:]); err != nil {
			return req, err
		}
		req.host = netip.AddrFrom16(b).String()
	case atypDomain:
		var n [1]byte
		if _, err := io.ReadFull(r, n[:]); err != nil {
			return req, err
		}
		b := make([]byte, n[0])
		if _, err := io.ReadFull(r, b); err != nil {
			return req, err
		}
		req.host = string(b)
		if !validHost(req.host) {
			return req, &socksError{code: repHostUnreachable, msg: fmt.Sprintf("SOCKS5 request for an invalid host name %q", req.host)}
		}
	default:
		return req, &socksError{code: repAddrNotSupported, msg: fmt.Sprintf("SOCKS5 address type %d not supported", hdr[3])}
	}
	var p [2]byte
	if _, err := io.ReadFull(r, p[:]); err != nil {
		return req, err
	}
	req.port = binary.BigEndian.Uint16(p[:])
	if hdr[1] != socksConnect {
		return req, &socksError{code: repCommandNotSupported, msg: fmt.Sprintf("SOCKS5 command %d not supported (only CONNECT)", hdr[1])}
	}
	return req, nil
}

// validHost accepts what may appear in a DNS name; it keeps control bytes
// and separators out of targets and logs.
func validHost(h string) bool {
	if h == "" || len(h) > 253 {
		return false
	}
	for i := 0; i < len(h); i++ {
		c := h[i]
		if c <= ' ' || c >= 0x7f || c == '/' || c == '\\' || c == '@' || c == ':' || c == '%' {
			return false
		}
	}
	return true
}

// writeSocksReply sends a reply with bind address 0.0.0.0:0 (clients
// ignore it for CONNECT, and a tunnel stream has no meaningful one).
func writeSocksReply(w io.Writer, code byte) error {
	_, err := w.Write([]byte{socksVersion, code, 0, atypIPv4, 0, 0, 0, 0, 0, 0})
	return err
}

// socksCode maps a dial error to a reply code.
func socksCode(err error) byte {
	switch tunnel.ReasonOf(err) {
	case tunnel.ReasonRefused:
		return repConnectionRefused
	case tunnel.ReasonTimeout:
		return repTTLExpired
	case tunnel.ReasonDNS:
		return repHostUnreachable
	case tunnel.ReasonDenied:
		return repNotAllowed
	case tunnel.ReasonUnreachable:
		return repNetworkUnreachable
	default:
		return repGeneralFailure
	}
}

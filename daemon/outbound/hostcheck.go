package outbound

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"net/textproto"
	"net/url"
	"strconv"
	"strings"
	"time"
)

// The hosts-mode addresses answer to names in the hosts file, and a web
// page can make a browser send requests there: by DNS rebinding (a name
// of the attacker's that first resolves to the attacker's server, then to
// 127.x.y.z; the browser still sends Host: attacker.example and considers
// the answer same-origin), or by a cross-origin request to the cluster
// name itself (Origin: http://attacker.example). Either way a page would
// reach cluster services through the developer's tunnel. So the first
// bytes of each connection are looked at before any of them is forwarded:
// an HTTP/1.x request must name the Service (Host, and Origin when
// present); anything else (TLS, h2c prior knowledge, gRPC, database
// protocols) passes untouched, since browsers can send no such bytes to
// an http: URL, and an https: URL to a cluster service fails on its
// certificate.

const (
	// maxHead bounds what is read before deciding: an HTTP request head
	// (Go's server allows 1 MiB too). A longer one is refused: passing it
	// on unchecked would let a page slip past with a long URL.
	maxHead = 1 << 20
	// headTimeout bounds the wait for the rest of a request head once its
	// first byte came. A connection on which nothing is sent is never
	// timed out here: the server's bytes flow to it meanwhile (MySQL and
	// SMTP servers speak first), and a request sent later is checked all
	// the same.
	headTimeout = 30 * time.Second
)

// refusal is a first request that is not let through, with the answer it
// gets.
type refusal struct {
	status int
	reason string // for the log and the response body
}

func (r *refusal) Error() string { return r.reason }

// response is the HTTP answer to a refused request.
func (r *refusal) response() []byte {
	body := "sbx: " + r.reason + "\n"
	return fmt.Appendf(nil, "HTTP/1.1 %d %s\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: %d\r\nConnection: close\r\nCache-Control: no-store\r\n\r\n%s",
		r.status, http.StatusText(r.status), len(body), body)
}

// allowedHosts are the names one hosts-mode address answers to (every
// name the hosts block gives it) and the address itself.
type allowedHosts struct {
	names map[string]bool // lower case, without a trailing dot
	ip    netip.Addr
}

func newAllowedHosts(ip netip.Addr, names []string) allowedHosts {
	a := allowedHosts{names: make(map[string]bool, len(names)), ip: ip}
	for _, n := range names {
		a.names[strings.TrimSuffix(strings.ToLower(n), ".")] = true
	}
	return a
}

// allows reports whether a Host value (host, host:port, [v6]:port)
// names this address.
func (a allowedHosts) allows(hostport string) bool {
	h := hostport
	if host, _, err := net.SplitHostPort(hostport); err == nil {
		h = host
	} else if strings.HasPrefix(h, "[") && strings.HasSuffix(h, "]") {
		h = h[1 : len(h)-1]
	}
	h = strings.TrimSuffix(strings.ToLower(h), ".")
	if h != "" && a.names[h] {
		return true
	}
	ip, err := netip.ParseAddr(h)
	return err == nil && a.ip.IsValid() && ip.Unmap() == a.ip.Unmap()
}

// verdict is what the first bytes of a connection are.
type verdict int

const (
	needMore verdict = iota // not decided yet
	notHTTP                 // another protocol: pass through
	httpHead                // a complete HTTP/1.x request head
	tooLong                 // looks like HTTP, but no head end within maxHead
)

// classify decides what b, the first bytes of a connection, are. What a
// browser sends to an http: URL is an HTTP/1.1 request line: a method,
// which fetch() lets a page choose among all tokens (lower case, long,
// custom), a request target without spaces or control bytes, and
// "HTTP/1.1". The first byte that cannot continue such a line decides
// "another protocol", so binary and line-based protocols are told apart
// at once and never wait for bytes their client will not send. For
// httpHead, n is the length of the head.
func classify(b []byte) (v verdict, n int) {
	// Method: one or more token characters, then a space.
	i := 0
	for ; i < len(b) && isTokenChar(b[i]); i++ {
	}
	switch {
	case i == len(b):
		return lengthVerdict(b), 0
	case i == 0 || b[i] != ' ':
		return notHTTP, 0
	}
	// Request target: up to the next space; no control bytes.
	i++
	for ; i < len(b) && b[i] != ' '; i++ {
		if b[i] < ' ' || b[i] == 0x7f {
			return notHTTP, 0 // HTTP/0.9, RTSP-less lines, binary data
		}
	}
	if i == len(b) {
		return lengthVerdict(b), 0
	}
	// Version: HTTP/1.x. "PRI * HTTP/2.0" (h2c prior knowledge) and
	// "RTSP/1.0" are other protocols.
	const version = "HTTP/1."
	rest := b[i+1:]
	if !bytes.HasPrefix(rest, []byte(version)) {
		if len(rest) < len(version) && bytes.HasPrefix([]byte(version), rest) {
			return lengthVerdict(b), 0
		}
		return notHTTP, 0
	}
	end := headEnd(b)
	if end < 0 {
		return lengthVerdict(b), 0
	}
	return httpHead, end
}

// lengthVerdict is classify's answer for a prefix that is still a
// possible request head: wait for more, unless the head would be too
// long.
func lengthVerdict(b []byte) verdict {
	if len(b) >= maxHead {
		return tooLong
	}
	return needMore
}

// isTokenChar reports whether c may appear in an HTTP token (RFC 9110
// tchar), the characters of a method.
func isTokenChar(c byte) bool {
	switch {
	case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9':
		return true
	}
	return strings.IndexByte("!#$%&'*+-.^_`|~", c) >= 0
}

// headEnd is the length of the request head in b (through the empty line
// that ends it), or -1.
func headEnd(b []byte) int {
	for i := 0; i < len(b); i++ {
		if b[i] != '\n' {
			continue
		}
		switch {
		case i+1 < len(b) && b[i+1] == '\n':
			return i + 2
		case i+2 < len(b) && b[i+1] == '\r' && b[i+2] == '\n':
			return i + 3
		}
	}
	return -1
}

// checkHead decides whether an HTTP/1.x request head may pass: its Host
// (the request target's host too, in absolute form) and every Origin must
// name the address. A request without Host passes (browsers always send
// one; old HTTP/1.0 tools may not).
func checkHead(head []byte, allowed allowedHosts) *refusal {
	req, err := http.ReadRequest(bufio.NewReader(bytes.NewReader(head)))
	if err != nil {
		return &refusal{http.StatusBadRequest, "malformed HTTP request: " + err.Error()}
	}
	// ReadRequest keeps only one Host; read the header lines as sent.
	tp := textproto.NewReader(bufio.NewReader(bytes.NewReader(head)))
	_, _ = tp.ReadLine()
	hdr, err := tp.ReadMIMEHeader()
	if err != nil {
		return &refusal{http.StatusBadRequest, "malformed HTTP request: " + err.Error()}
	}
	hosts := hdr.Values("Host")
	if req.URL.Host != "" {
		hosts = append(hosts, req.URL.Host)
	}
	for _, h := range hosts {
		if !allowed.allows(h) {
			return &refusal{http.StatusForbidden, fmt.Sprintf("Host %s is not a name sbx gave this address (a web page after DNS rebinding?); use the Service's cluster name", strconv.Quote(h))}
		}
	}
	for _, o := range hdr.Values("Origin") {
		u, err := url.Parse(o)
		if err != nil || u.Host == "" || !allowed.allows(u.Host) {
			return &refusal{http.StatusForbidden, fmt.Sprintf("Origin %s is not a name sbx gave this address (a request from a web page); cluster Services are for local processes", strconv.Quote(o))}
		}
	}
	return nil
}

// readFirst reads c's first bytes until classify decides (see its
// rules), and returns them for the caller to forward first, or the
// refusal they earn. No deadline applies before the first byte; the
// rest of a head must come within headTimeout. An error is the
// connection's own (or the head's timeout).
func readFirst(c net.Conn, allowed func() allowedHosts) (prefix []byte, ref *refusal, err error) {
	buf := make([]byte, 0, 4096)
	defer func() { _ = c.SetReadDeadline(time.Time{}) }()
	for {
		if len(buf) == cap(buf) {
			buf = append(buf, 0)[:len(buf)]
		}
		n, rerr := c.Read(buf[len(buf):min(cap(buf), maxHead+1)])
		if len(buf) == 0 && n > 0 {
			_ = c.SetReadDeadline(time.Now().Add(headTimeout))
		}
		buf = buf[:len(buf)+n]
		v, end := classify(buf)
		switch v {
		case notHTTP:
			return buf, nil, nil
		case tooLong:
			return nil, &refusal{http.StatusRequestHeaderFieldsTooLarge, "request head longer than 1 MiB"}, nil
		case httpHead:
			if ref := checkHead(buf[:end], allowed()); ref != nil {
				return nil, ref, nil
			}
			return buf, nil, nil
		}
		switch {
		case errors.Is(rerr, io.EOF):
			// The client half-closed before the bytes looked like a whole
			// request head ("PING", "hello"): a browser always sends the
			// whole head, so this is some other client; pass it on.
			return buf, nil, nil
		case rerr != nil:
			return nil, nil, rerr
		}
	}
}

// prefixConn is a connection whose first bytes were read already; reads
// return them first. CloseWrite still reaches the connection.
type prefixConn struct {
	net.Conn
	r io.Reader
}

func newPrefixConn(c net.Conn, prefix []byte) net.Conn {
	if len(prefix) == 0 {
		return c
	}
	return &prefixConn{Conn: c, r: io.MultiReader(bytes.NewReader(prefix), c)}
}

func (c *prefixConn) Read(p []byte) (int, error) { return c.r.Read(p) }

// CloseWrite half-closes the connection (or closes it when it cannot).
func (c *prefixConn) CloseWrite() error {
	if cw, ok := c.Conn.(interface{ CloseWrite() error }); ok {
		return cw.CloseWrite()
	}
	return c.Conn.Close()
}

// refuse answers a refused request on c and ends the connection gently:
// the answer, a half-close, then whatever the client still sends is read
// and dropped for a moment, so that closing does not reset the
// connection before the client read the answer.
func refuse(c net.Conn, ref *refusal) {
	_ = c.SetWriteDeadline(time.Now().Add(5 * time.Second))
	if _, err := c.Write(ref.response()); err != nil {
		return
	}
	if cw, ok := c.(interface{ CloseWrite() error }); ok {
		_ = cw.CloseWrite()
	}
	_ = c.SetReadDeadline(time.Now().Add(time.Second))
	_, _ = io.Copy(io.Discard, io.LimitReader(c, maxHead))
}

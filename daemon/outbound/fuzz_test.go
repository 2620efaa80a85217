package outbound

import (
	"bufio"
	"bytes"
	"io"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"strings"
	"testing"
	"time"
)

// FuzzLooksLikeHTTP1: the sniffer of local processes' first bytes never
// panics, and says yes only to an upper-case method, a space and a line
// carrying " HTTP/1.".
func FuzzLooksLikeHTTP1(f *testing.F) {
	for _, s := range []string{"GET / HTTP/1.1\r\n", "PING\r\n", "PRI * HTTP/2.0\r\n", "\x16\x03\x01", "", "A HTTP/1.\n"} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, in []byte) {
		got := looksLikeHTTP1(bufio.NewReaderSize(bytes.NewReader(in), 16<<10))
		if !got || len(in) == 0 {
			return
		}
		line, _, ok := bytes.Cut(in, []byte("\n"))
		sp := bytes.IndexByte(line, ' ')
		if !ok || sp <= 0 || !bytes.Contains(line, []byte(" HTTP/1.")) {
			t.Fatalf("accepted %q", in)
		}
		for _, c := range line[:sp] {
			if c < 'A' || c > 'Z' {
				t.Fatalf("accepted method %q", line[:sp])
			}
		}
	})
}

// bytesConn is a connection that reads in and then ends.
type bytesConn struct {
	net.Conn
	r io.Reader
}

func (c bytesConn) Read(p []byte) (int, error)    { return c.r.Read(p) }
func (bytesConn) SetReadDeadline(time.Time) error { return nil }

// FuzzFirstRequest: the hosts-mode check reads what any local process,
// and any web page through the browser, sends first. It must not panic;
// what it passes on must be passed whole; and when what it passes on is
// an HTTP request that Go's server would read, its Host and Origin name
// the Service.
func FuzzFirstRequest(f *testing.F) {
	for _, s := range []string{
		"GET / HTTP/1.1\r\nHost: driver\r\n\r\n",
		"GET / HTTP/1.1\r\nHost: attacker.example\r\n\r\n",
		"GET / HTTP/1.1\r\nHost: driver:8082\r\nOrigin: http://attacker.example\r\n\r\n",
		"post /x HTTP/1.1\r\nHost: driver.hotrod\r\nContent-Length: 2\r\n\r\nhi",
		"GET http://attacker.example/ HTTP/1.1\r\nHost: driver\r\n\r\n",
		"GET / HTTP/1.1\nHost: 127.246.3.7\n\nGET / HTTP/1.1\nHost: x\n\n",
		"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n",
		"\x16\x03\x01\x00",
		"PING",
		"",
	} {
		f.Add([]byte(s))
	}
	allowed := newAllowedHosts(netip.MustParseAddr("127.246.3.7"), []string{"driver", "driver.hotrod", "driver.hotrod.svc", "driver.hotrod.svc.cluster.local"})
	f.Fuzz(func(t *testing.T, in []byte) {
		r := bytes.NewReader(in)
		prefix, ref, err := readFirst(bytesConn{r: r}, func() allowedHosts { return allowed })
		if err != nil {
			t.Fatalf("error reading from bytes: %v", err)
		}
		if ref != nil {
			if ref.status < 400 || !bytes.HasPrefix(ref.response(), []byte("HTTP/1.1 4")) {
				t.Fatalf("refusal %+v", ref)
			}
			return
		}
		rest, _ := io.ReadAll(r)
		if !bytes.Equal(append(prefix, rest...), in) {
			t.Fatalf("passes on %q, not %q", append(prefix, rest...), in)
		}
		req, err := http.ReadRequest(bufio.NewReader(bytes.NewReader(in)))
		if err != nil || req.ProtoMajor != 1 {
			return
		}
		if req.Host != "" && !allowed.allows(req.Host) {
			t.Fatalf("passed a request for Host %q: %q", req.Host, in)
		}
		for _, o := range req.Header.Values("Origin") {
			u, err := url.Parse(o)
			if err != nil || !allowed.allows(u.Host) {
				t.Fatalf("passed a request with Origin %q: %q", o, in)
			}
		}
	})
}

// FuzzCatalogLookup: host names from proxy clients never panic the
// lookup, and a cluster target is always a .svc.<domain> name.
func FuzzCatalogLookup(f *testing.F) {
	c := NewCatalog("", []string{"hotrod"})
	c.Apply(added(svc("hotrod", "driver", 8082)))
	c.Apply(added(svc("shared", "redis", 6379)))
	for _, s := range []string{"driver", "driver.hotrod", "redis.shared.svc", "x.y.svc.cluster.local", "example.com", "..", ".svc", "DRIVER."} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, host string) {
		target, ok := c.Lookup(host)
		if ok && !strings.HasSuffix(target, ".svc.cluster.local") {
			t.Fatalf("%q -> %q", host, target)
		}
	})
}

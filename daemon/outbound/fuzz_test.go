package outbound

import (
	"bufio"
	"bytes"
	"strings"
	"testing"
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

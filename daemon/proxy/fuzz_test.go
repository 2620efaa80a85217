package proxy

import (
	"bufio"
	"bytes"
	"errors"
	"net/http"
	"net/netip"
	"strings"
	"testing"

	"github.com/sbx-dev/sbx/cluster"
)

// FuzzReadSocksRequest: the SOCKS5 decoders take bytes from any local
// process; they must never panic, and a request they accept names a host
// that is safe to log and dial.
func FuzzReadSocksRequest(f *testing.F) {
	f.Add([]byte{5, 1, 0}, domainReq(socksConnect, "driver.hotrod", 8082))
	f.Add([]byte{5, 1, 0}, []byte{5, 1, 0, atypIPv4, 127, 0, 0, 1, 0, 80})
	f.Add([]byte{5, 2, 2, 0}, []byte{5, 1, 0, atypIPv6, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 187})
	f.Add([]byte{5, 0}, []byte{5, 2, 0, atypDomain, 0, 0, 80})
	f.Add([]byte{4, 1, 0}, []byte{5, 1, 0, 9})
	f.Fuzz(func(t *testing.T, greeting, request []byte) {
		var out bytes.Buffer
		if err := socksHandshake(bufio.NewReader(bytes.NewReader(greeting)), &out); err == nil {
			if !bytes.Equal(out.Bytes(), []byte{5, 0}) {
				t.Fatalf("accepted handshake answered %v", out.Bytes())
			}
		}
		req, err := readSocksRequest(bytes.NewReader(request))
		var se *socksError
		if err != nil {
			if errors.As(err, &se) && se.code == repSuccess {
				t.Fatal("error with success code")
			}
			return
		}
		if _, ipErr := netip.ParseAddr(req.host); ipErr != nil && !validHost(req.host) {
			t.Fatalf("accepted invalid host %q", req.host)
		}
		if strings.ContainsAny(req.addr(), "\r\n ") {
			t.Fatalf("unsafe address %q", req.addr())
		}
	})
}

// FuzzInjectBaggage: whatever baggage a client sends, injection adds the
// member at most once and never drops what was there.
func FuzzInjectBaggage(f *testing.F) {
	f.Add("a=1", "sbx-routing-key")
	f.Add("sbx-routing-key=x;p", "sbx-routing-key")
	f.Add(",,=,", "k")
	f.Fuzz(func(t *testing.T, in, key string) {
		if cluster.ValidateBaggageKey(key) != nil {
			return
		}
		h := http.Header{}
		h.Add("Baggage", in)
		added := InjectBaggage(h, key, "v")
		got := strings.Join(h.Values("Baggage"), ",")
		if !strings.Contains(got, strings.TrimSpace(in)) {
			t.Fatalf("lost the original %q: %q", in, got)
		}
		if added && !hasBaggageKey(got, key) {
			t.Fatalf("added but key missing: %q", got)
		}
		if InjectBaggage(h, key, "v") {
			t.Fatalf("injected twice: %q", got)
		}
	})
}

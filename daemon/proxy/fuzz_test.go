package proxy

import (
	"bufio"
	"bytes"
	"errors"
	"net/http"
	"net/netip"
	"strings"
	"testing"

	"github.com/sbx-dev/sbx/cluster/routingkey"
)

// FuzzReadSocksRequest: the SOCKS5 decoders take bytes from any local
// process; they must never panic, and a request they accept names a host
// that is safe to log and dial.
func FuzzReadSocksRequest(f *testing.F) {
	f.Add([]byte{5, 1, 2}, domainReq(socksConnect, "driver.hotrod", 8082))
	f.Add([]byte{5, 1, 0}, []byte{5, 1, 0, atypIPv4, 127, 0, 0, 1, 0, 80})
	f.Add([]byte{5, 2, 2, 0}, []byte{5, 1, 0, atypIPv6, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 187})
	f.Add([]byte{5, 0}, []byte{5, 2, 0, atypDomain, 0, 0, 80})
	f.Add([]byte{4, 1, 0}, []byte{5, 1, 0, 9})
	f.Fuzz(func(t *testing.T, greeting, request []byte) {
		var out bytes.Buffer
		err := socksHandshake(bufio.NewReader(bytes.NewReader(greeting)), &out)
		switch {
		case err == nil && !bytes.Equal(out.Bytes(), []byte{5, socksUserPass}):
			t.Fatalf("accepted handshake answered %v", out.Bytes())
		case err == nil && !bytes.Contains(greeting[2:min(len(greeting), 2+int(greeting[1]))], []byte{socksUserPass}):
			t.Fatalf("accepted a greeting that does not offer username/password: %v", greeting)
		case errors.Is(err, errNoUserPass) && !bytes.Equal(out.Bytes(), []byte{5, socksNoMethod}):
			t.Fatalf("refused handshake answered %v", out.Bytes())
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

// FuzzReadSocksAuth: the username/password sub-negotiation comes from any
// local process before it proved anything; the decoder must not panic,
// must not read past what the lengths say, and the proxy must accept
// exactly its own credential.
func FuzzReadSocksAuth(f *testing.F) {
	f.Add(socksAuth(Username, testPassword))
	f.Add(socksAuth(Username, testPassword[:10]))
	f.Add(socksAuth("", ""))
	f.Add([]byte{1, 255})
	f.Add([]byte{2, 3, 's', 'b', 'x', 0})
	f.Add(append(socksAuth(Username, testPassword), 5, 1, 0))
	s := &Server{opts: Options{Password: testPassword}}
	f.Fuzz(func(t *testing.T, in []byte) {
		r := bytes.NewReader(in)
		user, password, err := readSocksAuth(r)
		if err != nil {
			return
		}
		consumed := in[:len(in)-r.Len()]
		if !bytes.Equal(consumed, socksAuth(user, password)) {
			t.Fatalf("decoded %q/%q from %v", user, password, consumed)
		}
		if s.authorized(user, password) != (user == Username && password == testPassword) {
			t.Fatalf("authorized(%q, %q) is wrong", user, password)
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
		if routingkey.ValidateBaggageKey(key) != nil {
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

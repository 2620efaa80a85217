package proxy

import (
	"bufio"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"
	xproxy "golang.org/x/net/proxy"

	"github.com/sbx-dev/sbx/tunnel"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// seen is what the stand-in HTTP server reports about a request.
type seen struct {
	Host    string   `json:"host"`
	URI     string   `json:"uri"`
	Baggage []string `json:"baggage"`
	Via     string   `json:"via"` // "cluster" or "direct": which server answered
	// ProxyAuth is the Proxy-Authorization the upstream got (never any).
	ProxyAuth []string `json:"proxyAuth"`
}

// testPassword is the proxy's credential in these tests.
const testPassword = "q-9Zk_3xV0aBcDeFgHiJkLmNoPqRsTuVwXyZ012345"

// basicAuth is a Proxy-Authorization header line for user and password.
func basicAuth(user, password string) string {
	return "Proxy-Authorization: Basic " + base64.StdEncoding.EncodeToString([]byte(user+":"+password)) + "\r\n"
}

// goodAuth is the header line with the right credential.
var goodAuth = basicAuth(Username, testPassword)

// socksAuth is the RFC 1929 sub-negotiation for user and password.
func socksAuth(user, password string) []byte {
	b := []byte{1, byte(len(user))}
	b = append(b, user...)
	b = append(b, byte(len(password)))
	return append(b, password...)
}

// socksHello is a greeting offering username/password, followed by the
// right credential: what a client with the proxy URL sends first.
func socksHello() []byte {
	return append([]byte{5, 1, socksUserPass}, socksAuth(Username, testPassword)...)
}

// world is the cluster and the internet as the proxy reaches them: every
// dial lands on a local server, and every target is recorded.
type world struct {
	cluster, direct *httptest.Server
	echo            net.Listener
	wg              sync.WaitGroup

	mu      sync.Mutex
	dials   []string // "cluster:target" or "direct:target"
	refused map[string]bool
}

func newWorld(t *testing.T) *world {
	t.Helper()
	w := &world{refused: map[string]bool{}}
	handler := func(via string) http.Handler {
		return http.HandlerFunc(func(rw http.ResponseWriter, r *http.Request) {
			_ = json.NewEncoder(rw).Encode(seen{Host: r.Host, URI: r.RequestURI, Baggage: r.Header.Values("Baggage"), Via: via,
				ProxyAuth: r.Header.Values("Proxy-Authorization")})
		})
	}
	w.cluster = httptest.NewServer(handler("cluster"))
	w.direct = httptest.NewServer(handler("direct"))
	var err error
	w.echo, err = net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	w.wg.Add(1)
	go func() {
		defer w.wg.Done()
		for {
			c, err := w.echo.Accept()
			if err != nil {
				return
			}
			w.wg.Add(1)
			go func() {
				defer w.wg.Done()
				defer c.Close()
				// Reply only after the client half-closed: proves CloseWrite
				// made it through the proxy.
				b, _ := io.ReadAll(c)
				fmt.Fprintf(c, "echo:%s", b)
			}()
		}
	}()
	t.Cleanup(func() {
		w.cluster.Close()
		w.direct.Close()
		w.echo.Close()
		w.wg.Wait()
	})
	return w
}

func (w *world) record(s string) {
	w.mu.Lock()
	w.dials = append(w.dials, s)
	w.mu.Unlock()
}

func (w *world) log() []string {
	w.mu.Lock()
	defer w.mu.Unlock()
	return append([]string(nil), w.dials...)
}

// dialTo: port 7 is the echo server, anything else the HTTP server.
func (w *world) dialTo(ctx context.Context, srv *httptest.Server, target string) (net.Conn, error) {
	addr := srv.Listener.Addr().String()
	if strings.HasSuffix(target, ":7") {
		addr = w.echo.Addr().String()
	}
	var d net.Dialer
	return d.DialContext(ctx, "tcp", addr)
}

func (w *world) clusterDial(ctx context.Context, target string) (net.Conn, error) {
	w.record("cluster:" + target)
	w.mu.Lock()
	refused := w.refused[target]
	w.mu.Unlock()
	if refused {
		return nil, &tunnel.DialError{Reason: tunnel.ReasonRefused, Message: "dial tcp: connection refused"}
	}
	return w.dialTo(ctx, w.cluster, target)
}

func (w *world) directDial(ctx context.Context, target string) (net.Conn, error) {
	w.record("direct:" + target)
	return w.dialTo(ctx, w.direct, target)
}

// lookup stands in for outbound.Catalog.Lookup (which the outbound
// package tests together with this proxy): one discovered Service
// hotrod/driver in the sandbox's namespace, and any *.svc name.
func lookup(host string) (string, bool) {
	h := strings.TrimSuffix(strings.ToLower(host), ".")
	switch {
	case h == "driver" || h == "driver.hotrod":
		return "driver.hotrod.svc.cluster.local", true
	case strings.HasSuffix(h, ".svc"):
		return h + ".cluster.local", true
	case strings.HasSuffix(h, ".svc.cluster.local"):
		return h, true
	}
	return "", false
}

func startProxy(t *testing.T, w *world, baggage func() (string, string)) *Server {
	t.Helper()
	s, err := New(Options{Listen: "127.0.0.1:0", Lookup: lookup, Cluster: w.clusterDial, Direct: w.directDial,
		Baggage: baggage, DialTimeout: 10 * time.Second, Password: testPassword})
	require.NoError(t, err)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		require.NoError(t, <-done)
	})
	return s
}

func clientVia(t *testing.T, proxyURL string) *http.Client {
	u, err := url.Parse(proxyURL)
	require.NoError(t, err)
	tr := &http.Transport{Proxy: http.ProxyURL(u), DisableKeepAlives: true}
	t.Cleanup(tr.CloseIdleConnections)
	return &http.Client{Transport: tr, Timeout: 30 * time.Second}
}

func get(t *testing.T, c *http.Client, rawURL string, hdr http.Header) (int, seen) {
	t.Helper()
	req, err := http.NewRequest(http.MethodGet, rawURL, nil)
	require.NoError(t, err)
	for k, vs := range hdr {
		for _, v := range vs {
			req.Header.Add(k, v)
		}
	}
	resp, err := c.Do(req)
	require.NoError(t, err)
	defer resp.Body.Close()
	var s seen
	if resp.StatusCode == http.StatusOK {
		require.NoError(t, json.NewDecoder(resp.Body).Decode(&s))
	}
	return resp.StatusCode, s
}

func TestSOCKS5DomainNames(t *testing.T) {
	w := newWorld(t)
	s := startProxy(t, w, nil)

	// Go's own SOCKS5 client (socks5h: names sent unresolved).
	c := clientVia(t, s.URL("socks5h"))
	code, got := get(t, c, "http://driver.hotrod:8082/dispatch?x=1", nil)
	require.Equal(t, http.StatusOK, code)
	require.Equal(t, "cluster", got.Via)
	require.Equal(t, "/dispatch?x=1", got.URI)

	code, got = get(t, c, "http://driver:8082/", nil)
	require.Equal(t, http.StatusOK, code)
	require.Equal(t, "cluster", got.Via, "short name of an own-namespace Service")

	code, got = get(t, c, "http://billing.finance.svc:9000/", nil)
	require.Equal(t, http.StatusOK, code)
	require.Equal(t, "cluster", got.Via, ".svc names go to the cluster even when not discovered")

	code, got = get(t, c, "http://example.invalid:8080/", nil)
	require.Equal(t, http.StatusOK, code)
	require.Equal(t, "direct", got.Via)

	require.Equal(t, []string{
		"cluster:driver.hotrod.svc.cluster.local:8082",
		"cluster:driver.hotrod.svc.cluster.local:8082",
		"cluster:billing.finance.svc.cluster.local:9000",
		"direct:example.invalid:8080",
	}, w.log(), "names reach the dialers unresolved")

	// x/net's SOCKS5 dialer for a raw TCP connection.
	d, err := xproxy.SOCKS5("tcp", s.Addr().String(), &xproxy.Auth{User: Username, Password: testPassword}, xproxy.Direct)
	require.NoError(t, err)
	conn, err := d.(xproxy.ContextDialer).DialContext(context.Background(), "tcp", "driver.hotrod:8082")
	require.NoError(t, err)
	defer conn.Close()
	_, err = io.WriteString(conn, "GET /raw HTTP/1.1\r\nHost: driver.hotrod:8082\r\nConnection: close\r\n\r\n")
	require.NoError(t, err)
	resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
	require.NoError(t, err)
	require.Equal(t, http.StatusOK, resp.StatusCode)
	resp.Body.Close()

	// Half-close through SOCKS5: the echo server answers only after EOF.
	raw, err := net.Dial("tcp", s.Addr().String())
	require.NoError(t, err)
	defer raw.Close()
	_ = raw.SetDeadline(time.Now().Add(30 * time.Second))
	_, err = raw.Write(append(socksHello(), domainReq(socksConnect, "redis.shared.svc.cluster.local", 7)...))
	require.NoError(t, err)
	hs := make([]byte, 2+2+10)
	_, err = io.ReadFull(raw, hs)
	require.NoError(t, err)
	require.Equal(t, []byte{5, socksUserPass, 1, socksAuthOK}, hs[:4])
	require.Equal(t, byte(repSuccess), hs[5])
	_, err = io.WriteString(raw, "PING")
	require.NoError(t, err)
	require.NoError(t, raw.(*net.TCPConn).CloseWrite())
	b, err := io.ReadAll(raw)
	require.NoError(t, err)
	require.Equal(t, "echo:PING", string(b))
}

// socksRaw speaks SOCKS5 by hand to check reply codes: greeting, then
// (when the proxy picked username/password) the right credential, then
// request.
func socksRaw(t *testing.T, addr string, greeting, request []byte) (method byte, reply []byte) {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	require.NoError(t, err)
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(30 * time.Second))
	_, err = c.Write(greeting)
	require.NoError(t, err)
	var m [2]byte
	_, err = io.ReadFull(c, m[:])
	require.NoError(t, err)
	if request == nil || m[1] != socksUserPass {
		return m[1], nil
	}
	_, err = c.Write(socksAuth(Username, testPassword))
	require.NoError(t, err)
	var a [2]byte
	_, err = io.ReadFull(c, a[:])
	require.NoError(t, err)
	require.Equal(t, []byte{1, socksAuthOK}, a[:])
	_, err = c.Write(request)
	require.NoError(t, err)
	reply = make([]byte, 10)
	_, err = io.ReadFull(c, reply)
	require.NoError(t, err)
	return m[1], reply
}

func domainReq(cmd byte, host string, port uint16) []byte {
	b := []byte{5, cmd, 0, atypDomain, byte(len(host))}
	b = append(b, host...)
	return append(b, byte(port>>8), byte(port))
}

func TestSOCKS5Replies(t *testing.T) {
	w := newWorld(t)
	w.refused["driver.hotrod.svc.cluster.local:8082"] = true
	s := startProxy(t, w, nil)
	addr := s.Addr().String()

	m, _ := socksRaw(t, addr, []byte{5, 1, 0}, nil) // only "no authentication" offered
	require.Equal(t, byte(socksNoMethod), m)

	for _, tc := range []struct {
		name string
		req  []byte
		code byte
	}{
		{"refused by the relay", domainReq(socksConnect, "driver.hotrod", 8082), repConnectionRefused},
		{"bind", domainReq(2, "driver.hotrod", 8082), repCommandNotSupported},
		{"udp associate", domainReq(3, "driver.hotrod", 8082), repCommandNotSupported},
		{"unknown address type", []byte{5, 1, 0, 9, 1, 2, 3, 4, 0, 80}, repAddrNotSupported},
		{"bad host name", domainReq(socksConnect, "a b\n", 80), repHostUnreachable},
		{"ok", domainReq(socksConnect, "driver.web.svc", 8082), repSuccess},
		{"ipv4 literal goes direct", []byte{5, 1, 0, atypIPv4, 127, 0, 0, 1, 0x1f, 0x90}, repSuccess},
	} {
		t.Run(tc.name, func(t *testing.T) {
			m, reply := socksRaw(t, addr, []byte{5, 2, 0, 2}, tc.req)
			require.Equal(t, byte(socksUserPass), m)
			require.Equal(t, tc.code, reply[1], "reply %v", reply)
		})
	}
	require.Contains(t, w.log(), "direct:127.0.0.1:8080")
}

func TestHTTPConnect(t *testing.T) {
	w := newWorld(t)
	w.refused["driver.hotrod.svc.cluster.local:9999"] = true
	s := startProxy(t, w, func() (string, string) { return "sbx-routing-key", "k123" })

	// CONNECT with the first payload bytes sent right behind the request,
	// then a half-close: the echo server answers only after EOF.
	c, err := net.Dial("tcp", s.Addr().String())
	require.NoError(t, err)
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(30 * time.Second))
	_, err = io.WriteString(c, "CONNECT driver.hotrod:7 HTTP/1.1\r\nHost: driver.hotrod:7\r\n"+goodAuth+"\r\nearly bytes")
	require.NoError(t, err)
	br := bufio.NewReader(c)
	resp, err := http.ReadResponse(br, &http.Request{Method: http.MethodConnect})
	require.NoError(t, err)
	require.Equal(t, http.StatusOK, resp.StatusCode)
	_, err = io.WriteString(c, "+late")
	require.NoError(t, err)
	require.NoError(t, c.(*net.TCPConn).CloseWrite())
	b, err := io.ReadAll(br)
	require.NoError(t, err)
	require.Equal(t, "echo:early bytes+late", string(b), "CONNECT payload is never touched (no baggage there)")
	require.Equal(t, "cluster:driver.hotrod.svc.cluster.local:7", w.log()[0])

	// Go's client uses CONNECT for https; here a plain TCP CONNECT to a
	// refused target must fail fast with 502.
	c2, err := net.Dial("tcp", s.Addr().String())
	require.NoError(t, err)
	defer c2.Close()
	_, err = io.WriteString(c2, "CONNECT driver.hotrod:9999 HTTP/1.1\r\nHost: driver.hotrod:9999\r\n"+goodAuth+"\r\n")
	require.NoError(t, err)
	resp, err = http.ReadResponse(bufio.NewReader(c2), &http.Request{Method: http.MethodConnect})
	require.NoError(t, err)
	require.Equal(t, http.StatusBadGateway, resp.StatusCode)
	body, _ := io.ReadAll(resp.Body)
	require.Contains(t, string(body), "connection refused")

	// A direct CONNECT.
	c3, err := net.Dial("tcp", s.Addr().String())
	require.NoError(t, err)
	defer c3.Close()
	_, err = io.WriteString(c3, "CONNECT example.invalid:7 HTTP/1.1\r\nHost: example.invalid:7\r\n"+goodAuth+"\r\nhi")
	require.NoError(t, err)
	br3 := bufio.NewReader(c3)
	resp, err = http.ReadResponse(br3, &http.Request{Method: http.MethodConnect})
	require.NoError(t, err)
	require.Equal(t, http.StatusOK, resp.StatusCode)
	require.NoError(t, c3.(*net.TCPConn).CloseWrite())
	b, err = io.ReadAll(br3)
	require.NoError(t, err)
	require.Equal(t, "echo:hi", string(b))
	require.Contains(t, w.log(), "direct:example.invalid:7")
}

func TestHTTPAbsoluteURIAndBaggage(t *testing.T) {
	w := newWorld(t)
	w.refused["driver.hotrod.svc.cluster.local:9999"] = true
	s := startProxy(t, w, func() (string, string) { return "sbx-routing-key", "k123" })
	c := clientVia(t, s.URL("http"))

	for _, tc := range []struct {
		name    string
		url     string
		baggage []string
		via     string
		want    []string
	}{
		{"cluster, no baggage", "http://driver.hotrod:8082/a?b=c", nil, "cluster", []string{"sbx-routing-key=k123"}},
		{"direct, no baggage", "http://example.invalid/x", nil, "direct", []string{"sbx-routing-key=k123"}},
		{"other members kept", "http://driver:8082/", []string{"userId=42;p=1"}, "cluster", []string{"userId=42;p=1,sbx-routing-key=k123"}},
		{"several lines joined", "http://driver:8082/", []string{"a=1", "b=2"}, "cluster", []string{"a=1,b=2,sbx-routing-key=k123"}},
		{"key present: left alone", "http://driver:8082/", []string{"a=1, sbx-routing-key = other"}, "cluster", []string{"a=1, sbx-routing-key = other"}},
		{"key present, empty value: left alone", "http://driver:8082/", []string{"sbx-routing-key="}, "cluster", []string{"sbx-routing-key="}},
		{"longer key is another key", "http://driver:8082/", []string{"my-sbx-routing-key=x"}, "cluster", []string{"my-sbx-routing-key=x,sbx-routing-key=k123"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			hdr := http.Header{}
			for _, b := range tc.baggage {
				hdr.Add("Baggage", b)
			}
			code, got := get(t, c, tc.url, hdr)
			require.Equal(t, http.StatusOK, code)
			require.Equal(t, tc.via, got.Via)
			require.Equal(t, tc.want, got.Baggage)
			u, _ := url.Parse(tc.url)
			require.Equal(t, u.RequestURI(), got.URI, "upstream gets origin form")
			require.Equal(t, u.Host, got.Host)
			require.Empty(t, got.ProxyAuth, "the credential is not passed upstream")
		})
	}
	code, _ := get(t, c, "http://driver:9999/", nil)
	require.Equal(t, http.StatusBadGateway, code)

	// Not a proxy request.
	resp, err := http.Get("http://" + s.Addr().String() + "/")
	require.NoError(t, err)
	resp.Body.Close()
	require.Equal(t, http.StatusBadRequest, resp.StatusCode)
}

func TestBaggageOff(t *testing.T) {
	w := newWorld(t)
	s := startProxy(t, w, func() (string, string) { return "sbx-routing-key", "" })
	code, got := get(t, clientVia(t, s.URL("http")), "http://driver:8082/", nil)
	require.Equal(t, http.StatusOK, code)
	require.Empty(t, got.Baggage)
}

func TestListenMustBeLoopback(t *testing.T) {
	w := newWorld(t)
	for _, addr := range []string{"0.0.0.0:0", ":0", "10.1.2.3:0", "example.com:0", "nonsense"} {
		_, err := New(Options{Listen: addr, Lookup: func(string) (string, bool) { return "", false }, Cluster: w.clusterDial, Password: testPassword})
		require.Error(t, err, addr)
	}
	s, err := New(Options{Listen: "[::1]:0", Lookup: func(string) (string, bool) { return "", false }, Cluster: w.clusterDial, Password: testPassword})
	if err == nil { // hosts without IPv6 loopback fail to listen, which is fine
		require.NoError(t, s.Close())
	}
}

func TestCloseEndsOpenTunnels(t *testing.T) {
	w := newWorld(t)
	s := startProxy(t, w, nil)
	c, err := net.Dial("tcp", s.Addr().String())
	require.NoError(t, err)
	defer c.Close()
	_, err = io.WriteString(c, "CONNECT driver:7 HTTP/1.1\r\nHost: driver:7\r\n"+goodAuth+"\r\n")
	require.NoError(t, err)
	br := bufio.NewReader(c)
	resp, err := http.ReadResponse(br, &http.Request{Method: http.MethodConnect})
	require.NoError(t, err)
	require.Equal(t, http.StatusOK, resp.StatusCode)
	// An idle SOCKS client mid-handshake too.
	c2, err := net.Dial("tcp", s.Addr().String())
	require.NoError(t, err)
	defer c2.Close()
	_, err = c2.Write([]byte{5})
	require.NoError(t, err)

	require.NoError(t, s.Close())
	_ = c.SetDeadline(time.Now().Add(30 * time.Second))
	_, err = io.ReadAll(br)
	if err != nil {
		require.False(t, errors.Is(err, context.DeadlineExceeded))
	}
}

func TestInjectBaggage(t *testing.T) {
	for _, tc := range []struct {
		in   []string
		want []string
		add  bool
	}{
		{nil, []string{"k=v"}, true},
		{[]string{""}, []string{"k=v"}, true},
		{[]string{"a=1"}, []string{"a=1,k=v"}, true},
		{[]string{"k=x"}, []string{"k=x"}, false},
		{[]string{" k =x;prop"}, []string{" k =x;prop"}, false},
		{[]string{"a=1;k=2"}, []string{"a=1;k=2,k=v"}, true}, // a property is not a member
		{[]string{"kk=1", "x=k"}, []string{"kk=1,x=k,k=v"}, true},
	} {
		h := http.Header{}
		for _, v := range tc.in {
			h.Add("Baggage", v)
		}
		require.Equal(t, tc.add, InjectBaggage(h, "k", "v"), "%q", tc.in)
		require.Equal(t, tc.want, h.Values("Baggage"), "%q", tc.in)
	}
	require.False(t, InjectBaggage(http.Header{}, "k", ""))
}

package outbound

import (
	"bufio"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/sbx-dev/sbx/cluster/discovery"
)

type httpSeen struct {
	Baggage []string `json:"baggage"`
	Remote  string   `json:"remote"`
	Len     int64    `json:"len"`
	Sum     string   `json:"sum"`
	UA      []string `json:"ua"`
}

// httpCluster answers every request with what it saw; /upgrade switches
// to a line echo after a 101.
func httpCluster(t *testing.T) *httptest.Server {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/upgrade" {
			c, brw, err := http.NewResponseController(w).Hijack()
			if err != nil {
				return
			}
			defer c.Close()
			fmt.Fprint(brw, "HTTP/1.1 101 Switching Protocols\r\nUpgrade: test\r\nConnection: Upgrade\r\n\r\n")
			_ = brw.Flush()
			for {
				line, err := brw.ReadString('\n')
				if err != nil {
					return
				}
				fmt.Fprint(brw, "echo "+line)
				_ = brw.Flush()
			}
		}
		h := sha256.New()
		n, _ := io.Copy(h, r.Body)
		_ = json.NewEncoder(w).Encode(httpSeen{Baggage: r.Header.Values("Baggage"), Remote: r.RemoteAddr, Len: n,
			Sum: hex.EncodeToString(h.Sum(nil)), UA: r.Header.Values("User-Agent")})
	}))
	t.Cleanup(srv.Close)
	return srv
}

func TestHostsModeInjectsBaggageOnHTTPPorts(t *testing.T) {
	srv := httpCluster(t)
	echo := echoAfterEOF(t)
	dial := func(ctx context.Context, target string) (net.Conn, error) {
		addr := srv.Listener.Addr().String()
		if strings.HasSuffix(target, ":8081") {
			addr = echo.Addr().String()
		}
		var d net.Dialer
		return d.DialContext(ctx, "tcp", addr)
	}
	dir := t.TempDir()
	hosts := filepath.Join(dir, "hosts")
	require.NoError(t, os.WriteFile(hosts, []byte(original), 0o644))
	cat := NewCatalog("", []string{"hotrod"})
	s := svc("hotrod", "driver")
	s.Ports = []discovery.Port{
		{Name: "http", Port: 8080, Protocol: "TCP"},
		{Name: "http-alt", Port: 8081, Protocol: "TCP"},
		{Name: "metrics", Port: 9090, Protocol: "TCP"},
		{Name: "web", Port: 8088, Protocol: "TCP", AppProtocol: "http"},
	}
	cat.Apply(added(s))
	h, err := NewHosts(HostsOptions{Catalog: cat, Dial: dial, HostsFile: hosts, LockPath: filepath.Join(dir, "l"),
		Range: netip.MustParsePrefix("127.246.0.0/16"), Baggage: func() (string, string) { return "sbx-routing-key", "k1" }})
	require.NoError(t, err)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- h.Run(ctx) }()
	defer func() { cancel(); require.NoError(t, <-done) }()
	require.Eventually(t, func() bool { _, ok := resolve(t, hosts, "driver"); return ok }, 10*time.Second, 5*time.Millisecond)
	for _, e := range h.Status() {
		for _, p := range e.Ports {
			require.Equal(t, p.Port != 9090, p.InjectBaggage, "port %d", p.Port)
		}
	}

	tr := &http.Transport{
		DialContext: func(ctx context.Context, _, addr string) (net.Conn, error) {
			host, port, _ := net.SplitHostPort(addr)
			ip, ok := resolve(t, hosts, host)
			if !ok {
				return nil, fmt.Errorf("%s not in hosts", host)
			}
			var d net.Dialer
			return d.DialContext(ctx, "tcp", net.JoinHostPort(ip.String(), port))
		},
		ExpectContinueTimeout: 10 * time.Minute, // a lost 100-continue would hang, not fall back
	}
	defer tr.CloseIdleConnections()
	client := &http.Client{Transport: tr}
	do := func(method, url string, body io.Reader, length int64, hdr ...string) httpSeen {
		t.Helper()
		rctx, rcancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer rcancel()
		req, err := http.NewRequestWithContext(rctx, method, url, body)
		require.NoError(t, err)
		req.ContentLength = length
		for i := 0; i+1 < len(hdr); i += 2 {
			req.Header.Add(hdr[i], hdr[i+1])
		}
		resp, err := client.Do(req)
		require.NoError(t, err)
		defer resp.Body.Close()
		require.Equal(t, http.StatusOK, resp.StatusCode)
		var seen httpSeen
		require.NoError(t, json.NewDecoder(resp.Body).Decode(&seen))
		return seen
	}

	first := do("GET", "http://driver:8080/", nil, 0)
	require.Equal(t, []string{"sbx-routing-key=k1"}, first.Baggage)
	require.Equal(t, []string{"Go-http-client/1.1"}, first.UA, "the client's own User-Agent")
	second := do("GET", "http://driver:8080/", nil, 0, "Baggage", "a=1")
	require.Equal(t, []string{"a=1,sbx-routing-key=k1"}, second.Baggage)
	require.Equal(t, first.Remote, second.Remote, "keep-alive: both requests on one tunnel stream")
	require.Equal(t, []string{"sbx-routing-key=other"}, do("GET", "http://driver:8080/", nil, 0, "Baggage", "sbx-routing-key=other").Baggage)
	require.Equal(t, []string{"sbx-routing-key=k1"}, do("GET", "http://driver:8088/", nil, 0).Baggage, "appProtocol http")
	require.Empty(t, do("GET", "http://driver:9090/", nil, 0).Baggage, "a port not declared HTTP is not touched")

	big := strings.Repeat("0123456789abcdef", 1<<16) // 1 MiB
	sum := sha256.Sum256([]byte(big))
	for _, tc := range []struct {
		name   string
		length int64
		hdr    []string
	}{
		{"content-length", int64(len(big)), nil},
		{"chunked", -1, nil},
		{"expect 100-continue", int64(len(big)), []string{"Expect", "100-continue"}},
	} {
		seen := do("POST", "http://driver:8080/upload", strings.NewReader(big), tc.length, tc.hdr...)
		require.Equal(t, int64(len(big)), seen.Len, tc.name)
		require.Equal(t, hex.EncodeToString(sum[:]), seen.Sum, tc.name)
		require.Equal(t, []string{"sbx-routing-key=k1"}, seen.Baggage, tc.name)
	}

	// Not HTTP on an HTTP port: a short greeting passes through at once.
	ip, _ := resolve(t, hosts, "driver")
	c, err := net.Dial("tcp", netip.AddrPortFrom(ip, 8081).String())
	require.NoError(t, err)
	_, err = io.WriteString(c, "PING\r\n")
	require.NoError(t, err)
	require.NoError(t, c.(*net.TCPConn).CloseWrite())
	b, err := io.ReadAll(c)
	require.NoError(t, err)
	require.Equal(t, "echo:PING\r\n", string(b))
	c.Close()

	// An upgrade: the request is rewritten, then bytes flow raw both ways.
	c, err = net.Dial("tcp", netip.AddrPortFrom(ip, 8080).String())
	require.NoError(t, err)
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(30 * time.Second))
	_, err = io.WriteString(c, "GET /upgrade HTTP/1.1\r\nHost: driver:8080\r\nConnection: Upgrade\r\nUpgrade: test\r\n\r\n")
	require.NoError(t, err)
	br := bufio.NewReader(c)
	resp, err := http.ReadResponse(br, nil)
	require.NoError(t, err)
	require.Equal(t, http.StatusSwitchingProtocols, resp.StatusCode)
	for _, msg := range []string{"hello\n", "GET / HTTP/1.1 is just data now\n"} {
		_, err = io.WriteString(c, msg)
		require.NoError(t, err)
		line, err := br.ReadString('\n')
		require.NoError(t, err)
		require.Equal(t, "echo "+msg, line)
	}
}

func TestLooksLikeHTTP1(t *testing.T) {
	for in, want := range map[string]bool{
		"GET / HTTP/1.1\r\n":                  true,
		"POST /x?y=1 HTTP/1.0\r\nHost: a\r\n": true,
		"":                                    true, // EOF: ReadRequest reports it
		"PING\r\n":                            false,
		"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n":    false,
		"\x16\x03\x01\x02\x00":                false, // TLS ClientHello
		"get / HTTP/1.1\r\n":                  false,
		"GET / SPDY/3\r\n":                    false,
		"GET /" + strings.Repeat("a", 20000) + " HTTP/1.1\r\n": false, // no line within the buffer
	} {
		br := bufio.NewReaderSize(strings.NewReader(in), 16<<10)
		require.Equal(t, want, looksLikeHTTP1(br), "%.30q", in)
	}
	for _, tc := range []struct {
		p    discovery.Port
		want bool
	}{
		{discovery.Port{Name: "http"}, true},
		{discovery.Port{Name: "http-web"}, true},
		{discovery.Port{Name: "http2"}, false},
		{discovery.Port{Name: "grpc"}, false},
		{discovery.Port{Name: "web", AppProtocol: "HTTP"}, true},
		{discovery.Port{Name: "http", AppProtocol: "kubernetes.io/h2c"}, false},
		{discovery.Port{Name: ""}, false},
	} {
		require.Equal(t, tc.want, isHTTPPort(tc.p), "%+v", tc.p)
	}
}

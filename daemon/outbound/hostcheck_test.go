package outbound

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/sbx-dev/sbx/cluster/discovery"
)

func TestClassify(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want verdict
	}{
		{"", needMore},
		{"G", needMore},
		{"GET", needMore},
		{"GET ", needMore},
		{"GET / HTTP/1.1\r\n", needMore},
		{"GET / HTTP/1.1\r\nHost: a\r\n", needMore},
		{"GET / HTTP/1.1\r\nHost: a\r\n\r\n", httpHead},
		{"GET / HTTP/1.0\n\n", httpHead},
		{"POST /x HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\n\r\nabc", httpHead},
		{"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", notHTTP},
		{"PRI * HTTP/2", notHTTP},
		{"GET / HTTP/", needMore},
		{"GET / HTTP/1.", needMore},
		{"OPTIONS rtsp://a/ RTSP/1.0\r\n", notHTTP},
		{"PING\r\n", notHTTP},
		{"PING", needMore},
		{"*1\r\n$4\r\nPING\r\n", notHTTP},
		{"get key\r\n", notHTTP},
		{"GET /\r\n", notHTTP}, // HTTP/0.9: no browser sends it
		{"A\x00\x00\x00\xd4\x07", notHTTP},
		{"A \x01\x00\x00", notHTTP}, // a length prefix that happens to read "A "
		{"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03", notHTTP},
		{"\x00\x00\x00\x08\x04\xd2\x16\x2f", notHTTP},
		{" GET / HTTP/1.1\r\n\r\n", notHTTP},
		// Methods a page may pick with fetch(): any token.
		{"get / HTTP/1.1\r\nHost: a\r\n\r\n", httpHead},
		{"x-Custom_METHOD.1 / HTTP/1.1\r\n\r\n", httpHead},
		{strings.Repeat("M", 100) + " / HTTP/1.1\r\n\r\n", httpHead},
		{"GET /caf\xc3\xa9 HTTP/1.1\r\n\r\n", httpHead},
		{"GET /" + strings.Repeat("a", maxHead), tooLong},
		{strings.Repeat("M", maxHead), tooLong},
		{"GET / HTTP/1.1\r\nX: " + strings.Repeat("a", maxHead), tooLong},
	} {
		v, n := classify([]byte(tc.in))
		require.Equal(t, tc.want, v, "%.40q", tc.in)
		if v == httpHead {
			require.Equal(t, headEnd([]byte(tc.in)), n)
			require.True(t, strings.HasSuffix(tc.in[:n], "\n\n") || strings.HasSuffix(tc.in[:n], "\n\r\n"))
		}
	}
}

func TestCheckHead(t *testing.T) {
	ip := netip.MustParseAddr("127.246.3.7")
	allowed := newAllowedHosts(ip, []string{"driver", "driver.hotrod", "driver.hotrod.svc", "driver.hotrod.svc.cluster.local"})
	req := func(lines ...string) []byte {
		return []byte("GET /dispatch HTTP/1.1\r\n" + strings.Join(lines, "\r\n") + "\r\n\r\n")
	}
	for _, h := range []string{"driver", "driver:8082", "driver.hotrod", "driver.hotrod:8082", "driver.hotrod.svc",
		"driver.hotrod.svc.cluster.local", "driver.hotrod.svc.cluster.local.:8082", "DRIVER.Hotrod", "127.246.3.7", "127.246.3.7:8082",
		"[::ffff:127.246.3.7]:8082"} {
		require.Nil(t, checkHead(req("Host: "+h), allowed), h)
		require.Nil(t, checkHead(req("Host: "+h, "Origin: http://"+h), allowed), "origin %s", h)
	}
	require.Nil(t, checkHead([]byte("GET / HTTP/1.0\r\n\r\n"), allowed), "no Host at all: not a browser")
	require.Nil(t, checkHead(req("Host: driver", "Origin: https://driver.hotrod:3000"), allowed), "another port of the same name")

	for _, tc := range []struct {
		head   []byte
		status int
		reason string
	}{
		{req("Host: attacker.example"), 403, `Host "attacker.example"`},
		{req("Host: attacker.example:8082"), 403, "DNS rebinding"},
		{req("Host: driver.evil"), 403, "Host"},
		{req("Host: 127.0.0.1"), 403, "Host"},
		{req("Host: "), 403, "Host"},
		{req("Host: driver", "Origin: http://attacker.example"), 403, `Origin "http://attacker.example"`},
		{req("Host: driver", "Origin: null"), 403, "Origin"},
		{req("Host: driver", "Origin: "), 403, "Origin"},
		{req("Host: driver", "Origin: http://driver", "Origin: http://attacker.example"), 403, "Origin"},
		{req("Host: driver", "Host: attacker.example"), 400, "Host"},
		{[]byte("GET http://attacker.example/ HTTP/1.1\r\nHost: driver\r\n\r\n"), 403, "attacker.example"},
		{[]byte("GET http://driver/ HTTP/1.1\r\nHost: attacker.example\r\n\r\n"), 403, "attacker.example"},
		{[]byte("GET / HTTP/1.1\r\nHost: driver\r\nbad header line\r\n\r\n"), 400, "malformed"},
	} {
		ref := checkHead(tc.head, allowed)
		require.NotNil(t, ref, "%q", tc.head)
		require.Equal(t, tc.status, ref.status, "%q", tc.head)
		require.Contains(t, ref.reason, tc.reason, "%q", tc.head)
	}
}

// greeter is a cluster service that speaks first (as MySQL or SMTP do),
// then echoes lines; it records what it received.
type greeter struct {
	ln net.Listener
	wg sync.WaitGroup
	mu sync.Mutex
	in []string
}

func newGreeter(t *testing.T) *greeter {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	g := &greeter{ln: ln}
	g.wg.Add(1)
	go func() {
		defer g.wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			g.wg.Add(1)
			go func() {
				defer g.wg.Done()
				defer c.Close()
				fmt.Fprint(c, "220 ready\r\n")
				b, _ := io.ReadAll(c)
				g.mu.Lock()
				g.in = append(g.in, string(b))
				g.mu.Unlock()
				fmt.Fprintf(c, "got %q", b)
			}()
		}
	}()
	t.Cleanup(func() { _ = ln.Close(); g.wg.Wait() })
	return g
}

func (g *greeter) received() []string {
	g.mu.Lock()
	defer g.mu.Unlock()
	return append([]string(nil), g.in...)
}

// TestHostsModeRefusesForeignHostAndOrigin: a request a web page makes
// (foreign Host after DNS rebinding, foreign Origin) gets 403 and never
// reaches the Service; requests naming the Service by any of its names,
// other protocols, and clients that say nothing for a while are passed
// as they were.
func TestHostsModeRefusesForeignHostAndOrigin(t *testing.T) {
	e := newHostsEnv(t)
	gr := newGreeter(t)
	s := svc("hotrod", "driver", 8082)
	s.Ports = append(s.Ports, discovery.Port{Name: "http", Port: 8080, Protocol: "TCP"}, discovery.Port{Port: 3306, Protocol: "TCP"})
	e.cat.Apply(added(s))
	dial := func(ctx context.Context, target string) (net.Conn, error) {
		if strings.HasSuffix(target, ":3306") {
			var d net.Dialer
			return d.DialContext(ctx, "tcp", gr.ln.Addr().String())
		}
		return e.si.dial(ctx, target)
	}
	h, err := NewHosts(HostsOptions{Catalog: e.cat, Dial: dial, HostsFile: e.hosts, LockPath: e.lock,
		Range: netip.MustParsePrefix(randomRange(t)), Baggage: func() (string, string) { return "sbx-routing-key", "k1" }})
	require.NoError(t, err)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- h.Run(ctx) }()
	defer func() { cancel(); require.NoError(t, <-done) }()
	addr := listening(t, h, "hotrod/driver", 8082)
	httpAddr := listening(t, h, "hotrod/driver", 8080) // baggage injection on
	dbAddr := listening(t, h, "hotrod/driver", 3306)
	ip := netip.MustParseAddrPort(addr).Addr().String()

	// exchange sends b, half-closes and returns the whole answer.
	exchange := func(addr, b string) string {
		t.Helper()
		c, err := net.Dial("tcp", addr)
		require.NoError(t, err)
		defer c.Close()
		_ = c.SetDeadline(time.Now().Add(30 * time.Second))
		go func() {
			_, _ = io.WriteString(c, b)
			_ = c.(*net.TCPConn).CloseWrite()
		}()
		out, err := io.ReadAll(c)
		require.NoError(t, err)
		return string(out)
	}
	const echoed = "driver.hotrod.svc.cluster.local:8082|"
	get := func(lines ...string) string {
		return "GET /dispatch HTTP/1.1\r\n" + strings.Join(lines, "\r\n") + "\r\n\r\n"
	}

	for _, req := range []string{
		get("Host: attacker.example"),
		get("Host: attacker.example:8082"),
		get("Host: driver:8082", "Origin: http://attacker.example"),
		get("Host: driver.hotrod.svc.cluster.local", "Origin: http://attacker.example:8082"),
		get("Host: driver", "Origin: null"),
		"POST /orders HTTP/1.1\r\nHost: attacker.example\r\nContent-Length: 5\r\n\r\nhello",
		"GET http://attacker.example/ HTTP/1.1\r\nHost: driver\r\n\r\n",
		"GET /" + strings.Repeat("a", maxHead+10),                  // a long URL does not slip past
		"patch /orders HTTP/1.1\r\nHost: attacker.example\r\n\r\n", // nor a method fetch() lets a page pick
		strings.Repeat("X", 300) + " / HTTP/1.1\r\nHost: attacker.example\r\n\r\n",
	} {
		for _, a := range []string{addr, httpAddr} {
			out := exchange(a, req)
			resp, err := http.ReadResponse(bufio.NewReader(strings.NewReader(out)), nil)
			require.NoError(t, err, "%.60q: %q", req, out)
			require.Contains(t, []int{http.StatusForbidden, http.StatusRequestHeaderFieldsTooLarge}, resp.StatusCode, "%.60q", req)
			body, _ := io.ReadAll(resp.Body)
			require.Contains(t, string(body), "sbx: ")
			require.NotContains(t, out, echoed, "never reached the Service")
		}
	}

	// Every name the hosts block gives the Service, with and without the
	// port, and the address itself.
	for _, host := range []string{"driver", "driver.hotrod", "driver.hotrod.svc", "driver.hotrod.svc.cluster.local", ip} {
		for _, hp := range []string{host, host + ":8082"} {
			req := get("Host: "+hp, "Origin: http://"+hp)
			require.Equal(t, echoed+req, exchange(addr, req), hp)
		}
		resp := exchange(httpAddr, get("Host: "+host+":8080", "Connection: close"))
		require.True(t, strings.HasPrefix(resp, "driver.hotrod.svc.cluster.local:8080|GET /dispatch HTTP/1.1\r\nHost: "+host+":8080\r\n"), resp)
		require.Contains(t, resp, "Baggage: sbx-routing-key=k1", "injection still works after the check")
	}

	// Other protocols pass unchanged, whatever their first bytes.
	for _, b := range []string{
		"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00\x12\x04\x00\x00\x00\x00\x00",
		"\x16\x03\x01\x00\xa5\x01\x00\x00\xa1\x03\x03",
		"*1\r\n$4\r\nPING\r\n",
		"PING",
		"",
	} {
		require.Equal(t, echoed+b, exchange(addr, b), "%q", b)
	}

	// A server that speaks first is heard before the client says
	// anything, and a client that stays silent for a while is not cut
	// off; what it sends later is still checked.
	talk := func(send string) (greeting, rest string) {
		t.Helper()
		c, err := net.Dial("tcp", dbAddr)
		require.NoError(t, err)
		defer c.Close()
		_ = c.SetDeadline(time.Now().Add(30 * time.Second))
		br := bufio.NewReader(c)
		greeting, err = br.ReadString('\n')
		require.NoError(t, err)
		time.Sleep(300 * time.Millisecond) // a client that thinks
		_, err = io.WriteString(c, send)
		require.NoError(t, err)
		require.NoError(t, c.(*net.TCPConn).CloseWrite())
		b, err := io.ReadAll(br)
		require.NoError(t, err)
		return greeting, string(b)
	}
	greeting, rest := talk("\x0a\x00\x00\x01login")
	require.Equal(t, "220 ready\r\n", greeting)
	require.Equal(t, `got "\n\x00\x00\x01login"`, rest)
	greeting, rest = talk(get("Host: attacker.example")) // a browser's preconnected socket, used late
	require.Equal(t, "220 ready\r\n", greeting)
	require.True(t, strings.HasPrefix(rest, "HTTP/1.1 403 Forbidden\r\n"), rest)
	require.Eventually(t, func() bool { return len(gr.received()) == 2 }, 10*time.Second, 5*time.Millisecond)
	require.Equal(t, []string{"\x0a\x00\x00\x01login", ""}, gr.received(), "the refused request never reached the Service")
}

package relay

import (
	"bufio"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/sbx-dev/sbx/tunnel"
)

// laptopSession connects one tunnel session to h as the laptop would and
// hands each inbound stream to serve; the test's cleanup closes it.
func laptopSession(t *testing.T, h *harness, serve func(*tunnel.Stream)) *tunnel.Session {
	t.Helper()
	lap := newLaptop(t, "laptop-early")
	lap.handle = serve
	s, err := lap.dial(h, lap.hello())
	require.NoError(t, err)
	return s
}

// readRequestHead reads an HTTP request's head from st before the stream
// is accepted: it is there only if it came with the open.
func readRequestHead(st *tunnel.Stream) (string, error) {
	_ = st.SetReadDeadline(time.Now().Add(5 * time.Second))
	defer st.SetReadDeadline(time.Time{})
	var head strings.Builder
	br := bufio.NewReader(st)
	for {
		line, err := br.ReadString('\n')
		head.WriteString(line)
		if err != nil {
			return head.String(), err
		}
		if line == "\r\n" {
			return head.String(), nil
		}
	}
}

// respond answers the request on st with 200 and body, then ends.
func respond(st *tunnel.Stream, body string) {
	_, _ = io.WriteString(st, "HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: "+strconv.Itoa(len(body))+"\r\n\r\n"+body)
}

// TestInboundRequestTravelsWithTheOpen: a keyed HTTP request's bytes go to
// the laptop right behind the stream's header, before the laptop replies,
// so a new connection costs one round trip through the tunnel, not two.
func TestInboundRequestTravelsWithTheOpen(t *testing.T) {
	h := startRelay(t, "--inbound", "20001=route/8083/http")
	laptopSession(t, h, func(st *tunnel.Stream) {
		head, err := readRequestHead(st)
		if err != nil {
			_ = st.Reject(tunnel.ReasonRefused, "no request came with the open: "+err.Error())
			return
		}
		if st.Accept() != nil {
			return
		}
		respond(st, "saw before replying: "+strings.SplitN(head, "\r\n", 2)[0])
	})
	require.Eventually(t, func() bool { return h.metric("sbx_relay_sessions") == 1 }, 10*time.Second, 5*time.Millisecond)

	code, body := get(t, "http://"+h.inbound(20001)+"/dispatch?customer=123")
	require.Equal(t, http.StatusOK, code, body)
	require.Equal(t, "saw before replying: GET /dispatch?customer=123 HTTP/1.1", body)
}

// TestInboundEarlyRetriedOnAnotherSession: the session that carried a
// request's first bytes dies before the laptop replies; the relay opens
// the stream again on the other session with the same bytes, and the
// request is served whole.
func TestInboundEarlyRetriedOnAnotherSession(t *testing.T) {
	h := startRelay(t, "--inbound", "20001=route/8083/http")
	var mu sync.Mutex
	var dying *tunnel.Session
	var died bool
	serve := func(st *tunnel.Stream) {
		head, err := readRequestHead(st)
		if err != nil {
			return
		}
		mu.Lock()
		first := !died
		died = true
		s := dying
		mu.Unlock()
		if first {
			_ = s.Close() // the port-forward under this session is cut
			return
		}
		if st.Accept() != nil {
			return
		}
		respond(st, "served after a retry: "+strings.SplitN(head, "\r\n", 2)[0])
	}
	a := laptopSession(t, h, serve)
	laptopSession(t, h, serve)
	mu.Lock()
	dying = a
	mu.Unlock()
	require.Eventually(t, func() bool { return h.metric("sbx_relay_sessions") == 2 }, 10*time.Second, 5*time.Millisecond)

	code, body := get(t, "http://"+h.inbound(20001)+"/x")
	require.Equal(t, http.StatusOK, code, body)
	require.Equal(t, "served after a retry: GET /x HTTP/1.1", body)
}

// TestInboundServerSpeaksFirst: on a TCP port whose protocol has the
// server speak first, the client sends nothing; the stream opens without
// early data and the server's greeting reaches the client.
func TestInboundServerSpeaksFirst(t *testing.T) {
	h := startRelay(t, "--inbound", "20003=db/3306")
	greeter, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	defer greeter.Close()
	go func() {
		for {
			c, err := greeter.Accept()
			if err != nil {
				return
			}
			_, _ = io.WriteString(c, "220 hello first\n")
			_, _ = io.Copy(c, c)
			_ = c.Close()
		}
	}()
	lap := newLaptop(t, "laptop-1")
	lap.mapLocal("db", 3306, greeter.Addr().String())
	lap.connect(h, 1)

	c, err := net.Dial("tcp", h.inbound(20003))
	require.NoError(t, err)
	defer c.Close()
	require.NoError(t, c.SetReadDeadline(time.Now().Add(10*time.Second)))
	br := bufio.NewReader(c)
	line, err := br.ReadString('\n')
	require.NoError(t, err)
	require.Equal(t, "220 hello first\n", line)
	_, err = io.WriteString(c, "QUIT\n")
	require.NoError(t, err)
	line, err = br.ReadString('\n')
	require.NoError(t, err)
	require.Equal(t, "QUIT\n", line)
}

// TestInboundUnsafeRequestWaitsForTheReply: a POST is not safe to repeat,
// so none of it goes before the laptop's reply (a session lost in between
// would have the relay send it again, perhaps twice to the application);
// it follows the reply whole.
func TestInboundUnsafeRequestWaitsForTheReply(t *testing.T) {
	h := startRelay(t, "--inbound", "20001=route/8083/http")
	laptopSession(t, h, func(st *tunnel.Stream) {
		_ = st.SetReadDeadline(time.Now().Add(300 * time.Millisecond))
		n, err := st.Read(make([]byte, 1))
		_ = st.SetReadDeadline(time.Time{})
		if n > 0 || err == nil {
			_ = st.Reject(tunnel.ReasonRefused, "a POST's bytes came before the reply")
			return
		}
		if st.Accept() != nil {
			return
		}
		head, err := readRequestHead(st)
		if err != nil {
			return
		}
		respond(st, "after the reply: "+strings.SplitN(head, "\r\n", 2)[0])
	})
	require.Eventually(t, func() bool { return h.metric("sbx_relay_sessions") == 1 }, 10*time.Second, 5*time.Millisecond)

	c := &http.Client{Timeout: 20 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}
	resp, err := c.Post("http://"+h.inbound(20001)+"/orders", "text/plain", strings.NewReader("one order"))
	require.NoError(t, err)
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	require.Equal(t, http.StatusOK, resp.StatusCode, string(b))
	require.Equal(t, "after the reply: POST /orders HTTP/1.1", string(b))
}

func TestSafeToRepeat(t *testing.T) {
	for in, want := range map[string]bool{
		"GET / HTTP/1.1\r\n": true, "HEAD /x HTTP/1.1\r\n": true, "OPTIONS * HTTP/1.1\r\n": true, "TRACE / HTTP/1.1\r\n": true,
		"POST / HTTP/1.1\r\n": false, "PUT / HTTP/1.1\r\n": false, "DELETE / HTTP/1.1\r\n": false, "PATCH / HTTP/1.1\r\n": false,
		"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n": false, "GETX / HTTP/1.1\r\n": false, "get / HTTP/1.1\r\n": false, "": false,
	} {
		require.Equal(t, want, safeToRepeat([]byte(in)), "%q", in)
	}
}

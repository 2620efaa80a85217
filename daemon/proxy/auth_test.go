package proxy

import (
	"bufio"
	"context"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"net/url"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	xproxy "golang.org/x/net/proxy"
)

// TestSOCKS5NeedsTheCredential: a client without the credential (no
// method offered, wrong password, wrong user) is refused before any dial;
// one with it gets through.
func TestSOCKS5NeedsTheCredential(t *testing.T) {
	w := newWorld(t)
	s := startProxy(t, w, nil)
	addr := s.Addr().String()

	// dialRaw sends greeting (and auth, when given) and returns what the
	// proxy answered until it closed the connection.
	dialRaw := func(greeting, auth []byte) []byte {
		t.Helper()
		c, err := net.Dial("tcp", addr)
		require.NoError(t, err)
		defer c.Close()
		_ = c.SetDeadline(time.Now().Add(30 * time.Second))
		_, err = c.Write(greeting)
		require.NoError(t, err)
		if auth != nil {
			var m [2]byte
			_, err = io.ReadFull(c, m[:])
			require.NoError(t, err)
			require.Equal(t, []byte{5, socksUserPass}, m[:])
			_, err = c.Write(auth)
			require.NoError(t, err)
		}
		b, err := io.ReadAll(c)
		require.NoError(t, err, "answered, then closed")
		return b
	}
	require.Equal(t, []byte{5, socksNoMethod}, dialRaw([]byte{5, 1, socksNoAuth}, nil), "no authentication: no acceptable method")
	require.Equal(t, []byte{1, socksAuthFailed}, dialRaw([]byte{5, 2, socksNoAuth, socksUserPass}, socksAuth(Username, "wrong")))
	require.Equal(t, []byte{1, socksAuthFailed}, dialRaw([]byte{5, 1, socksUserPass}, socksAuth(Username, testPassword[:len(testPassword)-1])))
	require.Equal(t, []byte{1, socksAuthFailed}, dialRaw([]byte{5, 1, socksUserPass}, socksAuth("admin", testPassword)))
	require.Equal(t, []byte{1, socksAuthFailed}, dialRaw([]byte{5, 1, socksUserPass}, socksAuth("", "")))
	require.Empty(t, w.log(), "nothing was dialed for a client without the credential")

	// x/net's client: wrong password fails, the right one works.
	for _, tc := range []struct {
		auth *xproxy.Auth
		ok   bool
	}{
		{nil, false},
		{&xproxy.Auth{User: Username, Password: "nope"}, false},
		{&xproxy.Auth{User: Username, Password: testPassword}, true},
	} {
		d, err := xproxy.SOCKS5("tcp", addr, tc.auth, xproxy.Direct)
		require.NoError(t, err)
		conn, err := d.(xproxy.ContextDialer).DialContext(context.Background(), "tcp", "driver.hotrod:8082")
		if !tc.ok {
			require.Error(t, err, "%+v", tc.auth)
			continue
		}
		require.NoError(t, err)
		_ = conn.Close()
	}
	require.Equal(t, []string{"cluster:driver.hotrod.svc.cluster.local:8082"}, w.log())

	// Go's net/http with the credential in the socks5h URL.
	code, got := get(t, clientVia(t, s.URL("socks5h")), "http://driver.hotrod:8082/", nil)
	require.Equal(t, http.StatusOK, code)
	require.Equal(t, "cluster", got.Via)
}

// TestHTTPProxyNeedsTheCredential: CONNECT and absolute-URI requests
// without Proxy-Authorization, or with a wrong one, get 407 with a Basic
// challenge and dial nothing; with the right one they work, and the
// upstream never sees the header.
func TestHTTPProxyNeedsTheCredential(t *testing.T) {
	w := newWorld(t)
	s := startProxy(t, w, nil)
	addr := s.Addr().String()

	raw := func(request string) *http.Response {
		t.Helper()
		c, err := net.Dial("tcp", addr)
		require.NoError(t, err)
		t.Cleanup(func() { _ = c.Close() })
		_ = c.SetDeadline(time.Now().Add(30 * time.Second))
		_, err = io.WriteString(c, request)
		require.NoError(t, err)
		method, _, _ := strings.Cut(request, " ")
		resp, err := http.ReadResponse(bufio.NewReader(c), &http.Request{Method: method})
		require.NoError(t, err)
		return resp
	}
	for _, auth := range []string{
		"",
		basicAuth(Username, "wrong"),
		basicAuth("admin", testPassword),
		basicAuth(Username, testPassword+"x"),
		"Proxy-Authorization: Bearer " + testPassword + "\r\n",
		"Proxy-Authorization: Basic !!notbase64\r\n",
		"Authorization: Basic " + strings.TrimPrefix(goodAuth, "Proxy-Authorization: Basic "),
	} {
		for _, req := range []string{
			"CONNECT driver.hotrod:8082 HTTP/1.1\r\nHost: driver.hotrod:8082\r\n" + auth + "\r\n",
			"GET http://driver.hotrod:8082/x HTTP/1.1\r\nHost: driver.hotrod:8082\r\n" + auth + "\r\n",
			"GET http://example.invalid/x HTTP/1.1\r\nHost: example.invalid\r\n" + auth + "\r\n",
		} {
			resp := raw(req)
			require.Equal(t, http.StatusProxyAuthRequired, resp.StatusCode, "%q", req)
			require.Equal(t, `Basic realm="sbx"`, resp.Header.Get("Proxy-Authenticate"))
			b, _ := io.ReadAll(resp.Body)
			require.Contains(t, string(b), "sbx env")
		}
	}
	require.Empty(t, w.log(), "nothing was dialed for a client without the credential")

	resp := raw("CONNECT driver.hotrod:8082 HTTP/1.1\r\nHost: driver.hotrod:8082\r\n" + goodAuth + "\r\n")
	require.Equal(t, http.StatusOK, resp.StatusCode)
	resp = raw("GET http://driver.hotrod:8082/x HTTP/1.1\r\nHost: driver.hotrod:8082\r\nConnection: close\r\n" + goodAuth + "\r\n")
	require.Equal(t, http.StatusOK, resp.StatusCode)
	var got seen
	require.NoError(t, json.NewDecoder(resp.Body).Decode(&got))
	require.Equal(t, "cluster", got.Via)
	require.Empty(t, got.ProxyAuth, "the credential is not passed upstream")

	// Go's client: the password from the proxy URL, or a wrong one.
	code, got := get(t, clientVia(t, s.URL("http")), "http://driver.hotrod:8082/", nil)
	require.Equal(t, http.StatusOK, code)
	require.Empty(t, got.ProxyAuth)
	wrong := "http://sbx:nope@" + addr
	code, _ = get(t, clientVia(t, wrong), "http://driver.hotrod:8082/", nil)
	require.Equal(t, http.StatusProxyAuthRequired, code)
	noAuth := "http://" + addr
	code, _ = get(t, clientVia(t, noAuth), "http://driver.hotrod:8082/", nil)
	require.Equal(t, http.StatusProxyAuthRequired, code)
	// CONNECT (Go uses it for https): refused before any TLS.
	u, _ := url.Parse(noAuth)
	tr := &http.Transport{Proxy: http.ProxyURL(u)}
	defer tr.CloseIdleConnections()
	_, err := (&http.Client{Transport: tr, Timeout: 30 * time.Second}).Get("https://driver.hotrod:8082/")
	require.ErrorContains(t, err, "Proxy Authentication Required")
}

// TestCurlUsesTheCredential: curl takes the credential from the proxy
// URLs `sbx run` sets, for HTTP proxying and for SOCKS5.
func TestCurlUsesTheCredential(t *testing.T) {
	curl, err := exec.LookPath("curl")
	if err != nil {
		t.Skip("no curl on PATH")
	}
	w := newWorld(t)
	s := startProxy(t, w, nil)
	for _, tc := range []struct {
		proxy string
		code  string
	}{
		{s.URL("http"), "200"},
		{s.URL("socks5h"), "200"},
		{"http://" + s.Addr().String(), "407"},
		{"http://sbx:wrong@" + s.Addr().String(), "407"},
		{"socks5h://sbx:wrong@" + s.Addr().String(), "000"}, // curl: authentication failed
	} {
		cmd := exec.Command(curl, "-sS", "-o", "/dev/null", "-w", "%{http_code}", "--max-time", "20", "http://driver.hotrod:8082/")
		cmd.Env = []string{"http_proxy=" + tc.proxy, "ALL_PROXY=" + tc.proxy, "all_proxy=" + tc.proxy}
		out, _ := cmd.Output()
		require.Equal(t, tc.code, string(out), tc.proxy)
	}
}

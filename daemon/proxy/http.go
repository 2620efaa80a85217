package proxy

import (
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/http/httputil"
	"strings"

	"github.com/sbx-dev/sbx/tunnel"
)

// serveHTTP handles one proxy request: CONNECT opens a tunnel, an
// absolute-URI http:// request is forwarded (with baggage injected when
// configured), anything else is not a proxy request.
func (s *Server) serveHTTP(w http.ResponseWriter, r *http.Request) {
	isProxyRequest := r.Method == http.MethodConnect || r.URL.IsAbs()
	if isProxyRequest && !s.proxyAuthorized(r) {
		s.log.Debug("HTTP proxy client refused: no or wrong Proxy-Authorization", "from", r.RemoteAddr)
		w.Header().Set("Proxy-Authenticate", `Basic realm="sbx"`)
		http.Error(w, "sbx proxy: proxy authentication required: use the proxy URL `sbx env NAME` prints (http://sbx:PASSWORD@HOST:PORT), or start the process with `sbx run`", http.StatusProxyAuthRequired)
		return
	}
	switch {
	case r.Method == http.MethodConnect:
		s.serveConnect(w, r)
	case r.URL.IsAbs() && r.URL.Scheme == "http" && r.URL.Host != "":
		s.serveForward(w, r)
	case r.URL.IsAbs():
		http.Error(w, fmt.Sprintf("sbx proxy: scheme %q is not proxied this way; for https the client must use CONNECT", r.URL.Scheme), http.StatusBadRequest)
	default:
		http.Error(w, "this is the sbx outbound proxy: send proxy requests (absolute URI or CONNECT), e.g. HTTP_PROXY=http://"+r.Host, http.StatusBadRequest)
	}
}

func (s *Server) serveConnect(w http.ResponseWriter, r *http.Request) {
	host, port, err := net.SplitHostPort(r.Host)
	if err != nil || !validHost(host) {
		http.Error(w, fmt.Sprintf("sbx proxy: CONNECT needs host:port, got %q", r.Host), http.StatusBadRequest)
		return
	}
	hj, ok := w.(http.Hijacker)
	if !ok {
		http.Error(w, "sbx proxy: CONNECT not supported on this connection", http.StatusHTTPVersionNotSupported)
		return
	}
	remote, target, err := s.dial(r.Context(), r.RemoteAddr, host, port)
	if err != nil {
		s.log.Info("outbound proxy dial failed", "proto", "http-connect", "target", target, "err", err)
		http.Error(w, "sbx proxy: "+err.Error(), dialStatus(err))
		return
	}
	c, brw, err := hj.Hijack()
	if err != nil {
		_ = remote.Close()
		return
	}
	if !s.track() {
		_ = c.Close()
		_ = remote.Close()
		return
	}
	defer s.wg.Done()
	if _, err := c.Write([]byte("HTTP/1.1 200 Connection established\r\n\r\n")); err != nil {
		_ = c.Close()
		_ = remote.Close()
		return
	}
	// The client may have sent its first bytes (a TLS ClientHello) right
	// behind the request; they sit in the server's read buffer.
	client := net.Conn(c)
	if brw.Reader.Buffered() > 0 {
		client = &bufferedConn{Conn: c, r: brw.Reader}
	}
	s.pipe(client, remote, target)
}

func (s *Server) serveForward(w http.ResponseWriter, r *http.Request) {
	rp := &httputil.ReverseProxy{
		Rewrite: func(pr *httputil.ProxyRequest) {
			pr.Out.URL = pr.In.URL
			pr.Out.Host = pr.In.Host
			// A proxy request carries the absolute URI; the upstream gets
			// origin form, which Transport writes from URL.
			pr.Out.RequestURI = ""
			// The credential is the proxy's, never the upstream's (the
			// reverse proxy drops it as a hop-by-hop header too).
			pr.Out.Header.Del("Proxy-Authorization")
			if s.opts.Baggage != nil {
				if k, v := s.opts.Baggage(); InjectBaggage(pr.Out.Header, k, v) {
					s.log.Debug("added the routing key to a proxied request", "url", pr.Out.URL.Redacted())
				}
			}
		},
		Transport:     s.transport,
		FlushInterval: -1, // stream responses (SSE, long polls) as they come
		ErrorLog:      s.httpSrv.ErrorLog,
		ErrorHandler: func(w http.ResponseWriter, r *http.Request, err error) {
			s.log.Info("outbound proxy request failed", "proto", "http", "url", r.URL.Redacted(), "err", err)
			http.Error(w, "sbx proxy: "+err.Error(), dialStatus(err))
		},
	}
	rp.ServeHTTP(w, r)
}

// proxyAuthorized checks a request's Proxy-Authorization: Basic.
func (s *Server) proxyAuthorized(r *http.Request) bool {
	scheme, cred, ok := strings.Cut(r.Header.Get("Proxy-Authorization"), " ")
	if !ok || !strings.EqualFold(scheme, "Basic") {
		return false
	}
	b, err := base64.StdEncoding.DecodeString(strings.TrimSpace(cred))
	if err != nil {
		return false
	}
	user, password, ok := strings.Cut(string(b), ":")
	return ok && s.authorized(user, password)
}

// dialForHTTP is the Transport's dialer: the same routing as CONNECT.
func (s *Server) dialForHTTP(ctx context.Context, network, addr string) (net.Conn, error) {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return nil, err
	}
	// A pooled upstream connection serves many clients: no single Source.
	c, _, err := s.dial(ctx, "", host, port)
	return c, err
}

// dialStatus is the HTTP status for a failed dial: 504 for timeouts, 502
// otherwise (nothing listening, no such host, refused by the relay).
func dialStatus(err error) int {
	if errors.Is(err, context.DeadlineExceeded) || tunnel.ReasonOf(err) == tunnel.ReasonTimeout {
		return http.StatusGatewayTimeout
	}
	return http.StatusBadGateway
}

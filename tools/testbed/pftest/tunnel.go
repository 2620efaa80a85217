package pftest

import (
	"bufio"
	"errors"
	"net"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"

	gwebsocket "github.com/gorilla/websocket"
	"k8s.io/apimachinery/pkg/util/httpstream"
	"k8s.io/client-go/tools/portforward"
	criportforward "k8s.io/cri-streaming/pkg/streaming/portforward"
)

// trackingWriter records the connection the kubelet handler hijacks so that
// CutAll and Close can reach it.
type trackingWriter struct {
	http.ResponseWriter
	srv      *Server
	protocol *atomic.Int64 // per-protocol counter, bumped on upgrade
}

func (w *trackingWriter) Hijack() (net.Conn, *bufio.ReadWriter, error) {
	conn, rw, err := http.NewResponseController(w.ResponseWriter).Hijack()
	if err != nil {
		return nil, nil, err
	}
	tc := w.srv.trackUpgraded(conn)
	if w.protocol != nil {
		w.protocol.Add(1)
	}
	// Reads must drain what the server already buffered; writes go straight
	// to the connection.
	rw = bufio.NewReadWriter(rw.Reader, bufio.NewWriter(tc))
	return tc, rw, nil
}

// trackedConn is an upgraded API-side connection; Close unregisters it.
type trackedConn struct {
	net.Conn
	srv  *Server
	once sync.Once
}

func (c *trackedConn) Close() error {
	err := c.Conn.Close()
	c.once.Do(func() {
		c.srv.mu.Lock()
		delete(c.srv.upgraded, c)
		c.srv.mu.Unlock()
		c.srv.stats.activeConns.Add(-1)
	})
	return err
}

func (s *Server) trackUpgraded(conn net.Conn) *trackedConn {
	tc := &trackedConn{Conn: conn, srv: s}
	s.mu.Lock()
	s.upgraded[tc] = struct{}{}
	s.mu.Unlock()
	s.stats.connections.Add(1)
	s.stats.activeConns.Add(1)
	return tc
}

// serveTunnel does what the API server's stream tunnel does for a client
// asking for "SPDY/3.1+portforward.k8s.io": it hands the kubelet handler a
// SPDY upgrade request and, when the handler answers 101, upgrades the
// client's request to a WebSocket and gives the handler that WebSocket
// (carrying SPDY frames as binary messages) as the hijacked connection.
func (s *Server) serveTunnel(w *trackingWriter, r *http.Request, fwd *forwarder, pod string) {
	var protocols []string
	for _, p := range gwebsocket.Subprotocols(r) {
		if inner, ok := strings.CutPrefix(p, criportforward.WebsocketsSPDYTunnelingPrefix); ok {
			protocols = append(protocols, inner)
		}
	}
	spdyReq := r.Clone(r.Context())
	spdyReq.Method = http.MethodPost
	for _, h := range []string{"Upgrade", "Connection", "Sec-Websocket-Key", "Sec-Websocket-Version",
		"Sec-Websocket-Extensions", "Sec-Websocket-Protocol"} {
		spdyReq.Header.Del(h)
	}
	spdyReq.Header.Set(httpstream.HeaderConnection, httpstream.HeaderUpgrade)
	spdyReq.Header.Set(httpstream.HeaderUpgrade, "SPDY/3.1")
	spdyReq.Header[httpstream.HeaderProtocolVersion] = protocols

	tw := &tunnelWriter{
		client: w,
		req:    r,
		header: http.Header{},
		upgrader: gwebsocket.Upgrader{
			Subprotocols:    []string{criportforward.WebsocketsSPDYTunnelingPortForwardV1},
			ReadBufferSize:  32 * 1024,
			WriteBufferSize: 32 * 1024,
			CheckOrigin:     func(*http.Request) bool { return true }, // loopback test server
		},
	}
	s.serve(tw, spdyReq, fwd, pod, nil)
}

// tunnelWriter is the ResponseWriter the kubelet handler sees in a tunnelled
// request: non-101 answers go to the client unchanged; a 101 turns the
// client's request into a WebSocket.
type tunnelWriter struct {
	client   *trackingWriter
	req      *http.Request
	header   http.Header
	upgrader gwebsocket.Upgrader
	wrote    bool
	conn     net.Conn
}

func (t *tunnelWriter) Header() http.Header { return t.header }

func (t *tunnelWriter) WriteHeader(code int) {
	if t.wrote {
		return
	}
	t.wrote = true
	if code != http.StatusSwitchingProtocols {
		for k, v := range t.header {
			t.client.Header()[k] = v
		}
		t.client.WriteHeader(code)
		return
	}
	// Upgrade answers the client itself on failure.
	ws, err := t.upgrader.Upgrade(t.client, t.req, nil)
	if err != nil {
		return
	}
	t.conn = portforward.NewTunnelingConnection("pftest", ws)
}

func (t *tunnelWriter) Write(p []byte) (int, error) {
	if !t.wrote {
		t.WriteHeader(http.StatusOK)
	}
	if t.conn != nil {
		return 0, errors.New("pftest: write to an upgraded response")
	}
	return t.client.Write(p)
}

func (t *tunnelWriter) Hijack() (net.Conn, *bufio.ReadWriter, error) {
	if t.conn == nil {
		return nil, nil, errors.New("pftest: WebSocket upgrade failed")
	}
	return t.conn, bufio.NewReadWriter(bufio.NewReader(t.conn), bufio.NewWriter(t.conn)), nil
}

package tunnel

import (
	"context"
	"errors"
	"io"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

const testToken = "s3cr3t-t0ken-value-never-printed"

// transport names a way to connect the two ends of a session.
type transport string

const (
	transportPipe  transport = "pipe"
	transportTCP   transport = "tcp"
	transportProxy transport = "proxy"
)

var transports = []transport{transportPipe, transportTCP, transportProxy}

// roles names which end takes which yamux role.
type roles struct {
	name   string
	client MuxRole
	server MuxRole
}

var roleSets = []roles{
	{"auto", MuxRoleAuto, MuxRoleAuto},
	{"swapped", MuxRoleServer, MuxRoleClient},
}

// forEachMatrix runs fn for every transport × role combination.
func forEachMatrix(t *testing.T, fn func(t *testing.T, tr transport, r roles)) {
	for _, tr := range transports {
		for _, r := range roleSets {
			t.Run(string(tr)+"/"+r.name, func(t *testing.T) {
				fn(t, tr, r)
			})
		}
	}
}

func testConfig() Config {
	c := DefaultConfig()
	c.KeepAliveInterval = 200 * time.Millisecond
	c.DeadPeerTimeout = 5 * time.Second
	c.HandshakeTimeout = 10 * time.Second
	return c
}

// connPair returns two connected conns over tr and the proxy (if any).
func connPair(t *testing.T, tr transport) (net.Conn, net.Conn, *proxy) {
	t.Helper()
	switch tr {
	case transportPipe:
		a, b := net.Pipe()
		return a, b, nil
	case transportTCP:
		a, b := tcpPair(t, nil)
		return a, b, nil
	case transportProxy:
		var p *proxy
		a, b := tcpPair(t, func(target string) string {
			p = newProxy(t, target)
			return p.addr()
		})
		return a, b, p
	}
	t.Fatalf("unknown transport %q", tr)
	return nil, nil, nil
}

// tcpPair connects over loopback; if via is set the dialer goes to the
// address it returns for the listener's (a proxy forwarding there).
func tcpPair(t *testing.T, via func(target string) string) (net.Conn, net.Conn) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	defer ln.Close()
	addr := ln.Addr().String()
	if via != nil {
		addr = via(addr)
	}
	type res struct {
		c   net.Conn
		err error
	}
	ch := make(chan res, 1)
	go func() {
		c, err := ln.Accept()
		ch <- res{c, err}
	}()
	a, err := net.Dial("tcp", addr)
	require.NoError(t, err)
	r := <-ch
	require.NoError(t, r.err)
	return a, r.c
}

// proxy forwards loopback TCP connections and can stall or cut them.
type proxy struct {
	target string
	ln     net.Listener
	mu     sync.Mutex
	conns  []net.Conn
	stall  chan struct{} // closed = flowing; replaced to stall
	wg     sync.WaitGroup
	closed bool
}

func newProxy(t *testing.T, target string) *proxy {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	p := &proxy{target: target, ln: ln, stall: make(chan struct{})}
	close(p.stall)
	p.wg.Add(1)
	go p.serve()
	t.Cleanup(p.close)
	return p
}

func (p *proxy) addr() string { return p.ln.Addr().String() }

func (p *proxy) serve() {
	defer p.wg.Done()
	for {
		c, err := p.ln.Accept()
		if err != nil {
			return
		}
		up, err := net.Dial("tcp", p.target)
		if err != nil {
			c.Close()
			continue
		}
		p.mu.Lock()
		p.conns = append(p.conns, c, up)
		p.mu.Unlock()
		p.wg.Add(2)
		go p.copy(up, c)
		go p.copy(c, up)
	}
}

func (p *proxy) copy(dst, src net.Conn) {
	defer p.wg.Done()
	buf := make([]byte, 64<<10)
	for {
		n, err := src.Read(buf)
		if n > 0 {
			p.mu.Lock()
			gate := p.stall
			p.mu.Unlock()
			<-gate
			if _, werr := dst.Write(buf[:n]); werr != nil {
				return
			}
		}
		if err != nil {
			if tc, ok := dst.(*net.TCPConn); ok && errors.Is(err, io.EOF) {
				_ = tc.CloseWrite()
			}
			return
		}
	}
}

// Stall stops forwarding (bytes are read but held) until Resume or cut.
func (p *proxy) Stall() {
	p.mu.Lock()
	p.stall = make(chan struct{})
	p.mu.Unlock()
}

// Resume restarts forwarding.
func (p *proxy) Resume() {
	p.mu.Lock()
	select {
	case <-p.stall:
	default:
		close(p.stall)
	}
	p.mu.Unlock()
}

// Cut closes every forwarded connection abruptly.
func (p *proxy) Cut() {
	p.mu.Lock()
	for _, c := range p.conns {
		if tc, ok := c.(*net.TCPConn); ok {
			_ = tc.SetLinger(0)
		}
		_ = c.Close()
	}
	p.conns = nil
	p.mu.Unlock()
	p.Resume()
}

func (p *proxy) close() {
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		return
	}
	p.closed = true
	p.mu.Unlock()
	_ = p.ln.Close()
	p.Cut()
	p.wg.Wait()
}

// acceptAll is a check that accepts every Hello with the test token.
func acceptAll(h Hello) (Welcome, error) {
	if !TokenEqual(h.Token, testToken) {
		return Welcome{}, &HandshakeError{Code: CodeBadToken, Message: "the token does not match this sandbox's"}
	}
	return Welcome{RelayVersion: "test", Capabilities: []string{"inbound", "outbound"}}, nil
}

func testHello() Hello {
	return Hello{Token: testToken, ClientID: "client-1", Sandbox: "alice", User: "alice@laptop"}
}

// sessionPair holds both ends of an established session.
type sessionPair struct {
	client, server *Session
	proxy          *proxy
}

// newSessionPair connects and handshakes over tr with roles r. Both
// sessions are closed at cleanup.
func newSessionPair(t *testing.T, tr transport, r roles, mod func(*Config)) sessionPair {
	t.Helper()
	a, b, p := connPair(t, tr)
	ccfg, scfg := testConfig(), testConfig()
	ccfg.MuxRole, scfg.MuxRole = r.client, r.server
	if mod != nil {
		mod(&ccfg)
		mod(&scfg)
	}
	sp := pairOver(t, a, b, ccfg, scfg)
	sp.proxy = p
	return sp
}

// pairOver handshakes a session pair over a (the client's end) and b.
// Both sessions are closed at cleanup.
func pairOver(t *testing.T, a, b net.Conn, ccfg, scfg Config) sessionPair {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	type res struct {
		s   *Session
		err error
	}
	ch := make(chan res, 1)
	go func() {
		s, _, err := Server(ctx, b, scfg, acceptAll)
		ch <- res{s, err}
	}()
	c, w, err := Client(ctx, a, ccfg, testHello())
	sr := <-ch
	require.NoError(t, err)
	require.NoError(t, sr.err)
	require.Equal(t, "test", w.RelayVersion)
	t.Cleanup(func() {
		_ = c.Close()
		_ = sr.s.Close()
	})
	return sessionPair{client: c, server: sr.s}
}

// echoServer accepts streams on s and echoes each until EOF, then
// half-closes. It returns a wait function.
func echoServer(t *testing.T, s *Session) func() {
	return serveStreams(t, s, func(st *Stream) {
		buf := make([]byte, 64<<10)
		if _, err := io.CopyBuffer(st, struct{ io.Reader }{st}, buf); err != nil {
			return
		}
		_ = st.CloseWrite()
		// Wait for the opener to close so the FIN/close order is
		// deterministic.
		_, _ = io.Copy(io.Discard, st)
	})
}

// serveStreams accepts streams on s until stopped, accepts each and runs
// handle on it, then closes it. It returns a stop function, also run at
// cleanup, that waits for every handler.
func serveStreams(t *testing.T, s *Session, handle func(*Stream)) func() {
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			st, err := s.Accept(ctx)
			if err != nil {
				return
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				defer st.Close()
				if err := st.Accept(); err != nil {
					return
				}
				handle(st)
			}()
		}
	}()
	stop := func() {
		cancel()
		wg.Wait()
	}
	t.Cleanup(stop)
	return stop
}

// Package proxy is outbound proxy mode: one loopback port that speaks both
// SOCKS5 (CONNECT, remote name resolution) and HTTP proxying (CONNECT
// tunnels and absolute-URI requests). Cluster names go through the
// cluster Dialer (the tunnel); anything else is dialed directly, so a
// process can use the proxy for all its traffic. It needs no privileges,
// which is why outbound.mode auto falls back to it.
//
// Every client authenticates with the daemon's credential (user Username,
// password Options.Password): SOCKS5 username/password, or HTTP
// Proxy-Authorization: Basic. A loopback port is open to every local
// user, and a proxy that dials anything is an open relay into the
// developer's tunnel and network; the credential sits in the user's own
// state directory and reaches processes through `sbx run` and `sbx env`.
// Web pages cannot use the proxy: browsers never send a proxy credential
// to an origin server, and scripts cannot set Proxy-Authorization. On
// Linux, connections from other users' processes are also closed on
// accept (peeruid.Guard), credential or not.
package proxy

import (
	"bufio"
	"context"
	"crypto/subtle"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"strconv"
	"sync"
	"time"

	"github.com/sbx-dev/sbx/daemon/peeruid"
	"github.com/sbx-dev/sbx/tunnel"
)

// Dialer opens a TCP connection to "host:port".
type Dialer func(ctx context.Context, target string) (net.Conn, error)

// Defaults.
const (
	DefaultDialTimeout = 30 * time.Second
	// handshakeTimeout bounds the SOCKS5 negotiation and the wait for the
	// first byte: a client that connects and says nothing is dropped.
	handshakeTimeout = 30 * time.Second
)

// Options configure a Server.
type Options struct {
	// Listen is the loopback host:port to serve on (config
	// outbound.proxyListen); port 0 picks one. Non-loopback addresses are
	// refused: the proxy reaches into the cluster and the laptop's own
	// network.
	Listen string
	// Password is the credential clients must present (with user name
	// Username). Required: the proxy is never open.
	Password string
	// Lookup maps a host name to the cluster name the relay should dial
	// (outbound.Catalog.Lookup); ok false means "not a cluster name".
	// Required.
	Lookup func(host string) (target string, ok bool)
	// Cluster dials cluster targets (the tunnel). Required.
	Cluster Dialer
	// Direct dials everything else; nil uses net.Dialer.
	Direct Dialer
	// Baggage returns the baggage key and the routing key to add to plain
	// HTTP requests that carry none; nil (or an empty value) disables
	// injection (config outbound.injectBaggage). Called per request, so
	// a new routing key applies at once.
	Baggage     func() (key, value string)
	DialTimeout time.Duration
	Logger      *slog.Logger
}

// Server is the proxy. New starts listening; Run serves.
type Server struct {
	opts  Options
	log   *slog.Logger
	ln    net.Listener
	peers *peeruid.Guard

	httpLn    *connListener
	httpSrv   *http.Server
	transport *http.Transport

	connCtx    context.Context
	cancelConn context.CancelFunc

	mu      sync.Mutex
	closing bool
	running bool
	wg      sync.WaitGroup // everything but the http.Server's own goroutines
}

// New checks opts and listens.
func New(opts Options) (*Server, error) {
	if opts.Lookup == nil || opts.Cluster == nil {
		return nil, errors.New("proxy: Options.Lookup and Options.Cluster are required")
	}
	if opts.Password == "" {
		return nil, errors.New("proxy: Options.Password is required (the proxy is never open)")
	}
	if opts.Direct == nil {
		var d net.Dialer
		opts.Direct = func(ctx context.Context, target string) (net.Conn, error) {
			return d.DialContext(ctx, "tcp", target)
		}
	}
	if opts.DialTimeout <= 0 {
		opts.DialTimeout = DefaultDialTimeout
	}
	log := opts.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	if opts.Listen == "" {
		opts.Listen = "127.0.0.1:0"
	}
	if err := checkLoopback(opts.Listen); err != nil {
		return nil, err
	}
	ln, err := net.Listen("tcp", opts.Listen)
	if err != nil {
		return nil, fmt.Errorf("outbound proxy: listening on %s: %w (change outbound.proxyListen in the sbx config, or use port 0)", opts.Listen, err)
	}
	s := &Server{opts: opts, log: log, ln: ln, peers: peeruid.NewGuard("outbound proxy "+ln.Addr().String(), log)}
	s.connCtx, s.cancelConn = context.WithCancel(context.Background())
	s.httpLn = newConnListener(ln.Addr())
	s.transport = &http.Transport{
		Proxy:       nil, // never chain to the environment's proxy
		DialContext: s.dialForHTTP,
		// Pass the client's Accept-Encoding and body through untouched.
		DisableCompression:    true,
		MaxIdleConnsPerHost:   8,
		IdleConnTimeout:       90 * time.Second,
		ResponseHeaderTimeout: 0, // a handler paused in a debugger may take long
	}
	s.httpSrv = &http.Server{
		Handler:           http.HandlerFunc(s.serveHTTP),
		ReadHeaderTimeout: handshakeTimeout,
		ErrorLog:          slog.NewLogLogger(log.Handler(), slog.LevelDebug),
		BaseContext:       func(net.Listener) context.Context { return s.connCtx },
	}
	return s, nil
}

func checkLoopback(addr string) error {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return fmt.Errorf("outbound proxy address %q: %w", addr, err)
	}
	if host == "localhost" {
		return nil
	}
	ip, err := netip.ParseAddr(host)
	if err != nil || !ip.IsLoopback() {
		return fmt.Errorf("outbound proxy address %q is not a loopback address; use 127.0.0.1:PORT", addr)
	}
	return nil
}

// Addr is the address the proxy listens on.
func (s *Server) Addr() net.Addr { return s.ln.Addr() }

// URL is the proxy's address with its credential, as an environment
// variable value for the given scheme ("http" for HTTP_PROXY, "socks5h"
// for ALL_PROXY).
func (s *Server) URL(scheme string) string {
	u := url.URL{Scheme: scheme, User: url.UserPassword(Username, s.opts.Password), Host: s.ln.Addr().String()}
	return u.String()
}

// authorized compares a client's credential with the proxy's in constant
// time (for credentials of the right length; the length is no secret).
func (s *Server) authorized(user, password string) bool {
	u := subtle.ConstantTimeCompare([]byte(user), []byte(Username))
	p := subtle.ConstantTimeCompare([]byte(password), []byte(s.opts.Password))
	return u&p == 1
}

// Run serves until ctx ends, then closes the listener and every proxied
// connection and waits for them. Call it once.
func (s *Server) Run(ctx context.Context) error {
	s.mu.Lock()
	if s.running || s.closing {
		s.mu.Unlock()
		return errors.New("proxy: Run called twice or after Close")
	}
	s.running = true
	s.wg.Add(2)
	s.mu.Unlock()
	go func() {
		defer s.wg.Done()
		_ = s.httpSrv.Serve(s.httpLn)
	}()
	go func() {
		defer s.wg.Done()
		s.acceptLoop()
	}()
	<-ctx.Done()
	return s.Close()
}

// Close stops serving and ends every proxied connection. Idempotent.
func (s *Server) Close() error {
	s.mu.Lock()
	if s.closing {
		s.mu.Unlock()
		return nil
	}
	s.closing = true
	s.mu.Unlock()
	err := s.ln.Close()
	s.cancelConn()
	// Shutdown closes idle HTTP connections and waits for active requests,
	// whose contexts were just cancelled; Close cuts what is left.
	sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	if serr := s.httpSrv.Shutdown(sctx); serr != nil {
		_ = s.httpSrv.Close()
	}
	cancel()
	s.httpLn.Close()
	s.wg.Wait()
	s.transport.CloseIdleConnections()
	if errors.Is(err, net.ErrClosed) {
		err = nil
	}
	return err
}

// track registers a goroutine unless the server is closing.
func (s *Server) track() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closing {
		return false
	}
	s.wg.Add(1)
	return true
}

func (s *Server) acceptLoop() {
	for {
		c, err := s.ln.Accept()
		if err != nil {
			if !errors.Is(err, net.ErrClosed) {
				s.log.Warn("outbound proxy stopped accepting", "addr", s.ln.Addr(), "err", err)
			}
			return
		}
		if !s.track() {
			_ = c.Close()
			return
		}
		go func() {
			defer s.wg.Done()
			// Another user's process is refused before it says anything,
			// even with the credential: the port is this user's.
			if !s.peers.Allow(c) {
				_ = c.Close()
				return
			}
			s.sniff(c)
		}()
	}
}

// sniff tells SOCKS5 (first byte 5) from HTTP (a method name) and hands
// the connection on.
func (s *Server) sniff(c net.Conn) {
	stop := context.AfterFunc(s.connCtx, func() { _ = c.Close() })
	defer stop()
	_ = c.SetReadDeadline(time.Now().Add(handshakeTimeout))
	br := bufio.NewReader(c)
	first, err := br.Peek(1)
	if err != nil {
		_ = c.Close()
		return
	}
	bc := &bufferedConn{Conn: c, r: br}
	if first[0] == socksVersion {
		s.serveSOCKS(bc, br)
		return
	}
	_ = c.SetReadDeadline(time.Time{})
	if !s.httpLn.deliver(bc) {
		_ = c.Close()
	}
}

func (s *Server) serveSOCKS(c *bufferedConn, br *bufio.Reader) {
	if err := socksHandshake(br, c); err != nil {
		s.log.Debug("SOCKS5 handshake failed", "from", c.RemoteAddr(), "err", err)
		_ = c.Close()
		return
	}
	user, password, err := readSocksAuth(br)
	if err != nil {
		s.log.Debug("SOCKS5 authentication failed", "from", c.RemoteAddr(), "err", err)
		_ = c.Close()
		return
	}
	if !s.authorized(user, password) {
		// RFC 1929: a failure status, then the connection is closed.
		_ = writeSocksAuthReply(c, false)
		_ = c.Close()
		s.log.Debug("SOCKS5 client refused: wrong user name or password", "from", c.RemoteAddr())
		return
	}
	if err := writeSocksAuthReply(c, true); err != nil {
		_ = c.Close()
		return
	}
	req, err := readSocksRequest(br)
	if err != nil {
		var se *socksError
		if errors.As(err, &se) {
			_ = writeSocksReply(c, se.code)
			s.log.Info("SOCKS5 request refused", "from", c.RemoteAddr(), "err", err)
		}
		_ = c.Close()
		return
	}
	_ = c.SetReadDeadline(time.Time{})
	remote, target, err := s.dial(s.connCtx, c.RemoteAddr().String(), req.host, strconv.Itoa(int(req.port)))
	if err != nil {
		_ = writeSocksReply(c, socksCode(err))
		_ = c.Close()
		s.log.Info("outbound proxy dial failed", "proto", "socks5", "target", target, "err", err)
		return
	}
	if err := writeSocksReply(c, repSuccess); err != nil {
		_ = c.Close()
		_ = remote.Close()
		return
	}
	s.pipe(c, remote, target)
}

// dial routes host:port: cluster names through the Cluster dialer with
// the name the relay should dial, others directly. target is what was
// dialed, for messages.
func (s *Server) dial(ctx context.Context, source, host, port string) (conn net.Conn, target string, err error) {
	if source != "" {
		ctx = WithSource(ctx, source)
	}
	ctx, cancel := context.WithTimeout(ctx, s.opts.DialTimeout)
	defer cancel()
	if name, ok := s.opts.Lookup(host); ok {
		target = net.JoinHostPort(name, port)
		conn, err = s.opts.Cluster(ctx, target)
		if err != nil {
			err = fmt.Errorf("dialing %s through the sandbox tunnel: %w", target, err)
		}
		return conn, target, err
	}
	target = net.JoinHostPort(host, port)
	conn, err = s.opts.Direct(ctx, target)
	return conn, target, err
}

func (s *Server) pipe(client, remote net.Conn, target string) {
	if err := tunnel.Pipe(s.connCtx, client, remote); err != nil && s.connCtx.Err() == nil {
		s.log.Debug("proxied connection ended with an error", "target", target, "err", err)
	}
}

type sourceKey struct{}

// WithSource records the local client's address for a Dialer (the daemon
// puts it in the tunnel header's Source, which the relay logs).
func WithSource(ctx context.Context, addr string) context.Context {
	return context.WithValue(ctx, sourceKey{}, addr)
}

// SourceFromContext returns the address WithSource recorded, or "".
func SourceFromContext(ctx context.Context) string {
	s, _ := ctx.Value(sourceKey{}).(string)
	return s
}

// bufferedConn is a conn whose first bytes were read into r; it keeps
// CloseWrite so half-close still works.
type bufferedConn struct {
	net.Conn
	r io.Reader
}

func (c *bufferedConn) Read(p []byte) (int, error) { return c.r.Read(p) }

// CloseWrite half-closes the underlying conn (or closes it when it cannot).
func (c *bufferedConn) CloseWrite() error {
	if cw, ok := c.Conn.(interface{ CloseWrite() error }); ok {
		return cw.CloseWrite()
	}
	return c.Conn.Close()
}

// connListener hands sniffed HTTP connections to the http.Server.
type connListener struct {
	addr   net.Addr
	ch     chan net.Conn
	done   chan struct{}
	closed sync.Once
}

func newConnListener(addr net.Addr) *connListener {
	return &connListener{addr: addr, ch: make(chan net.Conn), done: make(chan struct{})}
}

func (l *connListener) deliver(c net.Conn) bool {
	select {
	case l.ch <- c:
		return true
	case <-l.done:
		return false
	}
}

func (l *connListener) Accept() (net.Conn, error) {
	select {
	case c := <-l.ch:
		return c, nil
	case <-l.done:
		return nil, net.ErrClosed
	}
}

func (l *connListener) Close() error {
	l.closed.Do(func() { close(l.done) })
	return nil
}

func (l *connListener) Addr() net.Addr { return l.addr }

// Username is the user name of the proxy's credential; the password is
// the secret (Options.Password).
const Username = "sbx"

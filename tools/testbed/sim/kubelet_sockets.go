package sim

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strconv"
	"sync"
)

// listen binds a free loopback port for a socket the relay asks for and
// records it as the pod's socket on the requested port.
func (p *relayPod) listen(network, addr string) (net.Listener, error) {
	host, portStr, err := net.SplitHostPort(addr)
	if err != nil {
		return nil, err
	}
	port, err := strconv.ParseUint(portStr, 10, 16)
	if err != nil || port == 0 {
		return nil, fmt.Errorf("listen %s: the simulator needs a fixed port", addr)
	}
	local := false
	switch host {
	case "", "0.0.0.0", "::":
	case p.ip.String():
	default:
		ip, err := netip.ParseAddr(host)
		if host == "localhost" || err == nil && ip.IsLoopback() {
			local = true
		} else {
			return nil, &net.OpError{Op: "listen", Net: network, Err: errors.New("cannot assign requested address")}
		}
	}
	if _, err := p.c.net.PodPortAddr(p.ns, p.name, int32(port)); err == nil {
		return nil, &net.OpError{Op: "listen", Net: network, Err: errors.New("address already in use")}
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	pl := &podListener{Listener: ln, pod: p, port: int32(port)}
	p.mu.Lock()
	if p.sockets == nil {
		p.mu.Unlock()
		ln.Close()
		return nil, errors.New("container is not running")
	}
	p.sockets[pl] = true
	p.mu.Unlock()
	if err := p.c.net.BindPodPort(p.ns, p.name, int32(port), ln.Addr().String(), local); err != nil {
		ln.Close()
		return nil, err
	}
	return pl, nil
}

// closeSockets closes every listener of the current run and every
// connection accepted on them.
func (p *relayPod) closeSockets() {
	p.mu.Lock()
	socks := p.sockets
	out := p.outbound
	p.sockets = nil
	p.outbound = nil
	p.mu.Unlock()
	for pl := range socks {
		pl.closeAll()
	}
	if out != nil {
		out.closeAll()
	}
}

// podListener is a relay socket: closing it unbinds the pod port; a crash
// closes the connections it accepted too.
type podListener struct {
	net.Listener
	pod   *relayPod
	port  int32
	conns connSet
	once  sync.Once
}

func (l *podListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	return l.conns.add(c)
}

func (l *podListener) Close() error {
	l.once.Do(func() { l.pod.c.net.UnbindPodPort(l.pod.ns, l.pod.name, l.port) })
	return l.Listener.Close()
}

func (l *podListener) closeAll() {
	_ = l.Close()
	l.conns.closeAll()
}

// connSet tracks open connections so that a crash can close them all.
type connSet struct {
	mu     sync.Mutex
	conns  map[net.Conn]bool
	closed bool
}

func (s *connSet) add(c net.Conn) (net.Conn, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		c.Close()
		return nil, net.ErrClosed
	}
	if s.conns == nil {
		s.conns = map[net.Conn]bool{}
	}
	tc := &trackedConn{Conn: c, set: s}
	s.conns[tc] = true
	return tc, nil
}

func (s *connSet) closeAll() {
	s.mu.Lock()
	s.closed = true
	conns := s.conns
	s.conns = nil
	s.mu.Unlock()
	for c := range conns {
		c.Close()
	}
}

// trackedConn removes itself from its set when closed.
type trackedConn struct {
	net.Conn
	set  *connSet
	once sync.Once
}

func (c *trackedConn) Close() error {
	c.once.Do(func() {
		c.set.mu.Lock()
		delete(c.set.conns, c)
		c.set.mu.Unlock()
	})
	return c.Conn.Close()
}

// CloseWrite half-closes the TCP connection.
func (c *trackedConn) CloseWrite() error {
	if cw, ok := c.Conn.(interface{ CloseWrite() error }); ok {
		return cw.CloseWrite()
	}
	return errors.New("half-close not supported")
}

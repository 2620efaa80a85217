// Package cutproxy is a loopback TCP proxy whose connections can all be
// cut at once: put between a laptop's sbx and a real API server (the
// kubeconfig's server pointing at it), CutAll is the laptop's link
// dropping (Wi-Fi roaming, a VPN reconnecting), which closes every
// connection the laptop had to the API server, port-forwards included.
package cutproxy

import (
	"errors"
	"io"
	"net"
	"sync"
)

// Proxy forwards each connection to its address to the upstream address.
type Proxy struct {
	ln       net.Listener
	upstream string
	wg       sync.WaitGroup

	mu     sync.Mutex
	closed bool
	conns  map[net.Conn]net.Conn // client side → upstream side
}

// Start listens on a loopback port the kernel picks and forwards to
// upstream (host:port).
func Start(upstream string) (*Proxy, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	p := &Proxy{ln: ln, upstream: upstream, conns: map[net.Conn]net.Conn{}}
	p.wg.Add(1)
	go p.serve()
	return p, nil
}

// Addr is the proxy's address (host:port).
func (p *Proxy) Addr() string { return p.ln.Addr().String() }

func (p *Proxy) serve() {
	defer p.wg.Done()
	for {
		c, err := p.ln.Accept()
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			continue
		}
		p.wg.Add(1)
		go p.forward(c)
	}
}

func (p *Proxy) forward(c net.Conn) {
	defer p.wg.Done()
	up, err := net.Dial("tcp", p.upstream)
	if err != nil {
		_ = c.Close()
		return
	}
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		_ = c.Close()
		_ = up.Close()
		return
	}
	p.conns[c] = up
	p.mu.Unlock()
	done := make(chan struct{}, 2)
	pipe := func(dst, src net.Conn) {
		_, _ = io.Copy(dst, src)
		done <- struct{}{}
	}
	go pipe(up, c)
	go pipe(c, up)
	<-done
	// Either side ending ends both, as a link that drops does.
	p.drop(c)
	<-done
}

// drop closes a client connection and its upstream one.
func (p *Proxy) drop(c net.Conn) {
	p.mu.Lock()
	up, ok := p.conns[c]
	delete(p.conns, c)
	p.mu.Unlock()
	_ = c.Close()
	if ok {
		_ = up.Close()
	}
}

// CutAll closes every connection at once, both sides, and returns how
// many client connections it closed. New connections are served
// afterwards.
func (p *Proxy) CutAll() int {
	p.mu.Lock()
	conns := make([]net.Conn, 0, len(p.conns))
	for c := range p.conns {
		conns = append(conns, c)
	}
	p.mu.Unlock()
	for _, c := range conns {
		p.drop(c)
	}
	return len(conns)
}

// Close stops listening, cuts every connection and waits for the
// forwarding goroutines.
func (p *Proxy) Close() {
	p.mu.Lock()
	p.closed = true
	p.mu.Unlock()
	_ = p.ln.Close()
	p.CutAll()
	p.wg.Wait()
}

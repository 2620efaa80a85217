package tunnelbench

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"slices"
	"sync"

	"github.com/sbx-dev/sbx/tunnel"
)

// Services the benchmark talks to. Over raw TCP each has its own listener;
// over the tunnel the stream header's target names it.
const (
	// serviceSink reads to EOF with io.Copy(io.Discard, conn), 8 KiB at a
	// time, and answers with the byte count: the targets' sink.
	serviceSink = "sink"
	// serviceSinkLarge is serviceSink reading largeSinkReadSize at a time.
	serviceSinkLarge = "sink-large"
	serviceEcho      = "echo" // echoes fixed-size requests
)

var services = []string{serviceSink, serviceSinkLarge, serviceEcho}

const benchToken = "bench-token"

// endpoint opens connections to a service, over raw TCP or a tunnel.
type endpoint interface {
	name() string
	open(ctx context.Context, service string) (net.Conn, error)
	close()
}

// serve runs one service on conn.
func serve(service string, c net.Conn, reqSize int) {
	defer c.Close()
	switch service {
	case serviceSink, serviceSinkLarge:
		n, err := drain(service, io.Discard, c)
		if err != nil {
			return
		}
		var b [8]byte
		binary.BigEndian.PutUint64(b[:], uint64(n))
		_, _ = c.Write(b[:])
		closeWrite(c)
		_, _ = io.Copy(io.Discard, c)
	case serviceEcho:
		buf := make([]byte, reqSize)
		for {
			if _, err := io.ReadFull(c, buf); err != nil {
				return
			}
			if _, err := c.Write(buf); err != nil {
				return
			}
		}
	}
}

// drain reads c to EOF into dst (io.Discard but in tests) as service's
// sink does and returns the byte count. serviceSink is io.Copy(dst, c) on
// the connection as it is, so the read size is whatever io.Copy picks for
// that connection's type: a *net.TCPConn is an io.WriterTo whose WriteTo
// hands the copy back to io.Discard's ReadFrom (8 KiB reads), a tunnel
// stream is not and gets the same directly. serviceSinkLarge reads
// largeSinkReadSize at a time whatever c is.
func drain(service string, dst io.Writer, c io.Reader) (int64, error) {
	if service == serviceSinkLarge {
		// io.Discard would read in its own 8 KiB pieces (it is an
		// io.ReaderFrom), and a *net.TCPConn's WriteTo would hand the
		// copy to it; hiding both makes the copy use buf.
		buf := make([]byte, largeSinkReadSize)
		return io.CopyBuffer(struct{ io.Writer }{dst}, onlyReader{c}, buf)
	}
	return io.Copy(dst, c)
}

type onlyReader struct{ io.Reader }

func closeWrite(c net.Conn) {
	if cw, ok := c.(interface{ CloseWrite() error }); ok {
		_ = cw.CloseWrite()
		return
	}
	_ = c.Close()
}

// rawEndpoint is plain loopback TCP: one listener per service.
type rawEndpoint struct {
	lns map[string]net.Listener
	wg  sync.WaitGroup
}

func newRawEndpoint(reqSize int) (*rawEndpoint, error) {
	e := &rawEndpoint{lns: map[string]net.Listener{}}
	for _, svc := range services {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			e.close()
			return nil, fmt.Errorf("bench: listen on loopback: %w", err)
		}
		e.lns[svc] = ln
		e.wg.Add(1)
		go func() {
			defer e.wg.Done()
			var conns sync.WaitGroup
			defer conns.Wait()
			for {
				c, err := ln.Accept()
				if err != nil {
					return
				}
				conns.Add(1)
				go func() {
					defer conns.Done()
					serve(svc, c, reqSize)
				}()
			}
		}()
	}
	return e, nil
}

func (e *rawEndpoint) name() string { return "raw" }

func (e *rawEndpoint) open(ctx context.Context, service string) (net.Conn, error) {
	var d net.Dialer
	return d.DialContext(ctx, "tcp", e.lns[service].Addr().String())
}

func (e *rawEndpoint) close() {
	for _, ln := range e.lns {
		_ = ln.Close()
	}
	e.wg.Wait()
}

// tunnelEndpoint is n tunnel sessions over loopback TCP, used through a
// Pool (n = 1 is "the tunnel", n = 4 "the pool").
type tunnelEndpoint struct {
	label   string
	pool    *tunnel.Pool
	servers []*tunnel.Session
	ln      net.Listener
	wg      sync.WaitGroup
}

func newTunnelEndpoint(ctx context.Context, label string, sessions int, cfg tunnel.Config, reqSize int) (*tunnelEndpoint, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, fmt.Errorf("bench: listen on loopback: %w", err)
	}
	e := &tunnelEndpoint{label: label, ln: ln, pool: tunnel.NewPool(slog.New(slog.DiscardHandler), nil)}
	check := func(h tunnel.Hello) (tunnel.Welcome, error) {
		if !tunnel.TokenEqual(h.Token, benchToken) {
			return tunnel.Welcome{}, &tunnel.HandshakeError{Code: tunnel.CodeBadToken}
		}
		return tunnel.Welcome{RelayVersion: "bench"}, nil
	}
	for i := range sessions {
		srvCh := make(chan error, 1)
		go func() {
			c, err := ln.Accept()
			if err != nil {
				srvCh <- err
				return
			}
			s, _, err := tunnel.Server(ctx, c, cfg, check)
			if err == nil {
				e.servers = append(e.servers, s)
			}
			srvCh <- err
		}()
		var d net.Dialer
		c, err := d.DialContext(ctx, "tcp", ln.Addr().String())
		if err != nil {
			e.close()
			return nil, fmt.Errorf("bench: dial tunnel listener: %w", err)
		}
		cs, _, err := tunnel.Client(ctx, c, cfg, tunnel.Hello{Token: benchToken, ClientID: fmt.Sprintf("bench-%d", i), Sandbox: "bench"})
		if serr := <-srvCh; err == nil {
			err = serr
		}
		if err != nil {
			if cs != nil {
				_ = cs.Close()
			}
			e.close()
			return nil, fmt.Errorf("bench: tunnel handshake: %w", err)
		}
		e.pool.Add(cs)
	}
	for _, s := range e.servers {
		e.wg.Add(1)
		go e.acceptLoop(s, reqSize)
	}
	return e, nil
}

func (e *tunnelEndpoint) acceptLoop(s *tunnel.Session, reqSize int) {
	defer e.wg.Done()
	var streams sync.WaitGroup
	defer streams.Wait()
	for {
		st, err := s.Accept(context.Background())
		if err != nil {
			return
		}
		svc, _, _ := net.SplitHostPort(st.Header().Target)
		if !slices.Contains(services, svc) {
			_ = st.Reject(tunnel.ReasonRefused, "no such bench service")
			continue
		}
		if err := st.Accept(); err != nil {
			_ = st.Close()
			continue
		}
		streams.Add(1)
		go func() {
			defer streams.Done()
			serve(svc, st, reqSize)
		}()
	}
}

func (e *tunnelEndpoint) name() string { return e.label }

func (e *tunnelEndpoint) open(ctx context.Context, service string) (net.Conn, error) {
	return e.pool.Open(ctx, tunnel.Header{Kind: tunnel.KindOutbound, Target: service + ":1", Source: "bench"})
}

func (e *tunnelEndpoint) close() {
	_ = e.pool.Close()
	for _, s := range e.servers {
		_ = s.Close()
	}
	_ = e.ln.Close()
	e.wg.Wait()
}

var errShortCount = errors.New("sink reported a different byte count")

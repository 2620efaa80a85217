// Package tunneltest holds test helpers shared by the packages that test
// sbx's data path on loopback (tunnel, relay, daemon, the port-forward
// test server): a TCP server whose goroutines are owned by the test.
package tunneltest

import (
	"net"
	"sync"
	"testing"
)

// Serve listens on a free loopback port and runs handle for every accepted
// connection, closing the connection when handle returns. When the test
// ends the listener and every open connection are closed and Serve waits
// for all its goroutines, so goroutine-leak checks stay meaningful.
// Closing the returned listener early (a "stopped" local service) is fine.
func Serve(t testing.TB, handle func(net.Conn)) net.Listener {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("listen on loopback: %v", err)
	}
	var (
		wg     sync.WaitGroup
		mu     sync.Mutex
		conns  = map[net.Conn]struct{}{}
		closed bool // set by the cleanup; later accepts are closed at once
	)
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			// A connection the cleanup did not see (accepted while it
			// ran) would block its handler, and the cleanup's Wait,
			// forever.
			mu.Lock()
			if closed {
				mu.Unlock()
				_ = c.Close()
				return
			}
			conns[c] = struct{}{}
			mu.Unlock()
			wg.Add(1)
			go func() {
				defer wg.Done()
				defer func() {
					mu.Lock()
					delete(conns, c)
					mu.Unlock()
					_ = c.Close()
				}()
				handle(c)
			}()
		}
	}()
	t.Cleanup(func() {
		_ = ln.Close()
		mu.Lock()
		closed = true
		for c := range conns {
			_ = c.Close()
		}
		mu.Unlock()
		wg.Wait()
	})
	return ln
}

// Echo copies everything it reads back until the peer half-closes, then
// half-closes its side: the reference behaviour for half-close tests.
func Echo(c net.Conn) {
	buf := make([]byte, 32<<10)
	for {
		n, err := c.Read(buf)
		if n > 0 {
			if _, werr := c.Write(buf[:n]); werr != nil {
				return
			}
		}
		if err != nil {
			break
		}
	}
	if cw, ok := c.(interface{ CloseWrite() error }); ok {
		_ = cw.CloseWrite()
	}
}

package tunneltest

import (
	"errors"
	"io"
	"net"
	"syscall"
	"testing"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// TestServeEchoHalfClose: Echo returns everything sent, then EOF after the
// client half-closes; the cleanup leaves no goroutine behind (TestMain).
func TestServeEchoHalfClose(t *testing.T) {
	ln := Serve(t, Echo)
	c, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, err := c.Write([]byte("hello")); err != nil {
		t.Fatal(err)
	}
	if err := c.(*net.TCPConn).CloseWrite(); err != nil {
		t.Fatal(err)
	}
	got, err := io.ReadAll(c)
	if err != nil {
		t.Fatal(err)
	}
	if string(got) != "hello" {
		t.Fatalf("echo = %q, want %q", got, "hello")
	}
}

// TestServeCleanupClosesOpenConns: a handler blocked on a connection the
// test never closes is released by the cleanup, not leaked.
func TestServeCleanupClosesOpenConns(t *testing.T) {
	var c net.Conn
	t.Run("inner", func(t *testing.T) {
		ln := Serve(t, func(c net.Conn) { _, _ = io.Copy(io.Discard, c) })
		var err error
		c, err = net.Dial("tcp", ln.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		if _, err := c.Write([]byte("x")); err != nil {
			t.Fatal(err)
		}
	})
	// The inner test's cleanup ran while the client was still open: the
	// handler can only have returned because Serve closed its side.
	defer c.Close()
	// EOF, or a reset when the handler had not read the "x" yet: either
	// way the read ends instead of hanging.
	if _, err := io.ReadAll(c); err != nil && !errors.Is(err, syscall.ECONNRESET) {
		t.Fatalf("read after the server side closed: %v", err)
	}
}

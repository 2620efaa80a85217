package relay

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/sbx-dev/sbx/relay/relayargs"
)

// answerTimeout bounds how long the relay spends answering one connection
// itself (reading the request, writing the answer, closing).
const answerTimeout = 10 * time.Second

// offlineBody explains a 503: which sandbox is offline and since when.
func offlineBody(sandbox string, since, now time.Time, everOnline bool) string {
	ago := now.Sub(since).Round(time.Second)
	state := "offline since"
	if !everOnline {
		state = "waiting for its laptop since the relay started at"
	}
	return fmt.Sprintf("sbx: sandbox %q is %s %s (%s ago): no laptop is connected to its relay.\n"+
		"The developer's sbx daemon reconnects on its own; on the laptop, `sbx status %s` shows why it is down.\n",
		sandbox, state, since.UTC().Format(time.RFC3339), ago, sandbox)
}

// busyBody explains a 503 at the relay's stream limit.
func busyBody(sandbox string, limit int) string {
	return fmt.Sprintf("sbx: sandbox %q: its relay is serving its limit of %d connections at once, so this one was refused.\n"+
		"Retry when some have finished: the limit bounds the relay's memory. "+
		"The sandbox's owner can raise it with relayMaxStreams in the sbx config.\n", sandbox, limit)
}

// refusedBody explains a 502: the laptop could not reach the local process
// (a debugger restarting, a process not started yet). msg is the daemon's
// own explanation, which names the local address.
func refusedBody(sandbox string, spec relayargs.Inbound, reason, msg string) string {
	body := fmt.Sprintf("sbx: sandbox %q: the laptop could not deliver this request to the local process for %s port %d (%s).\n",
		sandbox, spec.Workload, spec.Port, reason)
	if msg != "" {
		body += "The laptop says: " + msg + "\n"
	}
	if reason == "refused" {
		body += "Start (or restart) the local process on that address, then retry.\n"
	}
	return body
}

// serveAnswer answers every request on conn with code and body, in whichever
// HTTP the client speaks (HTTP/1.1, or HTTP/2 with prior knowledge as the
// mesh uses for http2 and grpc ports), then closes conn. gRPC requests get
// grpc-status UNAVAILABLE with the body as grpc-message, which is what gRPC
// clients report to the developer. It returns when conn is closed.
func serveAnswer(ctx context.Context, logger *slog.Logger, conn net.Conn, code int, body string) {
	ctx, cancel := context.WithTimeout(ctx, answerTimeout)
	defer cancel()
	_ = conn.SetDeadline(time.Now().Add(answerTimeout))

	l := newOneConnListener(conn)
	var protos http.Protocols
	protos.SetHTTP1(true)
	protos.SetUnencryptedHTTP2(true)
	srv := &http.Server{
		Handler:           answerHandler(code, body),
		Protocols:         &protos,
		ReadHeaderTimeout: answerTimeout,
		IdleTimeout:       time.Second, // h2 clients keep the connection; let it go soon
		MaxHeaderBytes:    64 << 10,
		ErrorLog:          slog.NewLogLogger(logger.Handler(), slog.LevelDebug),
		BaseContext:       func(net.Listener) context.Context { return ctx },
	}
	srv.SetKeepAlivesEnabled(false) // HTTP/1.1: one answer, then close
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = srv.Serve(l)
	}()
	select {
	case <-l.closed:
	case <-ctx.Done():
	}
	_ = srv.Close()
	<-done
}

func answerHandler(code int, body string) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h := w.Header()
		h.Set("X-Sbx-Relay", "1")
		if r.ProtoMajor == 2 && strings.HasPrefix(r.Header.Get("Content-Type"), "application/grpc") {
			// Trailers-only gRPC response: status 14 UNAVAILABLE carries
			// both "offline" and "refused" (the call may succeed later).
			h.Set("Content-Type", "application/grpc")
			h.Set("Grpc-Status", "14")
			h.Set("Grpc-Message", grpcEncode(strings.TrimSpace(body)))
			w.WriteHeader(http.StatusOK)
			return
		}
		h.Set("Content-Type", "text/plain; charset=utf-8")
		h.Set("Cache-Control", "no-store")
		if code == http.StatusServiceUnavailable {
			h.Set("Retry-After", "5")
		}
		w.WriteHeader(code)
		if r.Method != http.MethodHead {
			_, _ = w.Write([]byte(body))
		}
	})
}

// grpcEncode percent-encodes a grpc-message value as the gRPC HTTP/2 spec
// requires (printable ASCII except '%' passes through).
func grpcEncode(s string) string {
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c >= 0x20 && c <= 0x7e && c != '%' {
			b.WriteByte(c)
			continue
		}
		fmt.Fprintf(&b, "%%%02X", c)
	}
	return b.String()
}

// oneConnListener hands one connection to an http.Server and reports when
// the server has closed it, so serveAnswer knows the answer is complete.
type oneConnListener struct {
	conn   net.Conn
	mu     sync.Mutex
	given  bool
	closed chan struct{}
	once   sync.Once
}

func newOneConnListener(c net.Conn) *oneConnListener {
	l := &oneConnListener{closed: make(chan struct{})}
	l.conn = &notifyCloseConn{Conn: c, onClose: func() { l.once.Do(func() { close(l.closed) }) }}
	return l
}

func (l *oneConnListener) Accept() (net.Conn, error) {
	l.mu.Lock()
	if !l.given {
		l.given = true
		l.mu.Unlock()
		return l.conn, nil
	}
	l.mu.Unlock()
	<-l.closed
	return nil, net.ErrClosed
}

func (l *oneConnListener) Close() error {
	l.once.Do(func() { close(l.closed) })
	return nil
}

func (l *oneConnListener) Addr() net.Addr { return l.conn.LocalAddr() }

type notifyCloseConn struct {
	net.Conn
	onClose func()
}

func (c *notifyCloseConn) Close() error {
	err := c.Conn.Close()
	c.onClose()
	return err
}

// Package pftest is a kubelet-side port-forward server for tests and the
// cluster simulator.
//
// It serves /api/v1/namespaces/{ns}/pods/{name}/portforward on loopback with
// k8s.io/cri-streaming's ServePortForward — the kubelet's own handler — and
// speaks every protocol client-go negotiates:
//
//   - SPDY/3.1 (POST with an Upgrade: SPDY/3.1 header), as the kubelet does;
//   - SPDY over WebSocket ("SPDY/3.1+portforward.k8s.io"), which a real API
//     server (1.30+) translates to SPDY towards the kubelet; pftest does the
//     same translation in-process, so kubectl's WebSocket-first dialer works;
//   - the older "v4.channel.k8s.io" WebSocket protocol, handled by
//     cri-streaming itself.
//
// Each forwarded stream is connected to the TCP address a Resolver returns.
// Fault switches (CutAll, RefuseFor) and counters (Stats) let tests and the
// simulator exercise reconnects.
package pftest

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/rest"
	criportforward "k8s.io/cri-streaming/pkg/streaming/portforward"
	"k8s.io/streaming/pkg/httpstream/wsstream"

	"github.com/sbx-dev/sbx/cluster/portforward/boundedwait"
)

// Resolver maps a forwarded (namespace, pod, port) to the TCP address
// ("host:port") that serves it. An error is reported to the client on the
// forwarded connection's error stream, as the kubelet reports a failed dial.
type Resolver func(namespace, pod string, port int32) (string, error)

// PodChecker reports whether a pod may be port-forwarded to. A non-nil error
// makes the server answer the upgrade request with 404 Not Found carrying the
// error's text, as the API server does for a missing pod, or with 403
// Forbidden if the error wraps ErrForbidden (an RBAC denial).
type PodChecker func(namespace, pod string) error

// ErrForbidden, wrapped in a PodChecker's error, simulates an RBAC denial.
var ErrForbidden = errors.New("forbidden")

// streamCreationTimeout bounds the wait for the second stream of a pair,
// as the kubelet's default does.
const streamCreationTimeout = 30 * time.Second

// halfCloseGrace is how long a forwarded stream stays open after one
// direction finished, waiting for the other one: containerd waits 1s and then
// tears the stream down, and pftest imitates it.
const halfCloseGrace = time.Second

// Options configure a Server. Resolve is required.
type Options struct {
	// Resolve maps each forwarded stream to a TCP address.
	Resolve Resolver
	// CheckPod, if set, is consulted for every port-forward request.
	CheckPod PodChecker
	// DisableWebSocketTunnel hands SPDY-over-WebSocket requests to the
	// kubelet handler untranslated, as an API server older than 1.30 does; the
	// WebSocket upgrade then fails and clients fall back to SPDY.
	DisableWebSocketTunnel bool
	// IdleTimeout closes a port-forward connection without streams for this
	// long. Default 4h (the kubelet's streaming idle timeout).
	IdleTimeout time.Duration
	// DialTimeout bounds the dial to the resolved address. Default 10s.
	DialTimeout time.Duration
	// Logger receives debug events; nil discards them.
	Logger *slog.Logger
}

// Stats counts what the server did since it started.
type Stats struct {
	// Connections is the number of upgraded port-forward connections.
	Connections int64
	// WebSocketTunnel, SPDY and WebSocketV4 split Connections by protocol.
	WebSocketTunnel, SPDY, WebSocketV4 int64
	// ActiveConnections is the number of upgraded connections still open.
	ActiveConnections int64
	// Streams is the number of forwarded streams (data/error pairs) handled.
	Streams int64
	// ActiveStreams is the number of forwarded streams still open.
	ActiveStreams int64
	// StreamErrors counts streams that failed (resolve or dial error, refusal).
	StreamErrors int64
	// RefusedConnections and RefusedStreams count what RefuseFor turned away.
	RefusedConnections, RefusedStreams int64
	// Cuts counts CutAll calls; CutConnections the connections they closed.
	Cuts, CutConnections int64
}

// Server is a running port-forward server on a loopback port.
type Server struct {
	opts   Options
	log    *slog.Logger
	ln     net.Listener
	http   *http.Server
	serveW sync.WaitGroup // the http.Server's Serve loop

	mu          sync.Mutex
	closed      bool
	refuseUntil time.Time
	upgraded    map[*trackedConn]struct{} // API-side connections (hijacked)
	targets     map[net.Conn]struct{}     // forwarded TCP connections
	work        sync.WaitGroup            // handlers and PortForward calls
	copies      boundedwait.Group         // copy goroutines of forwarded streams

	stats struct {
		connections, websocketTunnel, spdy, websocketV4, activeConns atomic.Int64
		streams, activeStreams, streamErrors                         atomic.Int64
		refusedConns, refusedStreams, cuts, cutConns                 atomic.Int64
	}
}

// New starts a Server on 127.0.0.1 with a free port.
func New(opts Options) (*Server, error) {
	if opts.Resolve == nil {
		return nil, errors.New("pftest: Options.Resolve is required")
	}
	if opts.IdleTimeout <= 0 {
		opts.IdleTimeout = 4 * time.Hour
	}
	if opts.DialTimeout <= 0 {
		opts.DialTimeout = 10 * time.Second
	}
	logger := opts.Logger
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, fmt.Errorf("pftest: listen on loopback: %w", err)
	}
	s := &Server{
		opts:     opts,
		log:      logger,
		ln:       ln,
		upgraded: map[*trackedConn]struct{}{},
		targets:  map[net.Conn]struct{}{},
	}
	mux := http.NewServeMux()
	mux.HandleFunc("/api/v1/namespaces/{namespace}/pods/{pod}/portforward", s.servePortForward)
	s.http = &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	s.serveW.Add(1)
	go func() {
		defer s.serveW.Done()
		_ = s.http.Serve(ln) // returns http.ErrServerClosed on Close
	}()
	return s, nil
}

// URL is the server's base URL, e.g. "http://127.0.0.1:41234".
func (s *Server) URL() string { return "http://" + s.ln.Addr().String() }

// RESTConfig returns a client configuration pointing at the server. Only the
// port-forward subresource is served; use a fake clientset for the rest.
func (s *Server) RESTConfig() *rest.Config {
	return &rest.Config{Host: s.URL(), Timeout: 30 * time.Second}
}

// Stats returns a snapshot of the counters.
func (s *Server) Stats() Stats {
	st := &s.stats
	return Stats{
		Connections:        st.connections.Load(),
		WebSocketTunnel:    st.websocketTunnel.Load(),
		SPDY:               st.spdy.Load(),
		WebSocketV4:        st.websocketV4.Load(),
		ActiveConnections:  st.activeConns.Load(),
		Streams:            st.streams.Load(),
		ActiveStreams:      st.activeStreams.Load(),
		StreamErrors:       st.streamErrors.Load(),
		RefusedConnections: st.refusedConns.Load(),
		RefusedStreams:     st.refusedStreams.Load(),
		Cuts:               st.cuts.Load(),
		CutConnections:     st.cutConns.Load(),
	}
}

// CutAll abruptly closes every open port-forward connection and every
// forwarded TCP connection, as a network failure or an API server restart
// would. New connections are accepted afterwards. It returns the number of
// port-forward connections it closed.
func (s *Server) CutAll() int {
	s.mu.Lock()
	conns := make([]net.Conn, 0, len(s.upgraded)+len(s.targets))
	for c := range s.upgraded {
		conns = append(conns, c)
	}
	cut := len(s.upgraded)
	for c := range s.targets {
		conns = append(conns, c)
	}
	s.mu.Unlock()
	for _, c := range conns {
		_ = c.Close()
	}
	s.stats.cuts.Add(1)
	s.stats.cutConns.Add(int64(cut))
	s.log.Debug("pftest: cut all connections", "connections", cut)
	return cut
}

// RefuseFor makes the server refuse new port-forward connections (503) and
// new forwarded streams on existing connections (an error-stream message)
// for d from now. Open streams are not affected. d <= 0 ends a refusal.
func (s *Server) RefuseFor(d time.Duration) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.refuseUntil = time.Now().Add(d)
}

func (s *Server) refusing() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return time.Now().Before(s.refuseUntil)
}

// Close stops the server, closes every connection it holds and waits for its
// goroutines to finish.
func (s *Server) Close() error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return nil
	}
	s.closed = true
	s.mu.Unlock()
	err := s.http.Close()
	s.serveW.Wait()
	s.CutAll()
	s.work.Wait()
	s.copies.Wait(closeCopiesWait)
	return err
}

// closeCopiesWait bounds how long Close waits for copy goroutines. One
// writing to a stream whose reply never went out (the connection died while
// the kubelet handler set the stream up) blocks forever inside spdystream
// (a known kubelet-side leak); Close must not hang with it.
const closeCopiesWait = 2 * time.Second

// begin registers a unit of work unless the server is closing.
func (s *Server) begin() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return false
	}
	s.work.Add(1)
	return true
}

func (s *Server) servePortForward(w http.ResponseWriter, r *http.Request) {
	if !s.begin() {
		writeStatus(w, http.StatusServiceUnavailable, metav1.StatusReasonServiceUnavailable, "pftest: server is shutting down")
		return
	}
	defer s.work.Done()
	ns, pod := r.PathValue("namespace"), r.PathValue("pod")
	if s.opts.CheckPod != nil {
		if err := s.opts.CheckPod(ns, pod); err != nil {
			if errors.Is(err, ErrForbidden) {
				writeStatus(w, http.StatusForbidden, metav1.StatusReasonForbidden,
					fmt.Sprintf("pods %q is forbidden: %v", pod, err))
				return
			}
			writeStatus(w, http.StatusNotFound, metav1.StatusReasonNotFound, fmt.Sprintf("pods %q not found: %v", pod, err))
			return
		}
	}
	if s.refusing() {
		s.stats.refusedConns.Add(1)
		writeStatus(w, http.StatusServiceUnavailable, metav1.StatusReasonServiceUnavailable,
			fmt.Sprintf("port-forward to pod %s/%s refused (pftest fault injection)", ns, pod))
		return
	}
	fwd := &forwarder{srv: s, namespace: ns}
	tw := &trackingWriter{ResponseWriter: w, srv: s}
	switch {
	case wsstream.IsWebSocketRequestWithTunnelingProtocol(r) && !s.opts.DisableWebSocketTunnel:
		tw.protocol = &s.stats.websocketTunnel
		s.serveTunnel(tw, r, fwd, pod)
	case wsstream.IsWebSocketRequest(r):
		tw.protocol = &s.stats.websocketV4
		opts, err := criportforward.NewV4Options(r)
		if err != nil {
			writeStatus(w, http.StatusBadRequest, metav1.StatusReasonBadRequest, err.Error())
			return
		}
		s.serve(tw, r, fwd, pod, opts)
	default:
		tw.protocol = &s.stats.spdy
		s.serve(tw, r, fwd, pod, nil)
	}
}

// serve runs the kubelet's handler; it returns when the connection closes.
func (s *Server) serve(w http.ResponseWriter, r *http.Request, fwd *forwarder, pod string, v4 *criportforward.V4Options) {
	criportforward.ServePortForward(w, r, fwd, pod, "", v4, s.opts.IdleTimeout,
		streamCreationTimeout, criportforward.SupportedProtocols)
}

func writeStatus(w http.ResponseWriter, code int, reason metav1.StatusReason, msg string) {
	st := metav1.Status{
		TypeMeta: metav1.TypeMeta{Kind: "Status", APIVersion: "v1"},
		Status:   metav1.StatusFailure, Code: int32(code), Reason: reason, Message: msg,
	}
	body, _ := json.Marshal(st) // a Status always marshals
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	_, _ = w.Write(body)
}

// forwarder implements cri-streaming's PortForwarder for one request.
type forwarder struct {
	srv       *Server
	namespace string
}

// PortForward connects stream to the resolved address and copies both ways.
// Like containerd, it returns once one direction has finished and the other
// has had halfCloseGrace to finish too; cri-streaming then closes the
// streams.
func (f *forwarder) PortForward(ctx context.Context, pod, _ string, port int32, stream io.ReadWriteCloser) error {
	s := f.srv
	if !s.begin() {
		return errors.New("pftest: server is shutting down")
	}
	defer s.work.Done()
	s.stats.streams.Add(1)
	if s.refusing() {
		s.stats.refusedStreams.Add(1)
		s.stats.streamErrors.Add(1)
		return fmt.Errorf("connection to port %d refused (pftest fault injection)", port)
	}
	addr, err := s.opts.Resolve(f.namespace, pod, port)
	if err != nil {
		s.stats.streamErrors.Add(1)
		return err
	}
	dctx, cancel := context.WithTimeout(ctx, s.opts.DialTimeout)
	target, err := (&net.Dialer{}).DialContext(dctx, "tcp", addr)
	cancel()
	if err != nil {
		s.stats.streamErrors.Add(1)
		return err
	}
	if !s.trackTarget(target) {
		_ = target.Close()
		return errors.New("pftest: server is shutting down")
	}
	s.stats.activeStreams.Add(1)
	defer s.stats.activeStreams.Add(-1)
	defer s.untrackTarget(target)

	type result struct {
		toTarget bool
		err      error
	}
	done := make(chan result, 2)
	s.copies.Add(2)
	go func() {
		defer s.copies.Done()
		_, err := io.Copy(target, stream)
		if tc, ok := target.(*net.TCPConn); ok && err == nil {
			_ = tc.CloseWrite() // pass the client's half-close on
		}
		done <- result{toTarget: true, err: err}
	}()
	go func() {
		defer s.copies.Done()
		_, err := io.Copy(stream, target)
		done <- result{err: err}
	}()
	first := <-done
	grace := time.NewTimer(halfCloseGrace)
	defer grace.Stop()
	select {
	case second := <-done:
		if first.err == nil && !errors.Is(second.err, net.ErrClosed) {
			first = second
		}
	case <-grace.C:
	}
	_ = target.Close()
	// The stream→target copy may still be blocked reading the stream; it ends
	// when cri-streaming closes the stream after we return. Server.Close
	// waits for it (with a bound, see closeCopiesWait).
	return first.err
}

func (s *Server) trackTarget(c net.Conn) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return false
	}
	s.targets[c] = struct{}{}
	return true
}

func (s *Server) untrackTarget(c net.Conn) {
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.targets, c)
}

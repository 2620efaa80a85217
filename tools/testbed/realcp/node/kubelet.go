package node

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"sync"
	"time"

	criportforward "k8s.io/cri-streaming/pkg/streaming/portforward"
	"k8s.io/streaming/pkg/httpstream/wsstream"
)

// The kubelet API's port-forward: the API server (which translates a
// client's WebSocket to SPDY) calls POST /portForward/NS/POD[/UID] with
// its kubelet client certificate; k8s.io/cri-streaming's handler, the
// kubelet's own, runs the streams, and each is connected to the pod's
// address in its network namespace.

const streamCreationTimeout = 30 * time.Second

// kubeletServer serves the kubelet API over TLS.
type kubeletServer struct {
	n      *Node
	ln     net.Listener
	srv    *http.Server
	serveW sync.WaitGroup

	mu     sync.Mutex
	closed bool
	conns  map[net.Conn]struct{} // every accepted connection, hijacked ones too
	copies sync.WaitGroup
}

func startKubelet(n *Node, cert tls.Certificate) (*kubeletServer, error) {
	raw, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	k := &kubeletServer{n: n, conns: map[net.Conn]struct{}{}}
	k.ln = tls.NewListener(&trackingListener{Listener: raw, k: k}, &tls.Config{
		Certificates: []tls.Certificate{cert},
		ClientAuth:   tls.RequireAndVerifyClientCert,
		ClientCAs:    n.o.CA.Pool(),
		// SPDY upgrades need HTTP/1.1.
		NextProtos: []string{"http/1.1"},
	})
	mux := http.NewServeMux()
	mux.HandleFunc("/portForward/{namespace}/{pod}", k.portForward)
	mux.HandleFunc("/portForward/{namespace}/{pod}/{uid}", k.portForward)
	mux.HandleFunc("/healthz", func(w http.ResponseWriter, _ *http.Request) { _, _ = io.WriteString(w, "ok") })
	k.srv = &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	k.serveW.Add(1)
	go func() {
		defer k.serveW.Done()
		_ = k.srv.Serve(k.ln)
	}()
	return k, nil
}

func (k *kubeletServer) port() int { return k.ln.Addr().(*net.TCPAddr).Port }

// close stops serving and closes every connection, hijacked port-forward
// connections included, and waits for the copies.
func (k *kubeletServer) close() {
	k.mu.Lock()
	k.closed = true
	conns := make([]net.Conn, 0, len(k.conns))
	for c := range k.conns {
		conns = append(conns, c)
	}
	k.mu.Unlock()
	_ = k.srv.Close()
	for _, c := range conns {
		_ = c.Close()
	}
	k.serveW.Wait()
	done := make(chan struct{})
	go func() { k.copies.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		// A copy blocked inside spdystream on a dead connection (a known
		// kubelet-side leak) must not hang the test's teardown.
	}
}

// cutAll closes every connection it holds, as a kubelet restart or a
// network failure between the API server and the node does, and keeps
// serving; it returns how many of them the API server had made.
func (k *kubeletServer) cutAll() int {
	k.mu.Lock()
	conns := make([]net.Conn, 0, len(k.conns))
	n := 0
	for c := range k.conns {
		conns = append(conns, c)
		if tc, ok := c.(*trackedConn); ok && tc.accepted {
			n++
		}
	}
	k.mu.Unlock()
	for _, c := range conns {
		_ = c.Close()
	}
	return n
}

func (k *kubeletServer) track(c net.Conn) bool {
	k.mu.Lock()
	defer k.mu.Unlock()
	if k.closed {
		return false
	}
	k.conns[c] = struct{}{}
	return true
}

func (k *kubeletServer) untrack(c net.Conn) {
	k.mu.Lock()
	defer k.mu.Unlock()
	delete(k.conns, c)
}

type trackingListener struct {
	net.Listener
	k *kubeletServer
}

func (l *trackingListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	tc := &trackedConn{Conn: c, k: l.k, accepted: true}
	if !l.k.track(tc) {
		_ = c.Close()
		return nil, net.ErrClosed
	}
	return tc, nil
}

type trackedConn struct {
	net.Conn
	k *kubeletServer
	// accepted marks a connection the API server made to the kubelet
	// API (the others are forwarded streams' connections into pods).
	accepted bool
	once     sync.Once
}

func (c *trackedConn) Close() error {
	c.once.Do(func() { c.k.untrack(c) })
	return c.Conn.Close()
}

func (k *kubeletServer) portForward(w http.ResponseWriter, r *http.Request) {
	ns, pod, uid := r.PathValue("namespace"), r.PathValue("pod"), r.PathValue("uid")
	if _, err := k.n.podNetns(ns, pod); err != nil {
		http.Error(w, err.Error(), http.StatusNotFound)
		return
	}
	k.n.stats.portForwards.Add(1)
	fwd := &forwarder{k: k, ns: ns}
	var v4 *criportforward.V4Options
	if wsstream.IsWebSocketRequest(r) {
		var err error
		if v4, err = criportforward.NewV4Options(r); err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
	}
	criportforward.ServePortForward(w, r, fwd, pod, uid, v4, 4*time.Hour, streamCreationTimeout, criportforward.SupportedProtocols)
}

// forwarder connects each forwarded stream to the pod's address.
type forwarder struct {
	k  *kubeletServer
	ns string
}

func (f *forwarder) PortForward(ctx context.Context, pod, _ string, port int32, stream io.ReadWriteCloser) error {
	netns, err := f.k.n.podNetns(f.ns, pod)
	if err != nil {
		return err
	}
	addr := fmt.Sprintf("127.0.0.1:%d", port)
	dctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	target, err := dialIn(dctx, netns, addr)
	cancel()
	if err != nil {
		return fmt.Errorf("failed to connect to %s inside pod %s/%s: %w", addr, f.ns, pod, err)
	}
	tt := &trackedConn{Conn: target, k: f.k}
	if !f.k.track(tt) {
		_ = target.Close()
		return errors.New("node stand-in shutting down")
	}
	defer tt.Close()
	done := make(chan error, 2)
	f.k.copies.Add(2)
	go func() {
		defer f.k.copies.Done()
		_, err := io.Copy(target, stream)
		if tc, ok := target.(*net.TCPConn); ok && err == nil {
			_ = tc.CloseWrite()
		}
		done <- err
	}()
	go func() {
		defer f.k.copies.Done()
		_, err := io.Copy(stream, target)
		done <- err
	}()
	first := <-done
	// As containerd: the other direction gets a second to finish.
	select {
	case <-done:
	case <-time.After(time.Second):
	}
	return first
}

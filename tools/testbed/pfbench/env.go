package pfbench

import (
	"context"
	"encoding/binary"
	"fmt"
	"io"
	"log/slog"
	"math"
	"net"
	"net/http"
	"net/url"
	"sync"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/httpstream"
	"k8s.io/client-go/kubernetes/fake"
	"k8s.io/client-go/rest"
	clientpf "k8s.io/client-go/tools/portforward"
	"k8s.io/client-go/transport/spdy"
	streamhttp "k8s.io/streaming/pkg/httpstream"

	"github.com/sbx-dev/sbx/cluster/portforward"
	"github.com/sbx-dev/sbx/relay/relayargs"
	"github.com/sbx-dev/sbx/tools/testbed/pftest"
	"github.com/sbx-dev/sbx/tunnel"
)

const (
	benchNamespace = "sbx-bench"
	benchPod       = "relay-bench"
	benchSelector  = "sbx.dev/sandbox=bench"
	tunnelPort     = relayargs.TunnelPort // the relay's tunnel port in the pod
	appPort        = 8080                 // the application port in the pod
	benchToken     = "bench-token"

	// appReadSize is how much the application reads at a time: io.Copy's
	// buffer, so what most Go servers do. The read size changes what each
	// path pays: the bare path's application reads a socket (a system call
	// per read), the tunnel's reads a yamux stream in memory, so smaller
	// reads flatter the tunnel (8 KiB: ~5% on pool/bare), larger ones the
	// bare path (256 KiB: ~5% the other way).
	appReadSize = 32 << 10

	opEcho = 'E' // echo everything back
	opSink = 'S' // read an 8-byte length and that many bytes, answer one byte
	// opTimedSink is opSink answered with when the last byte arrived (8
	// bytes, nanoseconds since epoch) and the steady rate the bytes came
	// at (8 bytes, float64 bytes/s; see receive); opSource reads an 8-byte
	// length and sends that many bytes. The shaped benchmark times bulk
	// transfers with them.
	opTimedSink = 'T'
	opSource    = 'D'
)

// env is the whole benchmark world on loopback: an application server (the
// "pod"), a relay-like tunnel server, the kubelet-side port-forward server,
// and local listeners for the three client paths.
type env struct {
	log      *slog.Logger
	relayCfg tunnel.Config // both ends of the tunnel and pool paths
	wg       sync.WaitGroup
	mu       sync.Mutex
	lns      []net.Listener

	appAddr string // the application server
	srv     *pftest.Server
	// pfAddr, if set, is where the port-forward clients reach the server
	// (a shaped link in front of it) instead of srv's own address.
	pfAddr string
	// relays maps a pod port to the relay listener behind it: tunnelPort
	// for the run's configuration, one more per variant with its own.
	relays map[int32]string

	stopPF   chan struct{}
	pfDone   chan error
	bareAddr string // kubectl port-forward's local listener → appPort

	dialers []*portforward.Dialer
	pools   []*tunnel.Pool
}

// newEnv starts everything except the client paths.
func newEnv(ctx context.Context, log *slog.Logger, relayCfg tunnel.Config) (*env, error) {
	e := &env{log: log, relayCfg: relayCfg, relays: map[int32]string{}}
	var err error
	if e.appAddr, err = e.listen(serveApp); err != nil {
		return nil, err
	}
	if _, err := e.startRelay(ctx, relayCfg); err != nil {
		e.close()
		return nil, err
	}
	e.srv, err = pftest.New(pftest.Options{
		Logger: log,
		Resolve: func(ns, pod string, port int32) (string, error) {
			if port == appPort {
				return e.appAddr, nil
			}
			e.mu.Lock()
			defer e.mu.Unlock()
			if addr, ok := e.relays[port]; ok {
				return addr, nil
			}
			return "", fmt.Errorf("pod %s/%s has no port %d", ns, pod, port)
		},
	})
	if err != nil {
		e.close()
		return nil, err
	}
	return e, nil
}

// startRelay starts a relay listener whose sessions use cfg and returns the
// pod port it is reached on.
func (e *env) startRelay(ctx context.Context, cfg tunnel.Config) (uint16, error) {
	addr, err := e.listen(func(c net.Conn) { e.serveRelay(ctx, c, cfg) })
	if err != nil {
		return 0, err
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	port := int32(tunnelPort + len(e.relays))
	e.relays[port] = addr
	return uint16(port), nil
}

// listen serves each accepted connection with handle until close.
func (e *env) listen(handle func(net.Conn)) (string, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", fmt.Errorf("listen on loopback: %w", err)
	}
	e.mu.Lock()
	e.lns = append(e.lns, ln)
	e.mu.Unlock()
	e.wg.Add(1)
	go func() {
		defer e.wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			e.wg.Add(1)
			go func() {
				defer e.wg.Done()
				defer c.Close()
				handle(c)
			}()
		}
	}()
	return ln.Addr().String(), nil
}

// serveApp is the application in the pod: echo, or sink with an ack.
func serveApp(c net.Conn) {
	var op [1]byte
	if _, err := io.ReadFull(c, op[:]); err != nil {
		return
	}
	switch op[0] {
	case opEcho:
		_, _ = io.Copy(c, c)
	case opSink:
		buf := make([]byte, appReadSize)
		// io.Discard would read in its own 8 KiB pieces (it is an
		// io.ReaderFrom); hiding that makes the copy use buf.
		sink := struct{ io.Writer }{io.Discard}
		for {
			var n [8]byte
			if _, err := io.ReadFull(c, n[:]); err != nil {
				return
			}
			if _, err := io.CopyBuffer(sink, io.LimitReader(c, int64(binary.BigEndian.Uint64(n[:]))), buf); err != nil {
				return
			}
			if _, err := c.Write([]byte{1}); err != nil {
				return
			}
		}
	case opTimedSink:
		buf := make([]byte, appReadSize)
		for {
			var n [8]byte
			if _, err := io.ReadFull(c, n[:]); err != nil {
				return
			}
			last, slope, err := receive(c, int64(binary.BigEndian.Uint64(n[:])), buf)
			if err != nil {
				return
			}
			reply := binary.BigEndian.AppendUint64(nil, uint64(last))
			if _, err := c.Write(binary.BigEndian.AppendUint64(reply, math.Float64bits(slope))); err != nil {
				return
			}
		}
	case opSource:
		buf := pattern(256 << 10)
		for {
			var n [8]byte
			if _, err := io.ReadFull(c, n[:]); err != nil {
				return
			}
			if err := send(c, int64(binary.BigEndian.Uint64(n[:])), buf); err != nil {
				return
			}
		}
	}
}

// serveRelay is the relay's side of a tunnel session. The relay is the
// process in the pod, so it answers the streams like the application does:
// every path then has the same TCP hops (one local listener, one connection
// from the kubelet into the pod) and differs only in what runs over the
// port-forward.
func (e *env) serveRelay(ctx context.Context, c net.Conn, cfg tunnel.Config) {
	cfg.Logger = e.log
	s, _, err := tunnel.Server(ctx, c, cfg, func(h tunnel.Hello) (tunnel.Welcome, error) {
		if !tunnel.TokenEqual(h.Token, benchToken) {
			return tunnel.Welcome{}, &tunnel.HandshakeError{Code: tunnel.CodeBadToken, Message: "bad token"}
		}
		return tunnel.Welcome{RelayVersion: "bench"}, nil
	})
	if err != nil {
		return
	}
	defer s.Close()
	var wg sync.WaitGroup
	defer wg.Wait()
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
			serveApp(st)
		}()
	}
}

func (e *env) restConfig() *rest.Config {
	cfg := e.srv.RESTConfig()
	if e.pfAddr != "" {
		cfg.Host = "http://" + e.pfAddr
	}
	return cfg
}

// startBare runs kubectl's port-forwarder (the dialer built exactly as
// kubectl builds it) from a local port to appPort.
func (e *env) startBare(transport portforward.Transport) error {
	cfg := e.restConfig()
	u, err := url.Parse(fmt.Sprintf("%s/api/v1/namespaces/%s/pods/%s/portforward", cfg.Host, benchNamespace, benchPod))
	if err != nil {
		return err
	}
	rt, upgrader, err := spdy.RoundTripperFor(cfg)
	if err != nil {
		return err
	}
	var dialer httpstream.Dialer = spdy.NewDialer(upgrader, &http.Client{Transport: rt}, http.MethodPost, u)
	if transport != portforward.TransportSPDY {
		ws, err := clientpf.NewSPDYOverWebsocketDialer(u, cfg)
		if err != nil {
			return err
		}
		dialer = clientpf.NewFallbackDialer(ws, dialer, func(err error) bool {
			return httpstream.IsUpgradeFailure(err) || streamhttp.IsUpgradeFailure(err) || httpstream.IsHTTPSProxyError(err)
		})
	}
	e.stopPF = make(chan struct{})
	ready := make(chan struct{})
	pf, err := clientpf.NewOnAddresses(dialer, []string{"127.0.0.1"}, []string{fmt.Sprintf("0:%d", appPort)},
		e.stopPF, ready, io.Discard, io.Discard)
	if err != nil {
		return err
	}
	e.pfDone = make(chan error, 1)
	go func() { e.pfDone <- pf.ForwardPorts() }()
	select {
	case <-ready:
	case err := <-e.pfDone:
		e.pfDone <- err
		return fmt.Errorf("kubectl port-forward: %w", err)
	}
	ports, err := pf.GetPorts()
	if err != nil {
		return err
	}
	e.bareAddr = fmt.Sprintf("127.0.0.1:%d", ports[0].Local)
	return nil
}

// startTunnel opens n tunnel sessions, each over its own port-forward
// connection from the listener-less Dialer, pools them and serves a local
// listener that sends each connection through the pool to the application,
// as the daemon's outbound access does.
func (e *env) startTunnel(ctx context.Context, transport portforward.Transport, n int, v Variant) (string, error) {
	cfg, port := e.relayCfg, uint16(tunnelPort)
	if v.Tunnel != nil {
		cfg = *v.Tunnel
		var err error
		if port, err = e.startRelay(ctx, cfg); err != nil {
			return "", err
		}
	}
	client := fake.NewClientset(&corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: benchPod, Namespace: benchNamespace, UID: "bench",
			Labels: map[string]string{"sbx.dev/sandbox": "bench"}},
		Status: corev1.PodStatus{Phase: corev1.PodRunning,
			Conditions: []corev1.PodCondition{{Type: corev1.PodReady, Status: corev1.ConditionTrue}}},
	})
	d, err := portforward.New(portforward.Config{
		REST: e.restConfig(), Client: client, Namespace: benchNamespace, Selector: benchSelector,
		Port: port, Transport: transport, Connections: n, Logger: e.log,
	})
	if err != nil {
		return "", err
	}
	pool := tunnel.NewPool(e.log, nil)
	e.mu.Lock()
	e.dialers = append(e.dialers, d)
	e.pools = append(e.pools, pool)
	e.mu.Unlock()
	cfg.Logger = e.log
	// Hold every connection open while dialling so that each session gets
	// its own port-forward connection.
	for range n {
		c, err := d.Dial(ctx)
		if err != nil {
			return "", err
		}
		s, _, err := tunnel.Client(ctx, c, cfg, tunnel.Hello{Token: benchToken, ClientID: "bench", Sandbox: "bench", User: "bench@localhost"})
		if err != nil {
			return "", err
		}
		pool.Add(s)
	}
	if got := d.Stats().Live; got != n {
		return "", fmt.Errorf("tunnel pool: %d sessions over %d port-forward connections, want %d", n, got, n)
	}
	return e.listen(func(c net.Conn) {
		// Early, as the daemon's hosts-mode listeners open theirs: the
		// first request goes out with the stream's header.
		st, err := pool.OpenEarly(ctx, tunnel.Header{Kind: tunnel.KindOutbound, Target: "app.bench.svc:8080", Source: c.RemoteAddr().String()})
		if err != nil {
			return
		}
		_ = tunnel.Pipe(ctx, c, st)
	})
}

// close stops everything and waits for every goroutine.
func (e *env) close() {
	if e.stopPF != nil {
		close(e.stopPF)
		<-e.pfDone
	}
	e.mu.Lock()
	for _, p := range e.pools {
		_ = p.Close()
	}
	for _, d := range e.dialers {
		_ = d.Close()
	}
	for _, ln := range e.lns {
		_ = ln.Close()
	}
	e.mu.Unlock()
	if e.srv != nil {
		_ = e.srv.Close()
	}
	e.wg.Wait()
}

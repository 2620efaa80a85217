package portforward_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes/fake"

	"github.com/sbx-dev/sbx/cluster/portforward"
	"github.com/sbx-dev/sbx/tools/testbed/pftest"
	"github.com/sbx-dev/sbx/tunnel/tunneltest"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m,
		// klog's flush daemon is started once per process by client-go.
		goleak.IgnoreTopFunction("k8s.io/klog/v2.(*flushDaemon).run.func1"),
		// spdystream hands a close error to a possible CloseWait caller for
		// up to 1s after closing an already broken connection.
		goleak.IgnoreTopFunction("github.com/moby/spdystream.(*Connection).shutdown"),
		// The kubelet handler (cri-streaming) blocks forever closing a stream
		// whose reply could not be sent because the connection died during
		// setup: a known leak of the real kubelet code, not of sbx.
		goleak.IgnoreAnyFunction("github.com/moby/spdystream.(*Stream).waitWriteReply"),
		// A stream creation racing a connection's death waits out
		// client-go's 30s reply timeout; Dialer.Close waits only 2s for it.
		goleak.IgnoreTopFunction("github.com/moby/spdystream.(*Stream).WaitTimeout"),
	)
}

const (
	ns       = "hotrod"
	selector = "sbx.dev/sandbox=alice"
	relay    = 7000
)

// env is a pod behind a pftest server, with targets per (pod, port).
type env struct {
	t       *testing.T
	client  *fake.Clientset
	srv     *pftest.Server
	mu      sync.Mutex
	targets map[string]string // "pod:port" → address
}

func newEnv(t *testing.T, opts pftest.Options) *env {
	t.Helper()
	e := &env{t: t, client: fake.NewClientset(), targets: map[string]string{}}
	opts.Resolve = e.resolve
	srv, err := pftest.New(opts)
	require.NoError(t, err)
	t.Cleanup(func() { require.NoError(t, srv.Close()) })
	e.srv = srv
	return e
}

// newEchoEnv is the common starting point: one ready pod, relay-1, whose
// relay port echoes.
func newEchoEnv(t *testing.T) *env {
	t.Helper()
	e := newEnv(t, pftest.Options{})
	e.addPod("relay-1", 0)
	e.target("relay-1", relay, serve(t, echo))
	return e
}

func (e *env) resolve(namespace, pod string, port int32) (string, error) {
	e.mu.Lock()
	defer e.mu.Unlock()
	addr, ok := e.targets[fmt.Sprintf("%s/%s:%d", namespace, pod, port)]
	if !ok {
		return "", fmt.Errorf("pod %s/%s has no port %d", namespace, pod, port)
	}
	return addr, nil
}

func (e *env) target(pod string, port int, addr string) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.targets[fmt.Sprintf("%s/%s:%d", ns, pod, port)] = addr
}

// addPod creates a ready pod created at the given offset from a fixed time.
func (e *env) addPod(name string, age time.Duration, mutate ...func(*corev1.Pod)) {
	p := readyPod(name, age)
	for _, m := range mutate {
		m(p)
	}
	_, err := e.client.CoreV1().Pods(ns).Create(context.Background(), p, metav1.CreateOptions{})
	require.NoError(e.t, err)
}

func readyPod(name string, age time.Duration) *corev1.Pod {
	return &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{
			Name: name, Namespace: ns, UID: types.UID("uid-" + name),
			Labels:            map[string]string{"sbx.dev/sandbox": "alice"},
			CreationTimestamp: metav1.NewTime(time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC).Add(-age)),
		},
		Status: corev1.PodStatus{
			Phase:      corev1.PodRunning,
			Conditions: []corev1.PodCondition{{Type: corev1.PodReady, Status: corev1.ConditionTrue}},
		},
	}
}

func (e *env) dialer(cfg portforward.Config) *portforward.Dialer {
	e.t.Helper()
	cfg.REST = e.srv.RESTConfig()
	cfg.Client = e.client
	cfg.Namespace = ns
	cfg.Selector = selector
	if cfg.Port == 0 {
		cfg.Port = relay
	}
	d, err := portforward.New(cfg)
	require.NoError(e.t, err)
	e.t.Cleanup(func() { require.NoError(e.t, d.Close()) })
	return d
}

// serve runs handler for each connection accepted on a loopback listener.
func serve(t *testing.T, handler func(net.Conn)) string {
	t.Helper()
	return tunneltest.Serve(t, handler).Addr().String()
}

func echo(c net.Conn) { _, _ = io.Copy(c, c) }

func ctx(t *testing.T) context.Context {
	c, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	t.Cleanup(cancel)
	return c
}

func roundTrip(t *testing.T, c net.Conn, msg []byte) {
	t.Helper()
	_, err := c.Write(msg)
	require.NoError(t, err)
	got := make([]byte, len(msg))
	_, err = io.ReadFull(c, got)
	require.NoError(t, err)
	require.Equal(t, msg, got)
}

var transports = []portforward.Transport{portforward.TransportAuto, portforward.TransportWebSocket, portforward.TransportSPDY}

func TestBytesBothWays(t *testing.T) {
	for _, tr := range transports {
		t.Run(string(tr)+"/", func(t *testing.T) {
			e := newEchoEnv(t)
			d := e.dialer(portforward.Config{Transport: tr})
			c, err := d.Dial(ctx(t))
			require.NoError(t, err)
			defer c.Close()
			require.Equal(t, "hotrod/relay-1:7000", c.RemoteAddr().String())
			roundTrip(t, c, []byte("hello"))
			roundTrip(t, c, bytes.Repeat([]byte("x"), 100_000))
			st := e.srv.Stats()
			require.EqualValues(t, 1, st.Connections)
			if tr == portforward.TransportSPDY {
				require.EqualValues(t, 1, st.SPDY)
			} else {
				require.EqualValues(t, 1, st.WebSocketTunnel)
			}
		})
	}
}

// dialEcho dials a new echo pod over transport tr; the connection is
// closed when the test ends.
func dialEcho(t *testing.T, tr portforward.Transport) *portforward.Conn {
	t.Helper()
	c, err := newEchoEnv(t).dialer(portforward.Config{Transport: tr}).Dial(ctx(t))
	require.NoError(t, err)
	t.Cleanup(func() { _ = c.Close() })
	return c
}

func TestLargeTransferChecksum(t *testing.T) {
	const size = 64 << 20
	for _, tr := range []portforward.Transport{portforward.TransportWebSocket, portforward.TransportSPDY} {
		t.Run(string(tr), func(t *testing.T) {
			c := dialEcho(t, tr)

			src := rand.NewChaCha8([32]byte{1, 2, 3})
			sent := sha256.New()
			writeErr := make(chan error, 1)
			go func() {
				_, err := io.CopyN(io.MultiWriter(c, sent), src, size)
				writeErr <- err
			}()
			received := sha256.New()
			n, err := io.CopyN(received, c, size)
			require.NoError(t, err)
			require.EqualValues(t, size, n)
			require.NoError(t, <-writeErr)
			require.Equal(t, sent.Sum(nil), received.Sum(nil))
		})
	}
}

// TestConcurrentWrites: Writes from several goroutines each arrive
// whole (one SPDY data frame per Write), over every transport.
func TestConcurrentWrites(t *testing.T) {
	for _, tr := range []portforward.Transport{portforward.TransportWebSocket, portforward.TransportSPDY} {
		t.Run(string(tr), func(t *testing.T) {
			c := dialEcho(t, tr)
			const writers, each, size = 4, 50, 1001
			var wg sync.WaitGroup
			for w := range writers {
				wg.Add(1)
				go func() {
					defer wg.Done()
					msg := append([]byte{'['}, bytes.Repeat([]byte{byte('a' + w)}, size-1)...)
					for range each {
						if _, err := c.Write(msg); err != nil {
							t.Error(err)
							return
						}
					}
				}()
			}
			got := make([]byte, writers*each*size)
			_, err := io.ReadFull(c, got)
			require.NoError(t, err)
			wg.Wait()
			for i := 0; i < len(got); i += size {
				require.Equal(t, byte('['), got[i], "write %d starts where the previous one ended", i/size)
				require.Equal(t, bytes.Repeat(got[i+1:i+2], size-1), got[i+1:i+size], "write %d is whole", i/size)
			}
		})
	}
}

func TestParallelConnectionsShareOneUpgrade(t *testing.T) {
	e := newEchoEnv(t)
	d := e.dialer(portforward.Config{})
	var wg sync.WaitGroup
	errs := make(chan error, 8)
	for i := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c, err := d.Dial(ctx(t))
			if err != nil {
				errs <- err
				return
			}
			defer c.Close()
			msg := bytes.Repeat([]byte{byte(i)}, 1<<20)
			go func() { _, _ = c.Write(msg) }()
			got := make([]byte, len(msg))
			if _, err := io.ReadFull(c, got); err != nil {
				errs <- err
				return
			}
			if !bytes.Equal(msg, got) {
				errs <- fmt.Errorf("connection %d: echoed bytes differ", i)
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		require.NoError(t, err)
	}
	require.EqualValues(t, 1, e.srv.Stats().Connections)
	require.EqualValues(t, 8, e.srv.Stats().Streams)
	require.Equal(t, 8, d.Stats().Dials)
}

func TestConnectionsSpreadOverSeveralUpgrades(t *testing.T) {
	e := newEchoEnv(t)
	d := e.dialer(portforward.Config{Connections: 4})
	var conns []net.Conn
	for range 6 {
		c, err := d.Dial(ctx(t))
		require.NoError(t, err)
		conns = append(conns, c)
		roundTrip(t, c, []byte("ping"))
	}
	require.EqualValues(t, 4, e.srv.Stats().Connections)
	require.Equal(t, 4, d.Stats().Live)
	require.Equal(t, 6, d.Stats().Active)
	for _, c := range conns {
		require.NoError(t, c.Close())
	}
	require.Equal(t, 0, d.Stats().Active)
}

func TestServerSideCloses(t *testing.T) {
	e := newEnv(t, pftest.Options{})
	e.addPod("relay-1", 0)
	e.target("relay-1", relay, serve(t, func(c net.Conn) { _, _ = c.Write([]byte("bye")) }))
	d := e.dialer(portforward.Config{})
	c, err := d.Dial(ctx(t))
	require.NoError(t, err)
	defer c.Close()
	got, err := io.ReadAll(c)
	require.NoError(t, err) // io.EOF, not a ForwardError
	require.Equal(t, "bye", string(got))

	// The port-forward connection survives and carries the next one.
	c2, err := d.Dial(ctx(t))
	require.NoError(t, err)
	defer c2.Close()
	got, err = io.ReadAll(c2)
	require.NoError(t, err)
	require.Equal(t, "bye", string(got))
	require.EqualValues(t, 1, e.srv.Stats().Connections)
}

func TestHalfCloseReachesTarget(t *testing.T) {
	e := newEnv(t, pftest.Options{})
	e.addPod("relay-1", 0)
	// The target answers once its input ends.
	e.target("relay-1", relay, serve(t, func(c net.Conn) {
		in, _ := io.ReadAll(c)
		_, _ = c.Write([]byte(strings.ToUpper(string(in))))
	}))
	d := e.dialer(portforward.Config{})
	c, err := d.Dial(ctx(t))
	require.NoError(t, err)
	defer c.Close()
	_, err = c.Write([]byte("shout"))
	require.NoError(t, err)
	require.NoError(t, c.CloseWrite())
	got, err := io.ReadAll(c)
	require.NoError(t, err)
	require.Equal(t, "SHOUT", string(got))
}

func TestErrorStreamMessage(t *testing.T) {
	// A port nothing listens on: take a free port and close it.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	closedAddr := ln.Addr().String()
	require.NoError(t, ln.Close())

	e := newEnv(t, pftest.Options{})
	e.addPod("relay-1", 0)
	e.target("relay-1", relay, closedAddr)
	e.target("relay-1", 8080, serve(t, echo))
	d := e.dialer(portforward.Config{})
	for range 5 {
		err := dialAndRead(t, d)
		var fe *portforward.ForwardError
		require.ErrorAs(t, err, &fe)
		require.Equal(t, "relay-1", fe.Pod)
		require.EqualValues(t, relay, fe.Port)
		require.Contains(t, fe.Message, "connection refused")
		require.Contains(t, err.Error(), "hotrod/relay-1 port 7000")
	}

	// Unlike kubectl, one failed forward does not kill the port-forward
	// connection: another port still works over it.
	c2, err := d.DialPort(ctx(t), 8080)
	require.NoError(t, err)
	defer c2.Close()
	roundTrip(t, c2, []byte("still alive"))
	require.EqualValues(t, 1, e.srv.Stats().Connections)
}

// dialAndRead returns the error of a dial or, if the dial succeeded, of the
// first read. The kubelet may report a failed forward before or after it
// has accepted the streams, so it can surface at either point.
func dialAndRead(t *testing.T, d *portforward.Dialer) error {
	t.Helper()
	c, err := d.Dial(ctx(t))
	if err != nil {
		return err
	}
	defer c.Close()
	_, err = c.Read(make([]byte, 10))
	if err == nil {
		t.Fatal("read from a failed forward returned data")
	}
	// Later reads and writes keep reporting it.
	_, err2 := c.Read(make([]byte, 10))
	require.Equal(t, err, err2)
	_, err2 = c.Write([]byte("x"))
	require.Equal(t, err, err2)
	return err
}

func TestPodMovedRedialsNewPod(t *testing.T) {
	e := newEnv(t, pftest.Options{})
	e.addPod("relay-1", time.Hour)
	e.target("relay-1", relay, serve(t, func(c net.Conn) { _, _ = c.Write([]byte("relay-1")) }))
	e.target("relay-2", relay, serve(t, func(c net.Conn) { _, _ = c.Write([]byte("relay-2")) }))
	d := e.dialer(portforward.Config{})

	readAll := func() string {
		c, err := d.Dial(ctx(t))
		require.NoError(t, err)
		defer c.Close()
		b, err := io.ReadAll(c)
		require.NoError(t, err)
		return string(b)
	}
	require.Equal(t, "relay-1", readAll())

	// The Deployment replaced the pod.
	require.NoError(t, e.client.CoreV1().Pods(ns).Delete(context.Background(), "relay-1", metav1.DeleteOptions{}))
	e.addPod("relay-2", 0)
	require.Equal(t, "relay-2", readAll())
	require.EqualValues(t, 2, e.srv.Stats().Connections)
	require.Eventually(t, func() bool { return e.srv.Stats().ActiveConnections == 1 }, 10*time.Second, 10*time.Millisecond,
		"the idle connection to the old pod is closed")
}

func TestCutAllRedials(t *testing.T) {
	e := newEchoEnv(t)
	d := e.dialer(portforward.Config{})
	c, err := d.Dial(ctx(t))
	require.NoError(t, err)
	defer c.Close()
	roundTrip(t, c, []byte("before"))

	require.Equal(t, 1, e.srv.CutAll())
	// A dial right after the cut, before anything noticed it, redials.
	c2, err := d.Dial(ctx(t))
	require.NoError(t, err)
	defer c2.Close()
	roundTrip(t, c2, []byte("after"))

	_, err = c.Read(make([]byte, 1))
	require.ErrorIs(t, err, portforward.ErrConnectionLost)
	require.Contains(t, err.Error(), "hotrod/relay-1")
	// Once the loss is known, writes fail at once too.
	_, err = c.Write([]byte("into the void"))
	require.ErrorIs(t, err, portforward.ErrConnectionLost)
	require.EqualValues(t, 2, e.srv.Stats().Connections)
	require.EqualValues(t, 1, e.srv.Stats().Cuts)
	require.Equal(t, 2, d.Stats().Upgrades)
}

func TestRefuseFor(t *testing.T) {
	e := newEchoEnv(t)
	d := e.dialer(portforward.Config{})
	c, err := d.Dial(ctx(t))
	require.NoError(t, err)
	defer c.Close()
	// Dials are lazy: the kubelet connects the stream asynchronously, so
	// use it once before the refusal starts.
	roundTrip(t, c, []byte("established"))

	e.srv.RefuseFor(time.Hour)
	// The open connection is unaffected.
	roundTrip(t, c, []byte("open"))
	// A new forwarded connection on the existing port-forward is refused
	// through the error stream.
	err = dialAndRead(t, d)
	var fe *portforward.ForwardError
	require.ErrorAs(t, err, &fe)
	require.Contains(t, fe.Message, "refused")
	// A new port-forward connection is refused by the server.
	d2 := e.dialer(portforward.Config{})
	_, err = d2.Dial(ctx(t))
	require.Error(t, err)
	require.Contains(t, err.Error(), "refused")
	require.Contains(t, err.Error(), "hotrod/relay-1")
	st := e.srv.Stats()
	require.EqualValues(t, 1, st.RefusedStreams)
	require.GreaterOrEqual(t, st.RefusedConnections, int64(1))

	e.srv.RefuseFor(0)
	c3, err := d2.Dial(ctx(t))
	require.NoError(t, err)
	defer c3.Close()
	roundTrip(t, c3, []byte("back"))
}

func TestFallbackToSPDY(t *testing.T) {
	e := newEnv(t, pftest.Options{DisableWebSocketTunnel: true})
	e.addPod("relay-1", 0)
	e.target("relay-1", relay, serve(t, echo))

	_, err := e.dialer(portforward.Config{Transport: portforward.TransportWebSocket}).Dial(ctx(t))
	require.Error(t, err, "a WebSocket-only dial fails against an old API server")

	d := e.dialer(portforward.Config{})
	c, err := d.Dial(ctx(t))
	require.NoError(t, err)
	defer c.Close()
	roundTrip(t, c, []byte("spdy"))
	require.EqualValues(t, 1, e.srv.Stats().SPDY)

	// After one fallback the Dialer goes straight to SPDY: the server sees
	// no further WebSocket attempts.
	before := e.srv.Stats().WebSocketV4
	require.Equal(t, 1, e.srv.CutAll())
	c2, err := d.Dial(ctx(t))
	require.NoError(t, err)
	defer c2.Close()
	roundTrip(t, c2, []byte("spdy again"))
	require.EqualValues(t, 2, e.srv.Stats().SPDY)
	require.Equal(t, before, e.srv.Stats().WebSocketV4)
}

func TestForbidden(t *testing.T) {
	e := newEnv(t, pftest.Options{CheckPod: func(ns, pod string) error {
		return fmt.Errorf("User \"alice\" cannot create resource \"pods/portforward\": %w", pftest.ErrForbidden)
	}})
	e.addPod("relay-1", 0)
	_, err := e.dialer(portforward.Config{}).Dial(ctx(t))
	require.ErrorContains(t, err, "hotrod/relay-1")
	require.ErrorContains(t, err, "cannot create resource")
	require.ErrorContains(t, err, "needs verbs get and create on pods/portforward")
	t.Log(err)
}

func TestContext(t *testing.T) {
	e := newEchoEnv(t)
	d := e.dialer(portforward.Config{})

	canceled, cancel := context.WithCancel(context.Background())
	cancel()
	_, err := d.Dial(canceled)
	require.ErrorIs(t, err, context.Canceled)

	// A context that ends after the dial does not affect the connection.
	dctx, cancel := context.WithCancel(context.Background())
	c, err := d.Dial(dctx)
	require.NoError(t, err)
	defer c.Close()
	cancel()
	roundTrip(t, c, []byte("still here"))
	c2, err := d.Dial(ctx(t))
	require.NoError(t, err)
	defer c2.Close()
	roundTrip(t, c2, []byte("shared"))
	require.EqualValues(t, 1, e.srv.Stats().Connections)
}

func TestDeadlines(t *testing.T) {
	e := newEchoEnv(t)
	d := e.dialer(portforward.Config{})
	c, err := d.Dial(ctx(t))
	require.NoError(t, err)
	defer c.Close()

	// A deadline wakes a blocked read.
	done := make(chan error, 1)
	go func() { _, err := c.Read(make([]byte, 1)); done <- err }()
	require.NoError(t, c.SetReadDeadline(time.Now().Add(20*time.Millisecond)))
	err = <-done
	require.ErrorIs(t, err, os.ErrDeadlineExceeded)
	var ne net.Error
	require.ErrorAs(t, err, &ne)
	require.True(t, ne.Timeout())

	require.NoError(t, c.SetWriteDeadline(time.Now().Add(-time.Second)))
	_, err = c.Write([]byte("x"))
	require.ErrorIs(t, err, os.ErrDeadlineExceeded)

	// Clearing the deadlines makes the connection usable again.
	require.NoError(t, c.SetDeadline(time.Time{}))
	roundTrip(t, c, []byte("again"))

	require.NoError(t, c.Close())
	_, err = c.Read(make([]byte, 1))
	require.ErrorIs(t, err, net.ErrClosed)
	_, err = c.Write([]byte("x"))
	require.ErrorIs(t, err, net.ErrClosed)
}

func TestConfigErrors(t *testing.T) {
	e := newEnv(t, pftest.Options{})
	base := portforward.Config{REST: e.srv.RESTConfig(), Client: e.client, Namespace: ns, Selector: selector}
	tests := []struct {
		name   string
		mutate func(*portforward.Config)
		want   string
	}{
		{"no rest", func(c *portforward.Config) { c.REST = nil }, "Config.REST"},
		{"no client", func(c *portforward.Config) { c.Client = nil }, "Config.Client"},
		{"no namespace", func(c *portforward.Config) { c.Namespace = "" }, "Config.Namespace"},
		{"no selector", func(c *portforward.Config) { c.Selector = "" }, "Config.Selector"},
		{"bad selector", func(c *portforward.Config) { c.Selector = "a in (" }, `selector "a in ("`},
		{"bad transport", func(c *portforward.Config) { c.Transport = "carrier-pigeon" }, "carrier-pigeon"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := base
			tt.mutate(&cfg)
			_, err := portforward.New(cfg)
			require.ErrorContains(t, err, tt.want)
		})
	}
	d, err := portforward.New(base)
	require.NoError(t, err)
	_, err = d.Dial(ctx(t))
	require.ErrorContains(t, err, "Config.Port")
	require.NoError(t, d.Close())
	e.addPod("relay-1", 0)
	_, err = d.DialPort(ctx(t), relay)
	require.True(t, errors.Is(err, portforward.ErrClosed), "dial after Close: %v", err)
}

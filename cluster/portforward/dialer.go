// Package portforward opens connections to a pod's port through the
// Kubernetes API server's port-forward subresource, with no local listener.
//
// It uses client-go's machinery as kubectl does (SPDY tunnelled over a
// WebSocket, falling back to SPDY), but hands each forwarded connection to
// the caller as a net.Conn instead of accepting on a local TCP port. One
// port-forward connection to the API server carries many forwarded
// connections; it is reused while alive and redialled when it dies. The
// target pod is looked up on every dial (newest ready pod matching a label
// selector), so a relay pod that moved is found again.
package portforward

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/httpstream"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"

	"github.com/sbx-dev/sbx/cluster/portforward/boundedwait"
)

// ErrClosed is returned by dials on a closed Dialer.
var ErrClosed = errors.New("port-forward dialer closed")

// ErrConnectionLost means the port-forward connection to the API server that
// carried a forwarded connection died (network failure, API server or
// kubelet restart, pod deleted).
var ErrConnectionLost = errors.New("lost port-forward connection to pod")

// Config configures a Dialer. REST, Client, Namespace and Selector are
// required.
type Config struct {
	// REST addresses and authenticates to the API server.
	REST *rest.Config
	// Client looks up pods.
	Client kubernetes.Interface
	// Namespace and Selector (a label selector such as
	// "sbx.dev/sandbox=alice") find the pod to forward to.
	Namespace string
	Selector  string
	// Port is the pod port Dial connects to.
	Port uint16
	// Transport selects the upgrade protocol; the default tries a WebSocket
	// first and falls back to SPDY, as kubectl does.
	Transport Transport
	// Connections is the number of port-forward connections to the API
	// server that forwarded connections are spread over (each its own TCP
	// connection, so a tunnel pool gets real parallelism). A new one is
	// opened while fewer exist and all existing ones are busy. Default 1.
	Connections int
	// Logger receives connection events; nil discards them.
	Logger *slog.Logger
}

// Stats counts a Dialer's activity.
type Stats struct {
	// Upgrades is the number of port-forward connections opened; Live the
	// number still open.
	Upgrades, Live int
	// Dials is the number of forwarded connections opened; Active the number
	// still open.
	Dials, Active int
}

// Dialer opens forwarded connections to the current pod. It is safe for
// concurrent use.
type Dialer struct {
	cfg Config
	log *slog.Logger

	upgradeSem chan struct{} // one port-forward upgrade at a time
	spdyOnly   atomic.Bool   // an automatic upgrade fell back to SPDY once
	closing    chan struct{}
	wg         sync.WaitGroup    // connection monitors
	creating   boundedwait.Group // stream creations in flight

	mu       sync.Mutex
	closed   bool
	conns    []*pfConn
	upgrades int
	dials    int
}

// New validates cfg and returns a Dialer. It does not contact the cluster.
func New(cfg Config) (*Dialer, error) {
	switch {
	case cfg.REST == nil:
		return nil, errors.New("port-forward dialer: Config.REST is required")
	case cfg.Client == nil:
		return nil, errors.New("port-forward dialer: Config.Client is required")
	case cfg.Namespace == "":
		return nil, errors.New("port-forward dialer: Config.Namespace is required")
	case cfg.Selector == "":
		return nil, errors.New("port-forward dialer: Config.Selector is required")
	}
	if _, err := labels.Parse(cfg.Selector); err != nil {
		return nil, fmt.Errorf("port-forward dialer: selector %q: %w", cfg.Selector, err)
	}
	switch cfg.Transport {
	case TransportAuto, TransportWebSocket, TransportSPDY:
	default:
		return nil, fmt.Errorf("port-forward dialer: unknown transport %q (want %q, %q or empty)", cfg.Transport, TransportWebSocket, TransportSPDY)
	}
	if cfg.Connections <= 0 {
		cfg.Connections = 1
	}
	logger := cfg.Logger
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	return &Dialer{
		cfg:        cfg,
		log:        logger,
		upgradeSem: make(chan struct{}, 1),
		closing:    make(chan struct{}),
	}, nil
}

// Dial opens a forwarded connection to Config.Port on the current pod.
func (d *Dialer) Dial(ctx context.Context) (*Conn, error) {
	if d.cfg.Port == 0 {
		return nil, errors.New("port-forward dialer: Config.Port is not set; use DialPort")
	}
	return d.DialPort(ctx, d.cfg.Port)
}

// DialPort opens a forwarded connection to port on the current pod: the
// newest ready pod matching the selector. The connection is lazy, like
// kubectl's: a port nothing listens on is reported by the first Read (or a
// later Write) as a *ForwardError carrying the kubelet's message.
func (d *Dialer) DialPort(ctx context.Context, port uint16) (*Conn, error) {
	if port == 0 {
		return nil, errors.New("port-forward dialer: port must be 1-65535")
	}
	pod, err := d.ReadyPod(ctx)
	if err != nil {
		return nil, err
	}
	// A reused connection may have died without us noticing yet; then open
	// a fresh one once.
	for attempt := 0; ; attempt++ {
		pc, err := d.connFor(ctx, pod)
		if err != nil {
			return nil, err
		}
		c, err := pc.open(ctx, d, port)
		if err == nil {
			return c, nil
		}
		pc.release()
		var ferr *ForwardError
		if errors.As(err, &ferr) {
			return nil, ferr
		}
		if ctx.Err() != nil || attempt > 0 {
			return nil, fmt.Errorf("port-forward to pod %s/%s port %d: %w", pc.namespace, pc.pod, port, err)
		}
		// The connection failed to create streams: it died (perhaps before
		// its monitor noticed) or is broken. Drop it and try a fresh one.
		pc.markDead()
		_ = pc.conn.Close()
		d.log.Debug("port-forward connection failed; redialling", "pod", pc.pod, "err", err)
	}
}

// Stats returns a snapshot of the Dialer's counters.
func (d *Dialer) Stats() Stats {
	d.mu.Lock()
	defer d.mu.Unlock()
	st := Stats{Upgrades: d.upgrades, Dials: d.dials}
	for _, pc := range d.conns {
		if !pc.dead() {
			st.Live++
		}
		st.Active += int(pc.active.Load())
	}
	return st
}

// Close closes every port-forward connection (and so every forwarded
// connection) and waits for the Dialer's goroutines.
func (d *Dialer) Close() error {
	d.mu.Lock()
	if d.closed {
		d.mu.Unlock()
		return nil
	}
	d.closed = true
	close(d.closing)
	conns := d.conns
	d.conns = nil
	d.mu.Unlock()
	for _, pc := range conns {
		_ = pc.conn.Close()
	}
	d.wg.Wait()
	// A stream creation that raced a connection's death is stuck in
	// client-go until its 30s reply timeout, and nothing can cut that
	// short; it touches only the closed connection. Wait a little, not 30s.
	d.creating.Wait(creatorsCloseWait)
	return nil
}

// creatorsCloseWait bounds how long Close waits for stream creations.
const creatorsCloseWait = 2 * time.Second

// connFor returns a live port-forward connection to pod with a stream slot
// reserved (release it with pc.release), opening one if needed.
func (d *Dialer) connFor(ctx context.Context, pod *corev1.Pod) (*pfConn, error) {
	if pc, ok, err := d.pick(pod); err != nil || ok {
		return pc, err
	}
	select {
	case d.upgradeSem <- struct{}{}:
	case <-ctx.Done():
		return nil, ctx.Err()
	case <-d.closing:
		return nil, ErrClosed
	}
	defer func() { <-d.upgradeSem }()
	// Another dial may have opened one while we waited.
	if pc, ok, err := d.pick(pod); err != nil || ok {
		return pc, err
	}
	u, err := portForwardURL(d.cfg.REST, pod.Namespace, pod.Name)
	if err != nil {
		return nil, err
	}
	start := time.Now()
	want := d.cfg.Transport
	if want == TransportAuto && d.spdyOnly.Load() {
		want = TransportSPDY // this API server cannot do WebSockets; don't ask again
	}
	conn, transport, err := upgrade(ctx, d.cfg.REST, u, want)
	if err != nil {
		hint := ""
		if strings.Contains(strings.ToLower(err.Error()), "forbidden") {
			// WebSocket upgrades are authorized as "get", SPDY ones (and
			// WebSockets on 1.35+) as "create".
			hint = fmt.Sprintf(" (your Role in namespace %s needs verbs get and create on pods/portforward)", pod.Namespace)
		}
		return nil, fmt.Errorf("port-forward to pod %s/%s: %w%s", pod.Namespace, pod.Name, err, hint)
	}
	if d.cfg.Transport == TransportAuto && transport == TransportSPDY {
		d.spdyOnly.Store(true)
	}
	pc := &pfConn{
		conn:      conn,
		namespace: pod.Namespace,
		pod:       pod.Name,
		uid:       pod.UID,
		url:       u,
		gone:      make(chan struct{}),
	}
	pc.active.Add(1)
	d.mu.Lock()
	if d.closed {
		d.mu.Unlock()
		_ = conn.Close()
		return nil, ErrClosed
	}
	d.conns = append(d.conns, pc)
	d.upgrades++
	d.mu.Unlock()
	d.log.Debug("port-forward connection open", "pod", pod.Namespace+"/"+pod.Name, "transport", transport, "took", time.Since(start))
	d.wg.Add(1)
	go d.monitor(pc)
	return pc, nil
}

// pick reserves a slot on an existing connection to pod when the spreading
// rule allows it, and closes idle connections to pods that are not current.
func (d *Dialer) pick(pod *corev1.Pod) (*pfConn, bool, error) {
	var stale []*pfConn
	defer func() {
		for _, pc := range stale {
			_ = pc.conn.Close() // outside the lock: Close writes to the network
		}
	}()
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.closed {
		return nil, false, ErrClosed
	}
	var best *pfConn
	n := 0
	kept := d.conns[:0]
	for _, pc := range d.conns {
		if pc.dead() {
			continue
		}
		if pc.uid != pod.UID || pc.pod != pod.Name {
			if pc.active.Load() == 0 {
				stale = append(stale, pc) // the pod moved; nobody uses this one
				continue
			}
			kept = append(kept, pc)
			continue
		}
		kept = append(kept, pc)
		n++
		if best == nil || pc.active.Load() < best.active.Load() {
			best = pc
		}
	}
	clear(d.conns[len(kept):])
	d.conns = kept
	if best == nil || (best.active.Load() > 0 && n < d.cfg.Connections) {
		return nil, false, nil
	}
	best.active.Add(1)
	return best, true, nil
}

// monitor marks pc dead when its connection closes.
func (d *Dialer) monitor(pc *pfConn) {
	defer d.wg.Done()
	select {
	case <-pc.conn.CloseChan():
	case <-d.closing:
		<-pc.conn.CloseChan()
	}
	pc.markDead()
	_ = pc.conn.Close() // releases the underlying connection if the peer ended it
	d.log.Debug("port-forward connection closed", "pod", pc.namespace+"/"+pc.pod)
}

// pfConn is one port-forward connection to the API server.
type pfConn struct {
	conn      httpstream.Connection
	namespace string
	pod       string
	uid       types.UID
	url       *url.URL
	active    atomic.Int32 // forwarded connections using it (and reservations)
	requestID atomic.Int64
	gone      chan struct{} // closed when the connection died
	goneOnce  sync.Once
}

func (pc *pfConn) markDead() { pc.goneOnce.Do(func() { close(pc.gone) }) }

func (pc *pfConn) dead() bool {
	select {
	case <-pc.gone:
		return true
	case <-pc.conn.CloseChan(): // before the monitor has caught up
		return true
	default:
		return false
	}
}

func (pc *pfConn) release() { pc.active.Add(-1) }

// open creates the error and data streams of one forwarded connection, as
// kubectl does per accepted local connection. client-go's CreateStream
// waits for the server's reply without a context, so it runs in a
// goroutine the Dialer owns; if ctx ends or the connection dies first the
// streams are reset once created (a creation that raced the connection's
// death ends after client-go's 30s reply timeout; Close waits for it).
func (pc *pfConn) open(ctx context.Context, d *Dialer, port uint16) (*Conn, error) {
	requestID := strconv.FormatInt(pc.requestID.Add(1)-1, 10)
	type created struct {
		errStream, dataStream httpstream.Stream
		err                   error
	}
	result := make(chan created)
	abandon := make(chan struct{})
	d.creating.Add(1)
	go func() {
		defer d.creating.Done()
		var r created
		h := http.Header{}
		h.Set(corev1.StreamType, corev1.StreamTypeError)
		h.Set(corev1.PortHeader, strconv.Itoa(int(port)))
		h.Set(corev1.PortForwardRequestIDHeader, requestID)
		r.errStream, r.err = pc.conn.CreateStream(h)
		if r.err == nil {
			_ = r.errStream.Close() // we never write to it
			h.Set(corev1.StreamType, corev1.StreamTypeData)
			r.dataStream, r.err = pc.conn.CreateStream(h)
			if r.err != nil {
				// A kubelet whose dial fails at once may reset the data
				// stream before replying to it; its message is then on
				// the error stream.
				if msg := readBounded(r.errStream); msg != "" {
					r.err = &ForwardError{Namespace: pc.namespace, Pod: pc.pod, Port: port, Message: msg}
				}
				_ = r.errStream.Reset()
				pc.conn.RemoveStreams(r.errStream)
			}
		}
		select {
		case result <- r:
		case <-abandon:
			if r.err == nil {
				_ = r.dataStream.Reset()
				_ = r.errStream.Reset()
				pc.conn.RemoveStreams(r.dataStream, r.errStream)
			}
		}
	}()
	select {
	case r := <-result:
		if r.err != nil {
			return nil, r.err
		}
		d.mu.Lock()
		d.dials++
		d.mu.Unlock()
		return newConn(pc, port, requestID, r.errStream, r.dataStream), nil
	case <-ctx.Done():
		close(abandon)
		return nil, ctx.Err()
	case <-pc.conn.CloseChan():
		// client-go waits up to 30s for the reply to a stream created just
		// as the connection died; don't make the caller wait with it.
		close(abandon)
		return nil, fmt.Errorf("%w %s/%s (port %d): the connection to the API server closed", ErrConnectionLost, pc.namespace, pc.pod, port)
	}
}

// readBounded reads an error stream's message, giving up after errorWait.
func readBounded(s httpstream.Stream) string {
	t := time.AfterFunc(errorWait, func() { _ = s.Reset() }) // unblocks the read
	defer t.Stop()
	msg, _ := io.ReadAll(io.LimitReader(s, maxErrorMessage))
	return strings.TrimSpace(string(msg))
}

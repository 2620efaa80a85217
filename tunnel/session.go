package tunnel

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/yamux"
)

// goodbyeLinger bounds how long Close waits for the peer to read the goodbye
// and hang up before the connection is closed under it.
const goodbyeLinger = time.Second

// controlQueue is how many control frames may wait for the control writer.
const controlQueue = 16

// Session is one established tunnel over one connection. It is symmetric:
// either end may Open and Accept data streams. Create it with Client or
// Server; it lives until Close, a peer goodbye, a dead peer or a broken
// connection, whichever comes first (Done, Err).
type Session struct {
	cfg   Config
	log   *slog.Logger
	conn  *wireConn
	mux   *yamux.Session
	ctrl  *yamux.Stream
	hello Hello // token cleared

	// draining is closed when the peer said it is shutting down
	// (Draining); drainReason says why.
	draining     chan struct{}
	drainOnce    sync.Once
	drainReason  atomic.Value // string
	drainingSent atomic.Bool

	acceptCh  chan *Stream
	headerSem chan struct{}
	ctrlOut   chan controlMsg
	ctrlDone  chan struct{}

	done      chan struct{}
	closeOnce sync.Once
	errMu     sync.Mutex
	err       error
	wg        sync.WaitGroup

	pingMu  sync.Mutex
	pingSeq uint64
	pings   map[uint64]chan struct{}
	// The last heartbeat ping: its nonce and when it was sent, so its
	// pong gives flow control a round trip.
	hbNonce uint64
	hbSent  time.Time
	hbQuiet bool // no data moved just before it was sent

	bytesIn     atomic.Uint64
	bytesOut    atomic.Uint64
	streamsOpen atomic.Int64
	// inFlight counts streams being opened or accepted and not yet
	// counted in streamsOpen, and picks by a Pool about to open one:
	// with streamsOpen it says whether the session is in use (Busy).
	inFlight      atomic.Int64
	streamsTotal  atomic.Uint64
	streamsFailed atomic.Uint64
}

// controlMsg is one frame for the control writer; written, if set, is
// closed once the frame is on the connection (or failed).
type controlMsg struct {
	frame   []byte
	written chan struct{}
}

// Stats are a session's counters, for status display.
type Stats struct {
	// BytesIn and BytesOut count data-stream payload bytes.
	BytesIn  uint64 `json:"bytesIn"`
	BytesOut uint64 `json:"bytesOut"`
	// StreamsOpen counts data streams not yet closed locally.
	StreamsOpen int `json:"streamsOpen"`
	// StreamsTotal counts data streams established since the start.
	StreamsTotal uint64 `json:"streamsTotal"`
	// StreamsFailed counts streams that ended before payload: refused by
	// the peer, bad headers, open errors.
	StreamsFailed uint64 `json:"streamsFailed"`
}

func newSession(wc *wireConn, cfg Config, initiator bool) (*Session, error) {
	yamuxClient := initiator
	switch cfg.MuxRole {
	case MuxRoleClient:
		yamuxClient = true
	case MuxRoleServer:
		yamuxClient = false
	}
	// Before yamux starts: its first frames are already framed and
	// flow-controlled.
	wc.startFraming(newFlowControl(cfg))
	var mux *yamux.Session
	var err error
	if yamuxClient {
		mux, err = yamux.Client(wc, cfg.yamuxConfig())
	} else {
		mux, err = yamux.Server(wc, cfg.yamuxConfig())
	}
	if err != nil {
		return nil, fmt.Errorf("tunnel: start yamux session: %w", err)
	}
	return &Session{
		cfg:       cfg,
		log:       cfg.logger(),
		conn:      wc,
		mux:       mux,
		draining:  make(chan struct{}),
		acceptCh:  make(chan *Stream),
		headerSem: make(chan struct{}, cfg.AcceptBacklog),
		ctrlOut:   make(chan controlMsg, controlQueue),
		ctrlDone:  make(chan struct{}),
		done:      make(chan struct{}),
		pings:     make(map[uint64]chan struct{}),
	}, nil
}

// start launches the session's goroutines once the handshake is done.
func (s *Session) start() {
	s.log = s.log.With("peer", s.conn.RemoteAddr().String())
	s.wg.Add(6)
	go s.acceptLoop()
	go s.controlLoop()
	go s.controlWriter()
	go s.heartbeat()
	go s.grantWriter()
	go s.probeRTT()
}

// rttProbes is how many pings a new session sends, one after the other,
// to learn its round trip before data flows: flow control sizes windows
// from the smallest (flow.go). One alone, sent while the session's
// goroutines start, read 0.06-0.34 ms on loopback where the link's round
// trip is ~0.02 ms, and windows grew to 2 MiB for nothing.
const rttProbes = 4

// probeRTT pings the peer rttProbes times, a millisecond apart.
func (s *Session) probeRTT() {
	defer s.wg.Done()
	for range rttProbes {
		if _, err := s.Ping(); err != nil {
			return
		}
		select {
		case <-s.done:
			return
		case <-time.After(time.Millisecond):
		}
	}
}

// grantWriter writes flow control's grants as they come due (between
// yamux's frames; a frame's end writes them too).
func (s *Session) grantWriter() {
	defer s.wg.Done()
	for {
		select {
		case <-s.conn.flow.wake:
		case <-s.done:
			return
		}
		if err := s.conn.writeGrants(); err != nil {
			s.shutdown(fmt.Errorf("tunnel: write window update: %w", err))
			return
		}
	}
}

// FlowStats reports the session's receive windows.
func (s *Session) FlowStats() FlowStats { return s.conn.flow.stats() }

// setErr records why the session ends; the first cause wins.
func (s *Session) setErr(err error) {
	s.errMu.Lock()
	if s.err == nil {
		s.err = err
	}
	s.errMu.Unlock()
}

// shutdown records err (if first) and tears the session down without
// waiting for its goroutines.
func (s *Session) shutdown(err error) {
	s.setErr(err)
	s.closeOnce.Do(func() {
		close(s.done)
		_ = s.mux.Close()
		s.conn.flow.releaseAll()
	})
}

// Draining is closed once the peer has said it is shutting down: it still
// serves the streams it has, but new work belongs on a session of another
// instance (a relay rollout: the new pod is ready, this one drains).
// DrainReason says why.
func (s *Session) Draining() <-chan struct{} { return s.draining }

// DrainReason is the reason the peer gave with Draining ("" before).
func (s *Session) DrainReason() string {
	r, _ := s.drainReason.Load().(string)
	return r
}

// NotifyDraining tells the peer that this end is shutting down and serves
// only what it has (see Draining). The session stays up; it is sent once.
func (s *Session) NotifyDraining(reason string) {
	if s.drainingSent.Swap(true) {
		return
	}
	s.sendControlAsync(appendControl(nil, frameDraining, encodeDraining(reason)))
}

// Done is closed when the session has ended.
func (s *Session) Done() <-chan struct{} { return s.done }

// Err says why the session ended (nil while it lives): ErrSessionClosed,
// ErrPeerDead, a *PeerClosedError with the peer's reason, or the connection
// error.
func (s *Session) Err() error {
	select {
	case <-s.done:
	default:
		return nil
	}
	s.errMu.Lock()
	defer s.errMu.Unlock()
	return s.err
}

// Close closes the session and every stream on it, telling the peer.
func (s *Session) Close() error { return s.CloseWithReason("") }

// CloseWithReason tells the peer why the session ends (for example
// "relay shutting down"; the peer's Err is a *PeerClosedError with it),
// then closes the session and every stream on it and waits for the
// session's goroutines. It waits at most about a second for the peer.
func (s *Session) CloseWithReason(reason string) error {
	return s.CloseWithCode(0, reason)
}

// CloseWithCode is CloseWithReason with a code the peer can match with
// errors.Is: CodeReplaced ("replaced by a newer daemon") makes the peer's
// Err match ErrReplaced, so a reconnecting daemon can tell "stop, another
// instance took over" from "the relay went away".
func (s *Session) CloseWithCode(code HandshakeCode, reason string) error {
	select {
	case <-s.done:
		s.wg.Wait()
		return nil
	default:
	}
	s.setErr(ErrSessionClosed)
	written := make(chan struct{})
	msg := controlMsg{frame: appendControl(nil, frameGoodbye, encodeGoodbye(goodbye{code: code, reason: reason})), written: written}
	timer := time.NewTimer(goodbyeLinger)
	defer timer.Stop()
	select {
	case s.ctrlOut <- msg:
		// Wait for the goodbye to be written, then for the peer to hang
		// up, so it reads the reason before the connection closes.
		select {
		case <-written:
			select {
			case <-s.mux.CloseChan():
			case <-timer.C:
			}
		case <-timer.C:
		}
	case <-s.done:
	case <-timer.C:
	}
	s.shutdown(ErrSessionClosed)
	s.wg.Wait()
	return nil
}

// Hello is the Hello this session was established with, token removed.
func (s *Session) Hello() Hello { return s.hello }

// LocalAddr and RemoteAddr are the underlying connection's addresses.
func (s *Session) LocalAddr() net.Addr { return s.conn.LocalAddr() }

// RemoteAddr is the underlying connection's remote address.
func (s *Session) RemoteAddr() net.Addr { return s.conn.RemoteAddr() }

// NumStreams is the number of data streams open on this session.
func (s *Session) NumStreams() int { return int(s.streamsOpen.Load()) }

// Busy is the number of streams open, being opened or being accepted on
// the session: 0 means closing it now cuts nothing (as long as nothing
// opens a stream on it afterwards, e.g. once it left its Pool).
func (s *Session) Busy() int { return int(s.streamsOpen.Load() + s.inFlight.Load()) }

// payloadBytes is the data-stream payload moved both ways so far.
func (s *Session) payloadBytes() uint64 { return s.bytesIn.Load() + s.bytesOut.Load() }

// Stats returns the session's counters.
func (s *Session) Stats() Stats {
	return Stats{
		BytesIn:       s.bytesIn.Load(),
		BytesOut:      s.bytesOut.Load(),
		StreamsOpen:   int(s.streamsOpen.Load()),
		StreamsTotal:  s.streamsTotal.Load(),
		StreamsFailed: s.streamsFailed.Load(),
	}
}

// acceptLoop accepts the peer's data streams and hands each to a goroutine
// that reads its header. It is also the one that learns why yamux stopped.
func (s *Session) acceptLoop() {
	defer s.wg.Done()
	for {
		ys, err := s.mux.AcceptStream()
		if err != nil {
			// Let the control loop read a goodbye that arrived just
			// before the connection closed: it explains the end better.
			<-s.ctrlDone
			s.shutdown(muxError(err))
			return
		}
		s.inFlight.Add(1)
		select {
		case s.headerSem <- struct{}{}:
		case <-s.done:
			s.inFlight.Add(-1)
			_ = ys.Close()
			continue
		}
		s.wg.Add(1)
		go s.serveIncoming(ys)
	}
}

func muxError(err error) error {
	switch {
	case errors.Is(err, yamux.ErrSessionShutdown):
		return ErrSessionClosed
	case errors.Is(err, io.EOF):
		return fmt.Errorf("tunnel: connection closed by the peer without a goodbye: %w", err)
	}
	return fmt.Errorf("tunnel: connection failed: %w", err)
}

// serveIncoming reads one stream's header and queues the stream for Accept.
// A bad header is answered with a ReasonProtocol reply and only that stream
// is closed: the bytes after a bad header are meaningless but the session's
// framing (yamux) is intact.
func (s *Session) serveIncoming(ys *yamux.Stream) {
	defer s.wg.Done()
	defer func() { <-s.headerSem }()
	defer s.inFlight.Add(-1) // after track: Busy never drops to 0 in between
	_ = ys.SetReadDeadline(time.Now().Add(s.cfg.HeaderTimeout))
	h, err := readHeader(s.reader(ys), s.cfg.MaxHeaderSize)
	_ = ys.SetReadDeadline(time.Time{})
	if err != nil {
		s.streamsFailed.Add(1)
		var he *headerError
		if errors.As(err, &he) {
			s.log.Warn("tunnel refusing stream with a bad header", "stream", ys.StreamID(), "err", err)
			_, _ = ys.Write(appendReply(nil, reply{code: uint8(ReasonProtocol), message: he.Error()}))
		} else {
			s.log.Debug("tunnel stream ended before its header", "stream", ys.StreamID(), "err", err)
		}
		_ = ys.Close()
		return
	}
	st := newStream(s, ys, h, false)
	st.track() // before the hand-over, so the user never sees a negative count
	select {
	case s.acceptCh <- st:
	case <-s.done:
		st.closeQuiet()
	}
}

// Accept waits for the peer's next data stream and returns it with its
// header read. The caller must answer with st.Accept() (then use it) or
// st.Reject(reason, msg).
func (s *Session) Accept(ctx context.Context) (*Stream, error) {
	select {
	case st := <-s.acceptCh:
		return st, nil
	case <-ctx.Done():
		return nil, ctx.Err()
	case <-s.done:
		return nil, s.closedErr()
	}
}

// Open opens a data stream to the peer, sends h and waits for the peer's
// reply. If the peer could not connect the stream, the error wraps a
// *DialError with its reason. ctx bounds the whole exchange.
func (s *Session) Open(ctx context.Context, h Header) (*Stream, error) {
	s.inFlight.Add(1)
	defer s.inFlight.Add(-1) // after track: Busy never drops to 0 in between
	ys, stop, err := s.openStream(ctx, h)
	if err != nil {
		return nil, err
	}
	rep, err := readReply(s.reader(ys))
	if !stop() {
		err = ctx.Err()
	}
	if err == nil {
		err = rep.err()
	}
	if err != nil {
		return nil, s.openFailed(ys, h, err)
	}
	st := newStream(s, ys, h, true)
	st.track()
	return st, nil
}

// OpenEarly is Open without waiting for the reply: it returns once h is
// sent, so what the caller writes next travels right behind the header
// and the first answer comes one round trip after the open instead of
// two. The reply is read by the stream's first Read (or AwaitReply):
// if the peer could not connect the stream, that Read returns the error
// with the *DialError, and what was written is discarded by the peer. Use
// it where nothing must be decided before the first bytes go out (a
// forwarded connection whose failure is reported by closing it); ctx
// bounds sending the header only.
func (s *Session) OpenEarly(ctx context.Context, h Header) (*Stream, error) {
	s.inFlight.Add(1)
	defer s.inFlight.Add(-1) // after track
	ys, stop, err := s.openStream(ctx, h)
	if err != nil {
		return nil, err
	}
	if !stop() {
		return nil, s.openFailed(ys, h, ctx.Err())
	}
	st := newStream(s, ys, h, true)
	st.early = true
	st.track()
	return st, nil
}

// openStream opens a yamux stream and sends h on it, the deadline bound
// to ctx until stop is called (stop reports false once ctx has ended).
func (s *Session) openStream(ctx context.Context, h Header) (ys *yamux.Stream, stop func() bool, err error) {
	if err := h.Validate(); err != nil {
		return nil, nil, err
	}
	if err := ctx.Err(); err != nil {
		return nil, nil, fmt.Errorf("tunnel: open %s: %w", h, err)
	}
	select {
	case <-s.done:
		return nil, nil, s.closedErr()
	default:
	}
	ys, err = s.mux.OpenStream()
	if err != nil {
		s.streamsFailed.Add(1)
		if s.mux.IsClosed() {
			return nil, nil, fmt.Errorf("tunnel: open %s: %w", h, s.closedErr())
		}
		return nil, nil, fmt.Errorf("tunnel: open %s: %w", h, err)
	}
	stop = context.AfterFunc(ctx, func() { _ = ys.SetDeadline(time.Now()) })
	if _, err = ys.Write(appendHeader(nil, h)); err != nil {
		if !stop() {
			err = ctx.Err()
		}
		return nil, nil, s.openFailed(ys, h, err)
	}
	return ys, stop, nil
}

// openFailed closes a stream whose open failed and says why.
func (s *Session) openFailed(ys *yamux.Stream, h Header, err error) error {
	s.streamsFailed.Add(1)
	_ = ys.Close()
	select {
	case <-s.done:
		return fmt.Errorf("tunnel: open %s: %w", h, s.closedErr())
	default:
	}
	return fmt.Errorf("tunnel: open %s: %w", h, err)
}

// flowReader reads a yamux stream and tells flow control what was read,
// which is what lets it grant the peer more. Every read of a yamux stream
// goes through one.
type flowReader struct {
	ys   *yamux.Stream
	conn *wireConn // its flow counts the reads; it writes the grants
}

func (s *Session) reader(ys *yamux.Stream) flowReader { return flowReader{ys, s.conn} }

func (r flowReader) Read(p []byte) (int, error) {
	n, err := r.ys.Read(p)
	if r.conn.flow.consumed(r.ys.StreamID(), n) {
		r.conn.sendGrants()
	}
	return n, err
}

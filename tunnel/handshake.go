package tunnel

import (
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"errors"
	"fmt"
	"net"
	"time"

	"github.com/hashicorp/yamux"
)

// TokenEqual compares two tokens in constant time (also independent of
// their lengths), for the relay's Hello check.
func TokenEqual(a, b string) bool {
	ha := sha256.Sum256([]byte(a))
	hb := sha256.Sum256([]byte(b))
	return subtle.ConstantTimeCompare(ha[:], hb[:]) == 1
}

// Client establishes a session over conn as the Hello sender (the daemon):
// it opens the control stream, sends hello and waits for the Welcome. A
// refusal is a *HandshakeError (errors.Is with ErrBadToken and friends).
// hello.Version 0 means ProtocolVersion. ctx and cfg.HandshakeTimeout bound
// the handshake only. On error conn is closed; on success the session owns
// it.
func Client(ctx context.Context, conn net.Conn, cfg Config, hello Hello) (*Session, Welcome, error) {
	fail := func(err error) (*Session, Welcome, error) {
		return nil, Welcome{}, fmt.Errorf("tunnel handshake with %s: %w", conn.RemoteAddr(), err)
	}
	if err := cfg.Verify(); err != nil {
		_ = conn.Close()
		return fail(err)
	}
	if hello.Version == 0 {
		hello.Version = ProtocolVersion
	}
	if err := hello.validate(); err != nil {
		_ = conn.Close()
		return fail(fmt.Errorf("invalid hello: %w", err))
	}
	var w Welcome
	s, err := handshake(ctx, conn, cfg, true, func(_ context.Context, s *Session) (err error) {
		w, err = s.clientHandshake(hello)
		return err
	})
	if err != nil {
		return fail(err)
	}
	hello.Token = ""
	s.hello = hello
	s.start()
	s.log.Debug("tunnel session established", "role", "client", "relayVersion", w.RelayVersion)
	return s, w, nil
}

func (s *Session) clientHandshake(hello Hello) (Welcome, error) {
	ys, err := s.mux.OpenStream()
	if err != nil {
		return Welcome{}, fmt.Errorf("open control stream: %w", err)
	}
	s.ctrl = ys
	if _, err := ys.Write(appendControl(nil, frameHello, encodeHello(hello))); err != nil {
		return Welcome{}, fmt.Errorf("send hello: %w", err)
	}
	typ, payload, err := readControl(ys)
	if err != nil {
		return Welcome{}, fmt.Errorf("read welcome: %w (is the other end an sbx relay of a compatible version?)", err)
	}
	switch typ {
	case frameWelcome:
		return decodeWelcome(payload)
	case frameRefuse:
		he, err := decodeRefuse(payload)
		if err != nil {
			return Welcome{}, err
		}
		return Welcome{}, he
	}
	return Welcome{}, fmt.Errorf("%w: expected welcome, got control frame type %d", ErrProtocol, typ)
}

// Server accepts a session over conn as the Hello receiver (the relay): it
// accepts the control stream, reads the Hello and asks check, which returns
// the Welcome or an error. A *HandshakeError from check is sent to the peer
// as is; any other error is sent as CodeInternal without its text (it may
// hold internals) and returned. Compare tokens with TokenEqual. A Hello of
// another protocol version is refused before check runs. ctx and
// cfg.HandshakeTimeout bound the handshake only. On error conn is closed;
// on success the session owns it. The returned Hello has its token
// removed.
func Server(ctx context.Context, conn net.Conn, cfg Config, check func(Hello) (Welcome, error)) (*Session, Hello, error) {
	fail := func(err error) (*Session, Hello, error) {
		return nil, Hello{}, fmt.Errorf("tunnel handshake from %s: %w", conn.RemoteAddr(), err)
	}
	if err := cfg.Verify(); err != nil {
		_ = conn.Close()
		return fail(err)
	}
	if check == nil {
		_ = conn.Close()
		return fail(errors.New("no hello check function given"))
	}
	var h Hello
	s, err := handshake(ctx, conn, cfg, false, func(ctx context.Context, s *Session) (err error) {
		h, err = s.serverHandshake(ctx, check)
		return err
	})
	if err != nil {
		return fail(err)
	}
	h.Token = ""
	s.hello = h
	s.start()
	s.log.Debug("tunnel session established", "role", "server", "hello", h)
	return s, h, nil
}

func (s *Session) serverHandshake(ctx context.Context, check func(Hello) (Welcome, error)) (Hello, error) {
	ys, err := s.mux.AcceptStreamWithContext(ctx)
	if err != nil {
		return Hello{}, fmt.Errorf("accept control stream: %w", err)
	}
	s.ctrl = ys
	typ, payload, err := readControl(ys)
	if err != nil {
		return Hello{}, fmt.Errorf("read hello: %w (is the other end an sbx daemon?)", err)
	}
	if typ != frameHello {
		return Hello{}, fmt.Errorf("%w: expected hello, got control frame type %d", ErrProtocol, typ)
	}
	h, err := decodeHello(payload)
	var verr errHelloVersion
	if errors.As(err, &verr) {
		he := &HandshakeError{Code: CodeVersionMismatch, Message: fmt.Sprintf(
			"the relay speaks tunnel protocol %d, the daemon %d; use the same sbx release on both ends", ProtocolVersion, verr.version)}
		s.refuse(he)
		return Hello{}, he
	}
	if err != nil {
		return Hello{}, err
	}
	w, err := check(h)
	if err != nil {
		var he *HandshakeError
		if !errors.As(err, &he) {
			he = &HandshakeError{Code: CodeInternal, Message: "the relay could not check the hello; see the relay's log"}
		}
		s.refuse(he)
		return Hello{}, err
	}
	if err := w.validate(); err != nil {
		s.refuse(&HandshakeError{Code: CodeInternal, Message: "the relay built an invalid welcome; see the relay's log"})
		return Hello{}, fmt.Errorf("invalid welcome from check: %w", err)
	}
	if _, err := ys.Write(appendControl(nil, frameWelcome, encodeWelcome(w))); err != nil {
		return Hello{}, fmt.Errorf("send welcome: %w", err)
	}
	return h, nil
}

// handshake starts a session over conn and runs step on it, bounded by ctx
// and cfg.HandshakeTimeout. On error both are closed; on success the
// session owns conn and still has to be started.
func handshake(ctx context.Context, conn net.Conn, cfg Config, initiator bool, step func(context.Context, *Session) error) (*Session, error) {
	s, err := newSession(conn, cfg, initiator)
	if err != nil {
		_ = conn.Close()
		return nil, err
	}
	ctx, cancel := context.WithTimeout(ctx, cfg.HandshakeTimeout)
	defer cancel()
	// Cancelling tears the half-built session down, which unblocks every
	// step of the handshake at once.
	stop := context.AfterFunc(ctx, func() { _ = s.mux.Close() })
	err = step(ctx, s)
	if !stop() {
		err = handshakeCtxErr(ctx, err)
	}
	if err != nil {
		_ = s.mux.Close()
		return nil, err
	}
	return s, nil
}

// refuse sends a refusal and gives the peer a moment to read it and hang
// up before the caller closes the connection.
func (s *Session) refuse(he *HandshakeError) {
	if _, err := s.ctrl.Write(appendControl(nil, frameRefuse, encodeRefuse(he))); err != nil {
		return
	}
	t := time.NewTimer(goodbyeLinger)
	defer t.Stop()
	select {
	case <-s.mux.CloseChan():
	case <-t.C:
	}
}

func handshakeCtxErr(ctx context.Context, err error) error {
	cerr := ctx.Err()
	if errors.Is(cerr, context.DeadlineExceeded) {
		cerr = fmt.Errorf("no answer in time: %w", cerr)
	}
	if err == nil || errors.Is(err, yamux.ErrSessionShutdown) {
		return cerr
	}
	var he *HandshakeError
	if errors.As(err, &he) {
		return err
	}
	return fmt.Errorf("%w (%v)", cerr, err)
}

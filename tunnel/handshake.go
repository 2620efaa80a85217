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
// their lengths), for a Hello check by a side that holds the token itself
// (tests, benchmarks). The relay holds only a TokenVerifier.
func TokenEqual(a, b string) bool {
	ha := sha256.Sum256([]byte(a))
	hb := sha256.Sum256([]byte(b))
	return subtle.ConstantTimeCompare(ha[:], hb[:]) == 1
}

// Client establishes a session over conn as the Hello sender (the daemon):
// it sends hello on the bare connection, waits for the Welcome, and only
// then starts the multiplexer and opens the control stream. A refusal is
// a *HandshakeError (errors.Is with ErrBadToken and friends).
// hello.Version 0 means ProtocolVersion. ctx and cfg.HandshakeTimeout
// bound the handshake only. On error conn is closed; on success the
// session owns it.
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
	hello.Bench = false // a session; ClientBench asks for a bench connection
	if err := hello.validate(); err != nil {
		_ = conn.Close()
		return fail(fmt.Errorf("invalid hello: %w", err))
	}
	wc := newWireConn(conn, cfg.SplitHeaderWrites)
	var w Welcome
	err := bounded(ctx, wc, cfg, func() (err error) {
		w, err = clientHandshake(wc, hello)
		return err
	})
	if err != nil {
		_ = conn.Close()
		return fail(err)
	}
	s, err := newSession(wc, cfg, true)
	if err != nil {
		_ = conn.Close()
		return fail(err)
	}
	// The Hello sender opens the control stream, the receiver's first.
	if s.ctrl, err = s.mux.OpenStream(); err != nil {
		_ = s.mux.Close()
		return fail(fmt.Errorf("open control stream: %w", err))
	}
	hello.Token = ""
	s.hello = hello
	s.start()
	s.log.Debug("tunnel session established", "role", "client", "relayVersion", w.RelayVersion)
	return s, w, nil
}

// ClientBench is Client for a bench connection: it sends hello as a
// Hello (bench) frame on the bare connection and, once the receiver
// welcomes it, returns conn itself, with no multiplexer, for the bench
// protocol (BenchUpload, BenchDownload, BenchRoundTrips). A receiver that
// serves no bench connections refuses it (a relay that predates them
// closes the connection without an answer: check the "bench" capability
// of a session's Welcome first). Token, errors and bounds are Client's.
// On error conn is closed; on success the caller owns it.
func ClientBench(ctx context.Context, conn net.Conn, cfg Config, hello Hello) (net.Conn, Welcome, error) {
	fail := func(err error) (net.Conn, Welcome, error) {
		_ = conn.Close()
		return nil, Welcome{}, fmt.Errorf("tunnel bench handshake with %s: %w", conn.RemoteAddr(), err)
	}
	if err := cfg.Verify(); err != nil {
		return fail(err)
	}
	if hello.Version == 0 {
		hello.Version = ProtocolVersion
	}
	hello.Bench = true
	if err := hello.validate(); err != nil {
		return fail(fmt.Errorf("invalid hello: %w", err))
	}
	var w Welcome
	err := bounded(ctx, conn, cfg, func() (err error) {
		w, err = clientHandshake(conn, hello)
		return err
	})
	if err != nil {
		return fail(err)
	}
	return conn, w, nil
}

// clientHandshake sends the Hello (a bench Hello if hello.Bench) and
// reads the answer on the bare connection.
func clientHandshake(conn net.Conn, hello Hello) (Welcome, error) {
	typ := frameHello
	if hello.Bench {
		typ = frameBenchHello
	}
	if _, err := conn.Write(appendControl(nil, typ, encodeHello(hello))); err != nil {
		return Welcome{}, fmt.Errorf("send hello: %w", err)
	}
	typ, payload, err := readControl(conn)
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
// reads the Hello from the bare connection and asks check, which returns
// the Welcome or an error; only an accepted peer gets a multiplexer, so
// before the token is checked a connection costs one bounded read buffer
// (maxControlPayload), not a yamux session with its stream windows. A
// *HandshakeError from check is sent to the peer as is; any other error is
// sent as CodeInternal without its text (it may hold internals) and
// returned. Check tokens with a TokenVerifier (or TokenEqual). A Hello of another protocol
// version is refused before check runs. ctx and cfg.HandshakeTimeout bound
// the handshake only. On error conn is closed; on success the session
// owns it. The returned Hello has its token removed.
func Server(ctx context.Context, conn net.Conn, cfg Config, check func(Hello) (Welcome, error)) (*Session, Hello, error) {
	s, _, h, err := serve(ctx, conn, cfg, check, false)
	return s, h, err
}

// ServerOrBench is Server for a receiver that also serves bench
// connections (the relay): a Hello (bench) that check accepts (check sees
// Hello.Bench set) returns the bare connection as bench, with a nil
// session, for ServeBench; a Hello returns a session as Server does. The
// token is checked the same way for both. On error conn is closed; on
// success the session, or the caller, owns it.
func ServerOrBench(ctx context.Context, conn net.Conn, cfg Config, check func(Hello) (Welcome, error)) (s *Session, bench net.Conn, h Hello, err error) {
	return serve(ctx, conn, cfg, check, true)
}

func serve(ctx context.Context, conn net.Conn, cfg Config, check func(Hello) (Welcome, error), allowBench bool) (*Session, net.Conn, Hello, error) {
	fail := func(err error) (*Session, net.Conn, Hello, error) {
		return nil, nil, Hello{}, fmt.Errorf("tunnel handshake from %s: %w", conn.RemoteAddr(), err)
	}
	if err := cfg.Verify(); err != nil {
		_ = conn.Close()
		return fail(err)
	}
	if check == nil {
		_ = conn.Close()
		return fail(errors.New("no hello check function given"))
	}
	wc := newWireConn(conn, cfg.SplitHeaderWrites)
	var h Hello
	err := bounded(ctx, wc, cfg, func() (err error) {
		h, err = serverHandshake(wc, check, allowBench)
		return err
	})
	if err != nil {
		_ = conn.Close()
		return fail(err)
	}
	if h.Bench {
		// wireConn reads straight through (it keeps no read-ahead), so
		// the bare connection carries on where the handshake left it.
		h.Token = ""
		return nil, conn, h, nil
	}
	s, err := newSession(wc, cfg, false)
	if err != nil {
		_ = conn.Close()
		return fail(err)
	}
	actx, cancel := context.WithTimeout(ctx, cfg.HandshakeTimeout)
	defer cancel()
	if s.ctrl, err = s.mux.AcceptStreamWithContext(actx); err != nil {
		_ = s.mux.Close()
		return fail(fmt.Errorf("accept control stream: %w", handshakeCtxErr(actx, err)))
	}
	h.Token = ""
	s.hello = h
	s.start()
	s.log.Debug("tunnel session established", "role", "server", "hello", h)
	return s, nil, h, nil
}

// serverHandshake reads the Hello and answers it on the bare connection.
// A Hello (bench) is refused unless allowBench.
func serverHandshake(conn net.Conn, check func(Hello) (Welcome, error), allowBench bool) (Hello, error) {
	typ, payload, err := readControl(conn)
	if err != nil {
		return Hello{}, fmt.Errorf("read hello: %w (is the other end an sbx daemon?)", err)
	}
	if typ != frameHello && typ != frameBenchHello {
		return Hello{}, fmt.Errorf("%w: expected hello, got control frame type %d", ErrProtocol, typ)
	}
	h, err := decodeHello(payload)
	h.Bench = typ == frameBenchHello
	if err == nil && h.Bench && !allowBench {
		he := &HandshakeError{Code: CodeInternal, Message: "this end serves no bench connections"}
		refuse(conn, he)
		return Hello{}, he
	}
	var verr errHelloVersion
	if errors.As(err, &verr) {
		he := &HandshakeError{Code: CodeVersionMismatch, Message: fmt.Sprintf(
			"the relay speaks tunnel protocol %d, the daemon %d; use the same sbx release on both ends", ProtocolVersion, verr.version)}
		refuse(conn, he)
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
		refuse(conn, he)
		return Hello{}, err
	}
	if err := w.validate(); err != nil {
		refuse(conn, &HandshakeError{Code: CodeInternal, Message: "the relay built an invalid welcome; see the relay's log"})
		return Hello{}, fmt.Errorf("invalid welcome from check: %w", err)
	}
	if _, err := conn.Write(appendControl(nil, frameWelcome, encodeWelcome(w))); err != nil {
		return Hello{}, fmt.Errorf("send welcome: %w", err)
	}
	return h, nil
}

// bounded runs a handshake step on the bare connection, bounded by ctx and
// cfg.HandshakeTimeout: when either ends, the connection's deadline passes,
// which unblocks its reads and writes.
func bounded(ctx context.Context, conn net.Conn, cfg Config, step func() error) error {
	ctx, cancel := context.WithTimeout(ctx, cfg.HandshakeTimeout)
	defer cancel()
	stop := context.AfterFunc(ctx, func() { _ = conn.SetDeadline(time.Unix(1, 0)) })
	err := step()
	if !stop() {
		return handshakeCtxErr(ctx, err)
	}
	if err == nil {
		if derr := conn.SetDeadline(time.Time{}); derr != nil {
			return fmt.Errorf("clear the handshake deadline: %w", derr)
		}
	}
	return err
}

// refuse sends a refusal and gives the peer a moment to read it and hang
// up (a read returns then) before the caller closes the connection.
func refuse(conn net.Conn, he *HandshakeError) {
	if _, err := conn.Write(appendControl(nil, frameRefuse, encodeRefuse(he))); err != nil {
		return
	}
	_ = conn.SetReadDeadline(time.Now().Add(goodbyeLinger))
	var b [1]byte
	_, _ = conn.Read(b[:])
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

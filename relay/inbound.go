package relay

import (
	"bytes"
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"sync"
	"time"

	"github.com/sbx-dev/sbx/relay/relayargs"
	"github.com/sbx-dev/sbx/tunnel"
)

// maxOpenAttempts bounds how often one inbound connection is retried when
// the session it was opened on dies underneath it.
const maxOpenAttempts = 5

// acceptInbound accepts connections on one inbound port until the listener
// is closed. Transient accept errors (out of file descriptors) back off
// instead of ending the port.
func (r *Relay) acceptInbound(in inboundListener) {
	backoff := 5 * time.Millisecond
	for {
		conn, err := in.l.Accept()
		if err != nil {
			if r.serveCtx.Err() != nil || errors.Is(err, net.ErrClosed) {
				return
			}
			r.log.Warn("inbound accept failed; retrying", "port", in.spec.ContainerPort, "err", err, "backoff", backoff)
			t := time.NewTimer(backoff)
			select {
			case <-t.C:
			case <-r.serveCtx.Done():
				t.Stop()
				return
			}
			backoff = min(backoff*2, time.Second)
			continue
		}
		backoff = 5 * time.Millisecond
		r.wg.Add(1)
		go func() {
			defer r.wg.Done()
			r.serveInbound(in.spec, conn)
		}()
	}
}

// serveInbound sends one connection from the cluster to the laptop. While no
// session is up it is held for up to the grace period; after that, or when
// the laptop cannot reach its local process, HTTP ports get an explanatory
// 503/502 and TCP ports are closed.
func (r *Relay) serveInbound(spec relayargs.Inbound, conn net.Conn) {
	defer conn.Close()
	// The whole connection counts for the drain, so one accepted before
	// SIGTERM is answered or served, not cut mid-open.
	r.active.add()
	defer r.active.done()
	log := r.log.With("port", spec.ContainerPort, "workload", spec.Workload, "workloadPort", spec.Port, "remote", conn.RemoteAddr())
	deadline := time.Now().Add(r.opts.Grace)

	held := false
	release := func() {
		if held {
			held = false
			r.m.held.Dec()
			r.heldN.Add(-1)
		}
	}
	defer release()

	// An HTTP request's first bytes are read once a session and a stream
	// slot are there (readEarly). A request that is safe to repeat goes
	// with the stream's header (withOpen), saving the round trip an open
	// costs; any other after the laptop's reply, as before. Answers read
	// them again (in). A connection held again after its session died
	// keeps them.
	var early, withOpen []byte
	readEarly := spec.AppProtocol.IsHTTP()
	in := conn

	var st *tunnel.Stream
	for attempt := 1; ; attempt++ {
		pool, _ := r.sessions.current()
		if pool == nil {
			if !held {
				if int(r.heldN.Add(1)) > r.opts.MaxHeld {
					r.heldN.Add(-1)
					log.Info("laptop offline and too many connections held already; answering now", "maxHeld", r.opts.MaxHeld)
					r.answerOffline(log, spec, in)
					return
				}
				held = true
				r.m.held.Inc()
				r.m.heldTotal.Inc()
				log.Debug("laptop offline; holding the connection", "until", deadline)
			}
			var err error
			if pool, err = r.sessions.wait(r.serveCtx, deadline); err != nil {
				release()
				r.answerOffline(log, spec, in)
				return
			}
		}
		release()
		// One of MaxStreams per attempt: only an open stream buffers, so a
		// connection that is answered or held again gives its slot back.
		if !r.takeStream(kindInbound) {
			r.answerBusy(log, spec, in)
			return
		}
		if readEarly {
			readEarly = false
			if early = r.readEarly(conn); len(early) > 0 {
				in = &prefixConn{Conn: conn, prefix: early}
				if safeToRepeat(early) {
					withOpen = early
				}
			}
		}
		var err error
		st, err = r.openInbound(pool, spec, conn, withOpen)
		if err == nil {
			break
		}
		r.releaseStream()
		var de *tunnel.DialError
		if errors.As(err, &de) {
			r.answerRefused(log, spec, in, de)
			return
		}
		// The session died or the pool emptied: count it offline now and
		// try again, held if need be, within the same grace. A laptop that
		// does not answer in time is not retried.
		r.sessions.refresh(pool)
		if attempt >= maxOpenAttempts || r.pipeCtx.Err() != nil || errors.Is(err, context.DeadlineExceeded) {
			log.Warn("could not open an inbound stream to the laptop", "err", err, "attempts", attempt)
			r.answerError(log, spec, in, err)
			return
		}
		log.Debug("inbound stream open failed; retrying", "err", err, "attempt", attempt)
	}
	defer r.releaseStream() // after st.Close: the stream's buffers go first
	defer st.Close()

	end := r.m.streamOpened(kindInbound)
	defer end()
	qc := r.quiet.track(conn)
	defer r.quiet.untrack(qc)
	src := r.m.count(qc)
	if len(early) > 0 {
		qc.callerSpoke()
		r.m.toLaptop.Add(float64(len(early)))
		if withOpen == nil {
			// Not sent with the open: the pipe sends them first.
			src = &prefixConn{Conn: src, prefix: early}
		}
	}
	if err := tunnel.Pipe(r.pipeCtx, src, st); err != nil {
		log.Debug("inbound stream ended", "err", err)
	}
}

// Early data: an HTTP port's connection waits up to earlyWait for its
// client's first bytes (HTTP clients speak first) and reads at most
// earlyMax of them. A TCP port's protocol may have the server speak
// first, or be unsafe to repeat, so its streams open as before.
const (
	earlyWait = time.Second
	earlyMax  = 32 << 10
)

// readEarly reads what the client sends first, waiting up to earlyWait;
// nil when nothing came (the stream then opens as before and the client's
// bytes, an end or an error, reach the pipe).
func (r *Relay) readEarly(conn net.Conn) []byte {
	if r.noEarlyData.Load() {
		return nil
	}
	if err := conn.SetReadDeadline(time.Now().Add(earlyWait)); err != nil {
		return nil
	}
	bp := earlyBufs.Get().(*[]byte)
	defer earlyBufs.Put(bp)
	n, _ := conn.Read(*bp)
	_ = conn.SetReadDeadline(time.Time{})
	if n == 0 {
		return nil
	}
	return append([]byte(nil), (*bp)[:n]...) // kept only as long as it is
}

// safeToRepeat reports whether early starts an HTTP/1 request with a safe
// method (RFC 9110 9.2.1). Only such a request goes with the stream's
// header: if the session dies before the laptop's reply, the laptop may
// have delivered it already, and the relay sends it again on another
// session. Anything else (a POST, HTTP/2's preface) is sent after the
// reply, when a retry can no longer repeat it.
func safeToRepeat(early []byte) bool {
	for _, m := range []string{"GET ", "HEAD ", "OPTIONS ", "TRACE "} {
		if bytes.HasPrefix(early, []byte(m)) {
			return true
		}
	}
	return false
}

// earlyBufs recycles readEarly's buffers: every inbound connection reads
// into one, and most keep a few hundred bytes of it.
var earlyBufs = sync.Pool{New: func() any { b := make([]byte, earlyMax); return &b }}

// openInbound opens conn's stream to the laptop on pool. Bytes withOpen
// (a request safe to repeat) go right behind the header (OpenEarly) and
// the laptop's reply is awaited here, so a refusal or a session lost
// before the reply is handled exactly as a failed Open (the caller
// answers, or retries with the same bytes).
func (r *Relay) openInbound(pool *tunnel.Pool, spec relayargs.Inbound, conn net.Conn, withOpen []byte) (*tunnel.Stream, error) {
	ctx, cancel := context.WithTimeout(r.pipeCtx, r.opts.DialTimeout+5*time.Second)
	defer cancel()
	h := tunnel.Header{Kind: tunnel.KindInbound, Workload: spec.Workload, Port: spec.Port, Source: conn.RemoteAddr().String()}
	if len(withOpen) == 0 {
		return pool.Open(ctx, h)
	}
	st, err := pool.OpenEarly(ctx, h)
	if err != nil {
		return nil, err
	}
	// The reply wait ends with ctx: its deadline or the relay's pipes
	// being cut.
	stop := context.AfterFunc(ctx, func() { _ = st.SetReadDeadline(time.Now()) })
	if _, err = st.Write(withOpen); err == nil {
		err = st.AwaitReply()
	}
	if !stop() {
		err = cmp.Or(err, ctx.Err())
	}
	_ = st.SetReadDeadline(time.Time{})
	if err != nil {
		_ = st.Close()
		var ne net.Error
		if ctx.Err() != nil || errors.As(err, &ne) && ne.Timeout() {
			if !errors.Is(err, context.DeadlineExceeded) {
				err = fmt.Errorf("%w: %w", err, context.DeadlineExceeded)
			}
		}
		return nil, err
	}
	return st, nil
}

// prefixConn is a connection whose first bytes were read already: Read
// returns them before the rest.
type prefixConn struct {
	net.Conn
	prefix []byte
}

func (c *prefixConn) Read(p []byte) (int, error) {
	if len(c.prefix) > 0 {
		n := copy(p, c.prefix)
		c.prefix = c.prefix[n:]
		return n, nil
	}
	return c.Conn.Read(p)
}

// CloseWrite forwards the half-close so piping keeps its semantics.
func (c *prefixConn) CloseWrite() error { return closeWrite(c.Conn) }

// closeWrite half-closes c, or closes it when it cannot half-close: what
// the relay's connection wrappers do, so that tunnel.Pipe's half-close
// reaches the socket through them.
func closeWrite(c net.Conn) error {
	if cw, ok := c.(interface{ CloseWrite() error }); ok {
		return cw.CloseWrite()
	}
	return c.Close()
}

// answerOffline answers a connection that found no laptop within grace.
func (r *Relay) answerOffline(log *slog.Logger, spec relayargs.Inbound, conn net.Conn) {
	since, ever := r.sessions.offlineState()
	if !spec.AppProtocol.IsHTTP() {
		r.m.inboundClosed.WithLabelValues("offline").Inc()
		log.Info("laptop offline; closing TCP connection", "offlineSince", since)
		_ = conn.Close()
		return
	}
	r.m.httpAnswers.WithLabelValues("503").Inc()
	log.Info("laptop offline; answering 503", "offlineSince", since)
	serveAnswer(r.pipeCtx, r.log, conn, http.StatusServiceUnavailable, offlineBody(r.opts.Sandbox, since, r.now(), ever))
}

// takeStream reserves one of MaxStreams for a stream of kind; false (and
// counted) when the relay serves that many already.
func (r *Relay) takeStream(kind string) bool {
	if int(r.streamsN.Add(1)) > r.opts.MaxStreams {
		r.streamsN.Add(-1)
		r.m.atLimit.WithLabelValues(kind).Inc()
		return false
	}
	return true
}

func (r *Relay) releaseStream() { r.streamsN.Add(-1) }

// answerBusy answers an inbound connection refused at MaxStreams.
func (r *Relay) answerBusy(log *slog.Logger, spec relayargs.Inbound, conn net.Conn) {
	log.Info("relay at its stream limit; refusing an inbound connection", "maxStreams", r.opts.MaxStreams)
	if !spec.AppProtocol.IsHTTP() {
		r.m.inboundClosed.WithLabelValues("busy").Inc()
		_ = conn.Close()
		return
	}
	r.m.httpAnswers.WithLabelValues("503").Inc()
	serveAnswer(r.pipeCtx, r.log, conn, http.StatusServiceUnavailable, busyBody(r.opts.Sandbox, r.opts.MaxStreams))
}

// answerRefused answers a connection the laptop could not deliver locally.
func (r *Relay) answerRefused(log *slog.Logger, spec relayargs.Inbound, conn net.Conn, de *tunnel.DialError) {
	if !spec.AppProtocol.IsHTTP() {
		r.m.inboundClosed.WithLabelValues(de.Reason.String()).Inc()
		log.Info("laptop could not reach its local process; closing TCP connection", "reason", de.Reason, "msg", de.Message)
		_ = conn.Close()
		return
	}
	r.m.httpAnswers.WithLabelValues("502").Inc()
	log.Info("laptop could not reach its local process; answering 502", "reason", de.Reason, "msg", de.Message)
	serveAnswer(r.pipeCtx, r.log, conn, http.StatusBadGateway, refusedBody(r.opts.Sandbox, spec, de.Reason.String(), de.Message))
}

// answerError answers a connection whose stream could not be opened for a
// tunnel failure (sessions dying under it).
func (r *Relay) answerError(log *slog.Logger, spec relayargs.Inbound, conn net.Conn, err error) {
	if !spec.AppProtocol.IsHTTP() {
		r.m.inboundClosed.WithLabelValues("error").Inc()
		_ = conn.Close()
		return
	}
	r.m.httpAnswers.WithLabelValues("502").Inc()
	serveAnswer(r.pipeCtx, r.log, conn, http.StatusBadGateway, refusedBody(r.opts.Sandbox, spec, "tunnel error", err.Error()))
}

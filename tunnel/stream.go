package tunnel

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/yamux"
)

// Stream is one data stream: a net.Conn with half-close (CloseWrite) and the
// header it was opened with. Streams returned by Session.Accept must be
// answered with Accept or Reject before payload is written.
type Stream struct {
	s      *Session
	ys     *yamux.Stream
	hdr    Header
	frame  int
	opener bool

	replyMu sync.Mutex
	replied bool

	closed  atomic.Bool
	tracked atomic.Bool // counted in the session's StreamsOpen

	// early: opened with OpenEarly, so the peer's reply is read by the
	// first Read (AwaitReply). replyDone is set once it was, replyErr
	// (written before replyDone) says how it went.
	early     bool
	awaitMu   sync.Mutex
	replyDone atomic.Bool
	replyErr  error
}

var _ net.Conn = (*Stream)(nil)

func newStream(s *Session, ys *yamux.Stream, h Header, opener bool) *Stream {
	return &Stream{s: s, ys: ys, hdr: h, frame: s.cfg.MaxFrameSize, opener: opener, replied: opener}
}

// Header is the header the stream was opened with.
func (st *Stream) Header() Header { return st.hdr }

// Accept tells the opener the stream is connected; payload may flow.
func (st *Stream) Accept() error {
	return st.sendReply(reply{})
}

// Reject tells the opener the stream could not be connected and why, then
// closes it. The opener's Open returns a *DialError with reason and msg.
func (st *Stream) Reject(reason Reason, msg string) error {
	if reason == 0 {
		reason = ReasonOther
	}
	err := st.sendReply(reply{code: uint8(reason), message: msg})
	st.s.streamsFailed.Add(1)
	if cerr := st.Close(); err == nil {
		err = cerr
	}
	return err
}

func (st *Stream) sendReply(r reply) error {
	st.replyMu.Lock()
	defer st.replyMu.Unlock()
	if st.replied {
		if st.opener {
			return errors.New("tunnel: Accept/Reject is for accepted streams, this one was opened here")
		}
		return errors.New("tunnel: stream already answered")
	}
	st.replied = true
	if _, err := st.ys.Write(appendReply(nil, r)); err != nil {
		return st.wrapErr("reply", err)
	}
	return nil
}

// Read reads payload from the peer. It returns io.EOF once the peer closed
// its side for writing; if the session died instead, it returns the
// session's error, so a cut is never mistaken for a clean end.
func (st *Stream) Read(p []byte) (int, error) {
	if st.closed.Load() {
		return 0, net.ErrClosed
	}
	if st.early {
		if err := st.AwaitReply(); err != nil {
			return 0, err
		}
	}
	n, err := st.s.reader(st.ys).Read(p)
	if n > 0 {
		st.s.bytesIn.Add(uint64(n))
	}
	if err != nil {
		err = st.wrapErr("read", err)
	}
	return n, err
}

// AwaitReply waits for the peer's reply on a stream opened with
// OpenEarly (the first Read does it too) and returns what Open would
// have: nil once the peer connected the stream, an error wrapping a
// *DialError when it could not. The stream's read deadline bounds the
// wait; a deadline that passes before the reply began leaves it to a
// later call. For other streams it returns nil.
func (st *Stream) AwaitReply() error {
	if !st.early {
		return nil
	}
	if st.replyDone.Load() { // the fast path of every later Read
		return st.replyErr
	}
	st.awaitMu.Lock()
	defer st.awaitMu.Unlock()
	if st.replyDone.Load() {
		return st.replyErr
	}
	r := st.s.reader(st.ys)
	var first [1]byte
	if _, err := io.ReadFull(r, first[:]); err != nil {
		err = st.wrapErr("read reply", err)
		if isTimeout(err) {
			return err // nothing of the reply read yet: try again later
		}
		return st.endReply(err)
	}
	rep, err := readReply(io.MultiReader(bytes.NewReader(first[:]), r))
	if err == nil {
		err = rep.err()
	}
	if err != nil {
		if _, ok := errors.AsType[*DialError](err); !ok {
			err = st.wrapErr("read reply", err)
		}
		return st.endReply(fmt.Errorf("tunnel: open %s: %w", st.hdr, err))
	}
	st.replyDone.Store(true)
	return nil
}

// endReply records a failed reply: the stream is over.
func (st *Stream) endReply(err error) error {
	st.s.streamsFailed.Add(1)
	st.replyErr = err
	st.replyDone.Store(true)
	_ = st.ys.Close()
	return err
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

// Write writes payload in frames of at most Config.MaxFrameSize so other
// streams' frames interleave with a large write.
func (st *Stream) Write(p []byte) (int, error) {
	if st.closed.Load() {
		return 0, net.ErrClosed
	}
	if !st.opener {
		st.replyMu.Lock()
		ok := st.replied
		st.replyMu.Unlock()
		if !ok {
			return 0, ErrNotAccepted
		}
	}
	total := 0
	for total < len(p) {
		end := min(len(p), total+st.frame)
		n, err := st.ys.Write(p[total:end])
		total += n
		st.s.bytesOut.Add(uint64(n))
		if err != nil {
			err = st.wrapErr("write", err)
			// A peer that refused an early stream closed it: its reply,
			// already here, says why better than the write's error.
			if st.early && !isTimeout(err) {
				if rerr := st.AwaitReply(); rerr != nil {
					return total, rerr
				}
			}
			return total, err
		}
	}
	return total, nil
}

// CloseWrite sends end-of-stream to the peer; reading continues until the
// peer closes its side.
func (st *Stream) CloseWrite() error {
	if st.closed.Load() {
		return net.ErrClosed
	}
	return st.wrapErr("close", st.ys.Close())
}

// Close closes both directions. Blocked Reads and Writes return
// net.ErrClosed. The peer sees end-of-stream; if it keeps writing, its
// writes stall on the window and the stream is reset after
// Config.StreamCloseTimeout.
func (st *Stream) Close() error {
	if st.closed.Swap(true) {
		return nil
	}
	if st.tracked.Load() {
		st.s.streamsOpen.Add(-1)
	}
	// yamux's Close only ends our writing; the deadline wakes a reader
	// blocked on this stream so Close unblocks it like net.Conn's.
	_ = st.ys.SetDeadline(time.Now())
	err := st.ys.Close()
	if errors.Is(err, yamux.ErrSessionShutdown) {
		err = nil
	}
	return st.wrapErr("close", err)
}

// track counts the stream as open once it is handed to the user.
func (st *Stream) track() {
	st.s.streamsOpen.Add(1)
	st.s.streamsTotal.Add(1)
	st.tracked.Store(true)
}

// closeQuiet closes a stream that was never handed to the user.
func (st *Stream) closeQuiet() { _ = st.Close() }

// LocalAddr is the local address of the session's connection.
func (st *Stream) LocalAddr() net.Addr { return st.ys.LocalAddr() }

// RemoteAddr is the remote address of the session's connection.
func (st *Stream) RemoteAddr() net.Addr { return st.ys.RemoteAddr() }

// SetDeadline sets the read and write deadlines.
func (st *Stream) SetDeadline(t time.Time) error { return st.ys.SetDeadline(t) }

// SetReadDeadline sets the read deadline.
func (st *Stream) SetReadDeadline(t time.Time) error { return st.ys.SetReadDeadline(t) }

// SetWriteDeadline sets the write deadline.
func (st *Stream) SetWriteDeadline(t time.Time) error { return st.ys.SetWriteDeadline(t) }

// wrapErr turns yamux errors into errors that say what happened to which
// stream. io.EOF stays io.EOF (as io.Reader requires) unless the session is
// gone, deadlines stay net.Error timeouts.
func (st *Stream) wrapErr(op string, err error) error {
	if err == nil {
		return nil
	}
	if st.closed.Load() {
		return net.ErrClosed
	}
	// yamux marks itself closed before it ends its streams, so a stream
	// ended by a dying session is recognised here even before the
	// session's own goroutines have noticed.
	sessionGone := st.s.mux.IsClosed()
	switch {
	case errors.Is(err, io.EOF) && !sessionGone:
		return io.EOF
	case errors.Is(err, yamux.ErrTimeout):
		return &streamError{op: op, hdr: st.hdr, err: os.ErrDeadlineExceeded}
	case sessionGone || errors.Is(err, yamux.ErrSessionShutdown):
		return &streamError{op: op, hdr: st.hdr, err: st.s.closedErr()}
	}
	return &streamError{op: op, hdr: st.hdr, err: err}
}

// streamError names the stream an error happened on.
type streamError struct {
	op  string
	hdr Header
	err error
}

func (e *streamError) Error() string {
	return fmt.Sprintf("tunnel stream %s: %s: %v", e.hdr, e.op, e.err)
}

func (e *streamError) Unwrap() error { return e.err }

// Timeout reports whether the error is a deadline, as net.Error requires.
func (e *streamError) Timeout() bool { return errors.Is(e.err, os.ErrDeadlineExceeded) }

// Temporary is false: nothing here gets better by retrying the same call.
func (e *streamError) Temporary() bool { return false }

// The session's side of the control stream: the writer that owns it, the
// loop that reads Ping, Pong, Draining and Goodbye, and the heartbeat
// that detects a dead peer (frames are in control.go).

package tunnel

import (
	"errors"
	"fmt"
	"io"
	"time"
)

// Ping measures a round trip over the control stream (through the same
// queues as data, so it shows what a request would see). It fails after
// Config.DeadPeerTimeout without an answer.
func (s *Session) Ping() (time.Duration, error) {
	ch := make(chan struct{})
	s.pingMu.Lock()
	s.pingSeq++
	nonce := s.pingSeq
	s.pings[nonce] = ch
	s.pingMu.Unlock()
	defer func() {
		s.pingMu.Lock()
		delete(s.pings, nonce)
		s.pingMu.Unlock()
	}()
	timer := time.NewTimer(s.cfg.DeadPeerTimeout)
	defer timer.Stop()
	quiet := s.conn.flow.quiet()
	start := time.Now()
	select {
	case s.ctrlOut <- controlMsg{frame: appendControl(nil, framePing, encodeNonce(nonce))}:
	case <-s.done:
		return 0, s.closedErr()
	case <-timer.C:
		return 0, fmt.Errorf("tunnel ping to %s: control queue full for %s", s.conn.RemoteAddr(), s.cfg.DeadPeerTimeout)
	}
	select {
	case <-ch:
		rtt := time.Since(start)
		s.conn.flow.sampleRTT(rtt, quiet)
		return rtt, nil
	case <-s.done:
		return 0, s.closedErr()
	case <-timer.C:
		return 0, fmt.Errorf("tunnel ping to %s: no answer within %s", s.conn.RemoteAddr(), s.cfg.DeadPeerTimeout)
	}
}

// closedErr is the error operations return once the session is over.
func (s *Session) closedErr() error {
	<-s.done
	s.errMu.Lock()
	defer s.errMu.Unlock()
	if s.err == ErrSessionClosed {
		return ErrSessionClosed
	}
	return fmt.Errorf("tunnel session to %s ended: %w", s.conn.RemoteAddr(), s.err)
}

// controlWriter is the only writer of the control stream, so a stalled
// connection blocks it and not the goroutines that queue frames.
func (s *Session) controlWriter() {
	defer s.wg.Done()
	for {
		select {
		case m := <-s.ctrlOut:
			_, err := s.ctrl.Write(m.frame)
			if m.written != nil {
				close(m.written)
			}
			if err != nil {
				s.shutdown(fmt.Errorf("tunnel: write to control stream: %w", err))
				return
			}
		case <-s.done:
			return
		}
	}
}

// sendControlAsync queues a frame without waiting; it is dropped if the
// queue is full (heartbeats and pongs are repeated anyway).
func (s *Session) sendControlAsync(frame []byte) {
	select {
	case s.ctrlOut <- controlMsg{frame: frame}:
	default:
	}
}

// controlLoop reads the peer's control frames.
func (s *Session) controlLoop() {
	defer s.wg.Done()
	defer close(s.ctrlDone)
	for {
		typ, payload, err := readControl(s.reader(s.ctrl))
		if err != nil {
			if s.mux.IsClosed() {
				return // the accept loop reports why
			}
			if errors.Is(err, io.EOF) {
				err = fmt.Errorf("%w: peer closed the control stream", ErrProtocol)
			}
			s.log.Warn("tunnel control stream failed; closing the session", "err", err)
			s.shutdown(err)
			return
		}
		switch typ {
		case framePing:
			n, err := decodeNonce(payload)
			if err != nil {
				s.shutdown(err)
				return
			}
			s.sendControlAsync(appendControl(nil, framePong, encodeNonce(n)))
		case framePong:
			n, err := decodeNonce(payload)
			if err != nil {
				s.shutdown(err)
				return
			}
			s.pingMu.Lock()
			if ch, ok := s.pings[n]; ok {
				close(ch)
				delete(s.pings, n)
			}
			if n == s.hbNonce && !s.hbSent.IsZero() {
				s.conn.flow.sampleRTT(time.Since(s.hbSent), s.hbQuiet)
				s.hbSent = time.Time{}
			}
			s.pingMu.Unlock()
		case frameDraining:
			reason, err := decodeDraining(payload)
			if err != nil {
				s.shutdown(err)
				return
			}
			s.drainOnce.Do(func() {
				s.drainReason.Store(reason)
				close(s.draining)
			})
			s.log.Info("tunnel peer is draining", "reason", reason)
		case frameGoodbye:
			g, err := decodeGoodbye(payload)
			if err != nil {
				s.shutdown(err)
				return
			}
			s.log.Info("tunnel peer closed the session", "code", g.code.String(), "reason", g.reason)
			s.shutdown(&PeerClosedError{Code: g.code, Reason: g.reason})
			return
		default:
			// Unknown control frames are skipped so a peer of the same
			// protocol version may add informational messages.
			s.log.Debug("tunnel ignoring unknown control frame", "type", typ, "bytes", len(payload))
		}
	}
}

// heartbeat pings the peer every KeepAliveInterval and declares it dead
// when nothing at all arrived for 7/8 of DeadPeerTimeout (checked every
// 1/8), so a dead peer is detected within DeadPeerTimeout.
func (s *Session) heartbeat() {
	defer s.wg.Done()
	tick := s.cfg.DeadPeerTimeout / 8
	ticker := time.NewTicker(tick)
	defer ticker.Stop()
	var nonce uint64
	ping := func() {
		nonce++
		// Heartbeat nonces have the top bit set so they never match a
		// Ping() waiter.
		n := nonce | 1<<63
		s.pingMu.Lock()
		s.hbNonce, s.hbSent, s.hbQuiet = n, time.Now(), s.conn.flow.quiet()
		s.pingMu.Unlock()
		s.sendControlAsync(appendControl(nil, framePing, encodeNonce(n)))
	}
	lastPing := time.Now() // probeRTT pings first
	for {
		select {
		case <-ticker.C:
		case <-s.done:
			return
		}
		if silent := s.conn.sinceRecv(); silent > s.cfg.DeadPeerTimeout-tick {
			s.log.Warn("tunnel peer stopped responding; closing the session", "silentFor", silent.Round(time.Millisecond))
			s.shutdown(fmt.Errorf("%w: nothing received for %s", ErrPeerDead, silent.Round(time.Millisecond)))
			return
		}
		if time.Since(lastPing) >= s.cfg.KeepAliveInterval {
			lastPing = time.Now()
			ping()
		}
	}
}

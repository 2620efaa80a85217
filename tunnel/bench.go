package tunnel

import (
	"bufio"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"slices"
	"time"
)

// bench.go is the bench protocol: what `sbx bench cluster` speaks with a
// relay to measure the laptop's real path to it, the same bytes on two
// kinds of connection:
//
//   - a KindBench data stream on a tunnel session (the tunnel and the
//     pool paths), after the stream's ok reply;
//   - a bare port-forward connection after a Hello (bench) handshake
//     (ClientBench, ServerOrBench): the bare path, no multiplexer.
//
// On either, the opener sends one request, the relay answers with a reply
// frame (the data-stream reply's layout: ok, or a Reason and a message),
// then the payload flows in chunks, each a 32-bit length and that many
// bytes; a chunk of length 0 ends a direction. The connection is never
// half-closed (a kubelet tears a forwarded connection down about a second
// after one direction ends), so every end is in-band:
//
//	sink    the opener sends chunks, then the end chunk; the relay
//	        discards them and answers with the total it read (64 bits):
//	        upload.
//	source  the relay sends chunks for the requested duration (or until
//	        the requested byte limit), then the end chunk: download.
//	echo    the relay sends every chunk back as it arrives, the end chunk
//	        too: round trips.
//
// Both ends bound what they do: the request names a byte limit the relay
// checks against its cap (ServeBench's BenchLimits), chunks are at most
// benchMaxChunk bytes (echo chunks benchMaxEchoChunk), and a relay gives
// a bench connection at most BenchMaxDuration plus a grace before it
// closes it.

// Bench modes (wire values of the request's mode byte).
type BenchMode uint8

// The bench modes, named from the opener's side where it matters.
const (
	BenchSink   BenchMode = 1 // upload: the relay reads and discards, then reports the count
	BenchSource BenchMode = 2 // download: the relay sends
	BenchEcho   BenchMode = 3 // round trips: the relay echoes
)

func (m BenchMode) String() string {
	switch m {
	case BenchSink:
		return "sink"
	case BenchSource:
		return "source"
	case BenchEcho:
		return "echo"
	}
	return fmt.Sprintf("mode(%d)", uint8(m))
}

const (
	// benchVersion starts every bench request.
	benchVersion = 1
	// benchRequestSize: version 8, mode 8, limit 64, duration (ms) 32.
	benchRequestSize = 1 + 1 + 8 + 4
	// benchChunk is the size of the chunks the sender writes, prefix
	// included: one Write each, a whole frame of PortForwardConfig.
	benchChunk = 256 << 10
	// benchMaxChunk bounds a chunk's length on the wire.
	benchMaxChunk = 1 << 20
	// benchMaxEchoChunk bounds an echo chunk: the relay holds it whole.
	benchMaxEchoChunk = 64 << 10
	// BenchMaxDuration is the longest transfer a bench request may ask
	// for (and about the longest a relay lets a bench connection run:
	// benchGrace more, then it closes it).
	BenchMaxDuration = time.Minute
	benchGrace       = 15 * time.Second
)

// BenchRequest is what the opener of a bench connection asks for.
type BenchRequest struct {
	Mode BenchMode
	// Limit is the most payload bytes the connection carries: what the
	// opener will send (sink), what the relay may send (source), what
	// is echoed (echo).
	Limit uint64
	// Duration is how long the relay sends (source only; at most
	// BenchMaxDuration, in milliseconds on the wire).
	Duration time.Duration
}

func (r BenchRequest) String() string {
	s := fmt.Sprintf("%s of up to %d bytes", r.Mode, r.Limit)
	if r.Mode == BenchSource {
		s += fmt.Sprintf(" for %s", r.Duration)
	}
	return s
}

func appendBenchRequest(b []byte, r BenchRequest) []byte {
	e := encoder{b: b}
	e.u8(benchVersion)
	e.u8(uint8(r.Mode))
	e.u64(r.Limit)
	e.u32(uint32(r.Duration / time.Millisecond))
	return e.b
}

// benchRequestError is a malformed request: the relay answers it with a
// ReasonProtocol reply.
type benchRequestError struct{ msg string }

func (e *benchRequestError) Error() string { return "bad bench request: " + e.msg }

func readBenchRequest(r io.Reader) (BenchRequest, error) {
	var b [benchRequestSize]byte
	if err := readFull(r, b[:]); err != nil {
		return BenchRequest{}, err
	}
	return decodeBenchRequest(b[:])
}

func decodeBenchRequest(b []byte) (BenchRequest, error) {
	d := decoder{b: b}
	v := d.u8()
	req := BenchRequest{Mode: BenchMode(d.u8()), Limit: d.u64(), Duration: time.Duration(d.u32()) * time.Millisecond}
	switch {
	case d.err != nil:
		return BenchRequest{}, &benchRequestError{d.err.Error()}
	case v != benchVersion:
		return BenchRequest{}, &benchRequestError{fmt.Sprintf("version %d, this end speaks %d", v, benchVersion)}
	case req.Mode < BenchSink || req.Mode > BenchEcho:
		return BenchRequest{}, &benchRequestError{fmt.Sprintf("unknown mode %d", uint8(req.Mode))}
	case req.Limit == 0:
		return BenchRequest{}, &benchRequestError{"byte limit 0"}
	case req.Mode == BenchSource && req.Duration <= 0:
		return BenchRequest{}, &benchRequestError{"source without a duration"}
	}
	return req, nil
}

// BenchLimits bound what a relay serves on one bench connection.
type BenchLimits struct {
	// MaxBytes caps BenchRequest.Limit; a larger request is refused.
	MaxBytes uint64
	// Admit is asked once a request is read and passes the caps; an error
	// refuses the request with its text (a *DialError's Reason travels
	// as it is, anything else as ReasonOther), otherwise release is called
	// when the connection is served. Nil admits everything.
	Admit func(BenchRequest) (release func(), err error)
}

// BenchServed is what a relay did on one bench connection.
type BenchServed struct {
	Request BenchRequest
	// In and Out count payload bytes (chunk prefixes excluded) read from
	// and written to the laptop.
	In, Out uint64
}

// ServeBench serves one bench connection (a KindBench stream after Accept,
// or a bench connection from ServerOrBench): it reads the request,
// answers it, and serves it until the opener's end chunk, the relay's
// bounds, or ctx's end, which closes conn. It closes conn when it returns.
// A refused request (over lim.MaxBytes or BenchMaxDuration, refused by
// Admit, malformed) returns a *DialError with what the opener was told.
func ServeBench(ctx context.Context, conn net.Conn, lim BenchLimits) (BenchServed, error) {
	defer conn.Close()
	stop := context.AfterFunc(ctx, func() { _ = conn.Close() })
	defer stop()
	// The whole connection, request included, has a deadline: an opener
	// that stops sending holds no goroutine longer.
	_ = conn.SetDeadline(time.Now().Add(BenchMaxDuration + benchGrace))
	var served BenchServed
	req, err := readBenchRequest(conn)
	if err != nil {
		var be *benchRequestError
		if errors.As(err, &be) {
			return served, benchRefuse(conn, &DialError{Reason: ReasonProtocol, Message: be.Error()})
		}
		return served, fmt.Errorf("read bench request: %w", err)
	}
	served.Request = req
	switch {
	case req.Limit > lim.MaxBytes:
		return served, benchRefuse(conn, &DialError{Reason: ReasonDenied, Message: fmt.Sprintf(
			"the bench request asks for %d bytes, over this relay's cap of %d per bench connection", req.Limit, lim.MaxBytes)})
	case req.Duration > BenchMaxDuration:
		return served, benchRefuse(conn, &DialError{Reason: ReasonDenied, Message: fmt.Sprintf(
			"the bench request asks for %s, over this relay's cap of %s per bench connection", req.Duration, BenchMaxDuration)})
	}
	if lim.Admit != nil {
		release, err := lim.Admit(req)
		if err != nil {
			de := &DialError{Reason: ReasonOther, Message: err.Error()}
			errors.As(err, &de)
			return served, benchRefuse(conn, de)
		}
		defer release()
	}
	if _, err := conn.Write(appendReply(nil, reply{})); err != nil {
		return served, fmt.Errorf("bench reply: %w", err)
	}
	br := bufio.NewReaderSize(conn, 64<<10)
	switch req.Mode {
	case BenchSink:
		err = serveSink(conn, br, req, &served)
	case BenchSource:
		err = serveSource(conn, br, req, &served)
	case BenchEcho:
		err = serveEcho(conn, br, req, &served)
	}
	if err != nil && ctx.Err() != nil {
		err = ctx.Err()
	}
	return served, err
}

// benchRefuse answers a refused request and returns the refusal.
func benchRefuse(conn net.Conn, de *DialError) error {
	if de.Reason == 0 {
		de.Reason = ReasonOther
	}
	_, _ = conn.Write(appendReply(nil, reply{code: uint8(de.Reason), message: de.Message}))
	return de
}

// readChunkLen reads a chunk prefix and checks it against max and what
// the request still allows.
func readChunkLen(r io.Reader, max int, left uint64) (int, error) {
	var b [4]byte
	if err := readFull(r, b[:]); err != nil {
		return 0, err
	}
	n := binary.BigEndian.Uint32(b[:])
	switch {
	case n > uint32(max):
		return 0, fmt.Errorf("%w: bench chunk of %d bytes, limit %d", ErrProtocol, n, max)
	case uint64(n) > left:
		return 0, fmt.Errorf("%w: bench chunk of %d bytes goes over the request's limit (%d bytes left)", ErrProtocol, n, left)
	}
	return int(n), nil
}

func serveSink(conn net.Conn, br *bufio.Reader, req BenchRequest, served *BenchServed) error {
	buf := make([]byte, benchChunk)
	for {
		n, err := readChunkLen(br, benchMaxChunk, req.Limit-served.In)
		if err != nil {
			return err
		}
		if n == 0 {
			break
		}
		for n > 0 {
			m, err := br.Read(buf[:min(n, len(buf))])
			n -= m
			served.In += uint64(m)
			if err != nil {
				return noEOF(err)
			}
		}
	}
	_, err := conn.Write(binary.BigEndian.AppendUint64(nil, served.In))
	return err
}

func serveSource(conn net.Conn, br *bufio.Reader, req BenchRequest, served *BenchServed) error {
	// The opener sends nothing more; a byte from it is a protocol
	// error, its end of the connection ends the transfer early.
	gone := make(chan error, 1)
	go func() {
		var b [1]byte
		_, err := br.Read(b[:])
		if err == nil {
			err = fmt.Errorf("%w: the opener of a bench source sent payload", ErrProtocol)
		}
		gone <- err
	}()
	buf := make([]byte, benchChunk)
	deadline := time.Now().Add(req.Duration)
	for time.Now().Before(deadline) && served.Out < req.Limit {
		select {
		case err := <-gone:
			return noEOF(err)
		default:
		}
		n := int(min(uint64(len(buf)-4), req.Limit-served.Out))
		binary.BigEndian.PutUint32(buf, uint32(n))
		if _, err := conn.Write(buf[:4+n]); err != nil {
			return err
		}
		served.Out += uint64(n)
	}
	_, err := conn.Write([]byte{0, 0, 0, 0})
	return err
}

func serveEcho(conn net.Conn, br *bufio.Reader, req BenchRequest, served *BenchServed) error {
	buf := make([]byte, 4+benchMaxEchoChunk)
	for {
		n, err := readChunkLen(br, benchMaxEchoChunk, req.Limit-served.In)
		if err != nil {
			return err
		}
		binary.BigEndian.PutUint32(buf, uint32(n))
		if err := readFull(br, buf[4:4+n]); err != nil {
			return noEOF(err)
		}
		served.In += uint64(n)
		if _, err := conn.Write(buf[:4+n]); err != nil {
			return err
		}
		served.Out += uint64(n)
		if n == 0 {
			return nil
		}
	}
}

// noEOF reports an end of the connection inside a bench exchange as
// unexpected: every exchange ends in-band.
func noEOF(err error) error {
	if errors.Is(err, io.EOF) {
		return io.ErrUnexpectedEOF
	}
	return err
}

// BenchTransfer is the result of one bulk transfer.
type BenchTransfer struct {
	// Bytes is the payload moved: for an upload, as the relay counted it.
	Bytes uint64
	// Elapsed runs from the request to the relay's count (upload) or end
	// chunk (download): one round trip more than the payload alone takes.
	Elapsed time.Duration
}

// benchOpen sends req and reads the relay's reply.
func benchOpen(conn net.Conn, req BenchRequest) error {
	if _, err := conn.Write(appendBenchRequest(nil, req)); err != nil {
		return fmt.Errorf("send bench request: %w", err)
	}
	rep, err := readReply(conn)
	if err != nil {
		return fmt.Errorf("read the answer to the bench request: %w", noEOF(err))
	}
	return rep.err()
}

// benchBound makes ctx's end close conn and gives conn ctx's deadline;
// the returned func undoes the first.
func benchBound(ctx context.Context, conn net.Conn) func() bool {
	if d, ok := ctx.Deadline(); ok {
		_ = conn.SetDeadline(d)
	}
	return context.AfterFunc(ctx, func() { _ = conn.Close() })
}

// BenchUpload sends payload on conn (a bench connection: a KindBench
// stream or ClientBench's) for d or until limit bytes, whichever comes
// first, and returns what the relay counted. A refusal is a *DialError.
// ctx bounds it (its end closes conn); conn stays open otherwise.
func BenchUpload(ctx context.Context, conn net.Conn, limit uint64, d time.Duration) (BenchTransfer, error) {
	defer benchBound(ctx, conn)()
	start := time.Now()
	if err := benchOpen(conn, BenchRequest{Mode: BenchSink, Limit: limit}); err != nil {
		return BenchTransfer{}, benchErr(ctx, err)
	}
	buf := make([]byte, benchChunk)
	var sent uint64
	end := start.Add(d)
	for sent < limit && time.Now().Before(end) {
		n := int(min(uint64(len(buf)-4), limit-sent))
		binary.BigEndian.PutUint32(buf, uint32(n))
		if _, err := conn.Write(buf[:4+n]); err != nil {
			return BenchTransfer{}, benchErr(ctx, fmt.Errorf("upload: %w", err))
		}
		sent += uint64(n)
	}
	if _, err := conn.Write([]byte{0, 0, 0, 0}); err != nil {
		return BenchTransfer{}, benchErr(ctx, fmt.Errorf("upload: %w", err))
	}
	var b [8]byte
	if err := readFull(conn, b[:]); err != nil {
		return BenchTransfer{}, benchErr(ctx, fmt.Errorf("read the relay's count: %w", noEOF(err)))
	}
	got := binary.BigEndian.Uint64(b[:])
	if got != sent {
		return BenchTransfer{}, fmt.Errorf("%w: the relay counted %d bytes, %d were sent", ErrProtocol, got, sent)
	}
	return BenchTransfer{Bytes: got, Elapsed: time.Since(start)}, nil
}

// BenchDownload asks the relay to send for d or until limit bytes and
// reads what it sends (see BenchUpload).
func BenchDownload(ctx context.Context, conn net.Conn, limit uint64, d time.Duration) (BenchTransfer, error) {
	defer benchBound(ctx, conn)()
	start := time.Now()
	if err := benchOpen(conn, BenchRequest{Mode: BenchSource, Limit: limit, Duration: d}); err != nil {
		return BenchTransfer{}, benchErr(ctx, err)
	}
	br := bufio.NewReaderSize(conn, 64<<10)
	buf := make([]byte, benchChunk)
	var got uint64
	for {
		n, err := readChunkLen(br, benchMaxChunk, limit-got)
		if err != nil {
			return BenchTransfer{}, benchErr(ctx, fmt.Errorf("download: %w", noEOF(err)))
		}
		if n == 0 {
			return BenchTransfer{Bytes: got, Elapsed: time.Since(start)}, nil
		}
		for n > 0 {
			m, err := br.Read(buf[:min(n, len(buf))])
			n -= m
			got += uint64(m)
			if err != nil {
				return BenchTransfer{}, benchErr(ctx, fmt.Errorf("download: %w", noEOF(err)))
			}
		}
	}
}

// BenchRoundTrips sends size-byte messages one at a time and times each one's
// echo, for d or until limit bytes were echoed; it returns the round
// trips in the order measured (see BenchUpload).
func BenchRoundTrips(ctx context.Context, conn net.Conn, size int, limit uint64, d time.Duration) ([]time.Duration, error) {
	if size <= 0 || size > benchMaxEchoChunk {
		return nil, fmt.Errorf("bench echo of %d bytes: want 1 to %d", size, benchMaxEchoChunk)
	}
	defer benchBound(ctx, conn)()
	if err := benchOpen(conn, BenchRequest{Mode: BenchEcho, Limit: limit}); err != nil {
		return nil, benchErr(ctx, err)
	}
	msg := make([]byte, 4+size)
	binary.BigEndian.PutUint32(msg, uint32(size))
	back := make([]byte, len(msg))
	var rtts []time.Duration
	var echoed uint64
	end := time.Now().Add(d)
	for echoed+uint64(size) <= limit && time.Now().Before(end) {
		t0 := time.Now()
		if _, err := conn.Write(msg); err != nil {
			return rtts, benchErr(ctx, fmt.Errorf("echo: %w", err))
		}
		if err := readFull(conn, back); err != nil {
			return rtts, benchErr(ctx, fmt.Errorf("echo: %w", noEOF(err)))
		}
		rtts = append(rtts, time.Since(t0))
		if !slices.Equal(back[:4], msg[:4]) {
			return rtts, fmt.Errorf("%w: the relay echoed a chunk of another length", ErrProtocol)
		}
		echoed += uint64(size)
	}
	if _, err := conn.Write([]byte{0, 0, 0, 0}); err != nil {
		return rtts, benchErr(ctx, fmt.Errorf("echo: %w", err))
	}
	if err := readFull(conn, back[:4]); err != nil {
		return rtts, benchErr(ctx, fmt.Errorf("echo: %w", noEOF(err)))
	}
	return rtts, nil
}

// benchErr prefers the context's error: its end closed the connection.
func benchErr(ctx context.Context, err error) error {
	if cerr := ctx.Err(); cerr != nil {
		return fmt.Errorf("%w (%v)", cerr, err)
	}
	return err
}

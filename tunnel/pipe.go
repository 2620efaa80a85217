package tunnel

import (
	"context"
	"errors"
	"io"
	"net"
	"sync"
)

// pipeBuffer is the copy buffer per direction: one port-forward frame
// (PortForwardConfig.MaxFrameSize), so a bulk copy fills whole frames. A
// piped stream holds two for as long as it lives, idle or not: 256 KiB
// buffers measured no faster in sbx bench portforward and cost twice the
// memory per open connection.
const pipeBuffer = 128 << 10

// pipeBufs recycles copy buffers: every stream is piped, and allocating and
// zeroing two buffers per stream dominated the cost of short request streams.
var pipeBufs = sync.Pool{New: func() any { b := make([]byte, pipeBuffer); return &b }}

type closeWriter interface{ CloseWrite() error }

// Pipe copies a→b and b→a until both directions have ended, then closes
// both. When one side reaches end-of-stream, Pipe half-closes the other
// (CloseWrite; a conn without it is closed fully) and keeps copying the
// other way. The first real error, or ctx's cancellation, closes both
// conns, ends the other direction and is returned; errors caused by that
// closing are not reported. Pipe returns only after both of its goroutines
// have.
func Pipe(ctx context.Context, a, b net.Conn) error { return PipeWith(ctx, a, b, nil) }

// PipeWith is Pipe with forward doing the a→b direction instead of a plain
// copy (nil: the plain copy). forward reads src until its end-of-stream and
// writes dst, returning nil on a clean end; PipeWith keeps Pipe's
// half-close, first-error and cancellation rules around it. The daemon
// uses it to rewrite HTTP requests on their way to the cluster.
func PipeWith(ctx context.Context, a, b net.Conn, forward func(dst, src net.Conn) error) error {
	var (
		mu       sync.Mutex
		firstErr error
		once     sync.Once
	)
	closeBoth := func(cause error) {
		mu.Lock()
		if firstErr == nil {
			firstErr = cause
		}
		mu.Unlock()
		once.Do(func() {
			_ = a.Close()
			_ = b.Close()
		})
	}
	stop := context.AfterFunc(ctx, func() { closeBoth(ctx.Err()) })
	defer stop()

	var wg sync.WaitGroup
	copyDir := func(dst, src net.Conn, copyFn func(dst, src net.Conn) error) {
		defer wg.Done()
		if err := copyFn(dst, src); err != nil {
			closeBoth(err)
			return
		}
		// Clean end-of-stream from src: pass it on.
		if cw, ok := dst.(closeWriter); ok {
			if err := cw.CloseWrite(); err != nil && !errors.Is(err, net.ErrClosed) {
				closeBoth(err)
			}
			return
		}
		_ = dst.Close()
	}
	if forward == nil {
		forward = copyPooled
	}
	wg.Add(2)
	go copyDir(b, a, forward)
	go copyDir(a, b, copyPooled)
	wg.Wait()
	closeBoth(nil)
	mu.Lock()
	defer mu.Unlock()
	return firstErr
}

// copyPooled copies src to dst through a pooled buffer.
func copyPooled(dst, src net.Conn) error {
	buf := pipeBufs.Get().(*[]byte)
	defer pipeBufs.Put(buf)
	_, err := io.CopyBuffer(onlyWriter{dst}, onlyReader{src}, *buf)
	return err
}

// onlyReader and onlyWriter hide ReadFrom/WriteTo so io.CopyBuffer uses our
// buffer (TCPConn.ReadFrom from a non-socket would fall back to a 32 KiB
// copy anyway).
type onlyReader struct{ io.Reader }
type onlyWriter struct{ io.Writer }

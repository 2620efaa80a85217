package tunnel

import (
	"context"
	"errors"
	"io"
	"net"
	"sync"
)

// Pipe's copy buffers come in three sizes. Each direction starts with the
// smallest and moves up one size after a read that filled its buffer, so a
// bulk transfer reads 256 KiB at a time from its third read on. Large reads
// make large tunnel frames (up to Config.MaxFrameSize), which is what a
// port-forward needs: each frame costs a SPDY frame, WebSocket messages,
// an allocation in the kubelet and system calls on every hop, and 256 KiB
// frames took ~7% less CPU per byte than 128 KiB ones in sbx bench
// portforward (512 KiB no less than 256 KiB). A read smaller than the
// smallest size means the traffic is not bulk (a request, the tail of a
// transfer), so the direction drops back to the smallest size: a direction
// that carries only requests holds 32 KiB. A partial read above that keeps
// the size, since a yamux stream source returns only what has arrived so
// far; so a direction that waits after a bulk transfer whose last read was
// 32 KiB or more keeps its larger buffer until its next read.
var pipeSizes = [...]int{32 << 10, 128 << 10, 256 << 10}

// pipeBufs recycle copy buffers, one pool per size: every stream is piped,
// and allocating and zeroing buffers per stream dominated the cost of short
// request streams.
var pipeBufs [len(pipeSizes)]sync.Pool

// getPipeBuf returns a buffer of pipeSizes[class].
func getPipeBuf(class int) *[]byte {
	if b, ok := pipeBufs[class].Get().(*[]byte); ok {
		return b
	}
	b := make([]byte, pipeSizes[class])
	return &b
}

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

// copyPooled copies src to dst through pooled buffers sized to the traffic
// (see pipeSizes) until src's end-of-stream (nil) or an error.
func copyPooled(dst, src net.Conn) error {
	class := 0
	buf := getPipeBuf(class)
	defer func() { pipeBufs[class].Put(buf) }()
	for {
		n, rerr := src.Read(*buf)
		if n > 0 {
			w, werr := dst.Write((*buf)[:n])
			if werr != nil {
				return werr
			}
			if w != n {
				return io.ErrShortWrite
			}
		}
		if rerr != nil {
			if rerr == io.EOF {
				return nil
			}
			return rerr
		}
		next := class
		switch {
		case n == len(*buf):
			next = min(class+1, len(pipeSizes)-1)
		case n < pipeSizes[0]:
			next = 0
		}
		if next != class {
			pipeBufs[class].Put(buf)
			class, buf = next, getPipeBuf(next)
		}
	}
}

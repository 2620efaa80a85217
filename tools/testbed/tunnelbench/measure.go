package tunnelbench

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/binary"
	"fmt"
	"io"
	"net"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sync/errgroup"

	"github.com/sbx-dev/sbx/tools/testbed/benchstat"
)

// ioBuffer is the application's write size for bulk transfers, the same
// for raw TCP and the tunnel.
const ioBuffer = 128 << 10

// largeSinkReadSize is how much the large-read sink (serviceSinkLarge)
// reads at a time: io.Copy's own buffer size, as in
// tools/testbed/pfbench.
//
// The sink's read size is the application's choice and it is not neutral:
// raw TCP pays a system call per read and the tunnel a copy out of its
// stream's buffer, so small reads slow raw TCP more than the tunnel. The
// targets' sink (serviceSink) is the idiom `io.Copy(io.Discard, conn)`,
// which reads 8 KiB at a time (io.Discard is an io.ReaderFrom with its own
// buffer); the issue that set the targets described plain yamux with it
// (see PROTOCOL.md, "Tuning"). The large-read figures are reported beside
// them so neither read size hides the other.
const largeSinkReadSize = 32 << 10

// discardReadSize is how much io.Copy(io.Discard, r) reads at a time
// (io.Discard's ReadFrom buffer; a test checks it).
const discardReadSize = 8 << 10

// bulk sends perStream bytes on each of streams connections to sink (one
// of the sink services) at once and returns the aggregate throughput in
// MB/s (10^6 bytes per second), measured until every sink confirmed its
// byte count.
func bulk(ctx context.Context, ep endpoint, sink string, streams int, perStream int64) (float64, error) {
	conns := make([]net.Conn, 0, streams)
	defer func() {
		for _, c := range conns {
			_ = c.Close()
		}
	}()
	for range streams {
		c, err := ep.open(ctx, sink)
		if err != nil {
			return 0, fmt.Errorf("%s: open %s: %w", ep.name(), sink, err)
		}
		conns = append(conns, c)
	}
	payload := make([]byte, ioBuffer)
	_, _ = rand.Read(payload)
	var g errgroup.Group
	start := time.Now()
	for _, c := range conns {
		g.Go(func() error {
			for left := perStream; left > 0; {
				n := min(left, int64(len(payload)))
				if _, err := c.Write(payload[:n]); err != nil {
					return err
				}
				left -= n
			}
			closeWrite(c)
			var b [8]byte
			if _, err := io.ReadFull(c, b[:]); err != nil {
				return fmt.Errorf("read sink count: %w", err)
			}
			if int64(binary.BigEndian.Uint64(b[:])) != perStream {
				return errShortCount
			}
			return nil
		})
	}
	if err := g.Wait(); err != nil {
		return 0, fmt.Errorf("%s: bulk: %w", ep.name(), err)
	}
	elapsed := time.Since(start)
	return float64(perStream*int64(streams)) / elapsed.Seconds() / 1e6, nil
}

// rtt measures n request/response round trips of reqSize bytes each way on
// one connection, after a warm-up, and returns the sorted samples.
func rtt(ctx context.Context, c net.Conn, n, reqSize int) ([]time.Duration, error) {
	req := make([]byte, reqSize)
	resp := make([]byte, reqSize)
	_, _ = rand.Read(req)
	samples := make([]time.Duration, 0, n)
	warm := n / 10
	for i := range n + warm {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		t0 := time.Now()
		if _, err := c.Write(req); err != nil {
			return nil, err
		}
		if _, err := io.ReadFull(c, resp); err != nil {
			return nil, err
		}
		if i >= warm {
			samples = append(samples, time.Since(t0))
		}
	}
	slices.Sort(samples)
	return samples, nil
}

// echoRTT opens an echo connection on ep and returns the p50 and p99 of n
// round trips on it; what names the measurement in errors.
func echoRTT(ctx context.Context, ep endpoint, what string, n, reqSize int) (p50, p99 time.Duration, err error) {
	c, err := ep.open(ctx, serviceEcho)
	if err != nil {
		return 0, 0, fmt.Errorf("%s: open echo: %w", ep.name(), err)
	}
	defer c.Close()
	s, err := rtt(ctx, c, n, reqSize)
	if err != nil {
		return 0, 0, fmt.Errorf("%s: %s: %w", ep.name(), what, err)
	}
	return benchstat.Percentile(s, 0.5), benchstat.Percentile(s, 0.99), nil
}

// rttIdle measures round trips on an otherwise idle endpoint.
func rttIdle(ctx context.Context, ep endpoint, n, reqSize int) (p50, p99 time.Duration, err error) {
	return echoRTT(ctx, ep, "rtt", n, reqSize)
}

// rttUnderBulk measures round trips while another connection of the same
// endpoint (for the tunnel: a stream of the same session) transfers bulk
// data to sink as fast as it can.
func rttUnderBulk(ctx context.Context, ep endpoint, sink string, n, reqSize int) (p50, p99 time.Duration, err error) {
	bc, err := ep.open(ctx, sink)
	if err != nil {
		return 0, 0, fmt.Errorf("%s: open %s: %w", ep.name(), sink, err)
	}
	defer bc.Close()
	var stop atomic.Bool
	var sent atomic.Int64
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		payload := make([]byte, ioBuffer)
		for !stop.Load() {
			n, err := bc.Write(payload)
			sent.Add(int64(n))
			if err != nil {
				return
			}
		}
		closeWrite(bc)
		_, _ = io.Copy(io.Discard, bc)
	}()
	defer func() {
		stop.Store(true)
		wg.Wait()
	}()
	// Make sure the bulk transfer is flowing before measuring.
	for deadline := time.Now().Add(5 * time.Second); sent.Load() < 4*ioBuffer; {
		if time.Now().After(deadline) {
			return 0, 0, fmt.Errorf("%s: bulk transfer did not start", ep.name())
		}
		time.Sleep(time.Millisecond)
	}
	return echoRTT(ctx, ep, "rtt under bulk", n, reqSize)
}

// manyStreams opens n streams at once, sends each its own random payload
// (requests requests of reqSize bytes) through the echo service and checks
// every echo by checksum.
func manyStreams(ctx context.Context, ep endpoint, n, reqSize, requests int) error {
	size := reqSize * requests
	var g errgroup.Group
	for i := range n {
		g.Go(func() error {
			c, err := ep.open(ctx, serviceEcho)
			if err != nil {
				return fmt.Errorf("stream %d: open: %w", i, err)
			}
			defer c.Close()
			req := make([]byte, size)
			_, _ = rand.Read(req)
			want := sha256.Sum256(req)
			if _, err := c.Write(req); err != nil {
				return fmt.Errorf("stream %d: write: %w", i, err)
			}
			resp := make([]byte, size)
			if _, err := io.ReadFull(c, resp); err != nil {
				return fmt.Errorf("stream %d: read: %w", i, err)
			}
			if sha256.Sum256(resp) != want {
				return fmt.Errorf("stream %d: checksum mismatch", i)
			}
			return nil
		})
	}
	return g.Wait()
}

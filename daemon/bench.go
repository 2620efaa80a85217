package daemon

import (
	"context"
	"errors"
	"fmt"
	"math"
	"net"
	"net/http"
	"slices"
	"time"

	"github.com/sbx-dev/sbx/daemon/api"
	"github.com/sbx-dev/sbx/tunnel"
)

// `sbx bench cluster NAME`: the daemon measures a connected sandbox's
// real path to its relay pod, because it holds what that takes: the
// token, the tunnel sessions and the port-forward dialer. Three paths
// carry the same traffic one after the other (api.BenchResult):
//
//   - bare: a new port-forward connection to the relay's tunnel port
//     (the dialer the sessions use, so the same API server and kubelet
//     path), a Hello (bench) with the sandbox's token, and then the bench
//     protocol on the raw connection: what `kubectl port-forward` gets;
//   - tunnel: a KindBench stream on one tunnel session;
//   - pool: one KindBench stream on each session (up to the relay's
//     benchMaxConns) at once.
//
// Each path gets an upload, a download and 1 KiB round trips, each for
// the request's duration, and the result puts tunnel and pool against
// bare, so a slow sandbox shows as "the network" or "the tunnel". The
// relay serves the sink, source and echo this needs (relay/benchserve.go)
// only on connections the token authenticated, within its caps; one
// that predates it lacks the "bench" capability in its Welcome and the
// benchmark says to reconnect.

const (
	// benchCapability is what a relay that serves benchmarks announces.
	benchCapability = "bench"
	// benchEchoBytes is the size of a round trip's message.
	benchEchoBytes = 1 << 10
	// benchConnBytes is what one bench connection asks to carry, the
	// relay's cap: a transfer that reaches it before its time is up goes
	// on over a new connection.
	benchConnBytes = 1 << 30
	// benchMaxConns is the relay's cap on bench connections at once,
	// which bounds the pool path.
	benchMaxConns = 8
	// benchSlack is how long past its duration a transfer may take
	// before the benchmark gives up on it (a stalled link).
	benchSlack = 30 * time.Second
	// benchBusyRetry: a connection the relay refused as busy (one just
	// closed may not have been released yet) is retried for this long.
	benchBusyRetry = 2 * time.Second
)

// benchLink is a link that can be benchmarked (tunnelLink).
type benchLink interface {
	// benchSessions returns the live sessions that are not draining,
	// each with the Welcome its relay sent.
	benchSessions() []benchSession
	// dialBench opens a new port-forward connection to the relay and
	// makes it a bench connection (tunnel.ClientBench).
	dialBench(ctx context.Context) (net.Conn, tunnel.Welcome, error)
}

type benchSession struct {
	s       *tunnel.Session
	welcome tunnel.Welcome
}

// opener opens one bench connection on a path.
type opener func(ctx context.Context) (net.Conn, error)

// handleBench serves POST /v1/sandboxes/{name}/bench: an unknown sandbox
// is a 404; everything after that, refusals included, comes in the
// stream's last line.
func (d *Daemon) handleBench(w http.ResponseWriter, r *http.Request) error {
	var req api.BenchRequest
	if r.ContentLength != 0 {
		if err := readJSON(r, &req); err != nil {
			return err
		}
	}
	if err := req.Validate(); err != nil {
		return badRequest("%v", err)
	}
	if req.Duration == 0 {
		req.Duration = api.DefaultBenchDuration
	}
	name := r.PathValue("name")
	s, ok := d.mgr.Get(name)
	if !ok {
		return &notFoundError{name}
	}
	out := newNDJSON(w)
	progress := func(msg string) {
		_ = out.send(api.BenchProgress{Time: d.now(), Message: msg})
	}
	res, err := s.bench(r.Context(), req.Duration, progress)
	if err != nil {
		d.log.Info("benchmark failed", "sandbox", name, "err", err)
		return out.send(api.BenchProgress{Time: d.now(), Done: true, Error: err.Error()})
	}
	d.log.Info("benchmark done", "sandbox", name, "verdict", res.Verdict)
	return out.send(api.BenchProgress{Time: d.now(), Done: true, Result: &res})
}

// bench measures the session's paths, one benchmark at a time.
func (s *session) bench(ctx context.Context, dur time.Duration, progress func(string)) (api.BenchResult, error) {
	if !s.benching.CompareAndSwap(false, true) {
		return api.BenchResult{}, fmt.Errorf("a benchmark of sandbox %s is already running; wait for it to finish, then run it again", s.name)
	}
	defer s.benching.Store(false)
	h := s.link.Load()
	if h == nil {
		st, _ := s.m.store.Sandbox(s.name)
		return api.BenchResult{}, fmt.Errorf("sandbox %s is not connected (phase %s), and the benchmark measures through its tunnel; `sbx status %s` shows why, run the benchmark once it is ready",
			s.name, st.Phase, s.name)
	}
	bl, ok := h.link.(benchLink)
	if !ok {
		return api.BenchResult{}, fmt.Errorf("sandbox %s: this daemon's tunnel cannot be benchmarked (a test link?)", s.name)
	}
	return runBench(ctx, s.name, bl, dur, progress)
}

// runBench measures bare, tunnel and pool in turn (see the top of this
// file).
func runBench(ctx context.Context, name string, bl benchLink, dur time.Duration, progress func(string)) (api.BenchResult, error) {
	sessions := bl.benchSessions()
	if len(sessions) == 0 {
		return api.BenchResult{}, fmt.Errorf("sandbox %s has no live tunnel session right now (its relay is draining or the tunnel reconnecting); run the benchmark again when `sbx status %s` shows it ready", name, name)
	}
	for _, bs := range sessions {
		if !slices.Contains(bs.welcome.Capabilities, benchCapability) {
			return api.BenchResult{}, oldRelayError(name, bs.welcome.RelayVersion)
		}
	}
	if len(sessions) > benchMaxConns {
		sessions = sessions[:benchMaxConns]
	}
	res := api.BenchResult{
		Sandbox: name, RelayVersion: sessions[0].welcome.RelayVersion,
		Seconds: dur.Seconds(), EchoBytes: benchEchoBytes,
	}
	stream := func(s *tunnel.Session) opener {
		return func(ctx context.Context) (net.Conn, error) {
			return s.Open(ctx, tunnel.Header{Kind: tunnel.KindBench, Source: "sbx bench cluster"})
		}
	}
	bare := func(ctx context.Context) (net.Conn, error) {
		conn, w, err := bl.dialBench(ctx)
		if err != nil {
			return nil, err
		}
		if !slices.Contains(w.Capabilities, benchCapability) {
			_ = conn.Close()
			return nil, oldRelayError(name, w.RelayVersion)
		}
		return conn, nil
	}
	pool := make([]opener, len(sessions))
	for i, bs := range sessions {
		pool[i] = stream(bs.s)
	}
	paths := []struct {
		name, what string
		open       []opener
		into       *api.BenchPath
	}{
		{"bare", "one new port-forward connection to the relay pod, raw (no multiplexer)", []opener{bare}, &res.Bare},
		{"tunnel", "one stream on one tunnel session", []opener{stream(sessions[0].s)}, &res.Tunnel},
		{"pool", fmt.Sprintf("one stream on each of %d tunnel session(s) at once", len(pool)), pool, &res.Pool},
	}
	progress(fmt.Sprintf("benchmark of sandbox %s (relay %s): 3 paths × upload, download and %d-byte round trips, %s each",
		name, res.RelayVersion, benchEchoBytes, dur))
	for _, p := range paths {
		progress(fmt.Sprintf("%s: %s", p.name, p.what))
		bp, err := measurePath(ctx, p.name, p.open, dur, progress)
		if err != nil {
			return api.BenchResult{}, benchPathError(ctx, name, p.name, err)
		}
		*p.into = bp
	}
	res.TunnelVsBareUpload = ratio(res.Tunnel.UploadMBps, res.Bare.UploadMBps)
	res.TunnelVsBareDownload = ratio(res.Tunnel.DownloadMBps, res.Bare.DownloadMBps)
	res.TunnelVsBareRTT = ratio(res.Tunnel.RTTP50ms, res.Bare.RTTP50ms)
	res.PoolVsBareUpload = ratio(res.Pool.UploadMBps, res.Bare.UploadMBps)
	res.PoolVsBareDownload = ratio(res.Pool.DownloadMBps, res.Bare.DownloadMBps)
	res.PoolVsBareRTT = ratio(res.Pool.RTTP50ms, res.Bare.RTTP50ms)
	res.Verdict = benchVerdict(res)
	return res, nil
}

// oldRelayError is the answer for a relay without the bench capability.
func oldRelayError(name, version string) error {
	if version == "" {
		version = "(unknown)"
	}
	return fmt.Errorf("the relay of sandbox %s runs sbx %s, which does not serve benchmarks; reconnect to upgrade the relay: "+
		"`sbx connect %s --rotate-token` rolls it to this daemon's relay image (if relayImage in the sbx config pins an older image, change it first)",
		name, version, name)
}

// benchPathError names the sandbox and path of a failed measurement and
// says what to do.
func benchPathError(ctx context.Context, name, path string, err error) error {
	var de *tunnel.DialError
	switch {
	case ctx.Err() != nil:
		return fmt.Errorf("benchmark of sandbox %s stopped during the %s path: %w", name, path, err)
	case errors.As(err, &de):
		// The relay's own words say why and what to do.
		return fmt.Errorf("benchmark of sandbox %s, %s path: the relay refused: %s", name, path, de.Message)
	}
	return fmt.Errorf("benchmark of sandbox %s, %s path: %w (the tunnel or the port-forward broke off; `sbx status %s` shows the tunnel, run the benchmark again once it is ready)",
		name, path, err, name)
}

// measurePath runs a path's upload, download and round trips.
func measurePath(ctx context.Context, path string, open []opener, dur time.Duration, progress func(string)) (api.BenchPath, error) {
	bp := api.BenchPath{Connections: len(open)}
	var err error
	var elapsed time.Duration
	if bp.UploadBytes, elapsed, err = bulkAll(ctx, open, tunnel.BenchUpload, dur); err != nil {
		return bp, fmt.Errorf("upload: %w", err)
	}
	bp.UploadMBps = mbps(bp.UploadBytes, elapsed)
	progress(fmt.Sprintf("%s: upload %.1f MB/s (%s in %s)", path, bp.UploadMBps, sizeText(bp.UploadBytes), elapsed.Round(time.Millisecond)))
	if bp.DownloadBytes, elapsed, err = bulkAll(ctx, open, tunnel.BenchDownload, dur); err != nil {
		return bp, fmt.Errorf("download: %w", err)
	}
	bp.DownloadMBps = mbps(bp.DownloadBytes, elapsed)
	progress(fmt.Sprintf("%s: download %.1f MB/s (%s in %s)", path, bp.DownloadMBps, sizeText(bp.DownloadBytes), elapsed.Round(time.Millisecond)))
	var rtts []time.Duration
	for _, o := range open {
		r, err := roundTrips(ctx, o, dur/time.Duration(len(open)))
		if err != nil {
			return bp, fmt.Errorf("round trips: %w", err)
		}
		rtts = append(rtts, r...)
	}
	bp.RTTSamples = len(rtts)
	bp.RTTP50ms = ms(percentile(rtts, 50))
	bp.RTTP99ms = ms(percentile(rtts, 99))
	progress(fmt.Sprintf("%s: round trip p50 %s, p99 %s (%d samples)", path, api.FormatMS(bp.RTTP50ms), api.FormatMS(bp.RTTP99ms), bp.RTTSamples))
	return bp, nil
}

// transfer is tunnel.BenchUpload or tunnel.BenchDownload.
type transfer func(ctx context.Context, conn net.Conn, limit uint64, d time.Duration) (tunnel.BenchTransfer, error)

// bulkAll runs one bulk transfer per opener at once for dur and returns
// the bytes moved and the time until the last one finished.
func bulkAll(ctx context.Context, open []opener, xfer transfer, dur time.Duration) (uint64, time.Duration, error) {
	type result struct {
		bytes uint64
		err   error
	}
	start := time.Now()
	results := make(chan result, len(open))
	for _, o := range open {
		go func() {
			n, err := bulk(ctx, o, xfer, dur)
			results <- result{n, err}
		}()
	}
	var total uint64
	var errs []error
	for range open {
		r := <-results
		total += r.bytes
		if r.err != nil {
			errs = append(errs, r.err)
		}
	}
	if len(errs) > 0 {
		return 0, 0, errs[0]
	}
	return total, time.Since(start), nil
}

// bulk transfers over connections from open for dur; a connection that
// reaches the relay's byte cap first is followed by a new one.
func bulk(ctx context.Context, open opener, xfer transfer, dur time.Duration) (uint64, error) {
	end := time.Now().Add(dur)
	var total uint64
	for {
		left := max(time.Until(end), time.Millisecond)
		t, err := retryBusy(ctx, open, func(ctx context.Context, conn net.Conn) (tunnel.BenchTransfer, error) {
			return xfer(ctx, conn, benchConnBytes, left)
		}, left)
		if err != nil {
			return total, err
		}
		total += t.Bytes
		if t.Bytes < benchConnBytes || time.Now().After(end) {
			return total, nil
		}
	}
}

// roundTrips times echoes on one connection from open for dur.
func roundTrips(ctx context.Context, open opener, dur time.Duration) ([]time.Duration, error) {
	var rtts []time.Duration
	_, err := retryBusy(ctx, open, func(ctx context.Context, conn net.Conn) (struct{}, error) {
		var err error
		rtts, err = tunnel.BenchRoundTrips(ctx, conn, benchEchoBytes, benchConnBytes, dur)
		return struct{}{}, err
	}, dur)
	return rtts, err
}

// retryBusy opens a connection and runs do on it, bounded by dur plus
// benchSlack. A relay that refuses because it serves its limit of bench
// connections (ReasonOther) may not yet have let go of one this benchmark
// just closed: that is retried for benchBusyRetry.
func retryBusy[T any](ctx context.Context, open opener, do func(context.Context, net.Conn) (T, error), dur time.Duration) (T, error) {
	giveUp := time.Now().Add(benchBusyRetry)
	for {
		v, err := func() (T, error) {
			cctx, cancel := context.WithTimeout(ctx, dur+benchSlack)
			defer cancel()
			conn, err := open(cctx)
			if err != nil {
				var zero T
				return zero, err
			}
			defer conn.Close()
			return do(cctx, conn)
		}()
		var de *tunnel.DialError
		if err == nil || !errors.As(err, &de) || de.Reason != tunnel.ReasonOther || time.Now().After(giveUp) {
			return v, err
		}
		select {
		case <-ctx.Done():
			return v, err
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// benchVerdict says in one line what limits the sandbox: the network
// (the tunnel keeps up with a bare port-forward) or the tunnel.
func benchVerdict(r api.BenchResult) string {
	up, down := r.TunnelVsBareUpload, r.TunnelVsBareDownload
	addedRTT := r.Tunnel.RTTP50ms - r.Bare.RTTP50ms
	slowRTT := r.TunnelVsBareRTT > 1.5 && addedRTT > 1
	bare := fmt.Sprintf("a bare port-forward to the relay carries %.1f MB/s up and %.1f MB/s down with %s round trips",
		r.Bare.UploadMBps, r.Bare.DownloadMBps, api.FormatMS(r.Bare.RTTP50ms))
	switch {
	case min(up, down) < 0.8:
		s := fmt.Sprintf("the tunnel limits this sandbox: one tunnel stream gets %.2f× a bare port-forward's upload and %.2f× its download",
			up, down)
		if r.Pool.Connections > 1 {
			s += fmt.Sprintf(" (the pool of %d sessions together %.2f× and %.2f×)", r.Pool.Connections, r.PoolVsBareUpload, r.PoolVsBareDownload)
		}
		return s + "; " + bare
	case slowRTT:
		return fmt.Sprintf("the tunnel adds latency: %s per round trip against %s over a bare port-forward (%.2f×); its throughput keeps up (%.2f× up, %.2f× down)",
			api.FormatMS(r.Tunnel.RTTP50ms), api.FormatMS(r.Bare.RTTP50ms), r.TunnelVsBareRTT, up, down)
	}
	return fmt.Sprintf("your network limits this sandbox, not the tunnel: %s, and one tunnel stream keeps up (%.2f× up, %.2f× down, %s more per round trip)",
		bare, up, down, api.FormatMS(max(addedRTT, 0)))
}

func ratio(a, b float64) float64 {
	if b <= 0 {
		return 0
	}
	return math.Round(a/b*1000) / 1000
}

func mbps(bytes uint64, d time.Duration) float64 {
	if d <= 0 {
		return 0
	}
	return math.Round(float64(bytes)/d.Seconds()/1e6*10) / 10
}

func ms(d time.Duration) float64 { return math.Round(float64(d)/1e3) / 1e3 }

// percentile is the nearest-rank percentile of ds (0 for none).
func percentile(ds []time.Duration, p int) time.Duration {
	if len(ds) == 0 {
		return 0
	}
	s := slices.Clone(ds)
	slices.Sort(s)
	i := int(math.Ceil(float64(p)/100*float64(len(s)))) - 1
	return s[max(0, min(i, len(s)-1))]
}

func sizeText(n uint64) string {
	switch {
	case n >= 1<<30:
		return fmt.Sprintf("%.2f GiB", float64(n)/(1<<30))
	case n >= 1<<20:
		return fmt.Sprintf("%.1f MiB", float64(n)/(1<<20))
	}
	return fmt.Sprintf("%d KiB", n>>10)
}

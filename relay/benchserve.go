package relay

import (
	"errors"
	"fmt"
	"log/slog"
	"net"

	"github.com/sbx-dev/sbx/tunnel"
)

// The relay's side of `sbx bench cluster`: the tunnel package's bench
// protocol (tunnel.ServeBench: sink, source, echo) on the two kinds of
// connection the laptop opens for it, both authenticated by the sandbox's
// token: KindBench streams on its tunnel sessions, and bare connections
// after a Hello (bench) (tunnel.ServerOrBench). Nothing else reaches
// them: no port serves them, and an inbound connection from the cluster
// cannot ask for one.
//
// They are bounded apart from --max-streams, which sizes the relay's
// memory for the application's connections: at most benchMaxConns at once
// (a bench run opens one per path and pool session, eight covers a pool
// of eight), each carrying at most benchMaxBytes and lasting at most
// tunnel.BenchMaxDuration (plus a grace). Beyond a cap the request is
// refused with a reason the daemon shows. Each one holds a 256 KiB chunk
// buffer and a 64 KiB read buffer; a bench stream's receive window starts
// at yamux's 256 KiB and grows only within the window budgets the
// laptop's other streams share (tunnel/flow.go), so eight cost the relay
// at most ~5 MiB beyond what its memory sizing already counts (a bare
// bench connection has no window, only the kernel's socket buffers).
const (
	benchMaxConns = 8
	benchMaxBytes = 1 << 30
)

// benchLimits are the caps ServeBench checks each request against.
func (r *Relay) benchLimits() tunnel.BenchLimits {
	return tunnel.BenchLimits{
		MaxBytes: benchMaxBytes,
		Admit: func(tunnel.BenchRequest) (func(), error) {
			if r.benchN.Add(1) > benchMaxConns {
				r.benchN.Add(-1)
				return nil, &tunnel.DialError{Reason: tunnel.ReasonOther, Message: fmt.Sprintf(
					"the relay of sandbox %s is serving its limit of %d bench connections at once; "+
						"wait until the running benchmark (another `sbx bench cluster`?) has finished, then retry",
					r.opts.Sandbox, benchMaxConns)}
			}
			return func() { r.benchN.Add(-1) }, nil
		},
	}
}

// serveBench serves one bench connection (via says which kind, for the
// log) until it ends, and closes it.
func (r *Relay) serveBench(log *slog.Logger, conn net.Conn, via string) {
	served, err := tunnel.ServeBench(r.pipeCtx, conn, r.benchLimits())
	r.m.benchBytes.WithLabelValues(dirFromLaptop).Add(float64(served.In))
	r.m.benchBytes.WithLabelValues(dirToLaptop).Add(float64(served.Out))
	var de *tunnel.DialError
	switch {
	case err == nil:
		r.m.bench.WithLabelValues("ok").Inc()
		log.Debug("bench served", "via", via, "request", served.Request, "in", served.In, "out", served.Out)
	case errors.As(err, &de):
		r.m.bench.WithLabelValues("refused").Inc()
		log.Info("bench request refused", "via", via, "request", served.Request, "reason", de.Reason, "why", de.Message)
	default:
		r.m.bench.WithLabelValues("error").Inc()
		log.Info("bench connection ended early", "via", via, "request", served.Request, "in", served.In, "out", served.Out, "err", err)
	}
}

package relay

import (
	"fmt"
	"net"

	"github.com/prometheus/client_golang/prometheus"
)

// Stream kinds and byte directions used as metric label values.
const (
	kindInbound  = "inbound"
	kindOutbound = "outbound"

	dirToLaptop   = "to_laptop"
	dirFromLaptop = "from_laptop"
)

// metrics are the relay's Prometheus collectors, registered on the registry
// passed in Deps (never the global one, so several relays can run in one
// process, as in tests and the simulator).
type metrics struct {
	sessions      prometheus.Gauge
	handshakes    *prometheus.CounterVec // result: ok, bad_token, version_mismatch, sandbox_mismatch, timeout, error
	replaced      prometheus.Counter
	streamsOpen   *prometheus.GaugeVec   // kind
	streamsTotal  *prometheus.CounterVec // kind
	bytes         *prometheus.CounterVec // direction
	toLaptop      prometheus.Counter     // bytes{direction=to_laptop}, looked up once, not per stream
	fromLaptop    prometheus.Counter     // bytes{direction=from_laptop}
	dialErrors    *prometheus.CounterVec // reason
	held          prometheus.Gauge
	heldTotal     prometheus.Counter
	httpAnswers   *prometheus.CounterVec // code
	inboundClosed *prometheus.CounterVec // reason: offline, busy, error, or the laptop's dial reason (refused, timeout, ...)
	atLimit       *prometheus.CounterVec // kind: streams refused at MaxStreams
	quietClosed   *prometheus.CounterVec // reason: idle (IdleTimeout), drain
	ready         prometheus.Gauge
	bench         *prometheus.CounterVec // result: ok, refused, error (benchserve.go)
	benchBytes    *prometheus.CounterVec // direction: bench payload, apart from bytes
}

func newMetrics(reg prometheus.Registerer) (*metrics, error) {
	m := &metrics{
		sessions: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "sbx_relay_sessions", Help: "Tunnel sessions currently connected (one laptop may hold several).",
		}),
		handshakes: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "sbx_relay_handshakes_total", Help: "Tunnel handshakes by result.",
		}, []string{"result"}),
		replaced: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "sbx_relay_sessions_replaced_total", Help: "Sessions closed because a newer daemon (another client id) connected.",
		}),
		streamsOpen: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "sbx_relay_streams_open", Help: "Tunnel data streams currently open, by kind (inbound, outbound).",
		}, []string{"kind"}),
		streamsTotal: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "sbx_relay_streams_total", Help: "Tunnel data streams opened, by kind (inbound, outbound).",
		}, []string{"kind"}),
		bytes: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "sbx_relay_bytes_total", Help: "Payload bytes relayed, by direction (to_laptop, from_laptop).",
		}, []string{"direction"}),
		dialErrors: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "sbx_relay_dial_errors_total", Help: "Failed outbound dials, by reason (denied, dns, refused, timeout, unreachable, other).",
		}, []string{"reason"}),
		held: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "sbx_relay_held_connections", Help: "Inbound connections waiting for the laptop to connect.",
		}),
		heldTotal: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "sbx_relay_held_connections_total", Help: "Inbound connections that had to wait for the laptop.",
		}),
		httpAnswers: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "sbx_relay_http_answers_total", Help: "HTTP answers the relay wrote itself, by status code (502 laptop refused, 503 laptop offline or relay at --max-streams).",
		}, []string{"code"}),
		inboundClosed: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "sbx_relay_inbound_closed_total", Help: "TCP inbound connections closed without reaching the laptop, by reason.",
		}, []string{"reason"}),
		atLimit: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "sbx_relay_streams_refused_total", Help: "Streams refused because the relay was serving --max-streams already, by kind (inbound, outbound).",
		}, []string{"kind"}),
		quietClosed: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "sbx_relay_idle_closed_total", Help: "Inbound connections closed while waiting for their caller, by reason (idle: --idle-timeout, drain: the relay was shutting down).",
		}, []string{"reason"}),
		ready: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "sbx_relay_ready", Help: "1 while all listeners are up and the relay is not draining.",
		}),
		bench: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "sbx_relay_bench_total", Help: "Bench connections (sbx bench cluster) by result (ok, refused: over a cap, error).",
		}, []string{"result"}),
		benchBytes: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "sbx_relay_bench_bytes_total", Help: "Bench payload bytes, by direction (to_laptop, from_laptop); not in sbx_relay_bytes_total.",
		}, []string{"direction"}),
	}
	for _, c := range []prometheus.Collector{m.sessions, m.handshakes, m.replaced, m.streamsOpen, m.streamsTotal,
		m.bytes, m.dialErrors, m.held, m.heldTotal, m.httpAnswers, m.inboundClosed, m.atLimit, m.quietClosed, m.ready,
		m.bench, m.benchBytes} {
		if err := reg.Register(c); err != nil {
			return nil, fmt.Errorf("registering relay metrics: %w (pass each relay its own prometheus.Registry)", err)
		}
	}
	// Label values known up front are exported as 0, so dashboards and
	// rate() see the series before the first event.
	for _, k := range []string{kindInbound, kindOutbound} {
		m.streamsOpen.WithLabelValues(k)
		m.streamsTotal.WithLabelValues(k)
		m.atLimit.WithLabelValues(k)
	}
	for _, r := range []string{"idle", "drain"} {
		m.quietClosed.WithLabelValues(r)
	}
	for _, r := range []string{"ok", "refused", "error"} {
		m.bench.WithLabelValues(r)
	}
	for _, d := range []string{dirToLaptop, dirFromLaptop} {
		m.benchBytes.WithLabelValues(d)
	}
	m.toLaptop = m.bytes.WithLabelValues(dirToLaptop)
	m.fromLaptop = m.bytes.WithLabelValues(dirFromLaptop)
	for _, c := range []string{"502", "503"} {
		m.httpAnswers.WithLabelValues(c)
	}
	return m, nil
}

// countingConn counts payload bytes into the relay's byte counters: bytes
// read from the cluster side go to the laptop and bytes written to it came
// from the laptop.
type countingConn struct {
	net.Conn
	read, written prometheus.Counter
}

func (c *countingConn) Read(p []byte) (int, error) {
	n, err := c.Conn.Read(p)
	if n > 0 {
		c.read.Add(float64(n))
	}
	return n, err
}

func (c *countingConn) Write(p []byte) (int, error) {
	n, err := c.Conn.Write(p)
	if n > 0 {
		c.written.Add(float64(n))
	}
	return n, err
}

// CloseWrite forwards the half-close so piping keeps its semantics.
func (c *countingConn) CloseWrite() error { return closeWrite(c.Conn) }

func (m *metrics) count(c net.Conn) net.Conn {
	return &countingConn{Conn: c, read: m.toLaptop, written: m.fromLaptop}
}

// streamOpened records a data stream and returns the func that records its
// end; callers defer it, so it runs exactly once.
func (m *metrics) streamOpened(kind string) func() {
	m.streamsTotal.WithLabelValues(kind).Inc()
	g := m.streamsOpen.WithLabelValues(kind)
	g.Inc()
	return g.Dec
}

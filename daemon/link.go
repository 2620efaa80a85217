package daemon

import (
	"context"
	"log/slog"
	"net"
	"time"

	"github.com/sbx-dev/sbx/cluster"
)

// link is a live tunnel to one sandbox's relay: a pool of tunnel sessions
// and the loops serving inbound streams on them. The supervisor builds one
// per connection attempt and drops it when Done closes.
type link interface {
	// Done closes when the link can carry no more traffic; Err says why.
	Done() <-chan struct{}
	Err() error
	// Stats is sampled for status: RTT measured now, counters since the
	// link was made.
	Stats() linkStats
	// Close tears the link down and waits for its goroutines.
	Close() error
	// DialOutbound opens an outbound stream: the relay dials target
	// (host:port) inside the cluster. A refused dial returns a
	// *tunnel.DialError.
	DialOutbound(ctx context.Context, target, source string) (net.Conn, error)
}

type linkStats struct {
	Sessions int
	RTT      time.Duration
	BytesIn  int64
	BytesOut int64
	Streams  int
}

// route sends inbound streams for one workload port to a local address.
type route struct {
	Workload string
	Port     int32
	ToLocal  string
}

// linkParams is everything needed to build a link.
type linkParams struct {
	Ref cluster.Ref
	// Token returns the tunnel token each new session authenticates with;
	// a rotation changes it while the link lives.
	Token    func() string
	ClientID string
	User     string
	PoolSize int
	// Dial opens one connection to the relay's tunnel port.
	Dial func(ctx context.Context) (net.Conn, error)
	// Routes returns the current inbound routes.
	Routes func() []route
	Logger *slog.Logger
}

// linker builds a link: dials PoolSize connections, handshakes on each, and
// starts serving inbound streams. It returns an error if not even one
// session could be established.
type linker func(ctx context.Context, p linkParams) (link, error)

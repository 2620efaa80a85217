package linkshape

import (
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	toxiproxy "github.com/Shopify/toxiproxy/v2"
	"github.com/Shopify/toxiproxy/v2/stream"
	"github.com/Shopify/toxiproxy/v2/toxics"
	"github.com/rs/zerolog"
)

// Toxic type names, registered with toxiproxy.
const (
	wireToxicType  = "sbx_linkshape_wire"
	delayToxicType = "sbx_linkshape_delay"
)

// wireLead is how far ahead of the clock the wire may schedule: a chunk
// is read from the connection once the one before it is due to leave in
// less than this. It keeps the wire busy across a goroutine woken late by
// the scheduler (tens of microseconds, more on a loaded machine), without
// which the link would lose that time on every chunk, and it is all the
// proxy reads ahead: the rest of a backlog waits in the sender's socket
// buffers.
const wireLead = 2 * time.Millisecond

func init() {
	toxics.Register(wireToxicType, new(wireToxic))
	toxics.Register(delayToxicType, new(delayToxic))
}

// Shaper runs the proxies of one link. Every proxy it starts shares the
// link's bandwidth in each direction (a raw TCP path and a port-forward
// path compared through the same link see the same wire).
type Shaper struct {
	id      int64
	link    Link
	server  *toxiproxy.ApiServer
	wires   [stream.NumDirections]*wire
	closing chan struct{}

	// pkt carries the link in the packet model (Link.Packets) instead of
	// the toxiproxy stream model; pktErr is why it could not be built.
	pkt    *packetLink
	pktErr error

	mu      sync.Mutex
	proxies []*toxiproxy.Proxy
	closed  bool
}

// New returns a Shaper for link. Close stops it.
func New(link Link) *Shaper {
	s := &Shaper{
		link:    link,
		server:  toxiproxy.NewServer(toxiproxy.NewMetricsContainer(nil), zerolog.Nop()),
		closing: make(chan struct{}),
	}
	for d := range s.wires {
		s.wires[d] = &wire{bytesPerSec: link.BytesPerSecond()}
	}
	if link.Packets {
		s.pkt, s.pktErr = newPacketLink(link)
	}
	s.id = shaperIDs.Add(1)
	shapersMu.Lock()
	shapers[s.id] = s
	shapersMu.Unlock()
	return s
}

// Link is the link the Shaper models.
func (s *Shaper) Link() Link { return s.link }

// PacketStats counts the packet model's packets and retransmissions so
// far; ok is false in the stream model, which has no packets.
func (s *Shaper) PacketStats() (st PacketStats, ok bool) {
	if s.pkt == nil {
		return PacketStats{}, false
	}
	return s.pkt.stats(), true
}

// Proxy starts a proxy on a run-time-picked 127.0.0.1 port that forwards
// every connection to upstream through the link, and returns its address.
// Upstream (toward upstream) and downstream each get the link's bandwidth
// and half its round trip.
func (s *Shaper) Proxy(upstream string) (string, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return "", fmt.Errorf("link shaper is closed")
	}
	if s.link.Packets {
		if s.pktErr != nil {
			return "", s.pktErr
		}
		return s.pkt.proxy(upstream)
	}
	p := toxiproxy.NewProxy(s.server, fmt.Sprintf("link-%d", len(s.proxies)), "127.0.0.1:0", upstream)
	if err := p.Start(); err != nil {
		return "", fmt.Errorf("start the link proxy: %w", err)
	}
	s.proxies = append(s.proxies, p)
	oneWay := s.link.RTT / 2
	for _, dir := range []stream.Direction{stream.Upstream, stream.Downstream} {
		// Order matters: the wire first, then the propagation delay from
		// when a chunk has left the wire.
		if s.link.Bandwidth > 0 {
			if err := addToxic(p, dir, wireToxicType, fmt.Sprintf(`{"shaper": %d, "direction": %d}`, s.id, dir)); err != nil {
				return "", err
			}
		}
		// The other half of an odd number of nanoseconds goes downstream.
		d := oneWay
		if dir == stream.Downstream {
			d = s.link.RTT - oneWay
		}
		// Without a delay the toxic still holds each chunk until the
		// wire has sent it.
		if d > 0 || s.link.Bandwidth > 0 {
			if err := addToxic(p, dir, delayToxicType, fmt.Sprintf(`{"shaper": %d, "delay_ns": %d}`, s.id, d.Nanoseconds())); err != nil {
				return "", err
			}
		}
	}
	return p.Listen, nil
}

func addToxic(p *toxiproxy.Proxy, dir stream.Direction, typ, attrs string) error {
	_, err := p.Toxics.AddToxicJson(strings.NewReader(fmt.Sprintf(`{"type": %q, "stream": %q, "attributes": %s}`, typ, dir.String(), attrs)))
	if err != nil {
		return fmt.Errorf("add the %s toxic: %w", typ, err)
	}
	return nil
}

// Close stops every proxy and closes their connections. Chunks still on
// the way to a connection that had already gone are dropped, so that no
// goroutine of the proxies outlives Close.
func (s *Shaper) Close() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return
	}
	s.closed = true
	for _, p := range s.proxies {
		p.Stop()
	}
	if s.pkt != nil {
		s.pkt.close()
	}
	close(s.closing)
	shapersMu.Lock()
	delete(shapers, s.id)
	shapersMu.Unlock()
}

// shapers maps the id in a toxic's attributes to its Shaper: toxiproxy
// builds each toxic from JSON, so the state toxics share is found by id.
var (
	shapersMu sync.Mutex
	shapers   = map[int64]*Shaper{}
	shaperIDs atomic.Int64
)

func lookupShaper(id int64) *Shaper {
	shapersMu.Lock()
	defer shapersMu.Unlock()
	return shapers[id]
}

// wire is one direction of the link: it sends one chunk at a time at its
// rate, whichever connection the chunk belongs to.
type wire struct {
	bytesPerSec float64

	mu   sync.Mutex
	free time.Time // when the wire has sent everything scheduled so far
}

// schedule reserves the wire for n bytes and returns when they will have
// been sent: after everything scheduled before, and never before now
// (an idle wire does not bank its idle time).
func (w *wire) schedule(n int) time.Time {
	w.mu.Lock()
	defer w.mu.Unlock()
	start := w.free
	if now := time.Now(); start.Before(now) {
		start = now
	}
	w.free = start.Add(time.Duration(float64(n) / w.bytesPerSec * float64(time.Second)))
	return w.free
}

// wireToxic stamps each chunk with when it leaves its Shaper's wire in its
// direction (the delay toxic after it holds the chunk until then, plus the
// propagation delay) and takes the next chunk only when the wire is
// nearly free.
type wireToxic struct {
	Shaper    int64            `json:"shaper"`
	Direction stream.Direction `json:"direction"`
}

func (t *wireToxic) Pipe(stub *toxics.ToxicStub) {
	s := lookupShaper(t.Shaper)
	if s == nil {
		stub.Close()
		return
	}
	w, closing := s.wires[t.Direction], s.closing
	timer := time.NewTimer(time.Hour)
	defer timer.Stop()
	for {
		select {
		case <-stub.Interrupt:
			return
		case <-closing:
			drain(stub)
			return
		case c := <-stub.Input:
			if c == nil {
				stub.Close()
				return
			}
			c.Timestamp = w.schedule(len(c.Data))
			if !send(stub, c, closing) {
				return
			}
			if wait := time.Until(c.Timestamp) - wireLead; wait > 0 {
				timer.Reset(wait)
				select {
				case <-timer.C:
				case <-stub.Interrupt:
					return
				case <-closing:
					drain(stub)
					return
				}
			}
		}
	}
}

// delayToxic holds each chunk until DelayNs after its timestamp (when it
// leaves the wire, or when the proxy read it on a link without a
// bandwidth).
// Chunks are held in order, each for its own time: they are in flight
// together, as on a link.
type delayToxic struct {
	Shaper  int64 `json:"shaper"`
	DelayNs int64 `json:"delay_ns"`
}

// GetBufferSize is how many chunks may be in flight: at least the link's
// bandwidth × delay in chunks of up to 32 KiB, and small chunks too.
func (t *delayToxic) GetBufferSize() int { return 1 << 14 }

func (t *delayToxic) Pipe(stub *toxics.ToxicStub) {
	s := lookupShaper(t.Shaper)
	if s == nil {
		stub.Close()
		return
	}
	closing := s.closing
	timer := time.NewTimer(time.Hour)
	defer timer.Stop()
	for {
		select {
		case <-stub.Interrupt:
			return
		case <-closing:
			drain(stub)
			return
		case c := <-stub.Input:
			if c == nil {
				stub.Close()
				return
			}
			if wait := time.Until(c.Timestamp.Add(time.Duration(t.DelayNs))); wait > 0 {
				timer.Reset(wait)
				select {
				case <-timer.C:
				case <-stub.Interrupt:
					stub.Output <- c
					return
				case <-closing:
					drain(stub)
					return
				}
			}
			if !send(stub, c, closing) {
				return
			}
		}
	}
}

// send passes c on, unless the shaper closes first (the connection's
// writer may be gone, and nobody would ever take c).
func send(stub *toxics.ToxicStub, c *stream.StreamChunk, closing <-chan struct{}) bool {
	select {
	case stub.Output <- c:
		return true
	case <-closing:
		drain(stub)
		return false
	}
}

// drain discards the input until the proxy closes it (Shaper.Close has
// closed every connection), then closes the output.
func drain(stub *toxics.ToxicStub) {
	for c := range stub.Input {
		_ = c
	}
	stub.Close()
}

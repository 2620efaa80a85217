package linkshape

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"gvisor.dev/gvisor/pkg/buffer"
	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/adapters/gonet"
	"gvisor.dev/gvisor/pkg/tcpip/header"
	"gvisor.dev/gvisor/pkg/tcpip/link/channel"
	"gvisor.dev/gvisor/pkg/tcpip/network/ipv4"
	"gvisor.dev/gvisor/pkg/tcpip/stack"
	"gvisor.dev/gvisor/pkg/tcpip/transport/tcp"
)

// The packet model (Link.Packets): TCP itself crosses the link. Each end
// of the link is a userspace TCP/IP stack (gVisor's netstack, the one
// Tailscale and wireguard-go run); a proxy on 127.0.0.1 carries every
// loopback connection into the near stack, which opens a TCP connection
// over the link to the far stack, whose proxy dials the upstream on
// loopback. Between the stacks runs a wire of IP packets, one per
// direction: it serializes each packet at the link's rate behind those
// before it, tail-drops a packet that would wait longer than the
// bottleneck queue holds (queueBDPs), drops a random share (Link.Loss), and delivers
// the rest in order half the round trip after they left. So the TCP
// connection over the link goes through slow start, grows its congestion
// window (CUBIC, as Linux), recovers lost packets with SACK, fast
// retransmit and retransmission timeouts, and is limited by loss the way
// a real one is, which the stream model (a byte-stream proxy) cannot do.

// packetMTU is the link's MTU: Ethernet's, so a loss rate is per
// Ethernet-sized packet, as on the links users have.
const packetMTU = 1500

// queueBDPs sizes the bottleneck queue in bandwidth-delay products. One
// (the textbook size) made eight connections starting together lose 5-10%
// of their packets to the queue in slow start (netstack's CUBIC overshoots
// more than Linux's), noise that would swamp the loss asked for; with
// four, measured: no queue drops, the same 8-connection throughput as
// with a queue without bound. The price is what a deep queue costs: a
// request behind a bulk transfer on another connection waits for it
// (bufferbloat, as on many home routers).
const queueBDPs = 4

// minQueuePackets is the smallest bottleneck queue, in full packets.
const minQueuePackets = 64

// TCP buffer sizes of both stacks: Linux's defaults (tcp_rmem, with
// receive-buffer auto-tuning; tcp_wmem's maximum as the send buffer, which
// Linux would auto-tune to).
var (
	packetRecvBuffer = tcpip.TCPReceiveBufferSizeRangeOption{Min: 4096, Default: 131072, Max: 6 << 20}
	packetSendBuffer = tcpip.TCPSendBufferSizeRangeOption{Min: 4096, Default: 4 << 20, Max: 4 << 20}
)

var (
	nearAddr = tcpip.AddrFrom4([4]byte{10, 255, 0, 1})
	farAddr  = tcpip.AddrFrom4([4]byte{10, 255, 0, 2})
)

// PacketStats counts the packet model's packets, both directions together.
type PacketStats struct {
	// Packets is how many IP packets were offered to the wire.
	Packets int64 `json:"packets"`
	// Lost is how many of them the random loss dropped.
	Lost int64 `json:"lost"`
	// QueueDrops is how many the full bottleneck queue dropped.
	QueueDrops int64 `json:"queue_drops"`
	// Retransmits is how many TCP segments both stacks sent again.
	Retransmits int64 `json:"retransmits"`
}

// packetLink is the packet model of one link: two stacks and two wires.
type packetLink struct {
	link      Link
	near, far *stack.Stack
	nearEP    *channel.Endpoint
	farEP     *channel.Endpoint
	wires     [2]*packetWire

	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup

	mu        sync.Mutex
	nextPort  uint16
	listeners []io.Closer
	conns     map[net.Conn]struct{}
	closed    bool
}

func newPacketLink(link Link) (*packetLink, error) {
	ctx, cancel := context.WithCancel(context.Background())
	p := &packetLink{link: link, ctx: ctx, cancel: cancel, nextPort: 1000, conns: map[net.Conn]struct{}{}}
	var err error
	if p.near, p.nearEP, err = newPacketStack(nearAddr); err != nil {
		cancel()
		return nil, err
	}
	if p.far, p.farEP, err = newPacketStack(farAddr); err != nil {
		cancel()
		p.near.Destroy()
		return nil, err
	}
	seed := uint64(time.Now().UnixNano())
	p.wires[0] = newPacketWire(link, p.nearEP, p.farEP, seed)
	p.wires[1] = newPacketWire(link, p.farEP, p.nearEP, seed+1)
	for _, w := range p.wires {
		p.wg.Add(2)
		go func() { defer p.wg.Done(); w.send(ctx) }()
		go func() { defer p.wg.Done(); w.deliver(ctx) }()
	}
	return p, nil
}

// newPacketStack is one end of the link: an IPv4 + TCP stack with one
// NIC, reached through the returned channel endpoint.
func newPacketStack(addr tcpip.Address) (*stack.Stack, *channel.Endpoint, error) {
	s := stack.New(stack.Options{
		NetworkProtocols:   []stack.NetworkProtocolFactory{ipv4.NewProtocol},
		TransportProtocols: []stack.TransportProtocolFactory{tcp.NewProtocol},
	})
	// Deep enough that the wire, not this queue, decides what is dropped.
	ep := channel.New(1<<14, packetMTU, "")
	fail := func(what string, e tcpip.Error) (*stack.Stack, *channel.Endpoint, error) {
		s.Destroy()
		return nil, nil, fmt.Errorf("packet link: %s: %s", what, e)
	}
	if e := s.CreateNIC(1, ep); e != nil {
		return fail("create the NIC", e)
	}
	if e := s.AddProtocolAddress(1, tcpip.ProtocolAddress{Protocol: ipv4.ProtocolNumber, AddressWithPrefix: addr.WithPrefix()}, stack.AddressProperties{}); e != nil {
		return fail("add the address", e)
	}
	s.SetRouteTable([]tcpip.Route{{Destination: header.IPv4EmptySubnet, NIC: 1}})
	sack := tcpip.TCPSACKEnabled(true)
	moderate := tcpip.TCPModerateReceiveBufferOption(true)
	cubic := tcpip.CongestionControlOption("cubic")
	rcv, snd := packetRecvBuffer, packetSendBuffer
	for _, opt := range []tcpip.SettableTransportProtocolOption{&sack, &moderate, &cubic, &rcv, &snd} {
		if e := s.SetTransportProtocolOption(tcp.ProtocolNumber, opt); e != nil {
			return fail(fmt.Sprintf("set TCP option %T", opt), e)
		}
	}
	return s, ep, nil
}

// proxy starts a loopback listener whose connections cross the link to
// upstream, and returns its address.
func (p *packetLink) proxy(upstream string) (string, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		return "", errors.New("link shaper is closed")
	}
	port := p.nextPort
	p.nextPort++
	far := tcpip.FullAddress{NIC: 1, Addr: farAddr, Port: port}
	fl, err := gonet.ListenTCP(p.far, far, ipv4.ProtocolNumber)
	if err != nil {
		return "", fmt.Errorf("packet link: listen on the far end: %w", err)
	}
	nl, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		_ = fl.Close()
		return "", fmt.Errorf("packet link: listen on loopback: %w", err)
	}
	p.listeners = append(p.listeners, fl, nl)
	// The far end: each connection over the link dials upstream.
	p.wg.Add(2)
	go func() {
		defer p.wg.Done()
		p.acceptLoop(fl, func(ctx context.Context) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, "tcp", upstream)
		})
	}()
	// The near end: each loopback connection crosses the link.
	go func() {
		defer p.wg.Done()
		p.acceptLoop(nl, func(ctx context.Context) (net.Conn, error) {
			c, err := gonet.DialContextTCP(ctx, p.near, far, ipv4.ProtocolNumber)
			if err != nil {
				return nil, err // not a nil *gonet.TCPConn in a non-nil net.Conn
			}
			return c, nil
		})
	}()
	return nl.Addr().String(), nil
}

// acceptLoop joins each connection l accepts to one dial opens.
func (p *packetLink) acceptLoop(l net.Listener, dial func(context.Context) (net.Conn, error)) {
	for {
		c, err := l.Accept()
		if err != nil {
			return
		}
		if !p.track(c) {
			_ = c.Close()
			return
		}
		p.wg.Add(1)
		go func() {
			defer p.wg.Done()
			defer p.untrack(c)
			out, err := dial(p.ctx)
			if err != nil {
				return
			}
			if !p.track(out) {
				_ = out.Close()
				return
			}
			defer p.untrack(out)
			join(c, out)
		}()
	}
}

// track records c so that close can end it; false once closed.
func (p *packetLink) track(c net.Conn) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		return false
	}
	p.conns[c] = struct{}{}
	return true
}

func (p *packetLink) untrack(c net.Conn) {
	_ = c.Close()
	p.mu.Lock()
	delete(p.conns, c)
	p.mu.Unlock()
}

// join copies both ways between a and b, passing each side's EOF on as a
// half close, and returns when both directions are done.
func join(a, b net.Conn) {
	var wg sync.WaitGroup
	wg.Add(2)
	half := func(dst, src net.Conn) {
		defer wg.Done()
		_, err := io.Copy(dst, src)
		if cw, ok := dst.(interface{ CloseWrite() error }); ok && err == nil {
			_ = cw.CloseWrite()
			return
		}
		// A broken direction ends the connection both ways.
		_ = a.Close()
		_ = b.Close()
	}
	go half(a, b)
	go half(b, a)
	wg.Wait()
}

// stats sums both wires' and both stacks' counters.
func (p *packetLink) stats() PacketStats {
	var st PacketStats
	for _, w := range p.wires {
		st.Packets += w.packets.Load()
		st.Lost += w.lost.Load()
		st.QueueDrops += w.queueDrops.Load()
	}
	for _, s := range []*stack.Stack{p.near, p.far} {
		st.Retransmits += int64(s.Stats().TCP.Retransmits.Value())
	}
	return st
}

// close ends every connection, both stacks and the wires; no goroutine
// of the link outlives it.
func (p *packetLink) close() {
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		return
	}
	p.closed = true
	for _, l := range p.listeners {
		_ = l.Close()
	}
	for c := range p.conns {
		_ = c.Close()
	}
	p.mu.Unlock()
	p.cancel()
	p.wg.Wait()
	p.near.Destroy()
	p.far.Destroy()
	p.nearEP.Close()
	p.farEP.Close()
}

// packetWire is one direction of the link.
type packetWire struct {
	from, to *channel.Endpoint
	// secPerByte is the serialization time of a byte (0: unlimited).
	secPerByte float64
	oneWay     time.Duration
	loss       float64
	// maxWait is how long a packet may wait for the wire before the
	// bottleneck queue is full: its size at the link's rate.
	maxWait time.Duration
	rng     *rand.Rand // only the send goroutine

	inFlight chan flight

	packets, lost, queueDrops atomic.Int64
}

// flight is a packet on its way, due at the far end at due.
type flight struct {
	due time.Time
	pkt []byte
}

func newPacketWire(link Link, from, to *channel.Endpoint, seed uint64) *packetWire {
	w := &packetWire{
		from: from, to: to, oneWay: link.RTT / 2, loss: link.Loss,
		rng:      rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15)),
		inFlight: make(chan flight, 1<<16),
	}
	if link.Bandwidth > 0 {
		w.secPerByte = 8 / float64(link.Bandwidth)
		// The bottleneck holds queueBDPs bandwidth-delay products (at
		// least minQueuePackets).
		bdp := link.BytesPerSecond() * link.RTT.Seconds()
		w.maxWait = time.Duration(max(queueBDPs*bdp, minQueuePackets*packetMTU) * w.secPerByte * float64(time.Second))
	}
	return w
}

// send takes the packets the near stack sends, drops the lost ones and
// those the full queue refuses, and schedules the rest.
func (w *packetWire) send(ctx context.Context) {
	var free time.Time // when the wire has sent everything before
	for {
		pb := w.from.ReadContext(ctx)
		if pb == nil {
			return
		}
		pkt := pb.ToView().AsSlice()
		pkt = append([]byte(nil), pkt...)
		pb.DecRef()
		w.packets.Add(1)
		if w.loss > 0 && w.rng.Float64() < w.loss {
			w.lost.Add(1)
			continue
		}
		now := time.Now()
		start := now
		if free.After(now) {
			start = free
		}
		if w.secPerByte > 0 && start.Sub(now) > w.maxWait {
			w.queueDrops.Add(1)
			continue
		}
		left := start.Add(time.Duration(float64(len(pkt)) * w.secPerByte * float64(time.Second)))
		free = left
		select {
		case w.inFlight <- flight{due: left.Add(w.oneWay), pkt: pkt}:
		case <-ctx.Done():
			return
		}
	}
}

// deliver hands each packet to the far stack when it is due, in order.
func (w *packetWire) deliver(ctx context.Context) {
	t := time.NewTimer(time.Hour)
	defer t.Stop()
	for {
		var f flight
		select {
		case f = <-w.inFlight:
		case <-ctx.Done():
			return
		}
		// A packet due within the timer's resolution goes now: sleeping
		// for each one would cost the link its rate.
		if wait := time.Until(f.due); wait > 50*time.Microsecond {
			t.Reset(wait)
			select {
			case <-t.C:
			case <-ctx.Done():
				return
			}
		}
		pb := stack.NewPacketBuffer(stack.PacketBufferOptions{Payload: buffer.MakeWithData(f.pkt)})
		w.to.InjectInbound(ipv4.ProtocolNumber, pb)
		pb.DecRef()
	}
}

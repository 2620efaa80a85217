package node

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"strings"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// Cluster DNS and Service addresses for the pods.
//
// A Service's ClusterIP (from the API server) is routed nowhere here: there
// is no kube-proxy. Instead the DNS server answers NAME.NS.svc.cluster.local
// with a per-run "service address" of its own (the upper half of the pods'
// /24, assigned on the node's dummy interface when first asked for), and
// the stand-in listens on each of the Service's ports there and hands every
// connection to Options.DialService: the mesh router of that Service port
// (meshbridge), as a sidecar would take it. The DNS server itself listens on
// the subnet's .254, on the same dummy interface; each pod's resolv.conf
// (/etc/netns/NAME/resolv.conf, which ip netns exec bind-mounts over
// /etc/resolv.conf) points there, with the namespace's search path.
//
// Only A queries of Service names get an address; a Service's ports are
// those it had when first resolved.

const clusterDomain = "cluster.local"

// dummyName is the interface the node's cluster DNS and service
// addresses are on: "sxPIDhexd" (and its veth peer, "sxPIDhexdx").
func dummyName() string { return fmt.Sprintf("sx%xd", os.Getpid()) }

type dnsServer struct {
	n    *Node
	addr netip.Addr
	pc   net.PacketConn
	wg   sync.WaitGroup

	mu      sync.Mutex
	closed  bool
	vips    map[string]netip.Addr // "ns/name" -> service address
	next    netip.Addr
	lns     []net.Listener
	conns   map[net.Conn]struct{}
	proxyWG sync.WaitGroup
}

func (n *Node) dnsAddr() netip.Addr {
	a := n.o.Subnet.Addr().As4()
	a[3] = 254
	return netip.AddrFrom4(a)
}

// podIPLimit: pods get .2 to .127; service addresses .128 to .253.
const podIPLimit = 127

func startDNS(n *Node) (*dnsServer, error) {
	ctx := n.ctx
	d := &dnsServer{n: n, addr: n.dnsAddr(), vips: map[string]netip.Addr{}, conns: map[net.Conn]struct{}{}}
	first := n.o.Subnet.Addr().As4()
	first[3] = podIPLimit + 1
	d.next = netip.AddrFrom4(first)
	_ = ipCmd(ctx, "link", "delete", dummyName()) // a leftover of a stand-in of this process
	for _, args := range [][]string{
		// A veth pair, both ends on the host (kernels without the dummy
		// driver, as in containers, have veth): only the addresses matter.
		{"link", "add", dummyName(), "type", "veth", "peer", "name", dummyName() + "x"},
		{"link", "set", dummyName(), "up"},
		{"link", "set", dummyName() + "x", "up"},
		{"addr", "add", d.addr.String() + "/32", "dev", dummyName()},
	} {
		if err := ipCmd(ctx, args...); err != nil {
			_ = ipCmd(context.Background(), "link", "delete", dummyName())
			return nil, err
		}
	}
	pc, err := net.ListenPacket("udp", netip.AddrPortFrom(d.addr, 53).String())
	if err != nil {
		_ = ipCmd(context.Background(), "link", "delete", dummyName())
		return nil, fmt.Errorf("cluster DNS: %w", err)
	}
	d.pc = pc
	d.wg.Add(1)
	go d.serve()
	return d, nil
}

func (d *dnsServer) close() {
	d.mu.Lock()
	d.closed = true
	lns := d.lns
	conns := make([]net.Conn, 0, len(d.conns))
	for c := range d.conns {
		conns = append(conns, c)
	}
	d.mu.Unlock()
	_ = d.pc.Close()
	for _, ln := range lns {
		_ = ln.Close()
	}
	for _, c := range conns {
		_ = c.Close()
	}
	d.wg.Wait()
	d.proxyWG.Wait()
	_ = ipCmd(context.Background(), "link", "delete", dummyName())
}

// resolvConf is the resolv.conf of pods in namespace ns.
func (n *Node) resolvConf(ns string) string {
	return fmt.Sprintf("search %s.svc.%s svc.%s %s\nnameserver %s\noptions ndots:5\n",
		ns, clusterDomain, clusterDomain, clusterDomain, n.dnsAddr())
}

func (d *dnsServer) serve() {
	defer d.wg.Done()
	buf := make([]byte, 1500)
	for {
		nr, from, err := d.pc.ReadFrom(buf)
		if err != nil {
			return
		}
		if resp := d.answer(buf[:nr]); resp != nil {
			_, _ = d.pc.WriteTo(resp, from)
		}
	}
}

const (
	rcodeNXDomain = 3
	typeA         = 1
)

// answer builds the response to query q (nil: drop it).
func (d *dnsServer) answer(q []byte) []byte {
	if len(q) < 12 || binary.BigEndian.Uint16(q[4:6]) != 1 {
		return nil
	}
	// The question: labels, then type and class.
	i := 12
	var labels []string
	for {
		if i >= len(q) {
			return nil
		}
		l := int(q[i])
		i++
		if l == 0 {
			break
		}
		if l&0xc0 != 0 || i+l > len(q) {
			return nil
		}
		labels = append(labels, strings.ToLower(string(q[i:i+l])))
		i += l
	}
	if i+4 > len(q) {
		return nil
	}
	qtype := binary.BigEndian.Uint16(q[i : i+2])
	question := q[12 : i+4]
	ip, known := d.lookup(labels)

	resp := make([]byte, 12, 12+len(question)+16)
	copy(resp[0:2], q[0:2])
	flags := uint16(0x8000 | 0x0400)                  // QR, AA
	flags |= binary.BigEndian.Uint16(q[2:4]) & 0x0100 // RD
	if !known {
		flags |= rcodeNXDomain
	}
	binary.BigEndian.PutUint16(resp[2:4], flags)
	binary.BigEndian.PutUint16(resp[4:6], 1)
	resp = append(resp, question...)
	if known && qtype == typeA {
		binary.BigEndian.PutUint16(resp[6:8], 1)
		a := ip.As4()
		resp = append(resp, 0xc0, 12, 0, typeA, 0, 1, 0, 0, 0, 5, 0, 4, a[0], a[1], a[2], a[3])
	}
	return resp
}

// lookup resolves NAME.NS.svc.cluster.local to the Service's address.
func (d *dnsServer) lookup(labels []string) (netip.Addr, bool) {
	if len(labels) != 5 || strings.Join(labels[2:], ".") != "svc."+clusterDomain {
		return netip.Addr{}, false
	}
	ns, name := labels[1], labels[0]
	key := ns + "/" + name
	d.mu.Lock()
	ip, ok := d.vips[key]
	d.mu.Unlock()
	if ok {
		return ip, true
	}
	ctx, cancel := context.WithTimeout(d.n.ctx, 5*time.Second)
	defer cancel()
	svc, err := d.n.client.CoreV1().Services(ns).Get(ctx, name, metav1.GetOptions{})
	if err != nil {
		return netip.Addr{}, false
	}
	ip, err = d.assign(ctx, key, svc)
	if err != nil {
		d.n.o.Logf("node stand-in: cluster DNS: %s: %v", key, err)
		return netip.Addr{}, false
	}
	return ip, true
}

// assign gives Service svc an address and listens on its ports there.
func (d *dnsServer) assign(ctx context.Context, key string, svc *corev1.Service) (netip.Addr, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if ip, ok := d.vips[key]; ok {
		return ip, nil
	}
	if d.closed {
		return netip.Addr{}, net.ErrClosed
	}
	if d.next == d.addr {
		return netip.Addr{}, errors.New("no service address left")
	}
	ip := d.next
	if err := ipCmd(ctx, "addr", "add", ip.String()+"/32", "dev", dummyName()); err != nil {
		return netip.Addr{}, err
	}
	d.next = d.next.Next()
	for _, p := range svc.Spec.Ports {
		if p.Protocol != "" && p.Protocol != corev1.ProtocolTCP {
			continue
		}
		ln, err := net.Listen("tcp", netip.AddrPortFrom(ip, uint16(p.Port)).String())
		if err != nil {
			return netip.Addr{}, err
		}
		d.lns = append(d.lns, ln)
		d.proxyWG.Add(1)
		go d.proxy(ln, svc.Namespace, svc.Name, p.Port)
	}
	d.vips[key] = ip
	return ip, nil
}

// proxy hands each connection to ln to the Service port's dialer.
func (d *dnsServer) proxy(ln net.Listener, ns, name string, port int32) {
	defer d.proxyWG.Done()
	for {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		if !d.track(c) {
			_ = c.Close()
			return
		}
		d.proxyWG.Add(1)
		go func() {
			defer d.proxyWG.Done()
			defer d.untrack(c)
			if d.n.o.DialService == nil {
				return
			}
			ctx, cancel := context.WithTimeout(d.n.ctx, 10*time.Second)
			up, err := d.n.o.DialService(ctx, ns, name, port)
			cancel()
			if err != nil {
				d.n.o.Logf("node stand-in: service %s/%s:%d: %v", ns, name, port, err)
				return
			}
			if !d.track(up) {
				_ = up.Close()
				return
			}
			defer d.untrack(up)
			done := make(chan struct{}, 2)
			pipe := func(dst, src net.Conn) {
				_, _ = io.Copy(dst, src)
				if tc, ok := dst.(interface{ CloseWrite() error }); ok {
					_ = tc.CloseWrite()
				}
				done <- struct{}{}
			}
			go pipe(up, c)
			go pipe(c, up)
			<-done
			<-done
		}()
	}
}

func (d *dnsServer) track(c net.Conn) bool {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.closed {
		return false
	}
	d.conns[c] = struct{}{}
	return true
}

func (d *dnsServer) untrack(c net.Conn) {
	d.mu.Lock()
	delete(d.conns, c)
	d.mu.Unlock()
	_ = c.Close()
}

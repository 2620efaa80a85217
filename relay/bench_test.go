package relay

import (
	"context"
	"io"
	"net"
	"net/http"
	"strconv"
	"testing"
	"time"

	"github.com/sbx-dev/sbx/tools/testbed/linkshape"
	"github.com/sbx-dev/sbx/tunnel"
)

// BenchmarkInbound measures a connection through the relay's inbound port,
// the tunnel and the laptop to a local echo server and back, per payload
// size: the path every keyed request takes.
func BenchmarkInbound(b *testing.B) {
	h := startRelay(b, "--inbound", "20002=echo/7")
	lap := newLaptop(b, "bench")
	lap.mapLocal("echo", 7, echoServer(b))
	lap.connect(h, 1)
	addr := h.inbound(20002)
	for _, size := range []int{1 << 10, 64 << 10, 1 << 20, 16 << 20} {
		payload := make([]byte, size)
		b.Run(strconv.Itoa(size>>10)+"KiB", func(b *testing.B) {
			b.SetBytes(int64(2 * size))
			b.ReportAllocs()
			for b.Loop() {
				c, err := net.Dial("tcp", addr)
				if err != nil {
					b.Fatal(err)
				}
				go func() {
					_, _ = c.Write(payload)
					_ = c.(*net.TCPConn).CloseWrite()
				}()
				n, err := io.Copy(io.Discard, c)
				_ = c.Close()
				if err != nil || n != int64(size) {
					b.Fatalf("echoed %d of %d bytes: %v", n, size, err)
				}
			}
		})
	}
}

// BenchmarkOutboundDial measures opening an outbound stream: policy check,
// dial in the "cluster", reply, first byte back.
func BenchmarkOutboundDial(b *testing.B) {
	h := startRelay(b)
	h.cluster.add("driver.hotrod.svc.cluster.local", "10.96.0.12", 8082, echoServer(b))
	lap := newLaptop(b, "bench")
	s := lap.connect(h, 1)
	b.ReportAllocs()
	for b.Loop() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		st, err := s.Open(ctx, tunnel.Header{Kind: tunnel.KindOutbound, Target: "driver.hotrod.svc.cluster.local:8082"})
		cancel()
		if err != nil {
			b.Fatal(err)
		}
		_, _ = st.Write([]byte{1})
		_ = st.CloseWrite()
		_, _ = io.Copy(io.Discard, st)
		_ = st.Close()
	}
}

// BenchmarkHTTPRequest measures one keyed HTTP request on a kept-alive
// connection through the relay.
func BenchmarkHTTPRequest(b *testing.B) {
	h := startRelay(b, "--inbound", "20001=route/8083/http")
	lap := newLaptop(b, "bench")
	lap.mapLocal("route", 8083, httpServer(b, "route"))
	lap.connect(h, 1)
	client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 1}}
	defer client.CloseIdleConnections()
	url := "http://" + h.inbound(20001) + "/dispatch"
	b.ReportAllocs()
	for b.Loop() {
		resp, err := client.Get(url)
		if err != nil {
			b.Fatal(err)
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		_ = resp.Body.Close()
	}
}

// BenchmarkInboundNewConnectionShaped measures a keyed HTTP request on a
// new connection to the relay while the laptop's session crosses a 20 ms
// link (the port-forward): link_rtts/op is how many of the link's round
// trips it costs, with the request's first bytes sent with the stream's
// header (early) and after the laptop's reply (late, as before).
func BenchmarkInboundNewConnectionShaped(b *testing.B) {
	const rtt = 20 * time.Millisecond
	h := startRelay(b, "--inbound", "20001=route/8083/http")
	lap := newLaptop(b, "bench")
	lap.mapLocal("route", 8083, httpServer(b, "route"))
	sh := linkshape.New(linkshape.Link{Name: "bench", RTT: rtt})
	b.Cleanup(sh.Close)
	proxy, err := sh.Proxy(h.addrs.Tunnel.String())
	if err != nil {
		b.Fatal(err)
	}
	if _, err := lap.dialAddr(proxy, lap.hello()); err != nil {
		b.Fatal(err)
	}
	url := "http://" + h.inbound(20001) + "/dispatch"
	for _, mode := range []struct {
		name string
		off  bool
	}{{"early", false}, {"late", true}} {
		b.Run(mode.name, func(b *testing.B) {
			h.relay.noEarlyData.Store(mode.off)
			defer h.relay.noEarlyData.Store(false)
			start := time.Now()
			for b.Loop() {
				c := &http.Client{Transport: &http.Transport{DisableKeepAlives: true}}
				resp, err := c.Get(url)
				if err != nil {
					b.Fatal(err)
				}
				_, _ = io.Copy(io.Discard, resp.Body)
				_ = resp.Body.Close()
			}
			b.ReportMetric(float64(time.Since(start))/float64(b.N)/float64(rtt), "link_rtts/op")
		})
	}
}

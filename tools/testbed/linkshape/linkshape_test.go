package linkshape_test

import (
	"crypto/rand"
	"crypto/sha256"
	"io"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"

	"github.com/sbx-dev/sbx/tools/testbed/linkshape"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func TestParseRate(t *testing.T) {
	for in, want := range map[string]int64{
		"1000mbit":  1_000_000_000,
		"100mbit":   100_000_000,
		"300Mbit":   300_000_000,
		"1gbit":     1_000_000_000,
		"1.5GBIT":   1_500_000_000,
		"500kbit":   500_000,
		"64kbit/s":  64_000,
		"9600bit":   9600,
		"12.5MB/s":  100_000_000,
		"125MB":     1_000_000_000,
		"1kB/s":     8_000,
		"1KB":       8_000,
		"1MiB/s":    8 << 20,
		"100 mbit":  100_000_000,
		" 2GB/s ":   16_000_000_000,
		"1KiB":      8192,
		"0.001mbit": 1000,
	} {
		got, err := linkshape.ParseRate(in)
		require.NoError(t, err, in)
		require.Equal(t, want, got, in)
	}
	for in, msg := range map[string]string{
		"100":         "has no unit",
		"mbit":        "does not start with a number",
		"1.2.3mbit":   "does not start with a number",
		"100mbps":     "ambiguous",
		"100Mbps":     "ambiguous",
		"100mb":       "ambiguous",
		"10kb/s":      "ambiguous",
		"100furlongs": "unknown unit",
		"0mbit":       "not a positive rate",
		"0.1bit":      "not a positive rate",
		"":            "has no unit",
	} {
		_, err := linkshape.ParseRate(in)
		require.ErrorContains(t, err, msg, in)
	}
}

func TestFormatRate(t *testing.T) {
	for bits, want := range map[int64]string{
		1_000_000_000: "1 Gbit/s",
		300_000_000:   "300 Mbit/s",
		1_500_000:     "1.5 Mbit/s",
		64_000:        "64 kbit/s",
		10:            "10 bit/s",
	} {
		require.Equal(t, want, linkshape.FormatRate(bits))
		back, err := linkshape.ParseRate(want)
		if bits >= 1000 {
			require.NoError(t, err, want)
			require.Equal(t, bits, back, want)
		}
	}
}

func TestParseDuration(t *testing.T) {
	d, err := linkshape.ParseDuration("20ms")
	require.NoError(t, err)
	require.Equal(t, 20*time.Millisecond, d)
	d, err = linkshape.ParseDuration("0")
	require.NoError(t, err)
	require.Zero(t, d)
	_, err = linkshape.ParseDuration("-1ms")
	require.ErrorContains(t, err, "negative")
	_, err = linkshape.ParseDuration("20")
	require.ErrorContains(t, err, "not a duration")
}

func TestPresets(t *testing.T) {
	want := []struct {
		name string
		rtt  time.Duration
		bw   string
	}{
		{"lan", time.Millisecond, "1gbit"},
		{"wifi", 10 * time.Millisecond, "300mbit"},
		{"vpn", 30 * time.Millisecond, "100mbit"},
		{"intercontinental", 100 * time.Millisecond, "100mbit"},
	}
	require.Len(t, linkshape.Presets, len(want))
	for i, w := range want {
		p, err := linkshape.Preset(w.name)
		require.NoError(t, err)
		require.Equal(t, linkshape.Presets[i], p)
		bw, err := linkshape.ParseRate(w.bw)
		require.NoError(t, err)
		require.Equal(t, linkshape.Link{Name: w.name, RTT: w.rtt, Bandwidth: bw}, p)
	}
	require.Equal(t, "lan,wifi,vpn,intercontinental", linkshape.PresetNames())
	_, err := linkshape.Preset("moon")
	require.ErrorContains(t, err, `unknown link "moon" (known: lan,wifi,vpn,intercontinental)`)
	require.Equal(t, "vpn (rtt 30ms, 100 Mbit/s)", linkshape.Presets[2].String())
}

// serve hands each connection accepted on a loopback port to handle.
func serve(t *testing.T, handle func(net.Conn)) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				defer c.Close()
				handle(c)
			}()
		}
	}()
	t.Cleanup(func() { _ = ln.Close(); wg.Wait() })
	return ln.Addr().String()
}

// echoThrough connects through link to an echo server; the test's
// cleanup closes both.
func echoThrough(t *testing.T, link linkshape.Link) (*linkshape.Shaper, net.Conn) {
	t.Helper()
	addr := serve(t, func(c net.Conn) { _, _ = io.Copy(c, c) })
	sh := linkshape.New(link)
	t.Cleanup(sh.Close)
	proxy, err := sh.Proxy(addr)
	require.NoError(t, err)
	c, err := net.Dial("tcp", proxy)
	require.NoError(t, err)
	t.Cleanup(func() { _ = c.Close() })
	return sh, c
}

// TestShaperRTT checks the configured round trip against the shaping's
// floor: an echo through the link cannot come back sooner.
func TestShaperRTT(t *testing.T) { bothModels(t, testShaperRTT) }

// bothModels runs a test of the Shaper in the stream and the packet model.
func bothModels(t *testing.T, test func(*testing.T, bool)) {
	for _, packets := range []bool{false, true} {
		t.Run(map[bool]string{false: "stream", true: "packet"}[packets], func(t *testing.T) { test(t, packets) })
	}
}

func testShaperRTT(t *testing.T, packets bool) {
	_, c := echoThrough(t, linkshape.Link{Name: "test", RTT: 20 * time.Millisecond, Packets: packets})
	buf := make([]byte, 100)
	for range 3 {
		start := time.Now()
		_, err := c.Write(buf)
		require.NoError(t, err)
		_, err = io.ReadFull(c, buf)
		require.NoError(t, err)
		require.GreaterOrEqual(t, time.Since(start), 20*time.Millisecond)
	}
}

// TestShaperSharedBandwidth checks that connections share the link's rate
// (toxiproxy's own bandwidth toxic would give each one all of it): two
// uploads of n bytes each cannot arrive sooner than 2n bytes take at the
// rate.
func TestShaperSharedBandwidth(t *testing.T) { bothModels(t, testShaperSharedBandwidth) }

func testShaperSharedBandwidth(t *testing.T, packets bool) {
	const n = 100_000
	var mu sync.Mutex
	var last time.Time
	addr := serve(t, func(c net.Conn) {
		_, _ = io.CopyN(io.Discard, c, n)
		mu.Lock()
		last = time.Now()
		mu.Unlock()
		_, _ = c.Write([]byte{1})
	})
	link := linkshape.Link{Name: "test", Bandwidth: 8_000_000, Packets: packets} // 1 MB/s
	sh := linkshape.New(link)
	defer sh.Close()
	proxy, err := sh.Proxy(addr)
	require.NoError(t, err)
	start := time.Now()
	var wg sync.WaitGroup
	for range 2 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c, err := net.Dial("tcp", proxy)
			if !assertNoError(t, err) {
				return
			}
			defer c.Close()
			_, err = c.Write(make([]byte, n))
			assertNoError(t, err)
			_, err = io.ReadFull(c, make([]byte, 1))
			assertNoError(t, err)
		}()
	}
	wg.Wait()
	floor := time.Duration(2 * n / link.BytesPerSecond() * float64(time.Second))
	require.GreaterOrEqual(t, last.Sub(start), floor)
}

func assertNoError(t *testing.T, err error) bool {
	t.Helper()
	if err != nil {
		t.Error(err)
		return false
	}
	return true
}

// TestShaperCloseInFlight closes the shaper while a download is still on
// the link and its reader gone: nothing of the proxy may outlive Close
// (TestMain checks for leaked goroutines).
func TestShaperCloseInFlight(t *testing.T) { bothModels(t, testShaperCloseInFlight) }

func testShaperCloseInFlight(t *testing.T, packets bool) {
	addr := serve(t, func(c net.Conn) { _, _ = c.Write(make([]byte, 1<<20)) })
	sh := linkshape.New(linkshape.Link{Name: "test", RTT: 50 * time.Millisecond, Bandwidth: 80_000_000, Packets: packets, Loss: 0.01})
	proxy, err := sh.Proxy(addr)
	require.NoError(t, err)
	c, err := net.Dial("tcp", proxy)
	require.NoError(t, err)
	_, err = io.ReadFull(c, make([]byte, 1000))
	require.NoError(t, err)
	require.NoError(t, c.Close())
	sh.Close()
	sh.Close()
	_, err = sh.Proxy(addr)
	require.Error(t, err)
}

func TestParseLoss(t *testing.T) {
	for in, want := range map[string]float64{"1%": 0.01, "0.1%": 0.001, " 0% ": 0, "20%": 0.2, "2.5 %": 0.025} {
		got, err := linkshape.ParseLoss(in)
		require.NoError(t, err, in)
		require.InDelta(t, want, got, 1e-12, in)
	}
	for in, msg := range map[string]string{
		"0.01": `"0.01" is not a percentage; write the loss with %, e.g. 1% or 0.1%`,
		"x%":   `"x%" is not a percentage from 0% to 20%`,
		"-1%":  `"-1%" is not a percentage from 0% to 20%`,
		"NaN%": `"NaN%" is not a percentage from 0% to 20%`,
		"25%":  `"25%" is above 20%: TCP would spend the run waiting for retransmission timeouts`,
	} {
		_, err := linkshape.ParseLoss(in)
		require.EqualError(t, err, msg, in)
	}
	require.Equal(t, "0.1%", linkshape.FormatLoss(0.001))
	require.Equal(t, "vpn (rtt 30ms, 100 Mbit/s, 1% loss, packet model)",
		linkshape.Link{Name: "vpn", RTT: 30 * time.Millisecond, Bandwidth: 100e6, Packets: true, Loss: 0.01}.String())
}

// TestPacketLinkLossIsRecovered: over a link that drops 2% of the packets
// each way, TCP delivers every byte of an upload and of its echo intact,
// by retransmitting; the wire dropped about the share asked for.
func TestPacketLinkLossIsRecovered(t *testing.T) {
	sh, c := echoThrough(t, linkshape.Link{Name: "lossy", RTT: 2 * time.Millisecond, Bandwidth: 200_000_000, Packets: true, Loss: 0.02})
	want := make([]byte, 1<<20)
	_, _ = rand.Read(want)
	errc := make(chan error, 1)
	go func() {
		_, err := c.Write(want)
		if err == nil {
			err = c.(*net.TCPConn).CloseWrite()
		}
		errc <- err
	}()
	got, err := io.ReadAll(c)
	require.NoError(t, err)
	require.NoError(t, <-errc)
	require.Equal(t, sha256.Sum256(want), sha256.Sum256(got), "the echo came back intact")

	st, ok := sh.PacketStats()
	require.True(t, ok)
	require.Greater(t, st.Packets, int64(2*len(want)/1500), "both ways in MTU-sized packets")
	share := float64(st.Lost) / float64(st.Packets)
	require.InDelta(t, 0.02, share, 0.015, "dropped %d of %d packets", st.Lost, st.Packets)
	require.Positive(t, st.Retransmits, "TCP retransmitted what was lost: %+v", st)

	stream := linkshape.New(linkshape.Link{Name: "stream"})
	defer stream.Close()
	_, ok = stream.PacketStats()
	require.False(t, ok, "the stream model has no packets")
}

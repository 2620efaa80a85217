package linkshape_test

import (
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

// TestShaperRTT checks the configured round trip against the shaping's
// floor: an echo through the link cannot come back sooner.
func TestShaperRTT(t *testing.T) {
	addr := serve(t, func(c net.Conn) { _, _ = io.Copy(c, c) })
	sh := linkshape.New(linkshape.Link{Name: "test", RTT: 20 * time.Millisecond})
	defer sh.Close()
	proxy, err := sh.Proxy(addr)
	require.NoError(t, err)
	c, err := net.Dial("tcp", proxy)
	require.NoError(t, err)
	defer c.Close()
	buf := make([]byte, 100)
	for range 3 {
		start := time.Now()
		_, err = c.Write(buf)
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
func TestShaperSharedBandwidth(t *testing.T) {
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
	link := linkshape.Link{Name: "test", Bandwidth: 8_000_000} // 1 MB/s
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
func TestShaperCloseInFlight(t *testing.T) {
	addr := serve(t, func(c net.Conn) { _, _ = c.Write(make([]byte, 1<<20)) })
	sh := linkshape.New(linkshape.Link{Name: "test", RTT: 50 * time.Millisecond, Bandwidth: 80_000_000})
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

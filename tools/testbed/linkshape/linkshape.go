// Package linkshape makes loopback TCP behave like a network link with a
// round-trip time and a bandwidth, for benchmarks (sbx bench portforward
// --links), and with packet loss in its packet model (packet.go, --loss).
// The stream model runs Shopify's toxiproxy in-process: a Proxy accepts on
// 127.0.0.1, dials its upstream and carries each direction through a chain
// of toxics.
//
// The chain is two toxics of this package, registered with toxiproxy,
// rather than toxiproxy's own "latency" and "bandwidth":
//
//   - wire serializes the bytes at the link's rate, and the rate is shared
//     by every connection through the Shaper in that direction, as on one
//     link. toxiproxy's bandwidth toxic gives each connection the whole
//     rate (four connections at 1000 KB/s move 4000 KB/s), which would let
//     a pool of port-forward connections, or eight raw TCP connections,
//     beat the link they are meant to be limited by.
//   - delay holds each chunk for half the round trip after it left the
//     wire, with nanosecond resolution. toxiproxy's latency toxic takes
//     whole milliseconds (a 1 ms LAN cannot be split into 0.5 ms each
//     way) and counts from when the proxy read the chunk, so that time
//     spent queued for the bandwidth toxic is taken off the propagation
//     delay instead of added to it.
//
// What the stream model leaves out: packet loss (the proxy sees a byte
// stream: it cannot drop a packet for TCP to retransmit); TCP's own
// handshake, slow start and congestion window over the link (the proxy
// terminates TCP on loopback at both ends, so raw TCP through it moves at
// the link's rate from the first round trip: the link's capacity, an upper
// bound for what real TCP gets); and a bottleneck queue shared in FIFO
// order (connections take turns on the wire chunk by chunk, at most 32 KiB
// each, like fair queueing; the bytes waiting to be sent wait in the
// sender's socket buffers, as on a real host). The packet model
// (Link.Packets) has all three.
package linkshape

import (
	"fmt"
	"math"
	"strconv"
	"strings"
	"time"
)

// Link is a network link: a round-trip time and a bandwidth in each
// direction.
type Link struct {
	// Name labels the link in results ("lan", "custom").
	Name string `json:"name"`
	// RTT is the round-trip time the link adds: half of it each way. Zero
	// adds none.
	RTT time.Duration `json:"-"`
	// Bandwidth is the rate in each direction in bits per second. Zero is
	// unlimited.
	Bandwidth int64 `json:"-"`
	// Packets selects the packet model (packet.go): TCP crosses the link
	// as IP packets, with slow start, congestion control and loss
	// recovery, instead of the stream model's byte-stream proxy.
	Packets bool `json:"packets,omitempty"`
	// Loss is the share of packets the link drops at random in each
	// direction, 0 to MaxLoss; the packet model only.
	Loss float64 `json:"loss,omitempty"`
}

// MaxLoss is the highest Loss: beyond it TCP spends its time waiting for
// retransmission timeouts and a run measures little else.
const MaxLoss = 0.2

// BytesPerSecond is the link's rate in bytes per second (0: unlimited).
func (l Link) BytesPerSecond() float64 { return float64(l.Bandwidth) / 8 }

// String describes the link, e.g. "lan (rtt 1ms, 1 Gbit/s)".
func (l Link) String() string {
	bw := "unlimited bandwidth"
	if l.Bandwidth > 0 {
		bw = FormatRate(l.Bandwidth)
	}
	if l.Packets {
		bw += ", " + FormatLoss(l.Loss) + " loss, packet model"
	}
	return fmt.Sprintf("%s (rtt %v, %s)", l.Name, l.RTT, bw)
}

// Presets are the links of sbx bench portforward --links, in the order the
// matrix runs them.
var Presets = []Link{
	{Name: "lan", RTT: time.Millisecond, Bandwidth: 1_000_000_000},
	{Name: "wifi", RTT: 10 * time.Millisecond, Bandwidth: 300_000_000},
	{Name: "vpn", RTT: 30 * time.Millisecond, Bandwidth: 100_000_000},
	{Name: "intercontinental", RTT: 100 * time.Millisecond, Bandwidth: 100_000_000},
}

// PresetNames lists the presets' names, comma-separated.
func PresetNames() string {
	names := make([]string, len(Presets))
	for i, p := range Presets {
		names[i] = p.Name
	}
	return strings.Join(names, ",")
}

// Preset returns the preset called name.
func Preset(name string) (Link, error) {
	for _, p := range Presets {
		if p.Name == name {
			return p, nil
		}
	}
	return Link{}, fmt.Errorf("unknown link %q (known: %s)", name, PresetNames())
}

// rateUnits maps a unit to its bits per second. The bit units are read in
// any case; the byte units need their capital B (a lower-case b is a bit to
// most people), and "/s" may follow either.
var rateUnits = map[string]float64{
	"bit": 1, "kbit": 1e3, "mbit": 1e6, "gbit": 1e9, "tbit": 1e12,
	"B": 8, "kB": 8e3, "KB": 8e3, "MB": 8e6, "GB": 8e9,
	"KiB": 8 << 10, "MiB": 8 << 20, "GiB": 8 << 30,
}

// ParseRate reads a bandwidth: a positive number and a unit, in bits
// (kbit, mbit, gbit, as tc writes them: 100mbit, 1.5gbit) or bytes per
// second (12.5MB/s, 100KiB/s). It returns bits per second. Units that
// mean bits to some and bytes to others (mbps, mb) are refused rather
// than guessed.
func ParseRate(s string) (int64, error) {
	s = strings.TrimSpace(s)
	i := strings.IndexFunc(s, func(r rune) bool { return (r < '0' || r > '9') && r != '.' })
	if i < 0 {
		return 0, fmt.Errorf("%q has no unit", s)
	}
	num, unit := s[:i], strings.TrimSpace(s[i:])
	v, err := strconv.ParseFloat(num, 64)
	if err != nil || num == "" {
		return 0, fmt.Errorf("%q does not start with a number", s)
	}
	unit = strings.TrimSuffix(unit, "/s")
	mult, ok := rateUnits[unit]
	if !ok {
		mult, ok = rateUnits[strings.ToLower(unit)]
		if ok && !strings.HasSuffix(strings.ToLower(unit), "bit") {
			ok = false
		}
	}
	if !ok {
		switch l := strings.ToLower(unit); {
		case strings.HasSuffix(l, "bps") || l == "kb" || l == "mb" || l == "gb" || l == "b":
			return 0, fmt.Errorf("unit %q is ambiguous (bits or bytes?); write bits as kbit, mbit, gbit or bytes as kB/s, MB/s, GB/s", unit)
		default:
			return 0, fmt.Errorf("unknown unit %q; use kbit, mbit, gbit (bits) or kB/s, MB/s, GB/s, KiB/s, MiB/s (bytes)", unit)
		}
	}
	bits := v * mult
	if !(bits >= 1) || bits > math.MaxInt64/2 {
		return 0, fmt.Errorf("%q is not a positive rate", s)
	}
	return int64(math.Round(bits)), nil
}

// FormatRate writes bits per second the way ParseRate reads them, in the
// largest unit that keeps the number at least 1: "1 Gbit/s", "300 Mbit/s".
func FormatRate(bits int64) string {
	for _, u := range []struct {
		name string
		div  float64
	}{{"Tbit/s", 1e12}, {"Gbit/s", 1e9}, {"Mbit/s", 1e6}, {"kbit/s", 1e3}} {
		if float64(bits) >= u.div {
			return strconv.FormatFloat(float64(bits)/u.div, 'f', -1, 64) + " " + u.name
		}
	}
	return strconv.FormatInt(bits, 10) + " bit/s"
}

// ParseLoss reads a packet loss rate written as a percentage ("1%",
// "0.1%", "0%") and returns it as a share (0.01).
func ParseLoss(s string) (float64, error) {
	s = strings.TrimSpace(s)
	num, ok := strings.CutSuffix(s, "%")
	if !ok {
		return 0, fmt.Errorf("%q is not a percentage; write the loss with %%, e.g. 1%% or 0.1%%", s)
	}
	v, err := strconv.ParseFloat(strings.TrimSpace(num), 64)
	if err != nil || math.IsNaN(v) || v < 0 {
		return 0, fmt.Errorf("%q is not a percentage from 0%% to %s", s, FormatLoss(MaxLoss))
	}
	if v/100 > MaxLoss {
		return 0, fmt.Errorf("%q is above %s: TCP would spend the run waiting for retransmission timeouts", s, FormatLoss(MaxLoss))
	}
	return v / 100, nil
}

// FormatLoss writes a loss share as ParseLoss reads it: "1%", "0.1%".
func FormatLoss(v float64) string {
	return strconv.FormatFloat(v*100, 'f', -1, 64) + "%"
}

// ParseDuration reads a non-negative Go duration (20ms, 1.5s, 0).
func ParseDuration(s string) (time.Duration, error) {
	d, err := time.ParseDuration(strings.TrimSpace(s))
	if err != nil {
		return 0, fmt.Errorf("%q is not a duration", s)
	}
	if d < 0 {
		return 0, fmt.Errorf("%q is negative", s)
	}
	return d, nil
}

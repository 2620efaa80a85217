package api

import (
	"fmt"
	"time"
)

// Bench durations: each measurement of `sbx bench cluster` (one path's
// upload, download or round trips) lasts BenchRequest.Duration, within
// these bounds. The upper one is the relay's cap on a bench transfer
// (tunnel.BenchMaxDuration).
const (
	DefaultBenchDuration = 2 * time.Second
	MinBenchDuration     = 10 * time.Millisecond
	MaxBenchDuration     = time.Minute
)

// BenchRequest is the body of POST /v1/sandboxes/{name}/bench, which
// measures the connected sandbox's path to its relay (`sbx bench
// cluster`). The answer is an NDJSON stream of BenchProgress.
type BenchRequest struct {
	// Duration of each measurement; 0 means DefaultBenchDuration.
	Duration time.Duration `json:"durationNanos,omitempty"`
}

// Validate checks the request's bounds.
func (r BenchRequest) Validate() error {
	if r.Duration != 0 && (r.Duration < MinBenchDuration || r.Duration > MaxBenchDuration) {
		return fmt.Errorf("bench duration %s is out of range: give %s to %s per measurement", r.Duration, MinBenchDuration, MaxBenchDuration)
	}
	return nil
}

// BenchProgress is one line of the bench stream. The last line has Done
// set, and either Result or Error (which names the sandbox, the cause
// and the next step).
type BenchProgress struct {
	Time    time.Time    `json:"time"`
	Message string       `json:"message,omitempty"`
	Done    bool         `json:"done,omitempty"`
	Result  *BenchResult `json:"result,omitempty"`
	Error   string       `json:"error,omitempty"`
}

// BenchResult is what `sbx bench cluster` measured: the same traffic on
// three paths from the daemon to the sandbox's relay pod, one after the
// other. Its JSON keys follow the other `sbx bench` commands' (snake
// case, ratios named path_vs_bare_figure).
//
//   - bare: one new port-forward connection to the relay's tunnel port,
//     authenticated with the sandbox's token and then used raw, no
//     multiplexer: what `kubectl port-forward` gets over this network,
//     API server and kubelet ("my network").
//   - tunnel: one stream on one of the sandbox's tunnel sessions, as one
//     application connection gets it.
//   - pool: one stream on each of the tunnel sessions (at most 8) at
//     once, summed: what the sandbox gets across its pool.
//
// Upload is laptop → relay, download relay → laptop; both count payload
// from the request to the relay's count or last byte, so each includes one
// round trip. Round trips are 1 KiB echoes, one at a time.
type BenchResult struct {
	Sandbox      string `json:"sandbox"`
	RelayVersion string `json:"relay_version"`
	// Seconds is the duration of each measurement.
	Seconds float64 `json:"seconds_per_measurement"`
	// EchoBytes is the size of the round trips' messages.
	EchoBytes int       `json:"echo_bytes"`
	Bare      BenchPath `json:"bare"`
	Tunnel    BenchPath `json:"tunnel"`
	Pool      BenchPath `json:"pool"`
	// Ratios against bare: throughput tunnel (or pool) ÷ bare, above 1 is
	// faster; round trip p50 tunnel (or pool) ÷ bare, above 1 is slower.
	TunnelVsBareUpload   float64 `json:"tunnel_vs_bare_upload"`
	TunnelVsBareDownload float64 `json:"tunnel_vs_bare_download"`
	TunnelVsBareRTT      float64 `json:"tunnel_vs_bare_rtt"`
	PoolVsBareUpload     float64 `json:"pool_vs_bare_upload"`
	PoolVsBareDownload   float64 `json:"pool_vs_bare_download"`
	PoolVsBareRTT        float64 `json:"pool_vs_bare_rtt"`
	// Verdict says in one line whether the network or the tunnel limits
	// the sandbox.
	Verdict string `json:"verdict"`
}

// BenchPath is one path's figures.
type BenchPath struct {
	// Connections is how many bench connections carried the bulk
	// transfers at once (the pool: one per session).
	Connections  int     `json:"connections"`
	UploadMBps   float64 `json:"upload_mbps"`
	DownloadMBps float64 `json:"download_mbps"`
	UploadBytes  uint64  `json:"upload_bytes"`
	// DownloadBytes and UploadBytes are the payload moved.
	DownloadBytes uint64  `json:"download_bytes"`
	RTTP50ms      float64 `json:"rtt_p50_ms"`
	RTTP99ms      float64 `json:"rtt_p99_ms"`
	RTTSamples    int     `json:"rtt_samples"`
}

// BenchError is a benchmark that ended without a result; Message names
// the sandbox, the cause and the next step.
type BenchError struct {
	Sandbox string
	Message string
}

// Error returns the daemon's explanation.
func (e *BenchError) Error() string { return e.Message }

// FormatMS prints milliseconds with the precision their size calls for,
// as the bench's progress and result print them: 0.123 ms, 12.3 ms, 123 ms.
func FormatMS(v float64) string {
	switch {
	case v < 1:
		return fmt.Sprintf("%.3f ms", v)
	case v < 100:
		return fmt.Sprintf("%.1f ms", v)
	}
	return fmt.Sprintf("%.0f ms", v)
}

package connbench

import (
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"
)

func TestDurations(t *testing.T) {
	d := durations([]time.Duration{300 * time.Millisecond, 100 * time.Millisecond, 200 * time.Millisecond, 1500 * time.Microsecond})
	if d.Median != 150 || d.Max != 300 || d.P95 != 300 {
		t.Errorf("durations: %+v", d)
	}
	if len(d.Each) != 4 || d.Each[0] != 300 || d.Each[3] != 1.5 {
		t.Errorf("each in the order measured, in ms: %v", d.Each)
	}
	if e := durations(nil); e.Median != 0 || len(e.Each) != 0 {
		t.Errorf("no samples: %+v", e)
	}
}

func TestWriteText(t *testing.T) {
	ready := Durations{Median: 90, P95: 120, Max: 150, Each: []float64{90, 120, 150}}
	r := &Result{
		Cluster: "simulated cluster", Sandbox: "bench", FirstConnect: 1210,
		ConnectNewRelay:     Durations{Median: 1070, P95: 1080, Max: 1080, Each: []float64{1070}},
		ConnectRunningRelay: Durations{Median: 133, P95: 141, Max: 141, Each: []float64{133}},
		Cuts: []CutResult{
			{Name: "port-forwards", Cuts: 3, ToReady: &ready, ToServed: ready, Requests: 100, Failed: 1, FirstFailure: "502 Bad Gateway\n  the laptop"},
			{Name: "API server↔kubelet", Cuts: 3, ToServed: ready, Requests: 50},
		},
		Streams: 1000, RSS: "measured", RSSIdleMiB: 58.1, RSSIdleAnonMiB: 10, RSSIdleFileMiB: 48.1, RSSAfterStreamsMiB: 65, RSSPeakMiB: 66, Seconds: 30,
	}
	var b strings.Builder
	if err := r.WriteText(&b); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{
		"first sbx connect (starts the daemon and the relay)", "1.21s",
		"sbx connect → ready, the relay must start", "1.07s",
		"cut port-forwards → sandbox ready again", "90ms", "150ms",
		"cut API server↔kubelet → keyed request served",
		"keyed requests during the cuts port-forwards: 1 failed of 100 (the first: 502 Bad Gateway the laptop)",
		"keyed requests during the cuts API server↔kubelet: 0 failed of 50\n",
		"58.1 MiB idle with one sandbox (anonymous 10.0, file-backed 48.1)",
		"connect → ready, relay running  133ms  (target <= 1s) ok",
		"cut → ready again, median       90ms  (target <= 1s) ok",
		"(target <= 40 MiB) MISSED",
	} {
		if !strings.Contains(b.String(), want) {
			t.Errorf("text lacks %q:\n%s", want, b.String())
		}
	}
	if strings.Contains(b.String(), "cut API server↔kubelet → sandbox ready again") {
		t.Errorf("a served-only cut has no ready row:\n%s", b.String())
	}
	// JSON: a served-only cut has no to_ready.
	j, err := json.Marshal(r)
	if err != nil {
		t.Fatal(err)
	}
	if strings.Count(string(j), `"to_ready"`) != 1 {
		t.Errorf("JSON: %s", j)
	}

	r.RSS = "not measured (read from /proc/PID/status: Linux only)"
	b.Reset()
	_ = r.WriteText(&b)
	if !strings.Contains(b.String(), "daemon RSS: not measured") || strings.Contains(b.String(), "40 MiB") {
		t.Errorf("not measured:\n%s", b.String())
	}
}

func TestReadMemory(t *testing.T) {
	if runtime.GOOS != "linux" {
		t.Skip("/proc/PID/status is Linux's")
	}
	m, err := readMemory(os.Getpid())
	if err != nil {
		t.Fatal(err)
	}
	if m.rss <= 0 || m.anon <= 0 || m.file <= 0 || m.hwm < m.rss {
		t.Errorf("this process's memory: %+v", m)
	}
}

func TestLastLines(t *testing.T) {
	p := filepath.Join(t.TempDir(), "log")
	if err := os.WriteFile(p, []byte("a\nb\nc\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if got := lastLines(p, 2); got != "b\nc" {
		t.Errorf("lastLines 2: %q", got)
	}
	if got := lastLines(p, 10); got != "a\nb\nc" {
		t.Errorf("lastLines 10: %q", got)
	}
	if got := lastLines(filepath.Join(t.TempDir(), "none"), 2); got != "" {
		t.Errorf("a missing file: %q", got)
	}
}

func TestRunRefuses(t *testing.T) {
	if _, err := Run(context.Background(), Target{}, Options{}); err == nil || !strings.Contains(err.Error(), "no way to cut") {
		t.Errorf("a target without cuts: %v", err)
	}
	if _, err := Run(context.Background(), Target{Cuts: []Cut{{Name: "x"}}}, Options{Cuts: -1}); err == nil || !strings.Contains(err.Error(), "must be positive") {
		t.Errorf("negative cuts: %v", err)
	}
}

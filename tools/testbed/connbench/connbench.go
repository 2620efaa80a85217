// Package connbench measures how long sbx takes to get a sandbox ready,
// and ready again after its port-forwards are cut, and how much memory
// the daemon holds: `sbx bench connect` on the simulated cluster and the
// real control plane tier's measuring test (tools/testbed/realcp) run it.
// Both drive the sbx binary and the daemon process it starts as a
// developer does (`sbx connect`, `sbx disconnect`, `sbx daemon stop`);
// what differs is the cluster, which a Target describes.
//
// The figures:
//
//   - the run's first `sbx connect`: the command starts the daemon, the
//     daemon applies the objects and waits for the relay pod to start;
//   - `sbx connect` → ready when the relay must start (after `sbx
//     disconnect`, with the daemon running);
//   - `sbx connect` → ready when the relay already runs: after `sbx
//     daemon stop`, the only way a connect can find its relay running
//     (a running daemon holds the tunnel; disconnect removes the relay).
//     The command starts a daemon, which takes the sandbox back from its
//     state file with the same token, so the relay pod is kept (checked);
//     this is a laptop after a reboot, or a daemon that crashed;
//   - a cut of every port-forward connection at once → the daemon
//     reports the sandbox ready again, and → a keyed request from inside
//     the cluster is served by the laptop again (a Target may offer more
//     than one way to cut);
//   - the daemon's resident memory (VmRSS, Linux only) idle with one
//     sandbox and after streams through the tunnel, and its peak (VmHWM).
package connbench

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"text/tabwriter"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/client-go/kubernetes"

	"github.com/sbx-dev/sbx/cluster"
	"github.com/sbx-dev/sbx/daemon/api"
	"github.com/sbx-dev/sbx/daemon/client"
	"github.com/sbx-dev/sbx/tools/testbed/benchstat"
	"github.com/sbx-dev/sbx/tools/testbed/prober"
)

// Target is the cluster the benchmark runs against and the sbx binary
// that connects to it.
type Target struct {
	// Cluster names it in the report ("simulated cluster").
	Cluster string
	// Bin is the sbx binary; Environ the environment its commands run in
	// (HOME, XDG folders, KUBECONFIG), which the daemon a command starts
	// inherits. The daemon's socket is found from Environ as sbx finds it.
	Bin     string
	Environ []string
	// SpecFile is a sandbox spec named by --set name=... whose mappings go
	// to a local server that answers every request with 200.
	SpecFile string
	// Kube (any identity that may list pods in Namespace) finds the relay
	// pods in Namespace, where the sandbox's relay runs.
	Kube      kubernetes.Interface
	Namespace string
	// Cuts are the ways to cut the sandbox's port-forwards, measured in
	// turn; the first is the figure the target compares with.
	Cuts []Cut
	// Keyed is a request from inside the cluster, through its mesh,
	// carrying the baggage header; nil when the laptop served it.
	Keyed func(baggage string) prober.Once
	// Dial connects to a cluster address (a pod's IP and port) as a pod
	// does.
	Dial func(ctx context.Context, network, addr string) (net.Conn, error)
}

// Cut is a way to cut the sandbox's port-forwards.
type Cut struct {
	// Name says what is cut, for the report.
	Name string
	// Do closes the connections at once and returns how many it closed.
	Do func() (int, error)
	// Times is how many cuts are measured (0: Options.Cuts).
	Times int
	// ServedOnly measures only until a keyed request is served. For a
	// cut the daemon does not see whole: an API server that ends its
	// clients' port-forwards one by one, after their kubelet side went,
	// lets the daemon replace its sessions one at a time, so the sandbox
	// never leaves "ready" while the relay has no session. Each such cut
	// waits for Gap (default 3 s) after the previous one was served, so
	// that it finds the daemon's sessions whole again.
	ServedOnly bool
	Gap        time.Duration
}

// Options tune Run. Zero values take the defaults.
type Options struct {
	// Sandbox is the sandbox's name (default "bench").
	Sandbox string
	// Cuts is how many port-forward cuts of each kind are measured
	// (default 20) unless the Cut says.
	Cuts int
	// Connects is how many times each connect is measured (default 3).
	Connects int
	// Streams is how many streams go through the tunnel before the
	// memory is read again (default 1,000), Parallel of them at a time
	// (default 32).
	Streams, Parallel int
	// Progress, if set, gets a line per step.
	Progress func(line string)
}

// Defaults of Options.
const (
	DefaultCuts     = 20
	DefaultConnects = 3
	DefaultStreams  = 1000
	DefaultParallel = 32
)

// Targets, from issue 19 (figures to compare, not test assertions).
const (
	TargetConnectRunningRelay = time.Second
	TargetCutMedian           = time.Second
	TargetIdleRSSMiB          = 40
)

// linkUp is how long each cut waits after the last reconnect: longer than
// the half second the daemon counts as a link that worked (see
// daemon.Backoff.AfterUp), so every cut finds the daemon's backoff reset,
// as the fault matrix's cuts do.
const linkUp = 600 * time.Millisecond

// settle is how long the daemon idles before its memory is read.
const settle = 2 * time.Second

// Durations are one figure's samples in milliseconds.
type Durations struct {
	Median float64   `json:"median_ms"`
	P95    float64   `json:"p95_ms"`
	Max    float64   `json:"max_ms"`
	Each   []float64 `json:"each_ms"`
}

func durations(ds []time.Duration) Durations {
	ms := make([]float64, len(ds))
	for i, d := range ds {
		ms[i] = float64(d.Microseconds()) / 1000
	}
	sorted := slices.Clone(ms)
	slices.Sort(sorted)
	var d Durations
	if len(ms) > 0 {
		d = Durations{Median: benchstat.Median(ms), P95: benchstat.Percentile(sorted, 0.95), Max: sorted[len(sorted)-1]}
	}
	d.Each = ms
	return d
}

// Result is what Run measured.
type Result struct {
	Cluster string `json:"cluster"`
	Sandbox string `json:"sandbox"`
	// FirstConnect is the run's first `sbx connect`: daemon and relay
	// start.
	FirstConnect float64 `json:"first_connect_ms"`
	// ConnectNewRelay: `sbx connect` → ready after `sbx disconnect`, the
	// daemon running; ConnectRunningRelay: after `sbx daemon stop`, the
	// relay running (the command starts the daemon).
	ConnectNewRelay     Durations `json:"connect_new_relay"`
	ConnectRunningRelay Durations `json:"connect_running_relay"`
	// Cuts are the port-forward cuts, one entry per way to cut.
	Cuts []CutResult `json:"cuts"`
	// Streams went through the tunnel, each a connection of its own to
	// the relay answered by the laptop.
	Streams int `json:"streams"`
	// RSS is "measured", or why not; the figures are MiB: the resident
	// set, and of it the anonymous memory (heap, stacks: the daemon's
	// own) and the file-backed pages (the sbx binary's code and data
	// mapped from disk, which the kernel can drop and share).
	RSS                    string  `json:"rss"`
	RSSIdleMiB             float64 `json:"rss_idle_one_sandbox_mib,omitempty"`
	RSSIdleAnonMiB         float64 `json:"rss_idle_anon_mib,omitempty"`
	RSSIdleFileMiB         float64 `json:"rss_idle_file_mib,omitempty"`
	RSSAfterStreamsMiB     float64 `json:"rss_after_streams_mib,omitempty"`
	RSSAfterStreamsAnonMiB float64 `json:"rss_after_streams_anon_mib,omitempty"`
	RSSPeakMiB             float64 `json:"rss_peak_mib,omitempty"`
	Seconds                float64 `json:"seconds"`
}

// CutResult is what one way to cut cost.
type CutResult struct {
	Name string `json:"name"`
	// Cuts were made, closing Connections in all.
	Cuts        int `json:"cuts"`
	Connections int `json:"connections"`
	// ToReady: until the daemon reports the sandbox ready again (nil for
	// a ServedOnly cut); ToServed: until a keyed request from inside the
	// cluster is served by the laptop again.
	ToReady  *Durations `json:"to_ready,omitempty"`
	ToServed Durations  `json:"to_served"`
	// Requests keyed requests were sent from the first cut to the last
	// one's recovery; Failed of them failed.
	Requests int `json:"requests"`
	Failed   int `json:"failed_requests"`
	// FirstFailure is the first failed request's error.
	FirstFailure string `json:"first_failure,omitempty"`
}

// Run measures. It stops the daemon it started and disconnects the
// sandbox when it ends, also on an error.
func Run(ctx context.Context, t Target, o Options) (*Result, error) {
	if o.Sandbox == "" {
		o.Sandbox = "bench"
	}
	if o.Cuts == 0 {
		o.Cuts = DefaultCuts
	}
	if o.Connects == 0 {
		o.Connects = DefaultConnects
	}
	if o.Streams == 0 {
		o.Streams = DefaultStreams
	}
	if o.Parallel == 0 {
		o.Parallel = DefaultParallel
	}
	if len(t.Cuts) == 0 {
		return nil, errors.New("connbench: the target has no way to cut port-forwards")
	}
	if o.Cuts < 1 || o.Connects < 1 || o.Streams < 1 || o.Parallel < 1 {
		return nil, errors.New("connbench: Cuts, Connects, Streams and Parallel must be positive")
	}
	if o.Progress == nil {
		o.Progress = func(string) {}
	}
	b := &bench{t: t, o: o, started: time.Now(), paths: api.DefaultPaths(func(k string) string { return envValue(t.Environ, k) })}
	b.dc = &client.Client{Socket: b.paths.Socket()}
	defer func() { b.dc.Close() }()
	defer b.cleanUp()
	res, err := b.run(ctx)
	if err != nil {
		// The daemon's log goes with its home: show its end now.
		if tail := lastLines(b.paths.Log(), 40); tail != "" {
			err = fmt.Errorf("%w\nthe end of the daemon's log (%s):\n%s", err, b.paths.Log(), tail)
		}
		return nil, err
	}
	res.Seconds = time.Since(b.started).Seconds()
	return res, nil
}

type bench struct {
	t       Target
	o       Options
	paths   api.Paths
	dc      *client.Client
	started time.Time
	// pids are the daemons this run has talked to: the clean-up makes
	// sure none outlives it (its home, with the socket, goes with the
	// caller's clean-up, after which nothing could stop it).
	pids map[int]bool
}

func (b *bench) say(format string, args ...any) { b.o.Progress(fmt.Sprintf(format, args...)) }

func (b *bench) run(ctx context.Context) (*Result, error) {
	res := &Result{Cluster: b.t.Cluster, Sandbox: b.o.Sandbox, Streams: b.o.Streams}

	// 1. The first connect: the command starts the daemon.
	b.say("first connect of sandbox %s (starts the daemon and the relay)", b.o.Sandbox)
	d, err := b.connect(ctx)
	if err != nil {
		return nil, err
	}
	res.FirstConnect = durations([]time.Duration{d}).Median
	b.say("  ready in %s", ms(d))

	// 2. The relay must start: disconnect, connect again.
	var fresh []time.Duration
	for i := range b.o.Connects {
		if _, err := b.sbx(ctx, "disconnect", b.o.Sandbox); err != nil {
			return nil, err
		}
		if err := b.waitNoRelay(ctx); err != nil {
			return nil, err
		}
		d, err := b.connect(ctx)
		if err != nil {
			return nil, err
		}
		fresh = append(fresh, d)
		b.say("connect %d/%d, the relay must start: ready in %s", i+1, b.o.Connects, ms(d))
	}
	res.ConnectNewRelay = durations(fresh)

	// 3. The relay runs: stop the daemon, connect again.
	var running []time.Duration
	for i := range b.o.Connects {
		before, err := b.relayPods(ctx)
		if err != nil {
			return nil, err
		}
		if _, err := b.sbx(ctx, "daemon", "stop"); err != nil {
			return nil, err
		}
		b.dc.Close()
		b.dc = &client.Client{Socket: b.paths.Socket()}
		if i == b.o.Connects-1 {
			// What the binary's file-backed pages add to the measured
			// daemon's RSS depends on how the file sits in the page
			// cache (a file read whole is cached in blocks of up to
			// 2 MiB, and a fault maps a whole block): 36 to 66 MiB for
			// the same idle daemon. Drop what no process maps, so it
			// starts as cold as it can (as at login); a relay run from
			// the same file keeps its pages.
			dropPageCache(b.t.Bin)
		}
		d, err := b.connect(ctx)
		if err != nil {
			return nil, err
		}
		after, err := b.relayPods(ctx)
		if err != nil {
			return nil, err
		}
		if !slices.Equal(before, after) {
			return nil, fmt.Errorf("the relay pods changed across the daemon's restart (%v, then %v): the connect did not find its relay running", before, after)
		}
		running = append(running, d)
		b.say("connect %d/%d after `sbx daemon stop`, the relay runs (pod %s): ready in %s", i+1, b.o.Connects, strings.Join(after, ", "), ms(d))
	}
	res.ConnectRunningRelay = durations(running)

	st, err := b.dc.Sandbox(ctx, b.o.Sandbox)
	if err != nil {
		return nil, err
	}
	status, err := b.dc.Status(ctx)
	if err != nil {
		return nil, err
	}
	pid := status.PID

	// 4. Memory: idle with one sandbox, then after the streams.
	res.RSS = "measured"
	if runtime.GOOS != "linux" {
		res.RSS = "not measured (read from /proc/PID/status: Linux only)"
	}
	if res.RSS == "measured" {
		b.say("daemon (pid %d) idle with one sandbox for %s", pid, settle)
		if err := sleep(ctx, settle); err != nil {
			return nil, err
		}
		m, err := readMemory(pid)
		if err != nil {
			return nil, err
		}
		res.RSSIdleMiB, res.RSSIdleAnonMiB, res.RSSIdleFileMiB = m.rss, m.anon, m.file
		b.say("  VmRSS %.1f MiB (anonymous %.1f, file-backed %.1f)", m.rss, m.anon, m.file)
	}
	b.say("%d streams through the tunnel, %d at a time", b.o.Streams, b.o.Parallel)
	if err := b.streams(ctx); err != nil {
		return nil, err
	}
	if res.RSS == "measured" {
		if err := sleep(ctx, settle/2); err != nil {
			return nil, err
		}
		m, err := readMemory(pid)
		if err != nil {
			return nil, err
		}
		res.RSSAfterStreamsMiB, res.RSSAfterStreamsAnonMiB, res.RSSPeakMiB = m.rss, m.anon, m.hwm
		b.say("  VmRSS %.1f MiB after them (anonymous %.1f), peak (VmHWM) %.1f MiB", m.rss, m.anon, m.hwm)
	}

	// 5. Port-forward cuts, while a caller in the cluster sends keyed
	// requests without pause.
	p := prober.Start(b.t.Keyed(st.BaggageKey + "=" + st.RoutingKey))
	defer p.Stop()
	if _, err := p.Served(ctx, time.Now(), time.Minute); err != nil {
		return nil, fmt.Errorf("keyed requests before the cuts: %w", err)
	}
	for _, c := range b.t.Cuts {
		cr, err := b.cuts(ctx, p, c)
		if err != nil {
			return nil, err
		}
		res.Cuts = append(res.Cuts, *cr)
	}
	p.Stop()
	return res, nil
}

// cuts measures one way to cut while p sends keyed requests.
func (b *bench) cuts(ctx context.Context, p *prober.Prober, c Cut) (*CutResult, error) {
	times := cmp.Or(c.Times, b.o.Cuts)
	gap := linkUp
	if c.ServedOnly {
		gap = cmp.Or(c.Gap, 3*time.Second)
	}
	cr := &CutResult{Name: c.Name, Cuts: times}
	var toReady, toServed []time.Duration
	start := time.Now()
	for i := range times {
		if err := sleep(ctx, gap); err != nil {
			return nil, err
		}
		before, err := b.dc.Sandbox(ctx, b.o.Sandbox)
		if err != nil {
			return nil, err
		}
		n, err := c.Do()
		if err != nil {
			return nil, fmt.Errorf("cut %d (%s): %w", i+1, c.Name, err)
		}
		t0 := time.Now()
		cr.Connections += n
		line := fmt.Sprintf("cut %d/%d, %s (%d connections):", i+1, times, c.Name, n)
		if !c.ServedOnly {
			ready, err := b.waitReconnected(ctx, before.Reconnects, t0)
			if err != nil {
				return nil, fmt.Errorf("cut %d (%s): %w", i+1, c.Name, err)
			}
			toReady = append(toReady, ready)
			line += " ready again in " + ms(ready) + ","
		}
		served, err := p.Served(ctx, t0, time.Minute)
		if err != nil {
			return nil, fmt.Errorf("cut %d (%s): %w", i+1, c.Name, err)
		}
		toServed = append(toServed, served)
		b.say("%s keyed request served in %s", line, ms(served))
	}
	if !c.ServedOnly {
		d := durations(toReady)
		cr.ToReady = &d
	}
	cr.ToServed = durations(toServed)
	cr.Requests, cr.Failed = p.Counts(start, time.Now())
	if f := p.Failures(start); len(f) > 0 {
		cr.FirstFailure = f[0]
	}
	return cr, nil
}

// sbx runs an sbx command in the target's environment.
func (b *bench) sbx(ctx context.Context, args ...string) (string, error) {
	cmd := execCommand(ctx, b.t.Bin, b.t.Environ, args...)
	out, err := cmd.CombinedOutput()
	if err != nil {
		return string(out), fmt.Errorf("sbx %s: %w\n%s", strings.Join(args, " "), err, strings.TrimSpace(string(out)))
	}
	return string(out), nil
}

// connect runs `sbx connect` (which waits until the sandbox is ready)
// and returns how long the command took.
func (b *bench) connect(ctx context.Context) (time.Duration, error) {
	t0 := time.Now()
	if _, err := b.sbx(ctx, "connect", "-f", b.t.SpecFile, "--set", "name="+b.o.Sandbox, "--timeout", "2m"); err != nil {
		return 0, err
	}
	d := time.Since(t0)
	b.notePID(ctx)
	st, err := b.dc.Sandbox(ctx, b.o.Sandbox)
	if err != nil {
		return 0, err
	}
	if st.Phase != api.PhaseReady {
		return 0, fmt.Errorf("sbx connect returned with sandbox %s %s", b.o.Sandbox, st.Phase)
	}
	return d, nil
}

// notePID records the running daemon's pid for the clean-up.
func (b *bench) notePID(ctx context.Context) {
	if st, err := b.dc.Status(ctx); err == nil && st.PID > 0 {
		if b.pids == nil {
			b.pids = map[int]bool{}
		}
		b.pids[st.PID] = true
	}
}

// cleanUp disconnects the sandbox and stops the daemon, on a context of
// its own: the run's may be what ended. A daemon it could not stop (a
// failed run, a daemon that does not answer) is killed.
func (b *bench) cleanUp() {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	defer b.killLeft()
	if _, err := b.dc.Status(ctx); err != nil {
		return // no daemon answers: killLeft ends any that still runs
	}
	b.notePID(ctx)
	if _, err := b.sbx(ctx, "disconnect", b.o.Sandbox); err != nil {
		b.say("clean-up: %v", err)
	}
	if _, err := b.sbx(ctx, "daemon", "stop"); err != nil {
		b.say("clean-up: %v", err)
	}
}

// killLeft kills the daemons this run talked to that still run after a
// grace of 10 s. Only where /proc says the pid still runs this binary
// (Linux): elsewhere a pid could have been reused by now.
func (b *bench) killLeft() {
	bin, err := filepath.EvalSymlinks(b.t.Bin)
	if err != nil {
		return
	}
	ours := func(pid int) bool {
		exe, err := os.Readlink(fmt.Sprintf("/proc/%d/exe", pid))
		return err == nil && exe == bin
	}
	for pid := range b.pids {
		for deadline := time.Now().Add(10 * time.Second); ours(pid) && time.Now().Before(deadline); {
			time.Sleep(50 * time.Millisecond)
		}
		if !ours(pid) {
			continue
		}
		if p, err := os.FindProcess(pid); err == nil && p.Kill() == nil {
			b.say("clean-up: killed daemon %d, which was still running", pid)
		}
	}
}

// relaySelector selects the sandbox's relay pods.
func (b *bench) relaySelector() string {
	return labels.Set{cluster.LabelSandbox: b.o.Sandbox, cluster.LabelComponent: "relay"}.String()
}

// relayPods names the sandbox's relay pods that are not being deleted,
// with their UIDs, sorted.
func (b *bench) relayPods(ctx context.Context) ([]string, error) {
	l, err := b.t.Kube.CoreV1().Pods(b.t.Namespace).List(ctx, metav1.ListOptions{LabelSelector: b.relaySelector()})
	if err != nil {
		return nil, fmt.Errorf("list the relay pods: %w", err)
	}
	var out []string
	for _, p := range l.Items {
		if p.DeletionTimestamp == nil {
			out = append(out, p.Name+" ("+string(p.UID)+")")
		}
	}
	slices.Sort(out)
	return out, nil
}

// waitNoRelay waits until the sandbox's relay pods are gone, so that the
// next connect starts one.
func (b *bench) waitNoRelay(ctx context.Context) error {
	deadline := time.Now().Add(time.Minute)
	for {
		l, err := b.t.Kube.CoreV1().Pods(b.t.Namespace).List(ctx, metav1.ListOptions{LabelSelector: b.relaySelector()})
		if err != nil {
			return fmt.Errorf("list the relay pods: %w", err)
		}
		if len(l.Items) == 0 {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("the relay pods of sandbox %s are still there a minute after sbx disconnect", b.o.Sandbox)
		}
		if err := sleep(ctx, 20*time.Millisecond); err != nil {
			return err
		}
	}
}

// waitReconnected waits until the daemon counted a reconnect since
// before and reports the sandbox ready, and returns how long after t0.
func (b *bench) waitReconnected(ctx context.Context, before int, t0 time.Time) (time.Duration, error) {
	deadline := t0.Add(time.Minute)
	for {
		s, err := b.dc.Sandbox(ctx, b.o.Sandbox)
		if err == nil && s.Reconnects > before && s.Phase == api.PhaseReady {
			return time.Since(t0), nil
		}
		if time.Now().After(deadline) {
			return 0, fmt.Errorf("sandbox %s not ready again a minute after the cut (phase %s, reconnects %d, last error %q, %v)",
				b.o.Sandbox, s.Phase, s.Reconnects, s.LastError, err)
		}
		if err := sleep(ctx, 5*time.Millisecond); err != nil {
			return 0, err
		}
	}
}

// streams sends Options.Streams requests to the sandbox's relay pod, each
// on a connection of its own (one tunnel stream each), Parallel at a
// time, and checks the laptop answered each.
func (b *bench) streams(ctx context.Context) error {
	addr, err := b.relayInbound(ctx)
	if err != nil {
		return err
	}
	hc := &http.Client{
		Transport: &http.Transport{DialContext: b.t.Dial, DisableKeepAlives: true},
		Timeout:   30 * time.Second,
	}
	defer hc.CloseIdleConnections()
	var next, done atomic.Int64
	var wg sync.WaitGroup
	errs := make(chan error, b.o.Parallel)
	for range b.o.Parallel {
		wg.Go(func() {
			for int(next.Add(1)) <= b.o.Streams {
				if err := get(ctx, hc, "http://"+addr+"/bench-connect"); err != nil {
					errs <- err
					return
				}
				done.Add(1)
			}
		})
	}
	wg.Wait()
	close(errs)
	if err := <-errs; err != nil {
		return fmt.Errorf("a stream through the tunnel (after %d served): %w", done.Load(), err)
	}
	return nil
}

func get(ctx context.Context, hc *http.Client, url string) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return err
	}
	resp, err := hc.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	_, _ = io.Copy(io.Discard, resp.Body)
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("GET %s: %s", url, resp.Status)
	}
	return nil
}

// relayInbound is the address (pod IP and port) of the running relay
// pod's first inbound port: what the sandbox's Service sends keyed
// requests to.
func (b *bench) relayInbound(ctx context.Context) (string, error) {
	l, err := b.t.Kube.CoreV1().Pods(b.t.Namespace).List(ctx, metav1.ListOptions{LabelSelector: b.relaySelector()})
	if err != nil {
		return "", fmt.Errorf("list the relay pods: %w", err)
	}
	for _, p := range l.Items {
		if p.DeletionTimestamp != nil || p.Status.PodIP == "" {
			continue
		}
		for _, c := range p.Spec.Containers {
			for _, port := range c.Ports {
				if strings.HasPrefix(port.Name, "in-") {
					return net.JoinHostPort(p.Status.PodIP, strconv.Itoa(int(port.ContainerPort))), nil
				}
			}
		}
	}
	return "", fmt.Errorf("no running relay pod of sandbox %s with an inbound port", b.o.Sandbox)
}

// memory is a process's resident set, in MiB: now (of it anonymous and
// file-backed) and at its peak.
type memory struct{ rss, anon, file, hwm float64 }

// readMemory reads VmRSS, RssAnon, RssFile and VmHWM from
// /proc/PID/status.
func readMemory(pid int) (memory, error) {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return memory{}, fmt.Errorf("read the daemon's memory: %w", err)
	}
	var m memory
	fields := map[string]*float64{"VmRSS": &m.rss, "RssAnon": &m.anon, "RssFile": &m.file, "VmHWM": &m.hwm}
	seen := 0
	for line := range strings.SplitSeq(string(data), "\n") {
		name, v, ok := strings.Cut(line, ":")
		f := fields[name]
		if !ok || f == nil {
			continue
		}
		kb, err := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
		if err != nil {
			return memory{}, fmt.Errorf("/proc/%d/status: %s: %w", pid, line, err)
		}
		*f = float64(kb) / 1024
		seen++
	}
	if seen != len(fields) {
		return memory{}, fmt.Errorf("/proc/%d/status lacks one of VmRSS, RssAnon, RssFile, VmHWM", pid)
	}
	return m, nil
}

func execCommand(ctx context.Context, bin string, env []string, args ...string) *exec.Cmd {
	cmd := exec.CommandContext(ctx, bin, args...)
	cmd.Env = env
	return cmd
}

func sleep(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// lastLines is the last n lines of the file at path, "" if it cannot be
// read.
func lastLines(path string, n int) string {
	data, err := os.ReadFile(path)
	if err != nil {
		return ""
	}
	lines := strings.Split(strings.TrimRight(string(data), "\n"), "\n")
	return strings.Join(lines[max(0, len(lines)-n):], "\n")
}

func envValue(env []string, name string) string {
	for i := len(env) - 1; i >= 0; i-- {
		if v, ok := strings.CutPrefix(env[i], name+"="); ok {
			return v
		}
	}
	return ""
}

func ms(d time.Duration) string {
	if d >= time.Second {
		return d.Round(10 * time.Millisecond).String()
	}
	return d.Round(time.Millisecond).String()
}

// WriteText prints the figures for a terminal.
func (r *Result) WriteText(w io.Writer) error {
	fmt.Fprintf(w, "connect and reconnect on the %s (sandbox %s)\n\n", r.Cluster, r.Sandbox)
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintf(tw, "\tmedian\tp95\tmax\tn\n")
	row := func(what string, d Durations) {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%d\n", what, fmtMS(d.Median), fmtMS(d.P95), fmtMS(d.Max), len(d.Each))
	}
	fmt.Fprintf(tw, "first sbx connect (starts the daemon and the relay)\t%s\t\t\t1\n", fmtMS(r.FirstConnect))
	row("sbx connect → ready, the relay must start", r.ConnectNewRelay)
	row("sbx connect → ready, the relay runs (after daemon stop)", r.ConnectRunningRelay)
	for _, c := range r.Cuts {
		if c.ToReady != nil {
			row(fmt.Sprintf("cut %s → sandbox ready again", c.Name), *c.ToReady)
		}
		row(fmt.Sprintf("cut %s → keyed request served", c.Name), c.ToServed)
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	for _, c := range r.Cuts {
		fmt.Fprintf(w, "keyed requests during the cuts %s: %d failed of %d", c.Name, c.Failed, c.Requests)
		if c.FirstFailure != "" {
			fmt.Fprintf(w, " (the first: %s)", oneLine(c.FirstFailure, 160))
		}
		fmt.Fprintln(w)
	}
	if r.RSS == "measured" {
		fmt.Fprintf(w, "daemon RSS (binary's page cache dropped first): %.1f MiB idle with one sandbox (anonymous %.1f, file-backed %.1f), %.1f MiB after %d streams (anonymous %.1f), peak %.1f MiB\n",
			r.RSSIdleMiB, r.RSSIdleAnonMiB, r.RSSIdleFileMiB, r.RSSAfterStreamsMiB, r.Streams, r.RSSAfterStreamsAnonMiB, r.RSSPeakMiB)
	} else {
		fmt.Fprintf(w, "daemon RSS: %s\n", r.RSS)
	}
	mark := func(ok bool) string {
		if ok {
			return "ok"
		}
		return "MISSED"
	}
	fmt.Fprintf(w, "\nconnect → ready, relay running  %s  (target <= %s) %s\n", fmtMS(r.ConnectRunningRelay.Median), TargetConnectRunningRelay,
		mark(r.ConnectRunningRelay.Median <= msOf(TargetConnectRunningRelay)))
	if len(r.Cuts) > 0 && r.Cuts[0].ToReady != nil {
		m := r.Cuts[0].ToReady.Median
		fmt.Fprintf(w, "cut → ready again, median       %s  (target <= %s) %s\n", fmtMS(m), TargetCutMedian, mark(m <= msOf(TargetCutMedian)))
	}
	if r.RSS == "measured" {
		fmt.Fprintf(w, "daemon RSS idle, one sandbox    %.1f MiB  (target <= %d MiB) %s\n", r.RSSIdleMiB, TargetIdleRSSMiB,
			mark(r.RSSIdleMiB <= TargetIdleRSSMiB))
	}
	_, err := fmt.Fprintf(w, "took %.1fs\n", r.Seconds)
	return err
}

// oneLine is s on one line, cut to n bytes.
func oneLine(s string, n int) string {
	s = strings.Join(strings.Fields(s), " ")
	if len(s) > n {
		s = s[:n] + "…"
	}
	return s
}

func msOf(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }

func fmtMS(v float64) string {
	return ms(time.Duration(v * float64(time.Millisecond)))
}

package sim

import (
	"context"
	"log/slog"
	"strings"
	"sync"
	"time"
)

// podLogLines is how many log lines the simulator keeps per pod (the
// oldest go first), as a kubelet rotates container logs.
const podLogLines = 2000

// podLogs keeps what the simulated containers log, per pod, for the pods'
// log subresource (kubectl logs). A relay's container writes its slog
// records there; a sample app's server writes what it logs (downstream
// failures). Lines are slog's text format with a timestamp, as a container
// logging to stderr would write them.
type podLogs struct {
	mu    sync.Mutex
	pods  map[string]*podLog // by "ns/name"
	wake  chan struct{}      // closed and replaced on every write (follow)
	limit int
}

type podLog struct {
	lines []string
}

func newPodLogs() *podLogs {
	return &podLogs{pods: map[string]*podLog{}, wake: make(chan struct{}), limit: podLogLines}
}

// logger returns a logger that writes to base and to the log of pod ns/name.
func (l *podLogs) logger(base *slog.Logger, ns, name string) *slog.Logger {
	w := &podLogWriter{logs: l, key: ns + "/" + name}
	l.mu.Lock()
	if l.pods[w.key] == nil {
		l.pods[w.key] = &podLog{}
	}
	l.mu.Unlock()
	return slog.New(teeHandler{base.Handler(), slog.NewTextHandler(w, &slog.HandlerOptions{Level: slog.LevelInfo})})
}

// lines returns the log of pod ns/name from line from on, and a channel
// closed at the next write.
func (l *podLogs) lines(ns, name string, from int) ([]string, int, <-chan struct{}) {
	l.mu.Lock()
	defer l.mu.Unlock()
	p := l.pods[ns+"/"+name]
	if p == nil {
		return nil, 0, l.wake
	}
	if from > len(p.lines) {
		from = len(p.lines)
	}
	return append([]string(nil), p.lines[from:]...), len(p.lines), l.wake
}

// follow calls emit with the lines of pod ns/name written after line from
// until ctx ends or gone reports that the pod no longer exists.
func (l *podLogs) follow(ctx context.Context, ns, name string, from int, gone func() bool, emit func([]string) bool) {
	for {
		lines, next, wake := l.lines(ns, name, from)
		if len(lines) > 0 && !emit(lines) {
			return
		}
		from = next
		select {
		case <-ctx.Done():
			return
		case <-wake:
		case <-time.After(time.Second):
			if gone() {
				return
			}
		}
	}
}

func (l *podLogs) forget(ns, name string) {
	l.mu.Lock()
	delete(l.pods, ns+"/"+name)
	l.mu.Unlock()
}

type podLogWriter struct {
	logs *podLogs
	key  string
}

func (w *podLogWriter) Write(b []byte) (int, error) {
	l := w.logs
	l.mu.Lock()
	defer l.mu.Unlock()
	p := l.pods[w.key]
	if p == nil {
		p = &podLog{}
		l.pods[w.key] = p
	}
	for line := range strings.Lines(string(b)) {
		p.lines = append(p.lines, line)
	}
	if over := len(p.lines) - l.limit; over > 0 {
		p.lines = append(p.lines[:0], p.lines[over:]...)
	}
	close(l.wake)
	l.wake = make(chan struct{})
	return len(b), nil
}

// teeHandler sends every record to two handlers.
type teeHandler struct{ a, b slog.Handler }

func (t teeHandler) Enabled(ctx context.Context, level slog.Level) bool {
	return t.a.Enabled(ctx, level) || t.b.Enabled(ctx, level)
}

func (t teeHandler) Handle(ctx context.Context, r slog.Record) error {
	var err error
	if t.a.Enabled(ctx, r.Level) {
		err = t.a.Handle(ctx, r.Clone())
	}
	if t.b.Enabled(ctx, r.Level) {
		if e := t.b.Handle(ctx, r); err == nil {
			err = e
		}
	}
	return err
}

func (t teeHandler) WithAttrs(attrs []slog.Attr) slog.Handler {
	return teeHandler{t.a.WithAttrs(attrs), t.b.WithAttrs(attrs)}
}

func (t teeHandler) WithGroup(name string) slog.Handler {
	return teeHandler{t.a.WithGroup(name), t.b.WithGroup(name)}
}

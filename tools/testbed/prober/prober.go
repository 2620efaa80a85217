// Package prober sends one request after another, without pause, and
// records when each started and ended and whether it was served: the
// measuring stick of the fault matrix (cmd/sbx) and of `sbx bench
// connect`, which ask how long after a fault a request was served again,
// how many failed meanwhile and how long the longest gap between served
// requests was.
package prober

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"
)

// Once sends one request; nil means it was served as it should be (by
// the laptop, say), an error says what came back instead.
type Once func(ctx context.Context) error

// call is one recorded request.
type call struct {
	start, end time.Time
	ok         bool
	err        string
}

// Prober runs Once in a loop until Stop.
type Prober struct {
	cancel context.CancelFunc
	wg     sync.WaitGroup

	mu    sync.Mutex
	calls []call
	added chan struct{} // closed and replaced on every call
}

// RequestTimeout bounds each request.
const RequestTimeout = 30 * time.Second

// Start starts sending requests with once, one after another.
func Start(once Once) *Prober {
	ctx, cancel := context.WithCancel(context.Background())
	p := &Prober{cancel: cancel, added: make(chan struct{})}
	p.wg.Add(1)
	go func() {
		defer p.wg.Done()
		for ctx.Err() == nil {
			c := call{start: time.Now()}
			rctx, rcancel := context.WithTimeout(ctx, RequestTimeout)
			err := once(rctx)
			rcancel()
			c.end = time.Now()
			if err != nil && ctx.Err() != nil {
				return // stopping: not a failure of what is measured
			}
			c.ok = err == nil
			if err != nil {
				c.err = err.Error()
			}
			p.record(c)
		}
	}()
	return p
}

// Stop ends the loop and waits for the request under way. It may be
// called more than once.
func (p *Prober) Stop() {
	p.cancel()
	p.wg.Wait()
}

func (p *Prober) record(c call) {
	p.mu.Lock()
	p.calls = append(p.calls, c)
	close(p.added)
	p.added = make(chan struct{})
	p.mu.Unlock()
}

// ErrNotServed is wrapped by Served's error when no request was served in
// time.
var ErrNotServed = errors.New("no request served")

// Served waits until a request started at or after t0 was served and
// returns how long after t0 it was answered: a request started after a
// fault cannot have ridden what the fault broke. It gives up after limit
// (an error wrapping ErrNotServed, with the last failure) or when ctx
// ends.
func (p *Prober) Served(ctx context.Context, t0 time.Time, limit time.Duration) (time.Duration, error) {
	deadline := time.NewTimer(limit)
	defer deadline.Stop()
	for {
		p.mu.Lock()
		for _, c := range p.calls {
			if c.ok && !c.start.Before(t0) {
				p.mu.Unlock()
				return c.end.Sub(t0), nil
			}
		}
		added := p.added
		last := ""
		if n := len(p.calls); n > 0 {
			last = p.calls[n-1].err
		}
		p.mu.Unlock()
		select {
		case <-added:
		case <-ctx.Done():
			return 0, ctx.Err()
		case <-deadline.C:
			return 0, fmt.Errorf("%w within %s of %s; last error: %s", ErrNotServed, limit, t0.Format(time.StampMilli), last)
		}
	}
}

// Failures are the errors of the requests started at or after since.
func (p *Prober) Failures(since time.Time) []string {
	p.mu.Lock()
	defer p.mu.Unlock()
	var out []string
	for _, c := range p.calls {
		if !c.ok && !c.start.Before(since) {
			out = append(out, c.err)
		}
	}
	return out
}

// FailedSince counts the requests started at or after since that failed.
func (p *Prober) FailedSince(since time.Time) int { return len(p.Failures(since)) }

// Counts are how many requests started in [from, to], and how many of
// them failed.
func (p *Prober) Counts(from, to time.Time) (total, failed int) {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, c := range p.calls {
		if !c.start.Before(from) && !c.start.After(to) {
			total++
			if !c.ok {
				failed++
			}
		}
	}
	return total, failed
}

// Total counts the requests recorded.
func (p *Prober) Total() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return len(p.calls)
}

// LongestGap is the longest time between two served requests' answers
// (or the window's edges) in [from, to].
func (p *Prober) LongestGap(from, to time.Time) time.Duration {
	p.mu.Lock()
	defer p.mu.Unlock()
	prev, gap := from, time.Duration(0)
	for _, c := range p.calls {
		if !c.ok || c.end.Before(from) || c.end.After(to) {
			continue
		}
		gap = max(gap, c.end.Sub(prev))
		prev = c.end
	}
	return max(gap, to.Sub(prev))
}

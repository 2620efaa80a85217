package prober

import (
	"context"
	"errors"
	"sync/atomic"
	"testing"
	"time"
)

// A request that fails until the switch flips: Served waits for the first
// request started after t0 that is served, the failures before it are
// counted, and a prober that never gets served gives up with ErrNotServed.
func TestServedAfterFailures(t *testing.T) {
	var up atomic.Bool
	p := Start(func(ctx context.Context) error {
		time.Sleep(time.Millisecond)
		if !up.Load() {
			return errors.New("down")
		}
		return nil
	})
	defer p.Stop()
	t0 := time.Now()
	time.Sleep(20 * time.Millisecond)
	up.Store(true)
	d, err := p.Served(context.Background(), t0, 10*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if d < 20*time.Millisecond {
		t.Errorf("served %s after t0, before the switch flipped 20ms after it", d)
	}
	if p.FailedSince(t0) == 0 || len(p.Failures(t0)) != p.FailedSince(t0) || p.Failures(t0)[0] != "down" {
		t.Errorf("failures since t0: %v", p.Failures(t0))
	}
	total, failed := p.Counts(t0, time.Now())
	if total <= failed || failed != p.FailedSince(t0) {
		t.Errorf("counts: %d requests, %d failed; FailedSince %d", total, failed, p.FailedSince(t0))
	}
	if p.Total() < total {
		t.Errorf("Total %d < %d counted since t0", p.Total(), total)
	}
	if gap := p.LongestGap(t0, time.Now()); gap < 20*time.Millisecond {
		t.Errorf("longest gap %s: no request was served for the first 20ms", gap)
	}

	up.Store(false)
	time.Sleep(5 * time.Millisecond)
	if _, err := p.Served(context.Background(), time.Now(), 50*time.Millisecond); !errors.Is(err, ErrNotServed) {
		t.Errorf("Served with nothing served: %v, want ErrNotServed", err)
	}
	p.Stop()
	p.Stop() // twice is fine
}

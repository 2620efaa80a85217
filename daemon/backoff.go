package daemon

import (
	"math/rand/v2"
	"time"
)

// Backoff computes reconnect delays: exponential from Min to Max with full
// jitter in [d/2, d), so many laptops that lost the cluster at once do not
// come back in lockstep. The supervisor resets the attempt count after a
// connection stayed up for StableAfter.
type Backoff struct {
	Min, Max    time.Duration
	StableAfter time.Duration
	// Rand returns a float in [0,1); nil means math/rand/v2. Tests pin it.
	Rand func() float64
}

// DefaultBackoff is 0.5 s doubling to 30 s, reset after a stable minute.
func DefaultBackoff() Backoff {
	return Backoff{Min: 500 * time.Millisecond, Max: 30 * time.Second, StableAfter: time.Minute}
}

// Delay returns the wait before reconnect attempt number attempt (0-based).
func (b Backoff) Delay(attempt int) time.Duration {
	d := b.Min
	for i := 0; i < attempt && d < b.Max; i++ {
		d *= 2
	}
	if d > b.Max {
		d = b.Max
	}
	r := b.Rand
	if r == nil {
		r = rand.Float64
	}
	half := d / 2
	return half + time.Duration(r()*float64(d-half))
}

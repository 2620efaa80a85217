package daemon

import (
	"math/rand/v2"
	"time"
)

// Backoff computes reconnect delays: exponential from Min to Max with
// "equal jitter" (a delay in [d/2, d)), so many laptops that lost the
// cluster at once do not come back in lockstep. The supervisor starts the
// count over after every connection that became ready: a link that comes
// up again proves the path works, so a flapping VPN costs each reconnect
// only the first delay (at most Min); Min also bounds how often a relay
// that drops sessions right after the handshake makes the daemon redial.
type Backoff struct {
	Min, Max time.Duration
	// Rand returns a float in [0,1); nil means math/rand/v2. Tests pin it.
	Rand func() float64
}

// DefaultBackoff is 0.5 s doubling to 30 s.
func DefaultBackoff() Backoff {
	return Backoff{Min: 500 * time.Millisecond, Max: 30 * time.Second}
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

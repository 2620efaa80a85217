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

// quickFraction of Min is the longest wait before the first reconnect
// after a connection that had been up for a while (AfterUp).
const quickFraction = 5

// AfterUp returns the wait before reconnecting after a connection that
// was up for upFor. One that held for at least Min proved the path works,
// so the daemon comes back at once, jittered over [0, Min/5) so laptops
// that lost the cluster together spread out: the [Min/2, Min) first delay
// was most of what a port-forward cut cost (cut → keyed request served
// p50 384 ms before, in the fault matrix of cmd/sbx). A connection that
// ended sooner (a relay dropping sessions after the handshake) waits
// Delay(0), so such a relay is redialed at most about twice a second.
func (b Backoff) AfterUp(upFor time.Duration) time.Duration {
	if upFor < b.Min {
		return b.Delay(0)
	}
	r := b.Rand
	if r == nil {
		r = rand.Float64
	}
	return time.Duration(r() * float64(b.Min/quickFraction))
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

// Package boundedwait counts goroutines and lets a Close wait for them with
// a bound. The port-forward dialer and its test server both start
// goroutines that can block inside client-go or spdystream with nothing
// able to cut them short; their Close must wait for them, but not forever.
package boundedwait

import (
	"sync"
	"time"
)

// Group counts running goroutines. The zero value is ready to use.
type Group struct {
	mu   sync.Mutex
	n    int
	idle chan struct{} // closed when n drops to 0; nil while nothing ran
}

// Add counts n more goroutines.
func (g *Group) Add(n int) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.n == 0 {
		g.idle = make(chan struct{})
	}
	g.n += n
}

// Done marks one goroutine finished.
func (g *Group) Done() {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.n--
	if g.n == 0 {
		close(g.idle)
	}
}

// Wait waits until every counted goroutine is done or bound has passed,
// and reports whether they all finished.
func (g *Group) Wait(bound time.Duration) bool {
	g.mu.Lock()
	idle, busy := g.idle, g.n > 0
	g.mu.Unlock()
	if !busy {
		return true
	}
	t := time.NewTimer(bound)
	defer t.Stop()
	select {
	case <-idle:
		return true
	case <-t.C:
		return false
	}
}

package peeruid

import (
	"errors"
	"log/slog"
	"net"
	"os"
	"sync"
	"time"
)

// Errors of Lookup.
var (
	// ErrNotFound: no socket matches the connection (its client closed
	// it already).
	ErrNotFound = errors.New("the peer's socket is not in the kernel's socket table")
	// ErrUnavailable: this OS (or this machine's /proc) cannot tell.
	ErrUnavailable = errors.New("the owner of a loopback peer cannot be looked up")
)

// logEvery bounds the refusal lines a Guard logs: one per interval,
// carrying the number of refusals since the previous line.
const logEvery = 10 * time.Second

// Guard decides whether a loopback connection's peer may use a listener:
// processes of the daemon's own user may, and root's (root can read the
// daemon's files and attach to it anyway); every other user's are
// refused. A peer whose socket no process holds any more is refused too:
// the kernel lists those with uid 0, so they would otherwise pass as
// root's. Where the OS cannot tell (not Linux, /proc not mounted) every
// peer is let through and the listener relies on its other checks.
type Guard struct {
	what   string
	log    *slog.Logger
	uid    uint32
	lookup func(net.Conn) (Row, error)
	now    func() time.Time

	unavailable sync.Once
	mu          sync.Mutex
	lastLine    time.Time
	unlogged    int
}

// NewGuard returns a Guard for the listener what (a name for log lines,
// such as "outbound proxy"); log may be nil.
func NewGuard(what string, log *slog.Logger) *Guard {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Guard{what: what, log: log, uid: uint32(os.Getuid()), lookup: Lookup, now: time.Now}
}

// Allow reports whether c's peer may use the listener. When it may not,
// the refusal is logged (rate-limited) and the caller closes c without
// reading from it.
func (g *Guard) Allow(c net.Conn) bool {
	row, err := g.lookup(c)
	switch {
	case errors.Is(err, ErrUnavailable):
		g.unavailable.Do(func() {
			if Supported {
				g.log.Warn("cannot tell which user a local connection comes from; other users are not kept out", "listener", g.what, "err", err)
			}
		})
		return true
	case err != nil:
		g.refused(c, "its socket is gone", -1)
		return false
	case row.Inode == 0:
		g.refused(c, "its socket is no longer held by a process", -1)
		return false
	case row.UID == g.uid || row.UID == 0:
		return true
	default:
		g.refused(c, "it belongs to another user", int64(row.UID))
		return false
	}
}

func (g *Guard) refused(c net.Conn, why string, uid int64) {
	g.mu.Lock()
	now := g.now()
	if !g.lastLine.IsZero() && now.Sub(g.lastLine) < logEvery {
		g.unlogged++
		g.mu.Unlock()
		return
	}
	g.lastLine = now
	more := g.unlogged
	g.unlogged = 0
	g.mu.Unlock()
	args := []any{"listener", g.what, "from", c.RemoteAddr().String(), "reason", why}
	if uid >= 0 {
		args = append(args, "uid", uid)
	}
	if more > 0 {
		args = append(args, "alsoRefusedSinceLastLine", more)
	}
	g.log.Warn("local connection refused", args...)
}

package daemon

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/sbx-dev/sbx/daemon/api"
)

// ErrAlreadyRunning is returned (wrapped) by Listen when another daemon owns
// the socket.
var ErrAlreadyRunning = errors.New("another sbx daemon is already running")

// socketListener is the daemon's socket together with the lock that makes it
// ours. Closing it removes the socket and releases the lock.
type socketListener struct {
	net.Listener
	path string
	lock *os.File
}

func (l *socketListener) Close() error {
	err := l.Listener.Close()
	// The unix listener unlinks the socket itself; the lock goes last so a
	// new daemon never sees our socket while it holds the lock.
	unlockFile(l.lock)
	_ = l.lock.Close()
	return err
}

// listenSocket opens the daemon's socket in p.RuntimeDir: the directory is
// created private to this user (ensurePrivateDir), an exclusive lock on the
// lock file (lockFile) proves no other daemon of this user is running, a
// leftover socket from a crashed daemon is removed, and the new socket is
// made private (restrictSocket). The platform parts live in socket_unix.go
// and socket_windows.go.
func listenSocket(p api.Paths) (*socketListener, error) {
	if err := ensurePrivateDir(p.RuntimeDir); err != nil {
		return nil, err
	}
	lock, err := os.OpenFile(p.Lock(), os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, fmt.Errorf("open the daemon lock file %s: %w (check the permissions of %s)", p.Lock(), err, p.RuntimeDir)
	}
	if err := lockFile(lock); err != nil {
		pid := readPID(lock)
		_ = lock.Close()
		if lockHeld(err) {
			who := ""
			if pid > 0 {
				who = fmt.Sprintf(" (pid %d)", pid)
			}
			return nil, fmt.Errorf("%w%s on %s; use it (`sbx status`), or stop it first with `sbx daemon stop`",
				ErrAlreadyRunning, who, p.Socket())
		}
		return nil, fmt.Errorf("lock %s: %w", p.Lock(), err)
	}
	// We hold the lock, so any daemon still answering on the socket is one
	// that uses a different lock file (an older build); refuse rather than
	// steal its socket. Anything else there is a leftover from a crash.
	if _, err := os.Lstat(p.Socket()); err == nil {
		if canDial(context.Background(), "unix", p.Socket(), time.Second) {
			_ = lock.Close()
			return nil, fmt.Errorf("%w: a daemon answers on %s; stop it with `sbx daemon stop`", ErrAlreadyRunning, p.Socket())
		}
		if err := os.Remove(p.Socket()); err != nil && !errors.Is(err, fs.ErrNotExist) {
			_ = lock.Close()
			return nil, fmt.Errorf("remove the stale socket %s: %w (remove it by hand)", p.Socket(), err)
		}
	}
	ln, err := net.Listen("unix", p.Socket())
	if err != nil {
		_ = lock.Close()
		return nil, fmt.Errorf("listen on %s: %w", p.Socket(), err)
	}
	if err := restrictSocket(p.Socket()); err != nil {
		_ = ln.Close()
		_ = lock.Close()
		return nil, err
	}
	_ = lock.Truncate(0)
	_, _ = lock.WriteAt([]byte(strconv.Itoa(os.Getpid())+"\n"), 0)
	return &socketListener{Listener: ln, path: p.Socket(), lock: lock}, nil
}

func readPID(f *os.File) int {
	b := make([]byte, 32)
	n, _ := f.ReadAt(b, 0)
	pid, err := strconv.Atoi(strings.TrimSpace(string(b[:n])))
	if err != nil {
		return 0
	}
	return pid
}

package main

import (
	"fmt"
	"os"
	"sync"

	"github.com/sbx-dev/sbx/daemon/client"
)

// rotatingLog is the daemon's log file. When a write would take it past
// max bytes, the file is renamed to <path>.1 (replacing the previous one)
// and a new one is started, so a daemon that runs for weeks under a
// service manager keeps at most two files of about max bytes. slog hands
// it one whole record per Write, so a rotation never splits a record.
type rotatingLog struct {
	path string
	max  int64
	// stderrFD, when ≥ 0, is made to point at the current file after each
	// rotation (a background daemon's fd 2, where a panic is written).
	stderrFD int

	mu   sync.Mutex
	f    *os.File
	size int64
	// retryAt is the size at which a rotation that failed is tried again
	// (on Windows another handle keeps the file from being renamed).
	retryAt int64
}

// openRotatingLog opens path for appending (0600), starting afresh first
// if it is already over max.
func openRotatingLog(path string, max int64, stderrFD int) (*rotatingLog, error) {
	f, err := client.OpenLog(path)
	if err != nil {
		return nil, err
	}
	fi, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("stat the daemon log %s: %w", path, err)
	}
	if stderrFD >= 0 {
		if err := redirectFD(f, stderrFD); err != nil {
			f.Close()
			return nil, fmt.Errorf("point stderr at the daemon log %s: %w", path, err)
		}
	}
	return &rotatingLog{path: path, max: max, stderrFD: stderrFD, f: f, size: fi.Size()}, nil
}

func (l *rotatingLog) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.size > 0 && l.size+int64(len(p)) > max(l.max, l.retryAt) {
		if err := l.rotate(); err != nil {
			// Keep logging to the old file, say why, and try again after
			// another quarter of max.
			n, _ := fmt.Fprintf(l.f, "level=WARN msg=\"the daemon log could not be started afresh; it keeps growing\" err=%q\n", err.Error())
			l.size += int64(n)
			l.retryAt = l.size + l.max/4
		}
	}
	n, err := l.f.Write(p)
	l.size += int64(n)
	return n, err
}

func (l *rotatingLog) rotate() error {
	if err := os.Rename(l.path, l.path+".1"); err != nil {
		return fmt.Errorf("rename %s: %w", l.path, err)
	}
	f, err := os.OpenFile(l.path, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o600)
	if err != nil {
		return fmt.Errorf("open %s: %w", l.path, err)
	}
	if l.stderrFD >= 0 {
		if err := redirectFD(f, l.stderrFD); err != nil {
			f.Close()
			return fmt.Errorf("point stderr at %s: %w", l.path, err)
		}
	}
	_ = l.f.Close()
	l.f, l.size, l.retryAt = f, 0, 0
	return nil
}

// Close closes the current file.
func (l *rotatingLog) Close() error {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.f.Close()
}

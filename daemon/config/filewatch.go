package config

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"time"

	"github.com/fsnotify/fsnotify"
)

// FileWatchOptions configure WatchFile.
type FileWatchOptions struct {
	// Debounce is how long to wait after the last event before calling
	// OnChange (default DefaultDebounce): one save is several events.
	Debounce time.Duration
	// Initial calls OnChange once as soon as the watch is in place, for
	// changes made before it was.
	Initial bool
	// OnChange is called, from WatchFile's goroutine, after the file
	// changed (or was created, replaced or removed).
	OnChange func()
	// OnReady is called, from WatchFile's goroutine, once the watch is in
	// place (and after the Initial OnChange): an edit made after it
	// returns is seen. Nil ignores it.
	OnReady func()
	// OnWatchError is told about problems WatchFile works around: an OS
	// watch error (after which it calls OnChange, in case an event was
	// lost) or a symlink target it cannot watch. Nil ignores them.
	OnWatchError func(error)
}

// WatchFile follows the file at path the way editors and config managers
// change it, until ctx ends (then it returns nil). It watches the file's
// directory rather than the file, because saving by renaming a new file
// over the old one would end a watch on the file itself; when path is a
// symlink it also watches the target's directory (re-resolved after every
// change, so a retargeted link is followed), so edits to a dotfiles-managed
// file are seen. It returns an error when the watch cannot start or the OS
// watch closes. The caller owns the goroutine that runs it; fsnotify's
// goroutine is closed before WatchFile returns.
func WatchFile(ctx context.Context, path string, opts FileWatchOptions) error {
	if opts.Debounce <= 0 {
		opts.Debounce = DefaultDebounce
	}
	path = filepath.Clean(path)
	fw, err := fsnotify.NewWatcher()
	if err != nil {
		return err
	}
	defer fw.Close()
	t := &targets{fw: fw, watched: map[string]bool{}, names: map[string]bool{}}
	if err := t.add(path); err != nil {
		return fmt.Errorf("watch directory %s: %w", filepath.Dir(path), err)
	}
	follow := func() {
		if err := t.follow(path); err != nil && opts.OnWatchError != nil {
			opts.OnWatchError(fmt.Errorf("cannot watch the target of symlink %s, so edits to it are seen only when the link changes: %w", path, err))
		}
	}
	changed := func() {
		follow()
		if opts.OnChange != nil {
			opts.OnChange()
		}
	}
	if opts.Initial {
		changed()
	} else {
		follow()
	}
	if opts.OnReady != nil {
		opts.OnReady()
	}

	timer := time.NewTimer(opts.Debounce)
	timer.Stop()
	defer timer.Stop()
	var fire <-chan time.Time
	closed := errors.New("the file watch closed unexpectedly")
	for {
		select {
		case <-ctx.Done():
			return nil
		case ev, ok := <-fw.Events:
			if !ok {
				return closed
			}
			if t.names[filepath.Clean(ev.Name)] {
				timer.Reset(opts.Debounce)
				fire = timer.C
			}
		case err, ok := <-fw.Errors:
			if !ok {
				return closed
			}
			// Overflow and similar: treat it as a change, so that
			// nothing is missed.
			if opts.OnWatchError != nil {
				opts.OnWatchError(fmt.Errorf("%w (checking the file again)", err))
			}
			timer.Reset(opts.Debounce)
			fire = timer.C
		case <-fire:
			fire = nil
			changed()
		}
	}
}

// targets are the paths whose events matter: the watched path and, when it
// is a symlink, what it points to, with their directories watched.
type targets struct {
	fw      *fsnotify.Watcher
	watched map[string]bool // directories
	names   map[string]bool // files
}

func (t *targets) add(path string) error {
	t.names[path] = true
	dir := filepath.Dir(path)
	if t.watched[dir] {
		return nil
	}
	if err := t.fw.Add(dir); err != nil {
		return err
	}
	t.watched[dir] = true
	return nil
}

// follow adds the symlink target of path, if any.
func (t *targets) follow(path string) error {
	real, err := filepath.EvalSymlinks(path)
	if err != nil || real == path || t.names[real] {
		return nil
	}
	return t.add(real)
}

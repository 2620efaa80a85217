package config

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"reflect"
	"sync"
	"time"
)

// DefaultDebounce is how long the Watcher waits after the last change
// before reloading: editors write a file in several steps (truncate+write,
// or write a temp file and rename it), and reloading a half-written file
// would report a spurious error.
const DefaultDebounce = 150 * time.Millisecond

// WatcherOptions configure a Watcher. The zero value works.
type WatcherOptions struct {
	// Logger receives reload and error messages; nil discards them.
	Logger *slog.Logger
	// Debounce overrides DefaultDebounce.
	Debounce time.Duration
	// OnChange is called, from Run's goroutine, with each new valid
	// configuration that differs from the one in use. It must not block
	// for long.
	OnChange func(*Config)
	// OnError is called, from Run's goroutine, when the file becomes
	// invalid (with the error; the old configuration stays in use) and
	// when it becomes valid again (with nil). It is called again only when
	// the error changes.
	OnError func(error)
}

// Watcher keeps the configuration in step with the file. It watches the
// file's directory rather than the file, because editors and config
// managers replace a file by renaming a new one over it, which ends a
// watch on the file itself; a symlinked config also has its target's
// directory watched.
//
// Semantics: a valid edit is applied (OnChange); an invalid edit keeps the
// configuration in use and is reported (OnError, Err); deleting the file
// applies the defaults, exactly what a restart without the file would give.
type Watcher struct {
	path string
	opts WatcherOptions
	log  *slog.Logger

	mu  sync.Mutex
	cfg *Config
	err error
}

// NewWatcher loads the file at path and returns a Watcher for it; call Run
// to follow changes. An invalid file does not fail: the Watcher starts
// with the defaults and Err reports the problem, so the daemon can start
// and show it.
func NewWatcher(path string, opts WatcherOptions) *Watcher {
	if opts.Debounce <= 0 {
		opts.Debounce = DefaultDebounce
	}
	log := opts.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	w := &Watcher{path: filepath.Clean(path), opts: opts, log: log}
	cfg, err := Load(w.path)
	if err != nil {
		cfg = Default()
		w.err = err
		log.Warn("sbx config is invalid; using the defaults until it is fixed", "path", w.path, "err", err)
	}
	w.cfg = cfg
	return w
}

// Path is the config file's path.
func (w *Watcher) Path() string { return w.path }

// Config returns a copy of the configuration in use.
func (w *Watcher) Config() *Config {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.cfg.Clone()
}

// Err returns why the file on disk is not the configuration in use, or nil.
func (w *Watcher) Err() error {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.err
}

// Run follows the file until ctx is cancelled and then returns nil (call
// it once per Watcher); it returns an error only when watching cannot
// start or the OS watch fails for good. It creates the config directory (0700) when it is missing so
// that a config written later is seen. The caller owns the goroutine that
// runs it; Run starts no goroutines of its own beyond fsnotify's, which it
// closes before returning.
func (w *Watcher) Run(ctx context.Context) error {
	dir := filepath.Dir(w.path)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("watching sbx config: cannot create %s: %w", dir, err)
	}
	err := WatchFile(ctx, w.path, FileWatchOptions{
		Debounce: w.opts.Debounce,
		// The file may have changed between NewWatcher and the watch.
		Initial:  true,
		OnChange: w.reload,
		OnWatchError: func(err error) {
			w.log.Warn("sbx config watch", "path", w.path, "err", err)
		},
	})
	if err != nil {
		return fmt.Errorf("watching sbx config %s: %w (live reload is off; restart the daemon after editing)", w.path, err)
	}
	return nil
}

func (w *Watcher) reload() {
	cfg, err := Load(w.path)

	w.mu.Lock()
	if err != nil {
		changed := w.err == nil || w.err.Error() != err.Error()
		w.err = err
		w.mu.Unlock()
		if changed {
			w.log.Warn("sbx config is invalid; keeping the previous configuration", "path", w.path, "err", err)
			if w.opts.OnError != nil {
				w.opts.OnError(err)
			}
		}
		return
	}
	cleared := w.err != nil
	w.err = nil
	changed := !reflect.DeepEqual(cfg, w.cfg)
	if changed {
		w.cfg = cfg
	}
	w.mu.Unlock()

	if cleared {
		w.log.Info("sbx config is valid again", "path", w.path)
		if w.opts.OnError != nil {
			w.opts.OnError(nil)
		}
	}
	if changed {
		w.log.Info("sbx config reloaded", "path", w.path)
		if w.opts.OnChange != nil {
			w.opts.OnChange(cfg.Clone())
		}
	}
}

package config

import (
	"context"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

const (
	waitFor = 10 * time.Second
	tick    = 5 * time.Millisecond
)

// recorder collects the Watcher's callbacks.
type recorder struct {
	mu      sync.Mutex
	configs []*Config
	errs    []error
}

func (r *recorder) onChange(c *Config) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.configs = append(r.configs, c)
}

func (r *recorder) onError(err error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.errs = append(r.errs, err)
}

func (r *recorder) snapshot() ([]*Config, []error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]*Config(nil), r.configs...), append([]error(nil), r.errs...)
}

// startWatcher runs a Watcher on path until the test ends.
func startWatcher(t *testing.T, path string) (*Watcher, *recorder) {
	t.Helper()
	rec := &recorder{}
	w := NewWatcher(path, WatcherOptions{Debounce: 20 * time.Millisecond, OnChange: rec.onChange, OnError: rec.onError})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- w.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		require.NoError(t, <-done)
	})
	return w, rec
}

// replace writes data the way editors and config managers do: a temp file
// renamed over the config.
func replace(t *testing.T, path, data string) {
	t.Helper()
	tmp := path + ".tmp"
	require.NoError(t, os.WriteFile(tmp, []byte(data), 0o600))
	require.NoError(t, os.Rename(tmp, path))
}

func TestWatcherAppliesValidEdits(t *testing.T) {
	path := filepath.Join(t.TempDir(), "sbx", "config.yaml") // directory created by Run
	w, rec := startWatcher(t, path)
	require.Equal(t, Default(), w.Config())
	require.NoError(t, w.Err())

	// The directory may not exist yet when startWatcher returns: poll until
	// a write is picked up (Run re-reads once its watch is in place).
	require.Eventually(t, func() bool {
		if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
			return false
		}
		return os.WriteFile(path, []byte("poolSize: 4\n"), 0o600) == nil
	}, waitFor, tick)
	require.Eventually(t, func() bool { return w.Config().PoolSize == 4 }, waitFor, tick)

	// Replaced by rename, as editors do.
	replace(t, path, "poolSize: 5\noutbound: {mode: proxy}\n")
	require.Eventually(t, func() bool { return w.Config().PoolSize == 5 }, waitFor, tick)
	require.Equal(t, ModeProxy, w.Config().Outbound.Mode)

	// Written in place (truncate + write).
	require.NoError(t, os.WriteFile(path, []byte("poolSize: 6\n"), 0o600))
	require.Eventually(t, func() bool { return w.Config().PoolSize == 6 }, waitFor, tick)
	require.Equal(t, ModeAuto, w.Config().Outbound.Mode, "fields removed from the file fall back to defaults")

	configs, errs := rec.snapshot()
	require.Empty(t, errs)
	require.NotEmpty(t, configs)
	require.Equal(t, 6, configs[len(configs)-1].PoolSize, "OnChange saw the last config")
	for i := 1; i < len(configs); i++ {
		require.NotEqual(t, configs[i-1], configs[i], "OnChange only for real changes")
	}
}

func TestWatcherKeepsOldConfigOnInvalidEdit(t *testing.T) {
	path := filepath.Join(t.TempDir(), "config.yaml")
	require.NoError(t, os.WriteFile(path, []byte("poolSize: 3\n"), 0o600))
	w, rec := startWatcher(t, path)
	require.Equal(t, 3, w.Config().PoolSize)

	replace(t, path, "poolSize: 3\noutbound: {mode: bogus}\n")
	require.Eventually(t, func() bool { return w.Err() != nil }, waitFor, tick)
	require.ErrorContains(t, w.Err(), path+":2:18: outbound.mode: unknown mode \"bogus\"")
	require.Equal(t, 3, w.Config().PoolSize, "the old config stays in use")
	require.Equal(t, ModeAuto, w.Config().Outbound.Mode)
	_, errs := rec.snapshot()
	require.Len(t, errs, 1)
	require.ErrorContains(t, errs[0], "unknown mode")

	// A different invalid edit is reported again.
	replace(t, path, "poolSize: 99\n")
	require.Eventually(t, func() bool {
		_, errs := rec.snapshot()
		return len(errs) == 2
	}, waitFor, tick)
	require.ErrorContains(t, w.Err(), "99 is out of range")

	// Fixing the file clears the error and applies the new config.
	replace(t, path, "poolSize: 7\n")
	require.Eventually(t, func() bool { return w.Err() == nil && w.Config().PoolSize == 7 }, waitFor, tick)
	configs, errs := rec.snapshot()
	require.Len(t, errs, 3)
	require.NoError(t, errs[2], "OnError(nil) says the error is gone")
	require.Equal(t, 7, configs[len(configs)-1].PoolSize)

	// Fixing back to the very config in use still clears the error.
	replace(t, path, "poolSize: nope\n")
	require.Eventually(t, func() bool { return w.Err() != nil }, waitFor, tick)
	replace(t, path, "poolSize: 7\n")
	require.Eventually(t, func() bool { return w.Err() == nil }, waitFor, tick)
}

func TestWatcherDeletedFileMeansDefaults(t *testing.T) {
	path := filepath.Join(t.TempDir(), "config.yaml")
	require.NoError(t, os.WriteFile(path, []byte("poolSize: 9\n"), 0o600))
	w, _ := startWatcher(t, path)
	require.Equal(t, 9, w.Config().PoolSize)

	require.NoError(t, os.Remove(path))
	require.Eventually(t, func() bool { return w.Config().PoolSize == DefaultPoolSize }, waitFor, tick)
	require.Equal(t, Default(), w.Config())
	require.NoError(t, w.Err())

	require.NoError(t, os.WriteFile(path, []byte("poolSize: 10\n"), 0o600))
	require.Eventually(t, func() bool { return w.Config().PoolSize == 10 }, waitFor, tick)
}

func TestWatcherStartsWithInvalidFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "config.yaml")
	require.NoError(t, os.WriteFile(path, []byte("poolSize: [\n"), 0o600))
	w, _ := startWatcher(t, path)
	require.Equal(t, Default(), w.Config(), "defaults until fixed")
	require.ErrorContains(t, w.Err(), "invalid YAML")

	replace(t, path, "poolSize: 1\n")
	require.Eventually(t, func() bool { return w.Err() == nil && w.Config().PoolSize == 1 }, waitFor, tick)
}

func TestWatcherIgnoresOtherFiles(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "config.yaml")
	require.NoError(t, os.WriteFile(path, []byte("poolSize: 3\n"), 0o600))
	w, rec := startWatcher(t, path)

	// Noise in the same directory, then a real edit: only the edit counts.
	require.NoError(t, os.WriteFile(filepath.Join(dir, "other.yaml"), []byte("poolSize: [\n"), 0o600))
	require.NoError(t, os.WriteFile(path, []byte("poolSize: 4\n"), 0o600))
	require.Eventually(t, func() bool { return w.Config().PoolSize == 4 }, waitFor, tick)
	_, errs := rec.snapshot()
	require.Empty(t, errs)
}

func TestWatcherFollowsSymlinkTarget(t *testing.T) {
	dots := t.TempDir() // e.g. a dotfiles repository
	target := filepath.Join(dots, "sbx.yaml")
	require.NoError(t, os.WriteFile(target, []byte("poolSize: 3\n"), 0o600))
	path := filepath.Join(t.TempDir(), "config.yaml")
	require.NoError(t, os.Symlink(target, path))
	w, _ := startWatcher(t, path)
	require.Equal(t, 3, w.Config().PoolSize)

	// Editing the target, not the link, is seen once Run has followed the
	// link; keep editing until it is.
	n := 0
	require.Eventually(t, func() bool {
		n++
		_ = os.WriteFile(target, []byte("poolSize: 8\n# edit "+string(rune('a'+n%26))+"\n"), 0o600)
		return w.Config().PoolSize == 8
	}, waitFor, 50*time.Millisecond)
}

func TestWatcherStopsOnCancel(t *testing.T) {
	w := NewWatcher(filepath.Join(t.TempDir(), "config.yaml"), WatcherOptions{})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- w.Run(ctx) }()
	cancel()
	select {
	case err := <-done:
		require.NoError(t, err)
	case <-time.After(waitFor):
		t.Fatal("Run did not return after cancel")
	}
}

func TestWatcherRunFailsWhenDirectoryCannotBeCreated(t *testing.T) {
	file := filepath.Join(t.TempDir(), "file")
	require.NoError(t, os.WriteFile(file, nil, 0o600))
	w := NewWatcher(filepath.Join(file, "sbx", "config.yaml"), WatcherOptions{})
	err := w.Run(context.Background())
	require.ErrorContains(t, err, "cannot create")
}

package config

import (
	"context"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// TestWatchFileSeesAnEditAfterReady: one edit made after OnReady is seen,
// without retrying, for a plain file and through a symlink to its target;
// an Initial OnChange comes before OnReady.
func TestWatchFileSeesAnEditAfterReady(t *testing.T) {
	for _, tc := range []struct {
		name    string
		symlink bool
		initial bool
	}{
		{name: "file"},
		{name: "symlink target", symlink: true},
		{name: "initial", initial: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			target := filepath.Join(t.TempDir(), "spec.yaml")
			require.NoError(t, os.WriteFile(target, []byte("a\n"), 0o600))
			path := target
			if tc.symlink {
				path = filepath.Join(t.TempDir(), "link.yaml")
				require.NoError(t, os.Symlink(target, path))
			}

			events := make(chan string, 64) // from WatchFile's goroutine, in order
			ctx, cancel := context.WithCancel(context.Background())
			done := make(chan error, 1)
			go func() {
				done <- WatchFile(ctx, path, FileWatchOptions{
					Debounce: 20 * time.Millisecond,
					Initial:  tc.initial,
					OnChange: func() { events <- "change" },
					OnReady:  func() { events <- "ready" },
				})
			}()
			t.Cleanup(func() {
				cancel()
				require.NoError(t, <-done)
			})
			next := func() string {
				t.Helper()
				select {
				case ev := <-events:
					return ev
				case <-time.After(waitFor):
					t.Fatal("WatchFile reported nothing")
					return ""
				}
			}

			if tc.initial {
				require.Equal(t, "change", next(), "the Initial OnChange comes first")
			}
			require.Equal(t, "ready", next())
			require.NoError(t, os.WriteFile(target, []byte("b\n"), 0o600))
			require.Equal(t, "change", next(), "an edit after OnReady is seen")
		})
	}
}

func TestWatchFileFailsWithoutItsDirectory(t *testing.T) {
	path := filepath.Join(t.TempDir(), "missing", "spec.yaml")
	err := WatchFile(context.Background(), path, FileWatchOptions{OnChange: func() {}})
	require.ErrorContains(t, err, "watch directory")
	require.ErrorContains(t, err, filepath.Dir(path))
}

package api

import (
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/require"
)

func TestDefaultPathsXDG(t *testing.T) {
	env := map[string]string{
		"HOME":            filepath.FromSlash("/home/a"),
		"LOCALAPPDATA":    filepath.FromSlash("/appdata"),
		"XDG_RUNTIME_DIR": filepath.FromSlash("/run/user/1000"),
		"XDG_STATE_HOME":  filepath.FromSlash("/home/a/state"),
	}
	p := DefaultPaths(func(k string) string { return env[k] })
	require.Equal(t, filepath.FromSlash("/run/user/1000/sbx/sbx.sock"), p.Socket())
	require.Equal(t, filepath.FromSlash("/run/user/1000/sbx/sbx.lock"), p.Lock())
	require.Equal(t, filepath.FromSlash("/home/a/state/sbx/state.json"), p.State())
	require.Equal(t, filepath.FromSlash("/home/a/state/sbx/daemon.log"), p.Log())
}

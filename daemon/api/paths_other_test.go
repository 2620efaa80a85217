//go:build !windows

package api

import (
	"testing"

	"github.com/stretchr/testify/require"
)

func TestDefaultPathsFallback(t *testing.T) {
	env := map[string]string{"HOME": "/home/a", "LOCALAPPDATA": "/ignored"}
	p := DefaultPaths(func(k string) string { return env[k] })
	require.Equal(t, Paths{RuntimeDir: "/home/a/.sbx", StateDir: "/home/a/.local/state/sbx"}, p)
}

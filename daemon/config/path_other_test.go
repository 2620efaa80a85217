//go:build !windows

package config

import (
	"testing"

	"github.com/stretchr/testify/require"
)

func TestDefaultPath(t *testing.T) {
	env := func(kv map[string]string) func(string) string { return func(k string) string { return kv[k] } }
	p, err := DefaultPath(env(map[string]string{"XDG_CONFIG_HOME": "/x/cfg", "HOME": "/home/a"}))
	require.NoError(t, err)
	require.Equal(t, "/x/cfg/sbx/config.yaml", p)
	p, err = DefaultPath(env(map[string]string{"HOME": "/home/a"}))
	require.NoError(t, err)
	require.Equal(t, "/home/a/.config/sbx/config.yaml", p)
	p, err = DefaultPath(env(map[string]string{"XDG_CONFIG_HOME": "relative", "HOME": "/home/a"}))
	require.NoError(t, err)
	require.Equal(t, "/home/a/.config/sbx/config.yaml", p, "a relative XDG_CONFIG_HOME is ignored")
	_, err = DefaultPath(env(nil))
	require.ErrorContains(t, err, "XDG_CONFIG_HOME nor HOME")
}

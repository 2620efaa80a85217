//go:build windows

package config

import (
	"testing"

	"github.com/stretchr/testify/require"
)

func TestDefaultPath(t *testing.T) {
	env := func(kv map[string]string) func(string) string { return func(k string) string { return kv[k] } }
	p, err := DefaultPath(env(map[string]string{"XDG_CONFIG_HOME": `C:\cfg`, "APPDATA": `C:\Users\a\AppData\Roaming`}))
	require.NoError(t, err)
	require.Equal(t, `C:\cfg\sbx\config.yaml`, p)
	p, err = DefaultPath(env(map[string]string{"APPDATA": `C:\Users\a\AppData\Roaming`, "HOME": `C:\Users\a`}))
	require.NoError(t, err)
	require.Equal(t, `C:\Users\a\AppData\Roaming\sbx\config.yaml`, p, "HOME is ignored on Windows")
	_, err = DefaultPath(env(map[string]string{"HOME": `C:\Users\a`}))
	require.ErrorContains(t, err, "XDG_CONFIG_HOME nor APPDATA")
}

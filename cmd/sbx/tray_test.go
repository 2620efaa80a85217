package main

import (
	"os"
	"path/filepath"
	"runtime"
	"testing"

	"github.com/sbx-dev/sbx/systray"
	"github.com/stretchr/testify/require"
)

func TestTrayFlags(t *testing.T) {
	code, _, errOut := runCLI(t, "tray", "--install", "--uninstall")
	require.Equal(t, 2, code)
	require.Contains(t, errOut, "exclude each other")

	code, _, errOut = runCLI(t, "tray", "extra")
	require.Equal(t, 2, code)
	require.Contains(t, errOut, `sbx tray takes no arguments, got "extra"`)
}

func TestIsTemporaryBuild(t *testing.T) {
	for exe, want := range map[string]bool{
		"/tmp/go-build1234/b001/exe/sbx": true,
		"/usr/local/bin/sbx":             false,
		"/home/a/go/bin/sbx":             false,
	} {
		require.Equal(t, want, isTemporaryBuild(filepath.FromSlash(exe)), exe)
	}
}

func TestTrayInstallUninstall(t *testing.T) {
	if runtime.GOOS != "linux" {
		t.Skip("the XDG autostart entry is written on Linux")
	}
	cfg := t.TempDir()
	t.Setenv("XDG_CONFIG_HOME", cfg)
	entry := filepath.Join(cfg, "autostart", "sbx-tray.desktop")

	exe, err := os.Executable()
	require.NoError(t, err)
	if resolved, err := filepath.EvalSymlinks(exe); err == nil {
		exe = resolved
	}
	code, out, errOut := runCLI(t, "tray", "--install")
	if isTemporaryBuild(exe) {
		// Under `go test` the binary is a temporary build, like `go run`:
		// a login entry would point at a file that disappears.
		require.Equal(t, 2, code, errOut)
		require.Contains(t, errOut, "temporary `go run` build")
		require.NoFileExists(t, entry)
	} else {
		require.Equal(t, 0, code, errOut)
		require.Contains(t, out, "installed the tray login entry "+entry)
		require.FileExists(t, entry)
		require.NoError(t, os.Remove(entry))
	}

	code, out, errOut = runCLI(t, "tray", "--uninstall")
	require.Equal(t, 0, code, errOut)
	require.Equal(t, "no tray login entry at "+entry+"; nothing to remove\n", out)

	where, err := systray.InstallAutostart("/usr/local/bin/sbx")
	require.NoError(t, err)
	require.Equal(t, entry, where)
	code, out, errOut = runCLI(t, "tray", "--uninstall")
	require.Equal(t, 0, code, errOut)
	require.Equal(t, "removed the tray login entry "+entry+"\n", out)
	require.NoFileExists(t, entry)
}

func TestTrayWithoutSessionBus(t *testing.T) {
	if runtime.GOOS != "linux" {
		t.Skip("the session bus is checked on Linux")
	}
	t.Setenv("DBUS_SESSION_BUS_ADDRESS", "unix:path="+filepath.Join(t.TempDir(), "nobus"))
	code, _, errOut := runCLI(t, "tray")
	require.Equal(t, 1, code)
	require.Contains(t, errOut, "the tray needs a D-Bus session bus")
	require.Contains(t, errOut, "DBUS_SESSION_BUS_ADDRESS")
}

package systray

import (
	"context"
	"os"
	"path/filepath"
	"runtime"
	"testing"

	"github.com/stretchr/testify/require"
)

func TestClipboardCommands(t *testing.T) {
	cases := []struct {
		name  string
		goos  string
		env   map[string]string
		first string
	}{
		{"wayland prefers wl-copy", "linux", map[string]string{"WAYLAND_DISPLAY": "wayland-0", "DISPLAY": ":0"}, "wl-copy"},
		{"x11 prefers xclip", "linux", map[string]string{"DISPLAY": ":0"}, "xclip"},
		{"macos", "darwin", nil, "pbcopy"},
		{"windows", "windows", nil, "clip.exe"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			cmds := clipboardCommands(tc.goos, envMap(tc.env))
			require.Equal(t, tc.first, cmds[0][0])
			if tc.goos == "linux" {
				require.Len(t, cmds, 3, "every tool is tried")
			}
		})
	}
	require.Contains(t, clipboardHint("linux"), "xclip")
}

func TestOpenCommand(t *testing.T) {
	require.Equal(t, []string{"xdg-open", "/l"}, openCommand("linux", "/l"))
	require.Equal(t, []string{"open", "/l"}, openCommand("darwin", "/l"))
	require.Equal(t, "rundll32", openCommand("windows", `C:\l`)[0])
}

// TestCopyToClipboardTool runs the real copy with a stand-in xclip on PATH
// that records its arguments and stdin.
func TestCopyToClipboardTool(t *testing.T) {
	if runtime.GOOS != "linux" {
		t.Skip("stand-in tool is a shell script")
	}
	dir := t.TempDir()
	out := filepath.Join(dir, "out")
	script := "#!/bin/sh\necho \"$@\" > " + out + "\ncat >> " + out + "\n"
	require.NoError(t, os.WriteFile(filepath.Join(dir, "xclip"), []byte(script), 0o755))
	t.Setenv("PATH", dir+string(os.PathListSeparator)+os.Getenv("PATH"))
	t.Setenv("WAYLAND_DISPLAY", "")
	require.NoError(t, copyToClipboard(context.Background(), "baggage: sbx-routing-key=k"))
	b, err := os.ReadFile(out)
	require.NoError(t, err)
	require.Equal(t, "-selection clipboard -in\nbaggage: sbx-routing-key=k", string(b))

	t.Setenv("PATH", t.TempDir())
	err = copyToClipboard(context.Background(), "x")
	require.ErrorIs(t, err, ErrNoClipboard)
	require.ErrorContains(t, err, "install wl-clipboard")
}

func TestOpenFileMissing(t *testing.T) {
	err := openFile(context.Background(), filepath.Join(t.TempDir(), "daemon.log"))
	require.ErrorContains(t, err, "daemon.log")
	require.ErrorContains(t, err, "sbx daemon")
}

package systray

import (
	"encoding/xml"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/stretchr/testify/require"
)

func envMap(m map[string]string) func(string) string { return func(k string) string { return m[k] } }

func TestAutostartFilePaths(t *testing.T) {
	cases := []struct {
		name, goos string
		env        map[string]string
		want       string
		err        string
	}{
		{"xdg", "linux", map[string]string{"XDG_CONFIG_HOME": "/cfg", "HOME": "/home/a"}, "/cfg/autostart/sbx-tray.desktop", ""},
		{"home fallback", "linux", map[string]string{"HOME": "/home/a"}, "/home/a/.config/autostart/sbx-tray.desktop", ""},
		{"relative xdg ignored", "linux", map[string]string{"XDG_CONFIG_HOME": "cfg", "HOME": "/home/a"}, "/home/a/.config/autostart/sbx-tray.desktop", ""},
		{"bsd", "freebsd", map[string]string{"XDG_CONFIG_HOME": "/cfg"}, "/cfg/autostart/sbx-tray.desktop", ""},
		{"macos", "darwin", map[string]string{"HOME": "/Users/a"}, "/Users/a/Library/LaunchAgents/dev.sbx.tray.plist", ""},
		{"no home", "linux", map[string]string{}, "", "neither XDG_CONFIG_HOME nor HOME"},
		{"macos no home", "darwin", map[string]string{}, "", "HOME is not set"},
		{"windows", "windows", map[string]string{"HOME": "C:/Users/a"}, "", "registry"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			path, content, err := AutostartFile(tc.goos, envMap(tc.env), "/usr/local/bin/sbx")
			if tc.err != "" {
				require.ErrorContains(t, err, tc.err)
				return
			}
			require.NoError(t, err)
			require.Equal(t, filepath.FromSlash(tc.want), path)
			require.NotEmpty(t, content)
		})
	}
}

// parseExec undoes desktop-file escaping and Exec quoting, as a session
// manager does, to check the entry runs exactly [exe, "tray"].
func parseExec(value string) ([]string, error) {
	// String-level escapes first.
	var s strings.Builder
	for i := 0; i < len(value); i++ {
		if value[i] == '\\' && i+1 < len(value) {
			i++
			switch value[i] {
			case 'n':
				s.WriteByte('\n')
			case 't':
				s.WriteByte('\t')
			case 'r':
				s.WriteByte('\r')
			case 's':
				s.WriteByte(' ')
			default:
				s.WriteByte(value[i])
			}
			continue
		}
		s.WriteByte(value[i])
	}
	v := s.String()
	var args []string
	var cur strings.Builder
	inQuote, have := false, false
	for i := 0; i < len(v); i++ {
		c := v[i]
		switch {
		case inQuote && c == '\\':
			i++
			if i >= len(v) || !strings.ContainsRune("\"`$\\", rune(v[i])) {
				return nil, fmt.Errorf("bad escape in quotes at %d of %q", i, v)
			}
			cur.WriteByte(v[i])
		case c == '"':
			inQuote, have = !inQuote, true
		case !inQuote && c == ' ':
			if have {
				args = append(args, cur.String())
				cur.Reset()
				have = false
			}
		case c == '%':
			i++
			if i >= len(v) || v[i] != '%' {
				return nil, fmt.Errorf("field code at %d of %q", i, v)
			}
			cur.WriteByte('%')
			have = true
		default:
			if !inQuote && strings.ContainsRune("\t\n'\\><~|&;$*?#()`", rune(c)) {
				return nil, fmt.Errorf("reserved %q outside quotes in %q", c, v)
			}
			cur.WriteByte(c)
			have = true
		}
	}
	if inQuote {
		return nil, fmt.Errorf("unterminated quote in %q", v)
	}
	if have {
		args = append(args, cur.String())
	}
	return args, nil
}

func mustParseExec(t *testing.T, value string) []string {
	t.Helper()
	args, err := parseExec(value)
	require.NoError(t, err)
	return args
}

// FuzzDesktopExec checks that any binary path survives the Exec line's two
// escaping layers.
func FuzzDesktopExec(f *testing.F) {
	for _, s := range []string{"/usr/bin/sbx", "/opt/my tools/sbx", `/tmp/a\b$c`, "/x/100%/sbx", `/h/"q"/it's`, "/a\nb", "/`x`/(1)", ""} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, exe string) {
		if !utf8.ValidString(exe) || strings.ContainsRune(exe, 0) {
			return // desktop files are UTF-8 text without NUL
		}
		keys := desktopKeys(string(desktopEntry(exe)))
		args, err := parseExec(keys["Exec"])
		require.NoError(t, err)
		require.Equal(t, []string{exe, "tray"}, args)
	})
}

func desktopKeys(content string) map[string]string {
	keys := map[string]string{}
	for _, line := range strings.Split(content, "\n") {
		if k, v, ok := strings.Cut(line, "="); ok {
			keys[k] = v
		}
	}
	return keys
}

func TestDesktopEntryExec(t *testing.T) {
	cases := []struct {
		exe      string
		wantExec string
	}{
		{"/usr/local/bin/sbx", "/usr/local/bin/sbx tray"},
		{"/opt/my tools/sbx", `"/opt/my tools/sbx" tray`},
		{`/tmp/a\b$c`, `"/tmp/a\\\\b\\$c" tray`},
		{"/home/x/100%/sbx", "/home/x/100%%/sbx tray"},
		{`/home/"q"/it's/sbx`, `"/home/\\"q\\"/it's/sbx" tray`},
		{"/home/`x`/(1)/sbx", "\"/home/\\\\`x\\\\`/(1)/sbx\" tray"},
	}
	for _, tc := range cases {
		t.Run(tc.exe, func(t *testing.T) {
			content := string(desktopEntry(tc.exe))
			require.True(t, strings.HasPrefix(content, "[Desktop Entry]\n"))
			keys := desktopKeys(content)
			require.Equal(t, tc.wantExec, keys["Exec"])
			require.Equal(t, []string{tc.exe, "tray"}, mustParseExec(t, keys["Exec"]))
			require.Equal(t, "Application", keys["Type"])
			require.Equal(t, "false", keys["Terminal"])
		})
	}
}

func TestLaunchAgentPlist(t *testing.T) {
	exe := "/Users/a&b/<bin>/sbx"
	var doc struct {
		Dict struct {
			Keys    []string `xml:"key"`
			Strings []string `xml:"string"`
			Array   struct {
				Strings []string `xml:"string"`
			} `xml:"array"`
		} `xml:"dict"`
	}
	require.NoError(t, xml.Unmarshal(launchAgentPlist(exe, "/Users/a&b"), &doc))
	require.Equal(t, []string{exe, "tray"}, doc.Dict.Array.Strings)
	require.Contains(t, doc.Dict.Keys, "RunAtLoad")
	require.Equal(t, "dev.sbx.tray", doc.Dict.Strings[0])
}

func TestInstallUninstallAutostart(t *testing.T) {
	if runtime.GOOS != "linux" {
		t.Skip("the XDG autostart entry is written on Linux")
	}
	cfg := filepath.Join(t.TempDir(), "config")
	t.Setenv("XDG_CONFIG_HOME", cfg)
	want := filepath.Join(cfg, "autostart", "sbx-tray.desktop")

	path, err := InstallAutostart("/opt/sbx tools/sbx")
	require.NoError(t, err)
	require.Equal(t, want, path)
	fi, err := os.Stat(path)
	require.NoError(t, err)
	require.Equal(t, os.FileMode(0o644), fi.Mode().Perm())
	b, err := os.ReadFile(path)
	require.NoError(t, err)
	require.Equal(t, []string{"/opt/sbx tools/sbx", "tray"}, mustParseExec(t, desktopKeys(string(b))["Exec"]))

	// Installing again replaces the entry (a moved binary) and leaves no
	// temporary files.
	_, err = InstallAutostart("/usr/bin/sbx")
	require.NoError(t, err)
	b, err = os.ReadFile(path)
	require.NoError(t, err)
	require.Equal(t, "/usr/bin/sbx tray", desktopKeys(string(b))["Exec"])
	entries, err := os.ReadDir(filepath.Dir(path))
	require.NoError(t, err)
	require.Len(t, entries, 1)

	path, removed, err := UninstallAutostart()
	require.NoError(t, err)
	require.True(t, removed)
	require.Equal(t, want, path)
	require.NoFileExists(t, path)

	_, removed, err = UninstallAutostart()
	require.NoError(t, err)
	require.False(t, removed)
}

//go:build windows

package config

import (
	"errors"
	"path/filepath"
)

// defaultDir is %APPDATA%\sbx, used without XDG_CONFIG_HOME: where Windows
// programs keep per-user settings (os.UserConfigDir agrees). HOME is
// ignored on purpose: Windows does not set it, and Git Bash does, so using
// it would give the same user two config files depending on the shell.
func defaultDir(getenv func(string) string) (string, error) {
	appData := getenv("APPDATA")
	if appData == "" || !filepath.IsAbs(appData) {
		return "", errors.New("cannot find the sbx config: neither XDG_CONFIG_HOME nor APPDATA is set to an absolute path; set one of them")
	}
	return filepath.Join(appData, "sbx"), nil
}

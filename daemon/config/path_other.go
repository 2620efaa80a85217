//go:build !windows

package config

import (
	"errors"
	"path/filepath"
)

// defaultDir is ~/.config/sbx, used without XDG_CONFIG_HOME.
func defaultDir(getenv func(string) string) (string, error) {
	home := getenv("HOME")
	if home == "" || !filepath.IsAbs(home) {
		return "", errors.New("cannot find the sbx config: neither XDG_CONFIG_HOME nor HOME is set to an absolute path; set one of them")
	}
	return filepath.Join(home, ".config", "sbx"), nil
}

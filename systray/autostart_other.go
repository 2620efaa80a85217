//go:build !windows

package systray

import "errors"

// The Run key exists only on Windows; InstallAutostart never calls these
// elsewhere.
func installRunKey(string) (string, error) {
	return "", errors.New("the Windows Run key is not available on this OS")
}

func uninstallRunKey() (string, bool, error) {
	return "", false, errors.New("the Windows Run key is not available on this OS")
}

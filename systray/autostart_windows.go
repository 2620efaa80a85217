//go:build windows

package systray

import (
	"errors"
	"fmt"

	"golang.org/x/sys/windows/registry"
)

const (
	runKeyPath  = `Software\Microsoft\Windows\CurrentVersion\Run`
	runKeyValue = "sbx tray"
)

// installRunKey adds the tray to the current user's Run key, which Windows
// reads at log-in.
func installRunKey(exe string) (string, error) {
	k, _, err := registry.CreateKey(registry.CURRENT_USER, runKeyPath, registry.SET_VALUE)
	if err != nil {
		return "", fmt.Errorf(`open HKCU\%s: %w`, runKeyPath, err)
	}
	defer k.Close()
	if err := k.SetStringValue(runKeyValue, `"`+exe+`" tray`); err != nil {
		return "", fmt.Errorf(`set HKCU\%s\%s: %w`, runKeyPath, runKeyValue, err)
	}
	return `HKCU\` + runKeyPath + `\` + runKeyValue, nil
}

// uninstallRunKey removes the tray from the Run key.
func uninstallRunKey() (string, bool, error) {
	where := `HKCU\` + runKeyPath + `\` + runKeyValue
	k, err := registry.OpenKey(registry.CURRENT_USER, runKeyPath, registry.SET_VALUE)
	if errors.Is(err, registry.ErrNotExist) {
		return where, false, nil
	}
	if err != nil {
		return where, false, fmt.Errorf(`open HKCU\%s: %w`, runKeyPath, err)
	}
	defer k.Close()
	err = k.DeleteValue(runKeyValue)
	if errors.Is(err, registry.ErrNotExist) {
		return where, false, nil
	}
	if err != nil {
		return where, false, fmt.Errorf("delete %s: %w", where, err)
	}
	return where, true, nil
}

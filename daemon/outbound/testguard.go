package outbound

import (
	"fmt"
	"os"
	"path/filepath"

	"github.com/sbx-dev/sbx/daemon/config"
)

// refuseSystemHostsFile keeps test binaries off the machine's hosts file:
// a test that starts a daemon (or a Runner) without a temp hosts file
// would otherwise edit /etc/hosts of whoever runs the tests, and as root
// (CI, containers) it can. inTest is testing.Testing() in Start.
//
// Auto mode is refused too, whether or not the file is writable here, so
// that the test fails the same way for a developer as it would as root.
func refuseSystemHostsFile(cfg config.Outbound, inTest bool) error {
	if !inTest || (cfg.Mode != config.ModeHosts && cfg.Mode != config.ModeAuto && cfg.Mode != "") {
		return nil
	}
	if !isSystemHostsFile(cfg.HostsFile) {
		return nil
	}
	return fmt.Errorf("outbound hosts mode: refusing to edit the machine's hosts file %s from a test binary; "+
		"give the test a temp hosts file: daemon.Options.HostsFile, outbound.hostsFile in the config file of "+
		"daemon.Options.ConfigPath, or Options.Config.HostsFile when starting an outbound Runner", cfg.HostsFile)
}

// isSystemHostsFile reports whether path is config.DefaultHostsFile,
// also when spelled differently or reached through a link.
func isSystemHostsFile(path string) bool {
	if path == "" {
		return false
	}
	if filepath.Clean(path) == config.DefaultHostsFile {
		return true
	}
	a, err1 := os.Stat(path)
	b, err2 := os.Stat(config.DefaultHostsFile)
	return err1 == nil && err2 == nil && os.SameFile(a, b)
}

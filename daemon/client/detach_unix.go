//go:build unix

package client

import "syscall"

// detachedProcAttr puts the auto-started daemon in a session of its own:
// it has no controlling terminal, so the SIGHUP sent when the user's
// terminal closes, and the Ctrl-C sent to the CLI's process group, never
// reach it.
func detachedProcAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Setsid: true}
}

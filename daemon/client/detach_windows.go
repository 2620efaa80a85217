//go:build windows

package client

import (
	"syscall"

	"golang.org/x/sys/windows"
)

// detachedProcAttr starts the auto-started daemon without a console
// (DETACHED_PROCESS), so closing the user's console window does not end it,
// and in a process group of its own (CREATE_NEW_PROCESS_GROUP), so a Ctrl-C
// or Ctrl-Break in that console, meant for the CLI, never reaches it. Its
// standard handles still go to the daemon log, as on Unix.
func detachedProcAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{
		CreationFlags: windows.CREATE_NEW_PROCESS_GROUP | windows.DETACHED_PROCESS,
	}
}

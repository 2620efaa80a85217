//go:build unix

package main

import (
	"os"
	"syscall"

	"golang.org/x/sys/unix"
)

// detachedProcAttr puts the auto-started daemon in a session of its own:
// it has no controlling terminal, so the SIGHUP sent when the user's
// terminal closes, and the Ctrl-C sent to the CLI's process group, never
// reach it.
func detachedProcAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Setsid: true}
}

// redirectFD makes fd refer to f's open file (dup2), so that a background
// daemon's stderr follows its log file across rotations.
func redirectFD(f *os.File, fd int) error {
	return unix.Dup2(int(f.Fd()), fd)
}

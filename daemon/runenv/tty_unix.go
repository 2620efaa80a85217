//go:build unix

package runenv

import (
	"os"
	"syscall"

	"golang.org/x/sys/unix"
)

// foregroundPgrp returns the foreground process group of the terminal fd.
func foregroundPgrp(fd int) (int, error) {
	return unix.IoctlGetInt(fd, unix.TIOCGPGRP)
}

// ForwardedSignals are the signals `sbx run` relays to its child. SIGTSTP,
// SIGTTIN and SIGTTOU are left to their default (stop sbx with the job),
// SIGKILL and SIGSTOP cannot be caught.
var ForwardedSignals = []os.Signal{
	syscall.SIGINT, syscall.SIGTERM, syscall.SIGHUP, syscall.SIGQUIT,
	syscall.SIGUSR1, syscall.SIGUSR2, syscall.SIGWINCH, syscall.SIGCONT,
}

// InForeground reports whether this process's group is the foreground
// group of its controlling terminal (so terminal-generated signals reach
// the child directly). False when there is no terminal.
func InForeground() bool {
	tty, err := os.Open("/dev/tty")
	if err != nil {
		return false
	}
	defer tty.Close()
	pgrp, err := foregroundPgrp(int(tty.Fd()))
	if err != nil {
		return false
	}
	return pgrp == syscall.Getpgrp()
}

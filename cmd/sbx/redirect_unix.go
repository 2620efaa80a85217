//go:build unix

package main

import (
	"os"

	"golang.org/x/sys/unix"
)

// redirectFD makes fd refer to f's open file (dup2), so that a background
// daemon's stderr follows its log file across rotations.
func redirectFD(f *os.File, fd int) error {
	return unix.Dup2(int(f.Fd()), fd)
}

//go:build windows

package main

import "os"

// redirectFD does nothing on Windows: the daemon's standard handles stay
// on the file they were opened with (and that handle keeps the log from
// being renamed while the daemon runs, so it rotates when it starts).
func redirectFD(*os.File, int) error { return nil }

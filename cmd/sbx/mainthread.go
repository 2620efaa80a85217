package main

import (
	"runtime"

	"github.com/spf13/cobra"
)

// mainThreadAnnotation marks a command that must keep running on the
// process's main OS thread.
const mainThreadAnnotation = "sbx.dev/main-thread"

// needsMainThread reports whether cmd (or a parent) is marked to keep the
// main thread.
func needsMainThread(cmd *cobra.Command) bool {
	for c := cmd; c != nil; c = c.Parent() {
		if c.Annotations[mainThreadAnnotation] == "true" {
			return true
		}
	}
	return false
}

// releaseMainThread gives back the main OS thread that fyne.io/systray's
// init takes (it calls runtime.LockOSThread so that a macOS tray runs on
// the main thread), unless cmd needs it. Only the tray does: every other
// command would otherwise run its main goroutine wired to one OS thread,
// so that each time the goroutine blocks and wakes, the runtime has to
// hand a P to that thread and the kernel has to schedule it. Under load on
// 2 cores that made the p99 of a 1 KiB round trip in `sbx bench tunnel`
// 2–4 ms instead of 0.2–0.3 ms (the same code in a test binary).
//
// It runs in the root command's PersistentPreRunE, on the goroutine that
// called Execute; anywhere but main's goroutine it does nothing.
func releaseMainThread(cmd *cobra.Command) {
	if !needsMainThread(cmd) {
		runtime.UnlockOSThread()
	}
}

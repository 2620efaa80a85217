package main

import (
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

// releaseMainThread makes root give back the main OS thread that
// fyne.io/systray's init takes (it calls runtime.LockOSThread so that a
// macOS tray runs on the main thread) before running any command that does
// not need it; unlock is runtime.UnlockOSThread. Only the tray needs it:
// every other command would otherwise run its main goroutine wired to one
// OS thread, so that each time the goroutine blocks and wakes, the runtime
// has to hand a P to that thread and the kernel has to schedule it. Under
// load on 2 cores that made the p99 of a 1 KiB round trip in `sbx bench
// tunnel` 2–4 ms instead of 0.2–0.3 ms (the same code in a test binary).
//
// It wraps root's PersistentPreRunE, which runs on the goroutine that
// called Execute, so only main may use it: UnlockOSThread undoes one
// LockOSThread of whichever goroutine calls it, and a test calling run
// from a goroutine that locked its thread (for a namespace, say) would
// silently lose that lock. Paths that skip PersistentPreRunE (--help, a
// usage error) keep the thread; they exit at once.
func releaseMainThread(root *cobra.Command, unlock func()) {
	pre := root.PersistentPreRunE
	root.PersistentPreRunE = func(cmd *cobra.Command, args []string) error {
		if !needsMainThread(cmd) {
			unlock()
		}
		if pre != nil {
			return pre(cmd, args)
		}
		return nil
	}
}

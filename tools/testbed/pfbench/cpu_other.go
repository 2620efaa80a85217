//go:build !unix

package pfbench

// cpuTime is not available here; CPU figures are reported as 0.
func cpuTime() int64 { return 0 }

//go:build !windows

package tunnel

// platformReason classifies what ReasonOf's portable cases did not; on
// Unix the syscall.E* constants there already match what dials return.
func platformReason(error) Reason { return ReasonOther }

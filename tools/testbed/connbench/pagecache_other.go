//go:build !linux

package connbench

// dropPageCache does nothing where RSS is not measured (Linux only).
func dropPageCache(string) {}

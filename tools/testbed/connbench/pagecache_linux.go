package connbench

import (
	"os"

	"golang.org/x/sys/unix"
)

// dropPageCache asks the kernel to drop the clean cached pages of the file
// at path that no process maps (best effort: a failure leaves the figures
// as they would have been).
func dropPageCache(path string) {
	f, err := os.Open(path)
	if err != nil {
		return
	}
	defer f.Close()
	_ = unix.Fadvise(int(f.Fd()), 0, 0, unix.FADV_DONTNEED)
}

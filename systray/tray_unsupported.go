//go:build !((linux && !android) || (darwin && cgo && !ios) || windows)

package systray

import (
	"context"
	"fmt"
	"runtime"
)

// Run reports that this build has no tray: fyne.io/systray needs cgo on
// macOS (cross-compiled builds have none) and does not support this OS.
func Run(ctx context.Context, o Options) error {
	if runtime.GOOS == "darwin" {
		return fmt.Errorf("the tray is not supported in this build: macOS needs a cgo build of sbx (CGO_ENABLED=1 go build ./cmd/sbx on a Mac)")
	}
	return fmt.Errorf("the tray is not supported on %s", runtime.GOOS)
}

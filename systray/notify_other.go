//go:build !(linux && !android)

package systray

import (
	"context"
	"errors"
	"runtime"
	"strconv"
)

// notify shows a notification with osascript on macOS. Elsewhere it reports
// errors.ErrUnsupported and the caller falls back to the log.
func notify(ctx context.Context, summary, body string) error {
	if runtime.GOOS != "darwin" {
		return errors.ErrUnsupported
	}
	script := "display notification " + strconv.Quote(body) + " with title " + strconv.Quote(summary)
	return runTool(ctx, []string{"osascript", "-e", script}, "")
}

//go:build (darwin && cgo && !ios) || windows

package systray

import (
	"context"
	"runtime"

	fyne "fyne.io/systray"
)

// Run shows the tray icon until ctx ends or the user picks "Quit tray". It
// must be called from the main goroutine: macOS and Windows run their native
// event loop there (fyne.io/systray locks it at init). Once per process.
func Run(ctx context.Context, o Options) error {
	o, err := o.withDefaults()
	if err != nil {
		return err
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	icon := func(s IconState) []byte { return IconPNG(s, 32) }
	escape := func(s string) string { return s } // macOS menus have no mnemonics
	if runtime.GOOS == "windows" {
		icon = IconICO
		escape = escapeMnemonic("&")
	}
	u := newFyneUI(icon, false, escape)
	done := make(chan error, 1)
	fyne.Run(func() {
		// fyne runs onReady on its own goroutine; the loop's end is
		// awaited below through done.
		err := runLoop(ctx, o, u)
		u.stopForwarders()
		done <- err
		fyne.Quit()
	}, nil)
	// The native loop also ends when the OS closes the tray (log-out):
	// stop the event loop then too.
	cancel()
	return <-done
}

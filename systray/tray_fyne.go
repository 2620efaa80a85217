//go:build (linux && !android) || (darwin && cgo && !ios) || windows

package systray

import (
	"context"
	"sync"

	fyne "fyne.io/systray"
)

// fyneUI shows a View through fyne.io/systray. The library keeps one menu
// per process, so Apply replaces it whole: the menu is small and rebuilt
// only when the view really changed.
type fyneUI struct {
	icons    map[IconState][]byte
	setTitle bool // only the StatusNotifierItem shows the title as a name; macOS would print it in the menu bar
	// escape protects literal mnemonic markers in labels ("_" in dbusmenu,
	// "&" in Win32 menus), which sandbox errors and paths may contain.
	escape func(string) string
	clicks chan Action

	// Forwarders turn the current menu's per-item click channels into
	// Actions on clicks; they are stopped before the menu is replaced.
	cancel context.CancelFunc
	wg     sync.WaitGroup
}

func newFyneUI(icon func(IconState) []byte, setTitle bool, escape func(string) string) *fyneUI {
	u := &fyneUI{icons: map[IconState][]byte{}, setTitle: setTitle, escape: escape, clicks: make(chan Action)}
	for _, s := range []IconState{IconDisconnected, IconConnected, IconDegraded, IconError} {
		u.icons[s] = icon(s)
	}
	return u
}

func (u *fyneUI) Clicks() <-chan Action { return u.clicks }

// Apply shows v: icon, texts, then a fresh menu.
func (u *fyneUI) Apply(v View) {
	fyne.SetIcon(u.icons[v.Icon])
	if u.setTitle {
		fyne.SetTitle(v.Title)
	}
	fyne.SetTooltip(v.Tooltip)

	u.stopForwarders()
	fyne.ResetMenu()
	ctx, cancel := context.WithCancel(context.Background())
	u.cancel = cancel
	for _, it := range v.Items {
		u.add(ctx, nil, it)
	}
}

func (u *fyneUI) add(ctx context.Context, parent *fyne.MenuItem, it Item) {
	if it.Separator {
		if parent == nil {
			fyne.AddSeparator()
		} else {
			parent.AddSeparator()
		}
		return
	}
	var mi *fyne.MenuItem
	if parent == nil {
		mi = fyne.AddMenuItem(u.escape(it.Label), it.Tooltip)
	} else {
		mi = parent.AddSubMenuItem(u.escape(it.Label), it.Tooltip)
	}
	if it.Disabled {
		mi.Disable()
	}
	for _, c := range it.Children {
		u.add(ctx, mi, c)
	}
	if it.Disabled || it.Action.Kind == ActionNone {
		return
	}
	a := it.Action
	u.wg.Add(1)
	go func() {
		defer u.wg.Done()
		for {
			select {
			case <-ctx.Done():
				return
			case _, ok := <-mi.ClickedCh:
				if !ok { // the item was removed
					return
				}
				select {
				case u.clicks <- a:
				case <-ctx.Done():
					return
				}
			}
		}
	}()
}

// stopForwarders ends the current menu's forwarders and waits for them.
func (u *fyneUI) stopForwarders() {
	if u.cancel != nil {
		u.cancel()
		u.cancel = nil
	}
	u.wg.Wait()
}

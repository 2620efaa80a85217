package systray

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"runtime"
	"strings"
	"time"
)

// ErrNoClipboard is returned (wrapped) when no clipboard tool is installed.
var ErrNoClipboard = errors.New("no clipboard tool found")

// clipboardCommands lists the commands that can put text on the clipboard
// on goos, most fitting first: wl-copy on a Wayland session, then the X11
// tools.
func clipboardCommands(goos string, getenv func(string) string) [][]string {
	switch goos {
	case "darwin":
		return [][]string{{"pbcopy"}}
	case "windows":
		return [][]string{{"clip.exe"}}
	}
	x11 := [][]string{{"xclip", "-selection", "clipboard", "-in"}, {"xsel", "--clipboard", "--input"}}
	wayland := [][]string{{"wl-copy"}}
	if getenv("WAYLAND_DISPLAY") != "" {
		return append(wayland, x11...)
	}
	return append(x11, wayland...)
}

// clipboardHint says what to install when no clipboard tool exists.
func clipboardHint(goos string) string {
	switch goos {
	case "darwin":
		return "pbcopy is missing from PATH"
	case "windows":
		return "clip.exe is missing from PATH"
	}
	return "install wl-clipboard (Wayland) or xclip or xsel (X11)"
}

// copyToClipboard puts text on the clipboard with the first tool of
// clipboardCommands that exists.
func copyToClipboard(ctx context.Context, text string) error {
	cmds := clipboardCommands(runtime.GOOS, os.Getenv)
	for _, argv := range cmds {
		if _, err := exec.LookPath(argv[0]); err != nil {
			continue
		}
		return runTool(ctx, argv, text)
	}
	return fmt.Errorf("%w (%s)", ErrNoClipboard, clipboardHint(runtime.GOOS))
}

// runTool runs a short-lived helper with text on stdin. Its stdout and
// stderr are not captured through pipes on purpose: xclip and wl-copy fork
// a child that keeps serving the selection, and that child would hold the
// pipes open and make Wait block until the clipboard changes hands.
func runTool(ctx context.Context, argv []string, stdin string) error {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, argv[0], argv[1:]...)
	cmd.Stdin = strings.NewReader(stdin)
	cmd.WaitDelay = time.Second
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("%s: %w", argv[0], err)
	}
	return nil
}

// openCommand is the command that opens path in the user's default
// application on goos.
func openCommand(goos, path string) []string {
	switch goos {
	case "darwin":
		return []string{"open", path}
	case "windows":
		return []string{"rundll32", "url.dll,FileProtocolHandler", path}
	}
	return []string{"xdg-open", path}
}

// openFile shows path in the default application. The opener is killed if
// the tray quits while it still runs; the application it started is not.
func openFile(ctx context.Context, path string) error {
	if _, err := os.Stat(path); err != nil {
		return fmt.Errorf("daemon log %s: %w (the daemon writes it when it runs in the background; start it with `sbx daemon start`)", path, err)
	}
	argv := openCommand(runtime.GOOS, path)
	if _, err := exec.LookPath(argv[0]); err != nil {
		return fmt.Errorf("cannot open %s: %s not found (open the file by hand)", path, argv[0])
	}
	cmd := exec.CommandContext(ctx, argv[0], argv[1:]...)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	cmd.WaitDelay = time.Second
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("open %s with %s: %w %s", path, argv[0], err, strings.TrimSpace(stderr.String()))
	}
	return nil
}

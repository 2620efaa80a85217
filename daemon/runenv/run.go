package runenv

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"syscall"
)

// RunOptions describe a child process.
type RunOptions struct {
	Args   []string // the command and its arguments; Args[0] is looked up in PATH
	Env    []string // the whole environment (Env.Environ(os.Environ()))
	Dir    string
	Stdin  io.Reader
	Stdout io.Writer
	Stderr io.Writer
	// Signals delivers the signals to forward (the CLI subscribes with
	// signal.Notify(ch, ForwardedSignals...)). nil forwards nothing.
	Signals <-chan os.Signal
	// SkipTerminalSignals drops SIGINT and SIGQUIT instead of forwarding
	// them: set it when sbx and the child share the terminal's foreground
	// process group, where a Ctrl-C already reaches the child and
	// forwarding it would deliver it twice (some programs, like debuggers,
	// treat a second interrupt as "quit now").
	SkipTerminalSignals bool
}

// Run starts the command and waits for it, forwarding signals meanwhile.
// It returns the child's exit code, or 128+N when signal N killed it (as
// shells report it). err is set only when the command could not start.
// ctx cancellation sends SIGTERM to the child (and still waits for it).
func Run(ctx context.Context, o RunOptions) (int, error) {
	if len(o.Args) == 0 {
		return 0, errors.New("no command to run: give it after --, e.g. sbx run NAME -- go run ./cmd/driver")
	}
	path, err := exec.LookPath(o.Args[0])
	if err != nil {
		return 0, startError(o.Args[0], err)
	}
	cmd := &exec.Cmd{Path: path, Args: o.Args, Env: o.Env, Dir: o.Dir, Stdin: o.Stdin, Stdout: o.Stdout, Stderr: o.Stderr}
	if err := cmd.Start(); err != nil {
		return 0, startError(o.Args[0], err)
	}
	waited := make(chan error, 1)
	go func() { waited <- cmd.Wait() }()
	ctxDone := ctx.Done()
	for {
		select {
		case sig := <-o.Signals:
			if o.SkipTerminalSignals && (sig == syscall.SIGINT || sig == syscall.SIGQUIT) {
				continue
			}
			_ = cmd.Process.Signal(sig)
		case <-ctxDone:
			ctxDone = nil
			_ = cmd.Process.Signal(syscall.SIGTERM)
		case err := <-waited:
			return exitCode(cmd.ProcessState, err)
		}
	}
}

// StartError is Run's error when the command could not start. Code is
// what a POSIX shell exits with then: 127 when the command was not found,
// 126 when it was found but could not be executed (no permission, not an
// executable).
type StartError struct {
	Command string
	Code    int
	Err     error
}

func (e *StartError) Error() string {
	return fmt.Sprintf("cannot run %q: %v", e.Command, e.Err)
}

func (e *StartError) Unwrap() error { return e.Err }

func startError(command string, err error) *StartError {
	code := 126
	if errors.Is(err, exec.ErrNotFound) || errors.Is(err, fs.ErrNotExist) {
		code = 127
	}
	return &StartError{Command: command, Code: code, Err: err}
}

func exitCode(ps *os.ProcessState, err error) (int, error) {
	if ps == nil {
		return 0, err
	}
	if ws, ok := ps.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
		return 128 + int(ws.Signal()), nil
	}
	return ps.ExitCode(), nil
}

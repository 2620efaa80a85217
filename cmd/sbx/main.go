// Command sbx runs one microservice on your laptop as part of a shared
// Kubernetes staging cluster. One binary holds the CLI, the laptop daemon
// (`sbx daemon`) and the in-cluster relay (`sbx relay`).
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"runtime"
	"syscall"
)

// version is stamped at build time with -ldflags "-X main.version=…".
var version = ""

func main() {
	ctx, stop := signalContext(os.Interrupt, syscall.SIGTERM)
	// Only here, on main's goroutine, is the OS-thread lock the one
	// fyne.io/systray took at init (see releaseMainThread).
	code := execute(ctx, os.Args[1:], os.Stdin, os.Stdout, os.Stderr, runtime.UnlockOSThread)
	stop()
	os.Exit(code)
}

// signalCause is the cause of a context that signalContext ended.
type signalCause struct{ sig os.Signal }

func (c signalCause) Error() string { return c.sig.String() + " signal received" }

// signalContext is signal.NotifyContext that also records which signal
// ended it (context.Cause), so the exit code can be the shell's 128+N:
// 130 after Ctrl-C, 143 after SIGTERM. stop releases the signals and
// waits for the watching goroutine.
func signalContext(sigs ...os.Signal) (ctx context.Context, stop func()) {
	ctx, cancel := context.WithCancelCause(context.Background())
	ch := make(chan os.Signal, 1)
	signal.Notify(ch, sigs...)
	done := make(chan struct{})
	exited := make(chan struct{})
	go func() {
		defer close(exited)
		select {
		case s := <-ch:
			cancel(signalCause{s})
		case <-done:
		}
	}()
	return ctx, func() {
		signal.Stop(ch)
		close(done)
		<-exited
		cancel(nil)
	}
}

// signalExitCode is the exit code of a command that a signal ended: 128+N
// for signal N as shells report it, exitInterrupted (Ctrl-C's) when the
// signal is not known (tests cancel without one).
func signalExitCode(ctx context.Context) int {
	var sc signalCause
	if errors.As(context.Cause(ctx), &sc) {
		if n, ok := sc.sig.(syscall.Signal); ok {
			return 128 + int(n)
		}
	}
	return exitInterrupted
}

// run executes the CLI with the given arguments and streams and returns the
// process exit code. Tests call it in-process: it leaves the calling
// goroutine's OS-thread lock alone.
// opts change the global options (tests swap what the CLI reaches
// outside the process through).
func run(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer, opts ...func(*globalOptions)) int {
	return execute(ctx, args, stdin, stdout, stderr, nil, opts...)
}

// execute is run; unlock, when set, gives back the main OS thread before
// every command but the tray (releaseMainThread).
func execute(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer, unlock func(), opts ...func(*globalOptions)) int {
	root := newRootCmd(newBuildInfo(version), stdin, stdout, stderr, opts...)
	if unlock != nil {
		releaseMainThread(root, unlock)
	}
	root.SetArgs(args)
	if err := root.ExecuteContext(ctx); err != nil {
		err = interrupted(ctx, err)
		if msg := formatError(err); msg != "" {
			fmt.Fprintln(stderr, msg)
		}
		code := exitCode(err)
		if code == exitInterrupted {
			code = signalExitCode(ctx)
		}
		return code
	}
	return 0
}

// interrupted is err as the user should see it: after Ctrl-C (ctx ended),
// an error sbx did not explain is what broke as the command was torn down
// ("context canceled", a closed connection), so it is reported as the
// interruption rather than as a failure.
func interrupted(ctx context.Context, err error) error {
	var ce *cliError
	if ctx.Err() == nil || errors.As(err, &ce) {
		return err
	}
	return &cliError{kind: kindUser, err: errors.New("interrupted"), code: exitInterrupted}
}

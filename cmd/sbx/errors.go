package main

import (
	"errors"
	"fmt"
)

// errorKind categorises a failure so the CLI can decide how to report it:
// a user error is explained, a bug points the user at the logs.
type errorKind int

const (
	kindUser errorKind = iota + 1
	kindConfig
	kindBug
)

// cliError carries an error with its category and an optional hint that
// says what to do next.
type cliError struct {
	kind errorKind
	err  error
	hint string
	code int
}

func (e *cliError) Error() string { return e.err.Error() }
func (e *cliError) Unwrap() error { return e.err }

// userError marks err as caused by the user's input.
func userError(err error, hint string) error {
	return &cliError{kind: kindUser, err: err, hint: hint, code: 2}
}

// stateError is a failure outside the user's input that the hint says
// how to fix (exit code 1): the daemon is not running, a sandbox is not
// ready.
func stateError(err error, hint string) error {
	return &cliError{kind: kindUser, err: err, hint: hint, code: 1}
}

// exitError returns an error that only sets the exit code; its message has
// already been printed.
func exitError(code int) error {
	return &cliError{kind: kindUser, err: errSilent, code: code}
}

var errSilent = errors.New("")

// exitInterrupted is the exit code after Ctrl-C (SIGINT), as a shell
// reports a process that SIGINT ended: 128+2. execute turns it into
// 128+N for the signal that really ended the command (signalExitCode).
const exitInterrupted = 130

func formatError(err error) string {
	var ce *cliError
	if errors.As(err, &ce) {
		if ce.err == errSilent {
			return ""
		}
		msg := "sbx: " + ce.err.Error()
		if ce.hint != "" {
			msg += "\n  hint: " + ce.hint
		}
		if ce.kind == kindBug {
			msg += "\n  this looks like a bug in sbx; the daemon log (`sbx logs`) has details"
		}
		return msg
	}
	return fmt.Sprintf("sbx: %v", err)
}

func exitCode(err error) int {
	var ce *cliError
	if errors.As(err, &ce) && ce.code != 0 {
		return ce.code
	}
	return 1
}

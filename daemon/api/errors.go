package api

import (
	"errors"
	"fmt"
	"net/http"
)

// APIError is an error answer of the daemon ({"error": "...", "kind":
// "..."}).
type APIError struct {
	StatusCode int
	Message    string
	// Kind says whose the failure is, so a client reports it without
	// guessing from the status code.
	Kind ErrorKind
}

// ErrorKind is what an error answer is about; the daemon sets it with the
// error that caused the answer.
type ErrorKind string

const (
	// KindUser: the request is the user's to fix (a bad spec, an unknown
	// or conflicting sandbox); the message says how.
	KindUser ErrorKind = "user"
	// KindStopping: the daemon is stopping and broke the request off; the
	// message says what may be left and how to finish.
	KindStopping ErrorKind = "stopping"
	// KindCluster: the cluster refused or failed (RBAC, credentials, a
	// webhook); the message carries the next step its cause calls for.
	KindCluster ErrorKind = "cluster"
	// KindClusterTimeout: the cluster did not answer in time.
	KindClusterTimeout ErrorKind = "cluster-timeout"
	// KindInternal: a failure of the daemon itself (a bug); its log has
	// the details.
	KindInternal ErrorKind = "internal"
)

// Error returns the daemon's message.
func (e *APIError) Error() string { return e.Message }

// NotRunningError means no daemon answers on the socket.
type NotRunningError struct {
	Socket string
	Err    error
}

// Error says that no daemon runs and how to start one.
func (e *NotRunningError) Error() string {
	return fmt.Sprintf("the sbx daemon is not running (nothing answers on %s); start it with `sbx daemon`, or run any command that needs it", e.Socket)
}

// Unwrap returns the dial error.
func (e *NotRunningError) Unwrap() error { return e.Err }

// ConnectError is a waiting connect that ended without a ready sandbox.
type ConnectError struct {
	Sandbox string
	Phase   Phase
	Message string
	// Kind is KindUser when the spec does not fit the cluster (see
	// Progress.ErrorKind).
	Kind ErrorKind
	// DaemonStopping: the daemon's shutdown broke the connect off.
	DaemonStopping bool
}

// Error returns the daemon's explanation.
func (e *ConnectError) Error() string { return e.Message }

// WatchDroppedMessage is the error line a watch stream ends with when the
// daemon dropped its reader for falling behind.
const WatchDroppedMessage = "watcher fell behind and was dropped; watch again to get a fresh snapshot"

// ErrWatchDropped ends a watch whose reader fell behind; watch again for a
// fresh snapshot.
var ErrWatchDropped = errors.New(WatchDroppedMessage)

// IsNotFound reports whether err is the daemon saying the sandbox is
// unknown.
func IsNotFound(err error) bool {
	var ae *APIError
	return errors.As(err, &ae) && ae.StatusCode == http.StatusNotFound
}

// IsNotRunning reports whether err means no daemon is running.
func IsNotRunning(err error) bool {
	var nr *NotRunningError
	return errors.As(err, &nr)
}

// Package daemon is the laptop daemon: one session per sandbox with a
// reconnecting supervisor, inbound mapping to local addresses, the local
// API on a unix socket and its Go client.
//
// # Local API
//
// HTTP+JSON on $XDG_RUNTIME_DIR/sbx/sbx.sock (or ~/.sbx/sbx.sock), in a 0700
// directory, socket 0600. An flock on sbx.lock next to it makes the daemon
// one per user; a socket left by a crashed daemon is taken over. The socket
// opens first and requests wait until the state is loaded, so a client
// never races start-up. Requests with Origin or Referer, or a Host other
// than local.sbx/localhost, are refused (browsers). Errors are
// {"error": "...", "kind": "..."} and come back from the client as
// *api.APIError, whose Kind (api.ErrorKind) says whose the failure is.
//
//	GET    /v1/status               Status
//	GET    /v1/watch                NDJSON Events: a snapshot, then changes
//	GET    /v1/sandboxes/{name}     SandboxStatus
//	PUT    /v1/sandboxes/{name}     connect (ConnectRequest); with wait, NDJSON Progress
//	DELETE /v1/sandboxes/{name}     disconnect: stop and delete cluster objects
//	                                (?orphan=true: delete a sandbox this daemon does not own;
//	                                ?forget=true: drop it here, leave the cluster alone)
//	DELETE /v1/sandboxes            disconnect all
//	GET    /v1/list                 ListResult (daemon + cluster, orphans marked)
//	POST   /v1/gc                   GCResult
//	GET    /v1/logs                 LogsInfo (answers before readiness)
//	POST   /v1/shutdown             stop the daemon, keep the sandboxes
//
// A watcher's queue is bounded; one that falls behind is dropped (its
// stream ends with an error line, Client returns ErrWatchDropped) so it
// can never stall the daemon.
//
// # Sessions
//
// Each sandbox has a supervisor: apply the objects (Cluster.Apply), wait
// for the relay pod, dial the tunnel pool through the port-forward, hand-
// shake, ready. Any failure leads to a retry after a jittered exponential
// backoff (0.5 s to 30 s, started over after every connection that became ready), with
// the objects re-applied and the relay pod looked up again. A
// PermanentError stops the supervisor in PhaseFailed until the user
// connects again. The Lease is renewed while connected.
//
// Inbound streams are dialed to the mapping's toLocal. Once connected they
// have no idle timeout: a request paused in a debugger completes whenever it
// resumes. A refused dial is answered with tunnel.ReasonRefused and a
// message the relay shows in its 502.
//
// # Outbound access
//
// While the daemon has a sandbox and outbound.mode is not off, local
// processes reach cluster Services by their cluster names (package
// daemon/outbound): discovery watches the Services of the sandboxes'
// namespaces plus outbound.namespaces (one watcher per namespace; sbx's
// own Services left out), and the Manager offers them in hosts mode (a
// marked block in the hosts file, one loopback IP per Service) or proxy
// mode (SOCKS5 and HTTP on 127.0.0.1). The config's outbound section
// applies live; disconnecting the last sandbox or stopping the daemon
// removes the block and closes the listeners.
//
// A connection goes through the tunnel of the sandbox whose namespaces
// include the target's namespace when it is ready, else of any ready
// sandbox (by name). With sandboxes in several clusters, a namespace is
// watched in the cluster of the first sandbox (by name) that has it, and
// outbound.namespaces in the first sandbox's cluster. outbound.injectBaggage
// adds a routing key only while the daemon has exactly one sandbox: with
// several, a request cannot be attributed to one. Status.Outbound reports
// the mode, the proxy address or hosts file, the Services and the
// namespaces not listed yet (RBAC); `sbx run` reads outbound.proxyAddr.
//
// # State and tokens
//
// $XDG_STATE_HOME/sbx/state.json (0600 in a 0700 directory, written
// atomically) keeps each sandbox's name, routing key, kube context, spec
// and tunnel token, so a restarted daemon reconnects them with the same
// keys and tokens: its apply changes nothing, and the relays do not roll.
//
// The daemon mints each sandbox's token (cluster.NewToken, 256 random
// bits) and this file is the only place it is kept. The cluster gets its
// SHA-256 (tunnel.VerifierOf), the relay's --token-sha256, which checks a
// Hello but cannot make one: a colleague who may read the relay Deployment
// cannot connect as this daemon. The token never appears in status, logs
// or errors.
//
// A new token means a new verifier, which rolls the relay: a new sandbox,
// a state file lost (the sandbox is connected again), or `sbx connect NAME
// --rotate-token` (ConnectRequest.RotateToken). A rotation while connected
// keeps the tunnel: the daemon applies the new verifier, new sessions use
// the new token, and they move to the new relay pod when the old one
// drains, as in any rollout. The daemon waits only for relay pods that
// check its own verifier (cluster.Ref.TokenVerifier).
//
// Only applies this daemon chose may replace another verifier: the first
// after minting a token, or after the user connects again. When the
// daemon re-applies on its own (a lost tunnel, a config change) and finds
// another verifier, another daemon connected the sandbox with its own
// token since (or someone edited the Deployment): it stops in PhaseFailed
// with ErrVerifierMismatch and says how to take the sandbox back, instead
// of taking it back and breaking the other's tunnel in turn.
package daemon

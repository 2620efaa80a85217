// Package live is sbx's adapter to real clusters: it opens them from
// kubeconfig as kubectl would (caching one connection per source and
// resolved context), runs package cluster's operations on them, dials the
// relays through port-forwards, keeps a connected sandbox's routes in
// place, and explains the API server's refusals and silences with the
// next step their cause calls for. The daemon uses it through its
// Cluster interface; it knows nothing of the daemon.
package live

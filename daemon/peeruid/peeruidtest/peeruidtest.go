// Package peeruidtest runs a helper of the current test binary as another
// user, for tests of loopback listeners that must refuse other users'
// processes (peeruid.Guard). It is for tests only.
package peeruidtest

// Nobody is the uid and gid a helper runs as ("nobody" on Linux).
const Nobody = 65534

// HelperEnv is set in a helper's environment; a helper test returns at
// once (skips) when it is not.
const HelperEnv = "SBX_PEERUID_HELPER"

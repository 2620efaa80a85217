//go:build windows

package runenv

import "os"

// ForwardedSignals are the signals `sbx run` relays to its child. On
// Windows there is nothing to relay: os.Process.Signal supports only Kill,
// and a Ctrl-C or Ctrl-Break reaches every process attached to the
// console, the child included, directly. sbx still subscribes to
// os.Interrupt so the Ctrl-C does not end sbx before its child has exited
// (InForeground is true, so Run drops it rather than forwarding it).
var ForwardedSignals = []os.Signal{os.Interrupt}

// InForeground is always true on Windows: console control events go to
// all processes sharing the console, so a Ctrl-C reaches the child without
// sbx forwarding it (and without a console there is no Ctrl-C at all).
func InForeground() bool { return true }

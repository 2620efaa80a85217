package outbound

import (
	"fmt"
	"math/rand/v2"
	"net/netip"
	"os"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/sbx-dev/sbx/daemon/peeruid/peeruidtest"
)

// randomRange is a hosts range picked at run time, so that another test
// run on the same machine is unlikely to listen on the same addresses
// (ranges fixed in other tests stay out of it).
func randomRange(t *testing.T) string {
	t.Helper()
	for {
		b := 128 + rand.IntN(112)
		if b != 241 && b != 244 && b != 246 && b != 247 {
			return fmt.Sprintf("127.%d.0.0/16", b)
		}
	}
}

// TestHostsRefusesOtherUsers: a hosts-mode address closes a connection
// from another user's process without dialing through the tunnel; the
// same client as the test's own user is forwarded. Linux only, as root.
func TestHostsRefusesOtherUsers(t *testing.T) {
	e := newHostsEnv(t)
	e.cat.Apply(added(svc("hotrod", "driver", 8082)))
	h, _, _ := e.start(t, randomRange(t))
	addr := listening(t, h, "hotrod/driver", 8082)

	r := peeruidtest.Exchange(t, true, addr, "from nobody")
	require.Equal(t, peeruidtest.Nobody, r.UID)
	require.Empty(t, r.Reply, "%+v", r)
	require.Empty(t, e.si.dialed(), "nothing dialed for another user")

	r = peeruidtest.Exchange(t, false, addr, "from me")
	require.Equal(t, os.Getuid(), r.UID)
	require.Equal(t, "driver.hotrod.svc.cluster.local:8082|from me", r.Reply, "%+v", r)
}

// listening waits until h listens for service's port and returns the
// address.
func listening(t *testing.T, h *Hosts, service string, port int32) string {
	t.Helper()
	var addr string
	require.Eventually(t, func() bool {
		for _, s := range h.Status() {
			for _, p := range s.Ports {
				if s.Service == service && p.Port == port && p.Listening {
					addr = netip.AddrPortFrom(s.IP, uint16(port)).String()
					return true
				}
			}
		}
		return false
	}, 10*time.Second, 5*time.Millisecond, "%s port %d never listened", service, port)
	return addr
}

// TestPeerExchangeHelper is not a test: peeruidtest.Exchange runs it in a
// helper process, as another user or as the test's own.
func TestPeerExchangeHelper(t *testing.T) { peeruidtest.ServeExchange(t) }

package outbound

import (
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/netip"
	"os"
	"strings"
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

// peerReport is what TestPeerHelper saw.
type peerReport struct {
	UID   int    `json:"uid"`
	Reply string `json:"reply"`
	Err   string `json:"err"`
}

func runPeer(t *testing.T, asNobody bool, addr, msg string) peerReport {
	t.Helper()
	cmd := peeruidtest.Command(t, asNobody, "TestPeerHelper", "SBX_TEST_ADDR="+addr, "SBX_TEST_MSG="+msg)
	var stderr strings.Builder
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	require.NoError(t, err, "helper: %s", stderr.String())
	var r peerReport
	require.NoError(t, json.Unmarshal(out, &r), "helper printed %q; stderr: %s", out, stderr.String())
	return r
}

// TestHostsRefusesOtherUsers: a hosts-mode address closes a connection
// from another user's process without dialing through the tunnel; the
// same client as the test's own user is forwarded. Linux only, as root.
func TestHostsRefusesOtherUsers(t *testing.T) {
	e := newHostsEnv(t)
	e.cat.Apply(added(svc("hotrod", "driver", 8082)))
	h, _, _ := e.start(t, randomRange(t))
	addr := listening(t, h, "hotrod/driver", 8082)

	r := runPeer(t, true, addr, "from nobody")
	require.Equal(t, peeruidtest.Nobody, r.UID)
	require.Empty(t, r.Reply, "%+v", r)
	require.Empty(t, e.si.dialed(), "nothing dialed for another user")

	r = runPeer(t, false, addr, "from me")
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

// TestPeerHelper is not a test: TestHostsRefusesOtherUsers runs it, as
// another user and as its own. It sends $SBX_TEST_MSG to $SBX_TEST_ADDR,
// half-closes and prints a peerReport with the reply.
func TestPeerHelper(t *testing.T) {
	if os.Getenv(peeruidtest.HelperEnv) == "" {
		t.Skip("helper process")
	}
	r := peerReport{UID: os.Getuid()}
	c, err := net.DialTimeout("tcp", os.Getenv("SBX_TEST_ADDR"), 10*time.Second)
	if err == nil {
		_ = c.SetDeadline(time.Now().Add(20 * time.Second))
		_, err = io.WriteString(c, os.Getenv("SBX_TEST_MSG"))
		if err == nil {
			err = c.(*net.TCPConn).CloseWrite()
		}
		var b []byte
		if err == nil {
			b, err = io.ReadAll(c)
		}
		r.Reply = string(b)
		_ = c.Close()
	}
	if err != nil {
		r.Err = err.Error()
	}
	b, _ := json.Marshal(r)
	fmt.Println(string(b))
	os.Exit(0)
}

package sim

import (
	"bufio"
	"context"
	"strings"
	"testing"
	"time"

	"github.com/sbx-dev/sbx/cluster/podstate"
	"github.com/sbx-dev/sbx/cluster/portforward"
	"github.com/stretchr/testify/require"
	coordv1 "k8s.io/api/coordination/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// TestPortForwardToRelay reaches the relay's loopback tunnel port with the
// real client-go port-forward path through the simulator's pftest server.
func TestPortForwardToRelay(t *testing.T) {
	c := startWithFakeRelay(t)
	ctx := context.Background()
	ns := AppNamespace
	lease, err := c.Clients.Kube.CoordinationV1().Leases(ns).Create(ctx, &coordv1.Lease{ObjectMeta: metav1.ObjectMeta{Name: "sbx-carol", Namespace: ns}}, metav1.CreateOptions{})
	require.NoError(t, err)
	secret, dep, _ := relayObjects(ns, "carol", "tok-carol", string(lease.UID))
	_, err = c.Clients.Kube.CoreV1().Secrets(ns).Create(ctx, secret, metav1.CreateOptions{})
	require.NoError(t, err)
	_, err = c.Clients.Kube.AppsV1().Deployments(ns).Create(ctx, dep, metav1.CreateOptions{})
	require.NoError(t, err)
	require.Eventually(t, func() bool {
		p := relayPodObject(t, c, ns, "carol")
		return p != nil && podstate.Ready(p)
	}, 10*time.Second, 10*time.Millisecond)

	d, err := portforward.New(portforward.Config{
		REST: c.RESTConfig, Client: c.Clients.Kube, Namespace: ns,
		Selector: "sbx.dev/sandbox=carol", Port: 7000, Logger: testLogger(t),
	})
	require.NoError(t, err)
	defer d.Close()
	read := func() string {
		conn, err := d.Dial(ctx)
		require.NoError(t, err)
		defer conn.Close()
		line, err := bufio.NewReader(conn).ReadString('\n')
		require.NoError(t, err)
		return strings.TrimSpace(line)
	}
	require.Equal(t, "token=tok-carol", read())

	// Fault switches: refused for a while, then fine again.
	require.GreaterOrEqual(t, c.PortForward.CutAll(), 0)
	c.PortForward.RefuseFor(time.Hour)
	_, err = d.Dial(ctx)
	require.Error(t, err)
	c.PortForward.RefuseFor(0)
	require.Eventually(t, func() bool {
		conn, err := d.Dial(ctx)
		if err != nil {
			return false
		}
		conn.Close()
		return true
	}, 10*time.Second, 20*time.Millisecond)
	require.Equal(t, "token=tok-carol", read())
}

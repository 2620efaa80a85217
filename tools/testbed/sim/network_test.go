package sim

import (
	"context"
	"errors"
	"net"
	"syscall"
	"testing"

	"github.com/stretchr/testify/require"
)

func TestNetworkResolve(t *testing.T) {
	n := NewNetwork("")
	ip, err := n.AllocateServiceIP("hotrod", "driver")
	require.NoError(t, err)
	require.True(t, serviceCIDR.Contains(ip))
	again, err := n.AllocateServiceIP("hotrod", "driver")
	require.NoError(t, err)
	require.Equal(t, ip, again)
	other, err := n.AllocateServiceIP("default", "driver")
	require.NoError(t, err)
	require.NotEqual(t, ip, other)

	ctx := context.Background()
	in := n.Resolver("hotrod")
	out := n.Resolver("default")
	for _, tc := range []struct {
		r    *Resolver
		host string
		want string // "" = not found
	}{
		{in, "driver", ip.String()},
		{in, "DRIVER", ip.String()},
		{in, "driver.hotrod", ip.String()},
		{in, "driver.hotrod.svc", ip.String()},
		{in, "driver.hotrod.svc.cluster.local", ip.String()},
		{in, "driver.hotrod.svc.cluster.local.", ip.String()},
		{out, "driver", other.String()},
		{out, "driver.hotrod", ip.String()},
		{in, "driver.hotrod.svc.cluster", ""},
		{in, "route", ""},
		{in, "driver.hotrod.svc.cluster.local.example.com", ""},
		{in, "10.1.2.3", "10.1.2.3"},
	} {
		got, err := tc.r.LookupHost(ctx, tc.host)
		if tc.want == "" {
			var dnsErr *net.DNSError
			require.ErrorAs(t, err, &dnsErr, tc.host)
			require.True(t, dnsErr.IsNotFound)
			continue
		}
		require.NoError(t, err, tc.host)
		require.Equal(t, []string{tc.want}, got, "%s from %s", tc.host, tc.r.Namespace())
	}
}

func TestNetworkDial(t *testing.T) {
	n := NewNetwork("cluster.local")
	ctx := context.Background()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	defer ln.Close()
	accepted := make(chan net.Conn, 4)
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				close(accepted)
				return
			}
			accepted <- c
		}
	}()

	_, err = n.AllocateServiceIP("hotrod", "driver")
	require.NoError(t, err)
	require.NoError(t, n.SetServicePort("hotrod", "driver", 8082, ln.Addr().String()))
	podIP, err := n.AddPod("hotrod", "relay-abc")
	require.NoError(t, err)
	require.True(t, podCIDR.Contains(podIP))
	require.NoError(t, n.BindPodPort("hotrod", "relay-abc", 20001, ln.Addr().String(), false))
	require.NoError(t, n.BindPodPort("hotrod", "relay-abc", 7000, ln.Addr().String(), true))

	r := n.PodResolver("hotrod", map[string]string{"app": "x"})
	c, err := r.DialContext(ctx, "tcp", "driver.hotrod.svc.cluster.local:8082")
	require.NoError(t, err)
	require.Equal(t, "10.96.0.1:8082", c.RemoteAddr().String(), "the caller sees the ClusterIP")
	srv := <-accepted
	src, ok := n.SourceOf(srv.RemoteAddr().String())
	require.True(t, ok)
	require.Equal(t, "hotrod", src.Namespace)
	require.Equal(t, "x", src.Labels["app"])
	require.NoError(t, c.Close())
	_, ok = n.SourceOf(srv.RemoteAddr().String())
	require.False(t, ok, "forgotten on close")
	srv.Close()

	// Pod IP: reachable port, loopback-only port, nothing listening.
	c, err = r.DialContext(ctx, "tcp", net.JoinHostPort(podIP.String(), "20001"))
	require.NoError(t, err)
	c.Close()
	(<-accepted).Close()
	for _, addr := range []string{net.JoinHostPort(podIP.String(), "7000"), "driver:9999", "10.96.0.1:1"} {
		_, err = r.DialContext(ctx, "tcp", addr)
		require.True(t, errors.Is(err, syscall.ECONNREFUSED), "%s: %v", addr, err)
	}
	_, err = r.DialContext(ctx, "tcp", "nope.hotrod:80")
	var dnsErr *net.DNSError
	require.ErrorAs(t, err, &dnsErr)

	// The port-forward path reaches the loopback-only socket.
	addr, err := n.PodPortAddr("hotrod", "relay-abc", 7000)
	require.NoError(t, err)
	require.Equal(t, ln.Addr().String(), addr)
	_, err = n.PodPortAddr("hotrod", "relay-abc", 7001)
	require.ErrorContains(t, err, "nothing listens on port 7001")
	n.UnbindPodPort("hotrod", "relay-abc", 20001)
	_, err = r.DialContext(ctx, "tcp", net.JoinHostPort(podIP.String(), "20001"))
	require.ErrorIs(t, err, syscall.ECONNREFUSED)
	n.RemovePod("hotrod", "relay-abc")
	_, err = n.PodPortAddr("hotrod", "relay-abc", 7000)
	require.ErrorContains(t, err, "not found")

	n.RemoveService("hotrod", "driver")
	_, err = r.LookupHost(ctx, "driver")
	require.ErrorAs(t, err, &dnsErr)
}

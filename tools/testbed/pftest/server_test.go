package pftest_test

import (
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"
	"k8s.io/apimachinery/pkg/util/httpstream"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/portforward"
	"k8s.io/client-go/transport/spdy"
	streamhttp "k8s.io/streaming/pkg/httpstream"

	"github.com/sbx-dev/sbx/tools/testbed/pftest"
	"github.com/sbx-dev/sbx/tunnel/tunneltest"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m,
		goleak.IgnoreTopFunction("k8s.io/klog/v2.(*flushDaemon).run.func1"),
		goleak.IgnoreTopFunction("github.com/moby/spdystream.(*Connection).shutdown"),
		// The kubelet handler (cri-streaming) blocks forever closing a stream
		// whose reply could not be sent because the connection died during
		// setup: a known leak of the real kubelet code, not of sbx.
		goleak.IgnoreAnyFunction("github.com/moby/spdystream.(*Stream).waitWriteReply"),
	)
}

func echoServer(t *testing.T) string {
	t.Helper()
	return tunneltest.Serve(t, tunneltest.Echo).Addr().String()
}

// kubectlDialer builds the dialer exactly as kubectl port-forward does.
func kubectlDialer(t *testing.T, cfg *rest.Config, u *url.URL) httpstream.Dialer {
	t.Helper()
	transport, upgrader, err := spdy.RoundTripperFor(cfg)
	require.NoError(t, err)
	dialer := spdy.NewDialer(upgrader, &http.Client{Transport: transport}, http.MethodPost, u)
	tunneling, err := portforward.NewSPDYOverWebsocketDialer(u, cfg)
	require.NoError(t, err)
	return portforward.NewFallbackDialer(tunneling, dialer, func(err error) bool {
		return httpstream.IsUpgradeFailure(err) || streamhttp.IsUpgradeFailure(err) || httpstream.IsHTTPSProxyError(err)
	})
}

func TestKubectlPortForward(t *testing.T) {
	for _, disableWS := range []bool{false, true} {
		t.Run(fmt.Sprintf("websocket-tunnel-disabled=%v", disableWS), func(t *testing.T) {
			target := echoServer(t)
			var mu sync.Mutex
			var gotNS, gotPod string
			var gotPort int32
			srv, err := pftest.New(pftest.Options{
				DisableWebSocketTunnel: disableWS,
				Resolve: func(ns, pod string, port int32) (string, error) {
					mu.Lock()
					defer mu.Unlock()
					gotNS, gotPod, gotPort = ns, pod, port
					return target, nil
				},
			})
			require.NoError(t, err)
			defer srv.Close()

			u, err := url.Parse(srv.URL() + "/api/v1/namespaces/hotrod/pods/relay-1/portforward")
			require.NoError(t, err)
			stop := make(chan struct{})
			ready := make(chan struct{})
			pf, err := portforward.NewOnAddresses(kubectlDialer(t, srv.RESTConfig(), u), []string{"127.0.0.1"},
				[]string{"0:7000"}, stop, ready, io.Discard, io.Discard)
			require.NoError(t, err)
			done := make(chan error, 1)
			go func() { done <- pf.ForwardPorts() }()
			select {
			case <-ready:
			case err := <-done:
				t.Fatalf("port-forward ended: %v", err)
			}
			ports, err := pf.GetPorts()
			require.NoError(t, err)

			c, err := net.Dial("tcp", fmt.Sprintf("127.0.0.1:%d", ports[0].Local))
			require.NoError(t, err)
			_, err = c.Write([]byte("hello"))
			require.NoError(t, err)
			buf := make([]byte, 5)
			_, err = io.ReadFull(c, buf)
			require.NoError(t, err)
			require.Equal(t, "hello", string(buf))
			require.NoError(t, c.Close())
			mu.Lock()
			defer mu.Unlock()
			require.Equal(t, "hotrod", gotNS)
			require.Equal(t, "relay-1", gotPod)
			require.EqualValues(t, 7000, gotPort)

			st := srv.Stats()
			require.EqualValues(t, 1, st.Connections)
			if disableWS {
				require.EqualValues(t, 1, st.SPDY)
			} else {
				require.EqualValues(t, 1, st.WebSocketTunnel)
			}
			require.Eventually(t, func() bool { return srv.Stats().ActiveStreams == 0 }, 10*time.Second, 10*time.Millisecond)
			close(stop)
			require.NoError(t, <-done)
		})
	}
}

func TestCheckPodAndRefusal(t *testing.T) {
	srv, err := pftest.New(pftest.Options{
		Resolve: func(string, string, int32) (string, error) { return "", errors.New("unused") },
		CheckPod: func(ns, pod string) error {
			if pod != "relay-1" {
				return fmt.Errorf("no pod %s/%s", ns, pod)
			}
			return nil
		},
	})
	require.NoError(t, err)
	defer srv.Close()

	dial := func(pod string) error {
		u, err := url.Parse(srv.URL() + "/api/v1/namespaces/hotrod/pods/" + pod + "/portforward")
		require.NoError(t, err)
		conn, _, err := kubectlDialer(t, srv.RESTConfig(), u).Dial(portforward.PortForwardProtocolV1Name)
		if err == nil {
			_ = conn.Close()
		}
		return err
	}
	err = dial("relay-2")
	require.ErrorContains(t, err, "no pod hotrod/relay-2")
	require.NoError(t, dial("relay-1"))

	srv.RefuseFor(time.Hour)
	require.ErrorContains(t, dial("relay-1"), "refused")
	srv.RefuseFor(0)
	require.NoError(t, dial("relay-1"))
	require.GreaterOrEqual(t, srv.Stats().RefusedConnections, int64(1))
}

func TestCloseWithOpenConnections(t *testing.T) {
	target := echoServer(t)
	srv, err := pftest.New(pftest.Options{Resolve: func(string, string, int32) (string, error) { return target, nil }})
	require.NoError(t, err)
	u, err := url.Parse(srv.URL() + "/api/v1/namespaces/hotrod/pods/relay-1/portforward")
	require.NoError(t, err)
	conn, _, err := kubectlDialer(t, srv.RESTConfig(), u).Dial(portforward.PortForwardProtocolV1Name)
	require.NoError(t, err)
	defer conn.Close()
	require.Eventually(t, func() bool { return srv.Stats().ActiveConnections == 1 }, 10*time.Second, time.Millisecond)
	require.NoError(t, srv.Close())
	select {
	case <-conn.CloseChan():
	case <-time.After(10 * time.Second):
		t.Fatal("client connection still open after server Close")
	}
	require.NoError(t, srv.Close(), "Close is idempotent")
}

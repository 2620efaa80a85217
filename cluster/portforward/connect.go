package portforward

import (
	"context"
	"fmt"
	"net/http"
	"net/url"
	"strings"

	"k8s.io/apimachinery/pkg/util/httpstream"
	httpstreamspdy "k8s.io/apimachinery/pkg/util/httpstream/spdy"
	"k8s.io/client-go/rest"
	clientpf "k8s.io/client-go/tools/portforward"
	"k8s.io/client-go/transport/spdy"
	"k8s.io/client-go/transport/websocket"
	streamhttp "k8s.io/streaming/pkg/httpstream"
)

// Transport selects how the Dialer upgrades its port-forward connections.
type Transport string

const (
	// TransportAuto tries SPDY over WebSocket first and falls back to SPDY
	// when the API server cannot upgrade to it, as kubectl does.
	TransportAuto Transport = ""
	// TransportWebSocket uses only SPDY tunnelled over a WebSocket (API
	// servers 1.30+).
	TransportWebSocket Transport = "websocket"
	// TransportSPDY uses only a direct SPDY/3.1 upgrade.
	TransportSPDY Transport = "spdy"
)

// tunnelingPrefix marks a WebSocket subprotocol carrying SPDY.
const tunnelingPrefix = "SPDY/3.1+"

// portForwardURL is the pod's portforward subresource, built from the rest
// config so a Host with a path prefix (API proxies) keeps it.
func portForwardURL(cfg *rest.Config, namespace, pod string) (*url.URL, error) {
	base, _, err := rest.DefaultServerUrlFor(cfg)
	if err != nil {
		return nil, fmt.Errorf("API server address %q: %w", cfg.Host, err)
	}
	return base.JoinPath("api", "v1", "namespaces", namespace, "pods", pod, "portforward"), nil
}

// upgrade opens one port-forward connection (an httpstream.Connection that
// carries many forwarded streams) to the pod at u and reports the transport
// that worked. It uses client-go's FallbackDialer over dialers bound to ctx,
// because client-go's own dialers take no context.
func upgrade(ctx context.Context, cfg *rest.Config, u *url.URL, transport Transport) (httpstream.Connection, Transport, error) {
	ws := &wsDialer{ctx: ctx, cfg: cfg, url: u}
	sp := &spdyDialer{ctx: ctx, cfg: cfg, url: u}
	var dialer httpstream.Dialer
	switch transport {
	case TransportWebSocket:
		dialer = ws
	case TransportSPDY:
		dialer = sp
	case TransportAuto:
		dialer = clientpf.NewFallbackDialer(ws, sp, shouldFallback)
	default:
		return nil, "", fmt.Errorf("unknown port-forward transport %q (want %q, %q or empty for automatic)",
			transport, TransportWebSocket, TransportSPDY)
	}
	conn, protocol, err := dialer.Dial(clientpf.PortForwardProtocolV1Name)
	if err != nil {
		return nil, "", err
	}
	if protocol != clientpf.PortForwardProtocolV1Name {
		_ = conn.Close()
		return nil, "", fmt.Errorf("API server negotiated port-forward protocol %q, want %q", protocol, clientpf.PortForwardProtocolV1Name)
	}
	if ws.dialed {
		return conn, TransportWebSocket, nil
	}
	return conn, TransportSPDY, nil
}

// shouldFallback is kubectl's test for "this server cannot do WebSockets".
// The WebSocket round tripper reports k8s.io/streaming's upgrade error
// type, so both packages' types are checked.
func shouldFallback(err error) bool {
	return streamhttp.IsUpgradeFailure(err) || httpstream.IsUpgradeFailure(err) ||
		httpstream.IsHTTPSProxyError(err)
}

// wsDialer negotiates SPDY over a WebSocket, as client-go's tunneling
// dialer does, with the request bound to ctx. Every write to the WebSocket
// goes through client-go's TunnelingConnection and gorilla's writer, as
// with kubectl.
type wsDialer struct {
	ctx    context.Context
	cfg    *rest.Config
	url    *url.URL
	dialed bool // the upgrade succeeded
}

func (d *wsDialer) Dial(protocols ...string) (httpstream.Connection, string, error) {
	// A websocket.RoundTripper holds the connection of one round trip, so
	// each dial needs its own.
	rt, holder, err := websocket.RoundTripperFor(d.cfg)
	if err != nil {
		return nil, "", fmt.Errorf("WebSocket transport: %w", err)
	}
	req, err := http.NewRequestWithContext(d.ctx, http.MethodGet, d.url.String(), nil)
	if err != nil {
		return nil, "", err
	}
	tunneled := make([]string, len(protocols))
	for i, p := range protocols {
		tunneled[i] = tunnelingPrefix + p
	}
	ws, err := websocket.Negotiate(rt, holder, req, tunneled...)
	if err != nil {
		return nil, "", err
	}
	tc := clientpf.NewTunnelingConnection("sbx", ws)
	conn, err := httpstreamspdy.NewClientConnectionWithPings(tc, clientpf.PingPeriod)
	if err != nil {
		_ = tc.Close()
		return nil, "", err
	}
	d.dialed = true
	return conn, strings.TrimPrefix(ws.Subprotocol(), tunnelingPrefix), nil
}

// spdyDialer is client-go's SPDY dialer with the request bound to ctx.
type spdyDialer struct {
	ctx context.Context
	cfg *rest.Config
	url *url.URL
}

func (d *spdyDialer) Dial(protocols ...string) (httpstream.Connection, string, error) {
	rt, upgrader, err := spdy.RoundTripperFor(d.cfg)
	if err != nil {
		return nil, "", fmt.Errorf("SPDY transport: %w", err)
	}
	req, err := http.NewRequestWithContext(d.ctx, http.MethodPost, d.url.String(), nil)
	if err != nil {
		return nil, "", err
	}
	return spdy.Negotiate(upgrader, &http.Client{Transport: rt}, req, protocols...)
}

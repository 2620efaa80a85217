package tunnel

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

func TestHeaderRoundTrip(t *testing.T) {
	cases := []struct {
		name    string
		h       Header
		wantErr string
	}{
		{"inbound", inboundHeader, ""},
		{"outbound", outboundHeader, ""},
		{"outbound ipv6", Header{Kind: KindOutbound, Target: "[::1]:443"}, ""},
		{"max host", Header{Kind: KindOutbound, Target: strings.Repeat("a", 253) + ":65535", Source: strings.Repeat("s", 256)}, ""},
		{"no kind", Header{}, "unknown kind 0"},
		{"inbound no port", Header{Kind: KindInbound, Workload: "route"}, "needs a port"},
		{"inbound no workload", Header{Kind: KindInbound, Port: 80}, "needs a workload"},
		{"inbound with target", Header{Kind: KindInbound, Workload: "w", Port: 1, Target: "x:1"}, "must not carry a target"},
		{"outbound bad port", Header{Kind: KindOutbound, Target: "host:0"}, "not in 1-65535"},
		{"outbound no port", Header{Kind: KindOutbound, Target: "host"}, "host:port"},
		{"outbound empty host", Header{Kind: KindOutbound, Target: ":80"}, "empty host"},
		{"outbound with workload", Header{Kind: KindOutbound, Target: "a:1", Workload: "w"}, "must not carry"},
		{"long workload", Header{Kind: KindInbound, Workload: strings.Repeat("w", 254), Port: 1}, "limit 253"},
		{"control chars", Header{Kind: KindInbound, Workload: "a\nb", Port: 1}, "control character"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			err := c.h.Validate()
			if c.wantErr != "" {
				require.ErrorContains(t, err, c.wantErr)
				return
			}
			require.NoError(t, err)
			b := appendHeader(nil, c.h)
			require.LessOrEqual(t, len(b), DefaultConfig().MaxHeaderSize)
			got, err := readHeader(bytes.NewReader(b), DefaultConfig().MaxHeaderSize)
			require.NoError(t, err)
			require.Equal(t, c.h, got)
			require.Equal(t, b, appendHeader(nil, got), "re-encoding gives the same bytes")
		})
	}
}

func TestHeaderString(t *testing.T) {
	require.Equal(t, "inbound route:8083 from 10.1.2.3:5555", inboundHeader.String())
	require.Equal(t, "outbound driver.hotrod.svc.cluster.local:8082 from 127.0.0.1:40000", outboundHeader.String())
}

func TestReplyRoundTrip(t *testing.T) {
	for _, r := range []reply{{}, {code: uint8(ReasonDNS), message: "lookup nope: no such host"}, {code: 200, message: "future reason"}} {
		got, err := readReply(bytes.NewReader(appendReply(nil, r)))
		require.NoError(t, err)
		require.Equal(t, r, got)
	}
	// Messages are bounded and cleaned before they go on the wire.
	got, err := readReply(bytes.NewReader(appendReply(nil, reply{code: 1, message: strings.Repeat("é", 1000) + "\x00"})))
	require.NoError(t, err)
	require.LessOrEqual(t, len(got.message), maxReplyMessage)
	_, err = readReply(bytes.NewReader([]byte{9, 0, 0, 0}))
	require.ErrorIs(t, err, ErrProtocol)
	_, err = readReply(bytes.NewReader([]byte{headerVersion, 0, 0, 1, 'x'}))
	require.ErrorIs(t, err, ErrProtocol)
}

func TestHandshakeMessagesRoundTrip(t *testing.T) {
	h := testHello()
	h.Version = ProtocolVersion
	got, err := decodeHello(encodeHello(h))
	require.NoError(t, err)
	require.Equal(t, h, got)

	h.Version = 7
	_, err = decodeHello(encodeHello(h))
	var ve errHelloVersion
	require.ErrorAs(t, err, &ve)
	require.EqualValues(t, 7, ve.version)

	for _, w := range []Welcome{{}, {RelayVersion: "v1.2.3", Capabilities: []string{"inbound", "outbound", "lease"}}} {
		got, err := decodeWelcome(encodeWelcome(w))
		require.NoError(t, err)
		require.Equal(t, w, got)
	}
	he := &HandshakeError{Code: CodeSandboxMismatch, Message: "relay serves bob"}
	gotHE, err := decodeRefuse(encodeRefuse(he))
	require.NoError(t, err)
	require.Equal(t, he, gotHE)
	g := goodbye{code: CodeReplaced, reason: "replaced by a newer daemon"}
	got2, err := decodeGoodbye(encodeGoodbye(g))
	require.NoError(t, err)
	require.Equal(t, g, got2)
	n, err := decodeNonce(encodeNonce(42))
	require.NoError(t, err)
	require.EqualValues(t, 42, n)

	typ, payload, err := readControl(bytes.NewReader(appendControl(nil, framePing, encodeNonce(1))))
	require.NoError(t, err)
	require.Equal(t, framePing, typ)
	require.Len(t, payload, 8)
	_, _, err = readControl(bytes.NewReader([]byte{framePing, 0xff, 0xff}))
	require.ErrorIs(t, err, ErrProtocol)
}

func TestHelloRedaction(t *testing.T) {
	h := testHello()
	for _, s := range []string{fmt.Sprint(h), fmt.Sprintf("%v %+v %#v %s", h, h, h, h), fmt.Sprint(&h)} {
		require.NotContains(t, s, testToken)
		require.Contains(t, s, "<redacted>")
	}
}

func TestHandshakeErrorIs(t *testing.T) {
	for code, want := range map[HandshakeCode]error{
		CodeBadToken: ErrBadToken, CodeVersionMismatch: ErrVersionMismatch, CodeSandboxMismatch: ErrSandboxMismatch,
		CodeReplaced: ErrReplaced, CodeInternal: ErrHandshakeInternal,
	} {
		err := fmt.Errorf("wrapped: %w", &HandshakeError{Code: code, Message: "m"})
		require.ErrorIs(t, err, want)
		require.NotErrorIs(t, err, ErrProtocol)
	}
	require.False(t, errors.Is(&HandshakeError{Code: 99}, ErrBadToken))
}

func TestTokenEqual(t *testing.T) {
	require.True(t, TokenEqual("abc", "abc"))
	require.False(t, TokenEqual("abc", "abd"))
	require.False(t, TokenEqual("abc", "abcd"))
	require.True(t, TokenEqual("", ""))
}

func TestReasonOf(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	closedAddr := ln.Addr().String()
	require.NoError(t, ln.Close())
	_, refused := net.Dial("tcp", closedAddr)
	require.Error(t, refused)

	ctx, cancel := context.WithTimeout(context.Background(), time.Nanosecond)
	defer cancel()
	<-ctx.Done()
	var d net.Dialer
	_, timedOut := d.DialContext(ctx, "tcp", closedAddr)

	cases := []struct {
		err  error
		want Reason
	}{
		{refused, ReasonRefused},
		{timedOut, ReasonTimeout},
		{&net.DNSError{Err: "no such host", Name: "nope.invalid", IsNotFound: true}, ReasonDNS},
		{&net.DNSError{Err: "timeout", Name: "slow", IsTimeout: true}, ReasonTimeout},
		{&net.OpError{Op: "dial", Err: os.NewSyscallError("connect", syscall.EHOSTUNREACH)}, ReasonUnreachable},
		{&net.OpError{Op: "dial", Err: os.NewSyscallError("connect", syscall.ENETUNREACH)}, ReasonUnreachable},
		{&net.OpError{Op: "dial", Err: os.NewSyscallError("connect", syscall.EACCES)}, ReasonDenied},
		{fmt.Errorf("x: %w", &DialError{Reason: ReasonDenied}), ReasonDenied},
		{errors.New("weird"), ReasonOther},
		{nil, ReasonOther},
	}
	for _, c := range cases {
		require.Equal(t, c.want, ReasonOf(c.err), "%v", c.err)
	}
}

func TestConfigVerify(t *testing.T) {
	require.NoError(t, DefaultConfig().Verify())
	pf := PortForwardConfig()
	require.NoError(t, pf.Verify())
	require.Equal(t, pf.MaxStreamWindow, DefaultConfig().MaxStreamWindow, "windows grow the same way on every session")
	require.Greater(t, pf.MaxFrameSize, DefaultConfig().MaxFrameSize)
	cases := []struct {
		field string
		mod   func(*Config)
	}{
		{"MuxRole", func(c *Config) { c.MuxRole = 9 }},
		{"MaxStreamWindow", func(c *Config) { c.MaxStreamWindow = 1024 }},
		{"MaxStreamWindow", func(c *Config) { c.MaxStreamWindow = 512 << 20 }},
		{"MinStreamWindow", func(c *Config) { c.MinStreamWindow = 1024 }},
		{"MinStreamWindow", func(c *Config) { c.MinStreamWindow = c.MaxStreamWindow + 1 }},
		{"WindowBudget", func(c *Config) { c.WindowBudget = -1 }},
		{"MaxFrameSize", func(c *Config) { c.MaxFrameSize = 10 }},
		{"WriteTimeout", func(c *Config) { c.WriteTimeout = 0 }},
		{"KeepAliveInterval", func(c *Config) { c.KeepAliveInterval = 0 }},
		{"DeadPeerTimeout", func(c *Config) { c.DeadPeerTimeout = c.KeepAliveInterval }},
		{"HandshakeTimeout", func(c *Config) { c.HandshakeTimeout = -1 }},
		{"HeaderTimeout", func(c *Config) { c.HeaderTimeout = 0 }},
		{"StreamCloseTimeout", func(c *Config) { c.StreamCloseTimeout = -1 }},
		{"MaxHeaderSize", func(c *Config) { c.MaxHeaderSize = 100000 }},
		{"AcceptBacklog", func(c *Config) { c.AcceptBacklog = 0 }},
	}
	for _, c := range cases {
		cfg := DefaultConfig()
		c.mod(&cfg)
		err := cfg.Verify()
		require.ErrorContains(t, err, c.field)
		// Client refuses an invalid config (and closes the conn).
		a, b := net.Pipe()
		_, _, err = Client(context.Background(), a, cfg, testHello())
		require.ErrorContains(t, err, c.field)
		b.Close()
	}
	require.LessOrEqual(t, DefaultConfig().DeadPeerTimeout, 15*time.Second)
}

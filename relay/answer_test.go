package relay

import (
	"context"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// answerServer accepts loopback connections and answers each with serveAnswer.
func answerServer(t *testing.T, code int, body string) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	var wg sync.WaitGroup
	t.Cleanup(func() { _ = l.Close(); wg.Wait() })
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				serveAnswer(context.Background(), slog.New(slog.DiscardHandler), c, code, body)
			}()
		}
	}()
	return l.Addr().String()
}

func TestServeAnswer(t *testing.T) {
	body := offlineBody("alice", time.Date(2026, 11, 26, 7, 10, 3, 0, time.UTC), time.Date(2026, 11, 26, 7, 11, 15, 0, time.UTC), true)
	require.Equal(t, "sbx: sandbox \"alice\" is offline since 2026-11-26T07:10:03Z (1m12s ago): no laptop is connected to its relay.\n"+
		"The developer's sbx daemon reconnects on its own; on the laptop, `sbx status alice` shows why it is down.\n", body)
	addr := answerServer(t, http.StatusServiceUnavailable, body)

	for _, proto := range []string{"http1", "h2c"} {
		t.Run(proto, func(t *testing.T) {
			var protos http.Protocols
			if proto == "h2c" {
				protos.SetUnencryptedHTTP2(true)
			} else {
				protos.SetHTTP1(true)
			}
			tr := &http.Transport{Protocols: &protos}
			defer tr.CloseIdleConnections()
			client := &http.Client{Transport: tr}

			// A POST with a body the relay never reads must still get the answer.
			resp, err := client.Post("http://"+addr+"/dispatch?customer=123", "application/json", strings.NewReader(strings.Repeat("x", 100<<10)))
			require.NoError(t, err)
			got, err := io.ReadAll(resp.Body)
			require.NoError(t, err)
			require.NoError(t, resp.Body.Close())
			require.Equal(t, http.StatusServiceUnavailable, resp.StatusCode)
			require.Equal(t, body, string(got))
			require.Equal(t, "text/plain; charset=utf-8", resp.Header.Get("Content-Type"))
			require.Equal(t, "5", resp.Header.Get("Retry-After"))
			if proto == "h2c" {
				require.Equal(t, 2, resp.ProtoMajor)
			} else {
				require.Equal(t, 1, resp.ProtoMajor)
				require.True(t, resp.Close, "HTTP/1.1 answers close the connection")
			}
		})
	}

	t.Run("grpc", func(t *testing.T) {
		var protos http.Protocols
		protos.SetUnencryptedHTTP2(true)
		tr := &http.Transport{Protocols: &protos}
		defer tr.CloseIdleConnections()
		req, err := http.NewRequest(http.MethodPost, "http://"+addr+"/hotrod.Route/FindRoute", strings.NewReader("\x00\x00\x00\x00\x00"))
		require.NoError(t, err)
		req.Header.Set("Content-Type", "application/grpc")
		req.Header.Set("Te", "trailers")
		resp, err := tr.RoundTrip(req)
		require.NoError(t, err)
		_, _ = io.Copy(io.Discard, resp.Body)
		require.NoError(t, resp.Body.Close())
		require.Equal(t, http.StatusOK, resp.StatusCode)
		require.Equal(t, "application/grpc", resp.Header.Get("Content-Type"))
		require.Equal(t, "14", resp.Header.Get("Grpc-Status"))
		require.Contains(t, resp.Header.Get("Grpc-Message"), `sbx: sandbox "alice" is offline since`)
		require.Contains(t, resp.Header.Get("Grpc-Message"), "%0A", "newlines are percent-encoded")
	})
}

func TestServeAnswerNotHTTP(t *testing.T) {
	addr := answerServer(t, http.StatusBadGateway, "x")
	c, err := net.Dial("tcp", addr)
	require.NoError(t, err)
	defer c.Close()
	_, err = c.Write([]byte("\x16\x03\x01 not http at all\r\n\r\n"))
	require.NoError(t, err)
	require.NoError(t, c.SetReadDeadline(time.Now().Add(30*time.Second)))
	got, _ := io.ReadAll(c)
	require.True(t, strings.HasPrefix(string(got), "HTTP/1.1 400") || len(got) == 0, "garbage gets a 400 or nothing, then close: %q", got)
}

func TestGRPCEncode(t *testing.T) {
	require.Equal(t, "a b%25c%0Ad%C3%A9", grpcEncode("a b%c\nd\u00e9"))
}

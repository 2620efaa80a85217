package sim

import (
	"context"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"

	sbxcluster "github.com/sbx-dev/sbx/cluster"
	"github.com/stretchr/testify/require"
	networking "istio.io/api/networking/v1alpha3"
)

func TestRetryTransport(t *testing.T) {
	// A closed port: dialing it is a connect failure.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	dead := ln.Addr().String()
	ln.Close()

	for _, tc := range []struct {
		name      string
		retries   *networking.HTTPRetry
		statuses  []int // what the upstream answers, try by try
		deadFirst bool
		want      int
		tries     int32
	}{
		// Istio 1.24 dropped 503 from the default retry policy.
		{"default does not retry 503", nil, []int{503, 200}, false, 503, 1},
		{"retriable-status-codes retries the listed codes", &networking.HTTPRetry{Attempts: 2, RetryOn: "retriable-status-codes,503"}, []int{503, 503, 200}, false, 200, 3},
		{"and gives up after the attempts", &networking.HTTPRetry{Attempts: 2, RetryOn: "503"}, []int{503, 503, 503, 200}, false, 503, 3},
		{"default does not retry 502", nil, []int{502, 200}, false, 502, 1},
		{"attempts 0 disables retries", &networking.HTTPRetry{Attempts: 0}, []int{503, 200}, false, 503, 1},
		{"gateway-error retries 502", &networking.HTTPRetry{Attempts: 1, RetryOn: "gateway-error"}, []int{502, 200}, false, 200, 2},
		{"explicit code", &networking.HTTPRetry{Attempts: 3, RetryOn: "429"}, []int{429, 429, 200}, false, 200, 3},
		{"connect failure moves to the next endpoint", nil, []int{200}, true, 200, 1},
		// sbx's keyed routes: the relay's offline 503 (after --grace) is
		// answered once, not three times; a relay that is restarting
		// (connection refused) is still retried.
		{"sbx route does not retry the relay's 503", sbxcluster.SandboxRouteRetries(), []int{503, 200}, false, 503, 1},
		{"sbx route retries a connect failure", sbxcluster.SandboxRouteRetries(), []int{200}, true, 200, 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var n atomic.Int32
			srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				i := int(n.Add(1)) - 1
				body, _ := io.ReadAll(r.Body)
				require.Equal(t, "payload", string(body), "the body is replayed on every try")
				w.WriteHeader(tc.statuses[min(i, len(tc.statuses)-1)])
			}))
			defer srv.Close()
			eps := []string{strings.TrimPrefix(srv.URL, "http://")}
			if tc.deadFirst {
				eps = []string{dead, eps[0]}
			}
			tg := target{eps: eps, policy: newRetryPolicy(tc.retries)}
			req, err := http.NewRequestWithContext(context.WithValue(context.Background(), targetKey{}, tg),
				http.MethodPost, "http://x/", strings.NewReader("payload"))
			require.NoError(t, err)
			tr := &http.Transport{}
			defer tr.CloseIdleConnections()
			resp, err := retryTransport{base: tr}.RoundTrip(req)
			require.NoError(t, err)
			resp.Body.Close()
			require.Equal(t, tc.want, resp.StatusCode)
			require.Equal(t, tc.tries, n.Load())
		})
	}
}

package sim

import (
	"bytes"
	"context"
	"errors"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"strconv"
	"strings"
	"time"

	networking "istio.io/api/networking/v1alpha3"
)

// retryPolicy is an Envoy route retry policy as Istio configures it.
type retryPolicy struct {
	retries   int           // tries after the first
	perTry    time.Duration // 0: bounded only by the route timeout
	onConnect bool          // connect-failure, refused-stream
	onReset   bool          // reset: the upstream went away before answering
	any5xx    bool
	codes     map[int]bool
}

// maxRetryBody is the largest request body the mesh buffers to be able to
// retry (Envoy buffers up to its per-request buffer limit).
const maxRetryBody = 64 << 10

// newRetryPolicy builds the policy of a route: without a retries field,
// Istio's default since 1.24 (2 retries on connect-failure,
// refused-stream, unavailable, cancelled and retriable-status-codes with
// no codes: a 503 is not retried; up to 1.23 it was), each try on another
// endpoint when there is one; attempts 0 disables retries.
func newRetryPolicy(r *networking.HTTPRetry) retryPolicy {
	p := retryPolicy{retries: 2, onConnect: true, codes: map[int]bool{}}
	if r == nil {
		return p
	}
	p.retries = int(r.Attempts)
	if r.PerTryTimeout != nil {
		p.perTry = r.PerTryTimeout.AsDuration()
	}
	if strings.TrimSpace(r.RetryOn) == "" {
		return p
	}
	p.onConnect, p.codes = false, map[int]bool{}
	for _, tok := range strings.Split(r.RetryOn, ",") {
		switch tok = strings.TrimSpace(tok); tok {
		case "5xx":
			p.any5xx, p.onConnect, p.onReset = true, true, true
		case "gateway-error":
			p.codes[502], p.codes[503], p.codes[504] = true, true, true
		case "connect-failure", "refused-stream":
			p.onConnect = true
		case "reset":
			p.onReset = true
		case "retriable-status-codes":
			// The codes come as numbers in the same list.
		default:
			if n, err := strconv.Atoi(tok); err == nil {
				p.codes[n] = true
			}
		}
	}
	return p
}

func (p retryPolicy) retriableStatus(code int) bool {
	return p.codes[code] || p.any5xx && code >= 500
}

func (p retryPolicy) retriableErr(err error) bool {
	var op *net.OpError
	if errors.As(err, &op) && op.Op == "dial" {
		return p.onConnect
	}
	return p.onReset && !errors.Is(err, context.Canceled) && !errors.Is(err, context.DeadlineExceeded)
}

// retryTransport applies the request's retry policy around base: a
// retriable failure is tried again, on the next endpoint, after a short
// jittered backoff (Envoy's 25 ms base interval).
type retryTransport struct{ base http.RoundTripper }

func (t retryTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	tg, ok := req.Context().Value(targetKey{}).(target)
	if !ok || len(tg.eps) == 0 {
		return t.base.RoundTrip(req)
	}
	p := tg.policy
	var body []byte
	if req.Body != nil && req.Body != http.NoBody {
		buf, err := io.ReadAll(io.LimitReader(req.Body, maxRetryBody+1))
		if err != nil {
			return nil, err
		}
		if len(buf) > maxRetryBody {
			// Too big to replay: one try, streaming the rest.
			p.retries = 0
			req.Body = struct {
				io.Reader
				io.Closer
			}{io.MultiReader(bytes.NewReader(buf), req.Body), req.Body}
		} else {
			body = buf
			_ = req.Body.Close()
		}
	}
	for try := 0; ; try++ {
		out := req.Clone(req.Context())
		out.URL.Host = tg.eps[(tg.first+try)%len(tg.eps)]
		if body != nil {
			out.Body = io.NopCloser(bytes.NewReader(body))
			out.ContentLength = int64(len(body))
		}
		cancel := context.CancelFunc(func() {})
		if p.perTry > 0 {
			var ctx context.Context
			ctx, cancel = context.WithTimeout(out.Context(), p.perTry)
			out = out.WithContext(ctx)
		}
		resp, err := t.base.RoundTrip(out)
		last := try >= p.retries || req.Context().Err() != nil
		if err == nil && (last || !p.retriableStatus(resp.StatusCode)) {
			resp.Body = &cancelOnClose{ReadCloser: resp.Body, cancel: cancel}
			return resp, nil
		}
		if err != nil && (last || !p.retriableErr(err)) {
			cancel()
			return nil, err
		}
		if resp != nil {
			_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
			resp.Body.Close()
		}
		cancel()
		backoff := time.Duration(25*(1<<try)) * time.Millisecond
		backoff = backoff/2 + time.Duration(rand.Int64N(int64(backoff)))
		select {
		case <-req.Context().Done():
			return nil, req.Context().Err()
		case <-time.After(backoff):
		}
	}
}

// cancelOnClose ends a per-try timeout when the response body is done.
type cancelOnClose struct {
	io.ReadCloser
	cancel context.CancelFunc
}

func (c *cancelOnClose) Close() error {
	err := c.ReadCloser.Close()
	c.cancel()
	return err
}

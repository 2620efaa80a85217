package proxy

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/sbx-dev/sbx/daemon/peeruid/peeruidtest"
)

// peerReport is what TestPeerHelper saw.
type peerReport struct {
	UID    int    `json:"uid"`
	Status int    `json:"status"`
	Body   string `json:"body"`
	Err    string `json:"err"`
}

// runPeer runs TestPeerHelper (as nobody, or as the test's own user)
// against the proxy URL.
func runPeer(t *testing.T, asNobody bool, proxyURL, target string) peerReport {
	t.Helper()
	cmd := peeruidtest.Command(t, asNobody, "TestPeerHelper", "SBX_TEST_PROXY="+proxyURL, "SBX_TEST_TARGET="+target)
	var stderr strings.Builder
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	require.NoError(t, err, "helper: %s", stderr.String())
	var r peerReport
	require.NoError(t, json.Unmarshal(out, &r), "helper printed %q; stderr: %s", out, stderr.String())
	return r
}

// TestOtherUserRefused: a process of another user is refused by the
// proxy even with the right credential, and nothing is dialed for it;
// the same client as the test's own user gets through. Linux only, as
// root (to start the other user's process).
func TestOtherUserRefused(t *testing.T) {
	w := newWorld(t)
	s := startProxy(t, w, nil)
	for _, scheme := range []string{"http", "socks5h"} {
		t.Run(scheme, func(t *testing.T) {
			r := runPeer(t, true, s.URL(scheme), "http://driver.hotrod:8082/as-nobody")
			require.Equal(t, peeruidtest.Nobody, r.UID)
			require.Zero(t, r.Status, "%+v", r)
			require.NotEmpty(t, r.Err)
			require.Empty(t, w.log(), "nothing dialed for another user")

			r = runPeer(t, false, s.URL(scheme), "http://driver.hotrod:8082/as-me")
			require.Equal(t, os.Getuid(), r.UID)
			require.Equal(t, http.StatusOK, r.Status, "%+v", r)
			require.Contains(t, r.Body, `"uri":"/as-me"`)
			require.Equal(t, []string{"cluster:driver.hotrod.svc.cluster.local:8082"}, w.log())
			w.mu.Lock()
			w.dials = nil
			w.mu.Unlock()
		})
	}
}

// TestPeerHelper is not a test: TestOtherUserRefused runs it, as another
// user and as its own, in a process of its own. It GETs $SBX_TEST_TARGET
// through the proxy $SBX_TEST_PROXY and prints a peerReport.
func TestPeerHelper(t *testing.T) {
	if os.Getenv(peeruidtest.HelperEnv) == "" {
		t.Skip("helper process")
	}
	r := peerReport{UID: os.Getuid()}
	u, err := url.Parse(os.Getenv("SBX_TEST_PROXY"))
	if err == nil {
		c := &http.Client{Timeout: 20 * time.Second, Transport: &http.Transport{Proxy: http.ProxyURL(u)}}
		var resp *http.Response
		resp, err = c.Get(os.Getenv("SBX_TEST_TARGET"))
		if err == nil {
			b, _ := io.ReadAll(resp.Body)
			_ = resp.Body.Close()
			r.Status, r.Body = resp.StatusCode, string(b)
		}
	}
	if err != nil {
		r.Err = err.Error()
	}
	b, _ := json.Marshal(r)
	fmt.Println(string(b))
	os.Exit(0)
}

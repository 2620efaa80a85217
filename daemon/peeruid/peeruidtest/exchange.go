package peeruidtest

import (
	"encoding/json"
	"fmt"
	"io"
	"net"
	"os"
	"strings"
	"testing"
	"time"
)

// ExchangeHelper is the name a package's helper test must have for
// Exchange: `func TestPeerExchangeHelper(t *testing.T) { peeruidtest.ServeExchange(t) }`.
const ExchangeHelper = "TestPeerExchangeHelper"

// Report is what a helper process saw: its uid, the bytes it got back
// and the error that ended the exchange, if any.
type Report struct {
	UID   int    `json:"uid"`
	Reply string `json:"reply"`
	Err   string `json:"err"`
}

// Exchange runs the package's ExchangeHelper test as nobody (or as the
// test's own user): it connects to addr, sends msg, half-closes and reads
// the reply until the server closes. It skips t where Command does.
func Exchange(t *testing.T, asNobody bool, addr, msg string) Report {
	t.Helper()
	cmd := Command(t, asNobody, ExchangeHelper, "SBX_PEER_ADDR="+addr, "SBX_PEER_MSG="+msg)
	var stderr strings.Builder
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("peer helper: %v\n%s", err, stderr.String())
	}
	var r Report
	if err := json.Unmarshal(out, &r); err != nil {
		t.Fatalf("peer helper printed %q (%v); stderr: %s", out, err, stderr.String())
	}
	return r
}

// ServeExchange is the body of a package's ExchangeHelper test: in a
// helper process it does the exchange, prints its Report and exits; in a
// normal test run it skips.
func ServeExchange(t *testing.T) {
	if os.Getenv(HelperEnv) == "" {
		t.Skip("helper process for peeruidtest.Exchange")
	}
	r := Report{UID: os.Getuid()}
	c, err := net.DialTimeout("tcp", os.Getenv("SBX_PEER_ADDR"), 10*time.Second)
	if err == nil {
		_ = c.SetDeadline(time.Now().Add(20 * time.Second))
		_, err = io.WriteString(c, os.Getenv("SBX_PEER_MSG"))
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

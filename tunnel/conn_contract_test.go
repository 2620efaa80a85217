package tunnel

import (
	"context"
	"encoding/binary"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"runtime/debug"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"golang.org/x/sync/errgroup"
)

// The tests in this file pin what wireConn's header join relies on in
// hashicorp/yamux, which yamux does not promise: its send loop writes a
// data frame as a Write of the 12-byte header followed by one Write of
// exactly the body. If a yamux upgrade changes that, the join silently
// stops paying (every header goes out alone, counted as a fallback); these
// tests make the upgrade fail loudly instead.

// yamuxVersion is the hashicorp/yamux version this test binary was built
// with, for failure messages.
func yamuxVersion() string {
	if bi, ok := debug.ReadBuildInfo(); ok {
		for _, m := range bi.Deps {
			if m.Path == "github.com/hashicorp/yamux" {
				if m.Replace != nil {
					return m.Version + " => " + m.Replace.Path + " " + m.Replace.Version
				}
				return m.Version
			}
		}
	}
	return "(version unknown)"
}

// patternConn records how the session's writes reach the connection: it
// counts yamux data-frame headers (a 12-byte Write of a data frame with a
// body) and how many of them were not followed by exactly their body.
type patternConn struct {
	net.Conn
	mu       sync.Mutex
	want     int // body length the last header announced; 0 = none
	headers  int
	unpaired []string
}

func (p *patternConn) Write(b []byte) (int, error) {
	p.mu.Lock()
	if p.want > 0 && len(b) != p.want {
		p.unpaired = append(p.unpaired, fmt.Sprintf("header announced %d bytes, next write had %d", p.want, len(b)))
	}
	p.want = 0
	if len(b) == yamuxHeaderSize && b[0] == 0 && b[1] == yamuxTypeData {
		if n := binary.BigEndian.Uint32(b[8:12]); n > 0 {
			p.headers++
			p.want = int(n)
		}
	}
	p.mu.Unlock()
	return p.Conn.Write(b)
}

// contractWorkload drives a session pair the ways sbx does: streams both
// ways at once with writes of every size from one byte to several frames,
// echoed and checked, half-closes, pings on the control stream, and the
// goodbye at the end.
func contractWorkload(t *testing.T, p sessionPair, maxWrite int) {
	t.Helper()
	echoServer(t, p.server)
	echoServer(t, p.client)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	var g errgroup.Group
	for i := range 8 {
		opener, h := p.client, outboundHeader
		if i%3 == 2 {
			opener, h = p.server, inboundHeader
		}
		g.Go(func() error {
			r := rand.New(rand.NewPCG(uint64(i), 7))
			st, err := opener.Open(ctx, h)
			if err != nil {
				return err
			}
			defer st.Close()
			echoed := make(chan []byte, 1)
			go func() {
				got, _ := io.ReadAll(st)
				echoed <- got
			}()
			var sent []byte
			for range 12 {
				n := 1 + r.IntN(maxWrite)
				if r.IntN(4) == 0 {
					n = 1 + r.IntN(64) // small requests between the big ones
				}
				b := make([]byte, n)
				for j := range b {
					b[j] = byte(r.Uint32())
				}
				sent = append(sent, b...)
				if _, err := st.Write(b); err != nil {
					return err
				}
			}
			if err := st.CloseWrite(); err != nil {
				return err
			}
			if got := <-echoed; string(got) != string(sent) {
				return fmt.Errorf("stream %d: echo differs (%d bytes sent, %d back)", i, len(sent), len(got))
			}
			return nil
		})
	}
	g.Go(func() error {
		for range 20 {
			if _, err := p.client.Ping(); err != nil {
				return err
			}
			if _, err := p.server.Ping(); err != nil {
				return err
			}
		}
		return nil
	})
	require.NoError(t, g.Wait())
	require.NoError(t, p.client.Close())
	require.NoError(t, p.server.Close())
}

// TestYamuxWritesHeaderThenBody: with the join off, every data-frame
// header yamux writes is followed by a Write of exactly its body.
func TestYamuxWritesHeaderThenBody(t *testing.T) {
	for _, cfg := range []struct {
		name string
		cfg  Config
	}{{"default", DefaultConfig()}, {"port-forward", PortForwardConfig()}} {
		t.Run(cfg.name, func(t *testing.T) {
			var recs []*patternConn
			p := newSessionPairOver(t, func(c net.Conn) net.Conn {
				pc := &patternConn{Conn: c}
				recs = append(recs, pc)
				return pc
			}, func(c *Config) {
				c.MaxStreamWindow, c.MaxFrameSize = cfg.cfg.MaxStreamWindow, cfg.cfg.MaxFrameSize
				c.SplitHeaderWrites = true
			})
			contractWorkload(t, p, 2*cfg.cfg.MaxFrameSize+1)
			for _, r := range recs {
				r.mu.Lock()
				require.Positive(t, r.headers)
				require.Empty(t, r.unpaired,
					"hashicorp/yamux %s no longer writes a data frame as a header Write followed by one Write of exactly its body "+
						"(v0.1.2 did; %d of %d headers). wireConn's join (tunnel/conn.go) relies on that to pay: re-measure it "+
						"(sbx bench tunnel --ab-split-headers, sbx bench portforward --ab split-headers) and adapt or remove it.",
					yamuxVersion(), len(r.unpaired), r.headers)
				r.mu.Unlock()
			}
		})
	}
}

// TestWireConnJoinsEveryFrame: over real yamux sessions, on TCP (writev
// for large bodies) and on a pipe (one buffer), every data frame goes out
// joined and no header is ever sent alone.
func TestWireConnJoinsEveryFrame(t *testing.T) {
	for _, tr := range []transport{transportTCP, transportPipe} {
		for _, cfg := range []struct {
			name string
			cfg  Config
		}{{"default", DefaultConfig()}, {"port-forward", PortForwardConfig()}} {
			t.Run(string(tr)+"/"+cfg.name, func(t *testing.T) {
				p := newSessionPair(t, tr, roleSets[0], func(c *Config) {
					c.MaxStreamWindow, c.MaxFrameSize = cfg.cfg.MaxStreamWindow, cfg.cfg.MaxFrameSize
				})
				contractWorkload(t, p, 2*cfg.cfg.MaxFrameSize+1)
				for _, s := range []*Session{p.client, p.server} {
					joined, fallbacks := s.conn.writeStats()
					require.Positive(t, joined)
					require.Zero(t, fallbacks,
						"hashicorp/yamux %s: %d of %d data-frame headers went out without their body; "+
							"wireConn's join (tunnel/conn.go) was written for v0.1.2's header-then-body writes: "+
							"re-measure it (sbx bench tunnel --ab-split-headers) and adapt or remove it.",
						yamuxVersion(), fallbacks, joined+fallbacks)
				}
			})
		}
	}
}

// newSessionPairOver is newSessionPair over loopback TCP with wrap applied
// to both ends' connections.
func newSessionPairOver(t *testing.T, wrap func(net.Conn) net.Conn, mod func(*Config)) sessionPair {
	t.Helper()
	a, b := tcpPair(t, nil)
	ccfg, scfg := testConfig(), testConfig()
	mod(&ccfg)
	mod(&scfg)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	type res struct {
		s   *Session
		err error
	}
	ch := make(chan res, 1)
	bw := wrap(b)
	go func() {
		s, _, err := Server(ctx, bw, scfg, acceptAll)
		ch <- res{s, err}
	}()
	c, _, err := Client(ctx, wrap(a), ccfg, testHello())
	sr := <-ch
	require.NoError(t, err)
	require.NoError(t, sr.err)
	t.Cleanup(func() {
		_ = c.Close()
		_ = sr.s.Close()
	})
	return sessionPair{client: c, server: sr.s}
}

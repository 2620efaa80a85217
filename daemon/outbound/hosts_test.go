package outbound

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"

	"github.com/sbx-dev/sbx/cluster/discovery"
	"github.com/sbx-dev/sbx/daemon/config"
	"github.com/sbx-dev/sbx/daemon/peeruid"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func svc(ns, name string, ports ...int32) discovery.Service {
	s := discovery.Service{Namespace: ns, Name: name, Type: "ClusterIP", Hosts: discovery.Hosts(ns, name, "cluster.local")}
	for _, p := range ports {
		s.Ports = append(s.Ports, discovery.Port{Port: p, Protocol: "TCP"})
	}
	return s
}

func added(s discovery.Service) discovery.Event {
	return discovery.Event{Type: discovery.Added, Service: s}
}
func deleted(s discovery.Service) discovery.Event {
	return discovery.Event{Type: discovery.Deleted, Service: s}
}

// standIn is the cluster as the tunnel would reach it: one local echo
// server that answers every dial, prefixing what it echoes with the target
// the relay was asked to dial. Dials to refused targets fail.
type standIn struct {
	t   *testing.T
	ln  net.Listener
	wg  sync.WaitGroup
	mu  sync.Mutex
	log []string
	bad map[string]bool
}

func newStandIn(t *testing.T) *standIn {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	s := &standIn{t: t, ln: ln, bad: map[string]bool{}}
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			s.wg.Add(1)
			go func() {
				defer s.wg.Done()
				defer c.Close()
				r := bufio.NewReader(c)
				target, err := r.ReadString('\n')
				if err != nil {
					return
				}
				// Echo until the client half-closes, then answer and close.
				body, _ := io.ReadAll(r)
				fmt.Fprintf(c, "%s|%s", strings.TrimSpace(target), body)
			}()
		}
	}()
	t.Cleanup(func() { ln.Close(); s.wg.Wait() })
	return s
}

// dial is the Dialer: it connects to the stand-in and tells it the target.
func (s *standIn) dial(ctx context.Context, target string) (net.Conn, error) {
	s.mu.Lock()
	s.log = append(s.log, target)
	bad := s.bad[target]
	s.mu.Unlock()
	if bad {
		return nil, errors.New("dial " + target + ": connection refused")
	}
	var d net.Dialer
	c, err := d.DialContext(ctx, "tcp", s.ln.Addr().String())
	if err != nil {
		return nil, err
	}
	fmt.Fprintf(c, "%s\n", target)
	return c, nil
}

func (s *standIn) dialed() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]string(nil), s.log...)
}

// resolve reads the hosts file the way a resolver would: the IP of the
// first line naming host.
func resolve(t *testing.T, hostsPath, host string) (netip.Addr, bool) {
	t.Helper()
	b, err := os.ReadFile(hostsPath)
	require.NoError(t, err)
	for _, line := range strings.Split(string(b), "\n") {
		line, _, _ = strings.Cut(strings.TrimRight(line, "\r"), "#")
		f := strings.Fields(line)
		for _, n := range f[min(1, len(f)):] {
			if n == host {
				return netip.MustParseAddr(f[0]), true
			}
		}
	}
	return netip.Addr{}, false
}

// roundTrip connects to host:port through the hosts file, sends msg,
// half-closes, and returns the reply.
func roundTrip(t *testing.T, hostsPath, host string, port int32, msg string) (string, error) {
	t.Helper()
	ip, ok := resolve(t, hostsPath, host)
	if !ok {
		return "", fmt.Errorf("%s not in hosts file", host)
	}
	c, err := net.DialTimeout("tcp", netip.AddrPortFrom(ip, uint16(port)).String(), 10*time.Second)
	if err != nil {
		return "", err
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(30 * time.Second))
	if _, err := io.WriteString(c, msg); err != nil {
		return "", err
	}
	// A connection the tunnel refused may already be closed by the daemon.
	if err := c.(*net.TCPConn).CloseWrite(); err != nil {
		return "", err
	}
	b, err := io.ReadAll(c)
	return string(b), err
}

const original = "127.0.0.1 localhost\r\n# comment kept\r\n::1 ip6-localhost"

type hostsEnv struct {
	hosts, lock, state string
	cat                *Catalog
	si                 *standIn
}

func newHostsEnv(t *testing.T) *hostsEnv {
	dir := t.TempDir()
	e := &hostsEnv{
		hosts: filepath.Join(dir, "hosts"),
		lock:  filepath.Join(dir, "state", "hosts.lock"),
		state: filepath.Join(dir, "state", "hosts-ips.json"),
		cat:   NewCatalog("", []string{"hotrod"}),
		si:    newStandIn(t),
	}
	require.NoError(t, os.WriteFile(e.hosts, []byte(original), 0o644))
	return e
}

func (e *hostsEnv) start(t *testing.T, rng string) (*Hosts, context.CancelFunc, chan error) {
	t.Helper()
	h, err := NewHosts(HostsOptions{Catalog: e.cat, Dial: e.si.dial, HostsFile: e.hosts, LockPath: e.lock,
		Range: netip.MustParsePrefix(rng), StatePath: e.state})
	require.NoError(t, err)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- h.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-done })
	return h, cancel, done
}

func (e *hostsEnv) read(t *testing.T) string {
	b, err := os.ReadFile(e.hosts)
	require.NoError(t, err)
	return string(b)
}

func TestHostsMode(t *testing.T) {
	e := newHostsEnv(t)
	e.cat.Apply(added(svc("hotrod", "driver", 8082)))
	e.cat.Apply(added(svc("hotrod", "frontend", 8080, 8081)))
	e.cat.Apply(added(svc("shared", "redis", 6379)))
	dns := svc("shared", "dns")
	dns.Ports = []discovery.Port{{Port: 53, Protocol: "UDP"}}
	e.cat.Apply(added(dns))

	h, cancel, done := e.start(t, "127.246.0.0/16")
	require.Eventually(t, func() bool { return strings.Contains(e.read(t), "redis.shared.svc.cluster.local") }, 10*time.Second, 10*time.Millisecond)

	content := e.read(t)
	for _, n := range []string{"driver", "driver.hotrod", "driver.hotrod.svc", "driver.hotrod.svc.cluster.local",
		"frontend", "frontend.hotrod.svc.cluster.local", "redis.shared", "redis.shared.svc", "redis.shared.svc.cluster.local"} {
		_, ok := resolve(t, e.hosts, n)
		require.True(t, ok, "%s missing:\n%s", n, content)
	}
	_, ok := resolve(t, e.hosts, "redis")
	require.False(t, ok, "short names only for the sandbox's own namespace")
	_, ok = resolve(t, e.hosts, "dns.shared")
	require.False(t, ok, "a Service without TCP ports gets no names")
	require.True(t, strings.HasPrefix(content, original+"\r\n# BEGIN sbx"), "CRLF kept, block appended:\n%q", content)

	ipDriver, _ := resolve(t, e.hosts, "driver")
	ipRedis, _ := resolve(t, e.hosts, "redis.shared")
	require.NotEqual(t, ipDriver, ipRedis)
	require.True(t, netip.MustParsePrefix("127.246.0.0/16").Contains(ipDriver))

	// Connections go through the dialer with the FQDN target.
	reply, err := roundTrip(t, e.hosts, "driver.hotrod", 8082, "hello")
	require.NoError(t, err)
	require.Equal(t, "driver.hotrod.svc.cluster.local:8082|hello", reply)
	reply, err = roundTrip(t, e.hosts, "frontend", 8081, "two ports")
	require.NoError(t, err)
	require.Equal(t, "frontend.hotrod.svc.cluster.local:8081|two ports", reply)
	reply, err = roundTrip(t, e.hosts, "redis.shared.svc", 6379, "PING")
	require.NoError(t, err)
	require.Equal(t, "redis.shared.svc.cluster.local:6379|PING", reply)

	st := h.Status()
	require.Len(t, st, 3)
	for _, s := range st {
		for _, p := range s.Ports {
			require.True(t, p.Listening, "%s:%d %s", s.Service, p.Port, p.Error)
		}
	}

	// Live: a Service appears, another goes, a port changes.
	e.cat.Apply(added(svc("hotrod", "route", 8083)))
	e.cat.Apply(deleted(svc("shared", "redis", 6379)))
	e.cat.Apply(discovery.Event{Type: discovery.Updated, Service: svc("hotrod", "driver", 9092)})
	require.Eventually(t, func() bool {
		c := e.read(t)
		return strings.Contains(c, "route.hotrod.svc.cluster.local") && !strings.Contains(c, "redis")
	}, 10*time.Second, 10*time.Millisecond)
	reply, err = roundTrip(t, e.hosts, "route", 8083, "new")
	require.NoError(t, err)
	require.Equal(t, "route.hotrod.svc.cluster.local:8083|new", reply)
	require.Eventually(t, func() bool {
		_, err := roundTrip(t, e.hosts, "driver", 9092, "moved")
		return err == nil
	}, 10*time.Second, 10*time.Millisecond)
	_, err = net.DialTimeout("tcp", netip.AddrPortFrom(ipRedis, 6379).String(), 5*time.Second)
	require.Error(t, err, "the deleted Service's listener is closed")
	_, err = net.DialTimeout("tcp", netip.AddrPortFrom(ipDriver, 8082).String(), 5*time.Second)
	require.Error(t, err, "the old port is closed")
	ip, _ := resolve(t, e.hosts, "driver")
	require.Equal(t, ipDriver, ip, "a port change keeps the IP")

	// A dial the tunnel refuses closes the local connection at once.
	e.si.mu.Lock()
	e.si.bad["route.hotrod.svc.cluster.local:8083"] = true
	e.si.mu.Unlock()
	reply, err = roundTrip(t, e.hosts, "route", 8083, "x")
	require.Empty(t, reply)
	_ = err // EOF or reset, depending on timing

	// Clean exit: listeners gone, file restored byte for byte.
	cancel()
	require.NoError(t, <-done)
	done <- nil // for the cleanup
	require.Equal(t, original, e.read(t))
	_, err = net.DialTimeout("tcp", netip.AddrPortFrom(ipDriver, 9092).String(), 5*time.Second)
	require.Error(t, err)
	require.Contains(t, e.si.dialed(), "driver.hotrod.svc.cluster.local:8082")
}

func TestHostsIPsStableAcrossRestarts(t *testing.T) {
	e := newHostsEnv(t)
	// A /29 has 6 usable addresses: collisions are certain to be probed.
	services := []discovery.Service{svc("hotrod", "a", 80), svc("hotrod", "b", 81), svc("hotrod", "c", 82), svc("shared", "d", 83), svc("shared", "e", 84)}
	for _, s := range services {
		e.cat.Apply(added(s))
	}
	ips := func() map[string]netip.Addr {
		out := map[string]netip.Addr{}
		for _, s := range services {
			ip, ok := resolve(t, e.hosts, s.Name+"."+s.Namespace)
			require.True(t, ok)
			out[s.Key()] = ip
		}
		return out
	}
	run := func() map[string]netip.Addr {
		_, cancel, done := e.start(t, "127.246.7.0/29")
		require.Eventually(t, func() bool { return strings.Contains(e.read(t), "e.shared.svc.cluster.local") }, 10*time.Second, 10*time.Millisecond)
		got := ips()
		cancel()
		require.NoError(t, <-done)
		done <- nil
		require.Equal(t, original, e.read(t))
		return got
	}
	first := run()
	seen := map[netip.Addr]bool{}
	for _, ip := range first {
		require.False(t, seen[ip], "distinct IPs")
		seen[ip] = true
	}
	require.Equal(t, first, run(), "same IPs after a restart")

	// Even with Services discovered in another order and without the state
	// file, the hash gives the same IPs to a Service that does not collide.
	require.NoError(t, os.Remove(e.state))
	e.cat.Replace([]discovery.Service{services[4], services[0]})
	_, cancel, done := e.start(t, "127.246.7.0/29")
	require.Eventually(t, func() bool { return strings.Contains(e.read(t), "e.shared.svc.cluster.local") }, 10*time.Second, 10*time.Millisecond)
	a, _ := resolve(t, e.hosts, "a.hotrod")
	require.True(t, netip.MustParsePrefix("127.246.7.0/29").Contains(a))
	cancel()
	require.NoError(t, <-done)
	done <- nil
}

func TestHostsSecondOwnerRefused(t *testing.T) {
	e := newHostsEnv(t)
	e.cat.Apply(added(svc("hotrod", "driver", 8082)))
	_, cancel, done := e.start(t, "127.246.0.0/16")
	_, err := NewHosts(HostsOptions{Catalog: e.cat, Dial: e.si.dial, HostsFile: e.hosts,
		LockPath: filepath.Join(t.TempDir(), "other.lock"), Range: config.DefaultHostsRange})
	require.ErrorContains(t, err, "managed by another sbx daemon")
	cancel()
	require.NoError(t, <-done)
	done <- nil
	require.Equal(t, original, e.read(t))
}

func TestAllocatorCollisionsAndFull(t *testing.T) {
	a, err := newAllocator(netip.MustParsePrefix("127.9.9.8/30"), "")
	require.NoError(t, err)
	require.NoError(t, a.assign([]string{"x/a", "x/b"}))
	require.NotEqual(t, a.byKey["x/a"], a.byKey["x/b"])
	for _, ip := range a.byKey {
		require.Contains(t, []string{"127.9.9.9", "127.9.9.10"}, ip.String(), "network and broadcast addresses skipped")
	}
	require.ErrorContains(t, a.assign([]string{"x/a", "x/b", "x/c"}), "hosts range is full")

	a, err = newAllocator(netip.MustParsePrefix("127.0.0.0/30"), "")
	require.NoError(t, err)
	require.NoError(t, a.assign([]string{"k"}))
	require.Equal(t, "127.0.0.2", a.byKey["k"].String(), "127.0.0.1 is never handed out")

	_, err = newAllocator(netip.MustParsePrefix("::1/128"), "")
	require.Error(t, err)
}

func TestResolveMode(t *testing.T) {
	p := filepath.Join(t.TempDir(), "hosts")
	require.NoError(t, os.WriteFile(p, nil, 0o644))
	mode := func(o config.Outbound) config.OutboundMode {
		m, _ := ResolveMode(o)
		return m
	}
	require.Equal(t, config.ModeHosts, mode(config.Outbound{Mode: config.ModeAuto, HostsFile: p}))
	require.Equal(t, config.ModeProxy, mode(config.Outbound{Mode: config.ModeAuto, HostsFile: p + ".missing"}))
	require.Equal(t, config.ModeOff, mode(config.Outbound{Mode: config.ModeOff, HostsFile: p}))
	require.Equal(t, config.ModeProxy, mode(config.Outbound{Mode: config.ModeProxy, HostsFile: p}))
	_, why := ResolveMode(config.Outbound{Mode: config.ModeAuto})
	require.Contains(t, why, "no hosts file is configured")

	// Where the daemon cannot refuse other users' connections (macOS and
	// Windows today), auto does not pick hosts mode: its addresses would be
	// open to every local user. An explicit hosts mode is kept.
	peerUIDSupported = false
	t.Cleanup(func() { peerUIDSupported = peeruid.Supported })
	m, why := ResolveMode(config.Outbound{Mode: config.ModeAuto, HostsFile: p})
	require.Equal(t, config.ModeProxy, m)
	require.Contains(t, why, "cannot tell which user opens a connection")
	require.Equal(t, config.ModeHosts, mode(config.Outbound{Mode: config.ModeHosts, HostsFile: p}))
}

func TestCatalogLookup(t *testing.T) {
	c := NewCatalog("", []string{"hotrod", "web"})
	c.Apply(added(svc("hotrod", "driver", 8082)))
	c.Apply(added(svc("web", "driver", 8082)))
	c.Apply(added(svc("web", "ui", 80)))
	c.Apply(added(svc("shared", "redis", 6379)))
	for _, tc := range []struct {
		host, want string
		ok         bool
	}{
		{"driver", "driver.hotrod.svc.cluster.local", true},
		{"DRIVER.", "driver.hotrod.svc.cluster.local", true},
		{"ui", "ui.web.svc.cluster.local", true},
		{"driver.web", "driver.web.svc.cluster.local", true},
		{"redis", "", false},
		{"redis.shared", "redis.shared.svc.cluster.local", true},
		{"redis.shared.svc", "redis.shared.svc.cluster.local", true},
		{"other.ns.svc", "other.ns.svc.cluster.local", true},
		{"other.ns.svc.cluster.local", "other.ns.svc.cluster.local", true},
		{"example.com", "", false},
		{"redis.shared.example.com", "", false},
		{"10.0.0.1", "", false},
		{"", "", false},
		{".svc", "", false},
		{"a..svc", "", false},
	} {
		got, ok := c.Lookup(tc.host)
		require.Equal(t, tc.ok, ok, tc.host)
		require.Equal(t, tc.want, got, tc.host)
	}
	require.Equal(t, 4, c.Len())
	names := map[string][]string{}
	for _, s := range c.Services() {
		names[s.Key()] = s.Names
	}
	require.Equal(t, []string{"driver", "driver.hotrod", "driver.hotrod.svc", "driver.hotrod.svc.cluster.local"}, names["hotrod/driver"])
	require.Equal(t, []string{"driver.web", "driver.web.svc", "driver.web.svc.cluster.local"}, names["web/driver"], "the short name belongs to the first own namespace")
	require.Equal(t, []string{"redis.shared", "redis.shared.svc", "redis.shared.svc.cluster.local"}, names["shared/redis"])

	ch, stop := c.Subscribe()
	defer stop()
	c.SetOwnNamespaces([]string{"web"})
	<-ch
	got, _ := c.Lookup("driver")
	require.Equal(t, "driver.web.svc.cluster.local", got)
}

// TestHostsModeMovesAwayFromForeignListeners: another process (another
// sbx test run, any local server) already listens on a Service's port at
// the address the hash picks. The Service's names must not point there
// (its clients would reach that process): the Service moves to another
// address, and works. A run sharing the machine with another once failed
// with connection resets this way.
func TestHostsModeMovesAwayFromForeignListeners(t *testing.T) {
	const rng = "127.239.0.0/16"
	e := newHostsEnv(t)
	e.cat.Apply(added(svc("hotrod", "driver", 8082)))
	// Where the driver would go: the allocator's own choice, from an
	// allocator with no state, as the daemon's starts.
	a, err := newAllocator(netip.MustParsePrefix(rng), "")
	require.NoError(t, err)
	require.NoError(t, a.assign([]string{"hotrod/driver"}))
	hashed := a.byKey["hotrod/driver"]
	foreign, err := net.Listen("tcp", netip.AddrPortFrom(hashed, 8082).String())
	require.NoError(t, err)
	defer foreign.Close()

	h, _, _ := e.start(t, rng)
	require.Eventually(t, func() bool { _, ok := resolve(t, e.hosts, "driver"); return ok }, 10*time.Second, 10*time.Millisecond)
	ip, _ := resolve(t, e.hosts, "driver")
	require.NotEqual(t, hashed, ip, "the name must not point at the other process's listener")
	reply, err := roundTrip(t, e.hosts, "driver", 8082, "hello")
	require.NoError(t, err)
	require.Equal(t, "driver.hotrod.svc.cluster.local:8082|hello", reply)
	st := h.Status()
	require.Len(t, st, 1)
	require.Equal(t, ip, st[0].IP)
	require.True(t, st[0].Ports[0].Listening, st[0].Ports[0].Error)
}

// TestHostsModeTwoSideBySide: two daemons on one machine (two users, two
// test runs) in hosts mode with the same range and the same Services each
// get working addresses: the second moves away from the first's.
func TestHostsModeTwoSideBySide(t *testing.T) {
	const rng = "127.238.0.0/16"
	a, b := newHostsEnv(t), newHostsEnv(t)
	for _, e := range []*hostsEnv{a, b} {
		e.cat.Apply(added(svc("hotrod", "driver", 8082)))
		e.cat.Apply(added(svc("hotrod", "frontend", 8080, 8081)))
	}
	a.start(t, rng)
	require.Eventually(t, func() bool { _, ok := resolve(t, a.hosts, "frontend"); return ok }, 10*time.Second, 10*time.Millisecond)
	b.start(t, rng)
	require.Eventually(t, func() bool { _, ok := resolve(t, b.hosts, "frontend"); return ok }, 10*time.Second, 10*time.Millisecond)
	for _, e := range []*hostsEnv{a, b} {
		for _, c := range []struct {
			host string
			port int32
		}{{"driver", 8082}, {"frontend", 8080}, {"frontend", 8081}} {
			reply, err := roundTrip(t, e.hosts, c.host, c.port, "hi")
			require.NoError(t, err, "%s:%d via %s", c.host, c.port, e.hosts)
			require.Equal(t, fmt.Sprintf("%s.hotrod.svc.cluster.local:%d|hi", c.host, c.port), reply)
		}
	}
	ipA, _ := resolve(t, a.hosts, "driver")
	ipB, _ := resolve(t, b.hosts, "driver")
	require.NotEqual(t, ipA, ipB)
}

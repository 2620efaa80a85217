package node

import (
	"context"
	"crypto/rand"
	"fmt"
	"math/big"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"syscall"

	"golang.org/x/sys/unix"
)

// Network namespaces, veths and /etc/netns folders of a node stand-in are
// named after the test process's pid: "sbxrc-PID-N" (namespace) and
// "sxPIDhexpN" (host side of the veth, at most 15 bytes), so that two runs
// on one machine never touch each other's, and a run that starts removes
// what runs whose process is gone left behind.
const nsPrefix = "sbxrc-"

func nsName(n int) string   { return fmt.Sprintf("%s%d-%d", nsPrefix, os.Getpid(), n) }
func vethName(n int) string { return fmt.Sprintf("sx%xp%d", os.Getpid(), n) }

// ipCmd runs ip with args and returns its combined output in the error.
func ipCmd(ctx context.Context, args ...string) error {
	out, err := exec.CommandContext(ctx, "ip", args...).CombinedOutput()
	if err != nil {
		return fmt.Errorf("ip %s: %v: %s", strings.Join(args, " "), err, strings.TrimSpace(string(out)))
	}
	return nil
}

// pickSubnet picks a /24 in 10.200.0.0-10.255.255.0 that no address or
// route of the host overlaps.
func pickSubnet(ctx context.Context) (netip.Prefix, error) {
	used := map[netip.Prefix]bool{}
	for _, args := range [][]string{{"-4", "-o", "addr", "show"}, {"-4", "route", "show", "table", "all"}} {
		out, err := exec.CommandContext(ctx, "ip", args...).Output()
		if err != nil {
			return netip.Prefix{}, fmt.Errorf("ip %s: %w", strings.Join(args, " "), err)
		}
		for _, f := range strings.Fields(string(out)) {
			if p, err := netip.ParsePrefix(f); err == nil && p.Addr().Is4() {
				used[p.Masked()] = true
			} else if a, err := netip.ParseAddr(f); err == nil && a.Is4() {
				used[netip.PrefixFrom(a, 32)] = true
			}
		}
	}
	for range 100 {
		x, _ := rand.Int(rand.Reader, big.NewInt(56*256))
		v := int(x.Int64())
		cand := netip.PrefixFrom(netip.AddrFrom4([4]byte{10, byte(200 + v/256), byte(v % 256), 0}), 24)
		clash := false
		for p := range used {
			if p.Bits() > 0 && p.Overlaps(cand) {
				clash = true
				break
			}
		}
		if !clash {
			return cand, nil
		}
	}
	return netip.Prefix{}, fmt.Errorf("no free /24 in 10.200.0.0/13..10.255.0.0/16")
}

// cleanLeftovers removes the network namespaces (with their veths) and
// /etc/netns folders of node stand-ins whose process is gone.
func cleanLeftovers(ctx context.Context, logf func(string, ...any)) {
	out, err := exec.CommandContext(ctx, "ip", "netns", "list").Output()
	if err == nil {
		for _, line := range strings.Split(string(out), "\n") {
			f := strings.Fields(line)
			if len(f) == 0 || !strings.HasPrefix(f[0], nsPrefix) || !ownerGone(f[0]) {
				continue
			}
			logf("node stand-in: removing leftover network namespace %s", f[0])
			_ = ipCmd(ctx, "netns", "delete", f[0])
		}
	}
	// The interfaces of the cluster DNS and service addresses: "sxPIDhexd"
	// (a veth pair on the host).
	if out, err := exec.CommandContext(ctx, "ip", "-o", "link", "show", "type", "veth").Output(); err == nil {
		for _, line := range strings.Split(string(out), "\n") {
			f := strings.Fields(line)
			if len(f) < 2 {
				continue
			}
			name, _, _ := strings.Cut(strings.TrimSuffix(f[1], ":"), "@")
			hex, ok := strings.CutPrefix(name, "sx")
			if hex, ok = strings.CutSuffix(hex, "d"); !ok {
				continue
			}
			pid, err := strconv.ParseInt(hex, 16, 32)
			if err != nil || int(pid) == os.Getpid() || syscall.Kill(int(pid), 0) != syscall.ESRCH {
				continue
			}
			logf("node stand-in: removing leftover interface %s", name)
			_ = ipCmd(ctx, "link", "delete", name)
		}
	}
	entries, _ := os.ReadDir("/etc/netns")
	for _, e := range entries {
		if strings.HasPrefix(e.Name(), nsPrefix) && ownerGone(e.Name()) {
			_ = os.RemoveAll(filepath.Join("/etc/netns", e.Name()))
		}
	}
}

// ownerGone reports whether the process whose pid names ns is gone.
func ownerGone(ns string) bool {
	rest := strings.TrimPrefix(ns, nsPrefix)
	pidStr, _, _ := strings.Cut(rest, "-")
	pid, err := strconv.Atoi(pidStr)
	if err != nil || pid == os.Getpid() {
		return false
	}
	return syscall.Kill(pid, 0) == syscall.ESRCH
}

// podNet is one pod's network namespace: a veth pair whose host side has
// the subnet's gateway address (on every pod's veth) and a host route to
// the pod's address.
type podNet struct {
	ns, veth string
	ip, gw   netip.Addr
}

func setUpPodNet(ctx context.Context, n int, ip, gw netip.Addr, resolvConf string) (_ *podNet, err error) {
	p := &podNet{ns: nsName(n), veth: vethName(n), ip: ip, gw: gw}
	defer func() {
		if err != nil {
			p.tearDown()
		}
	}()
	if resolvConf != "" {
		// ip netns exec bind-mounts /etc/netns/NAME/* over /etc/*.
		dir := filepath.Join("/etc/netns", p.ns)
		if err := os.MkdirAll(dir, 0o755); err != nil {
			return p, err
		}
		if err := os.WriteFile(filepath.Join(dir, "resolv.conf"), []byte(resolvConf), 0o644); err != nil {
			return p, err
		}
	}
	for _, args := range [][]string{
		{"netns", "add", p.ns},
		{"link", "add", p.veth, "type", "veth", "peer", "name", "eth0", "netns", p.ns},
		{"addr", "add", gw.String() + "/32", "dev", p.veth},
		{"link", "set", p.veth, "up"},
		{"route", "add", ip.String() + "/32", "dev", p.veth, "src", gw.String()},
		{"-n", p.ns, "link", "set", "lo", "up"},
		{"-n", p.ns, "addr", "add", ip.String() + "/32", "dev", "eth0"},
		{"-n", p.ns, "link", "set", "eth0", "up"},
		{"-n", p.ns, "route", "add", gw.String(), "dev", "eth0"},
		{"-n", p.ns, "route", "add", "default", "via", gw.String(), "dev", "eth0"},
	} {
		if err := ipCmd(ctx, args...); err != nil {
			return p, err
		}
	}
	return p, nil
}

// tearDown removes the namespace (which removes the veth pair) and its
// /etc/netns folder.
func (p *podNet) tearDown() {
	ctx := context.Background()
	_ = ipCmd(ctx, "link", "delete", p.veth)
	_ = ipCmd(ctx, "netns", "delete", p.ns)
	_ = os.RemoveAll(filepath.Join("/etc/netns", p.ns))
}

// dialIn dials addr from inside network namespace ns, as the kubelet's
// port-forward does (the relay's tunnel port listens on the pod's
// loopback only).
func dialIn(ctx context.Context, ns, addr string) (net.Conn, error) {
	var c net.Conn
	var derr error
	if err := inNetns(ns, func() { c, derr = (&net.Dialer{}).DialContext(ctx, "tcp", addr) }); err != nil {
		return nil, err
	}
	return c, derr
}

// listenIn listens on addr inside network namespace ns.
func listenIn(ns, addr string) (net.Listener, error) {
	var ln net.Listener
	var lerr error
	if err := inNetns(ns, func() { ln, lerr = net.Listen("tcp", addr) }); err != nil {
		return nil, err
	}
	return ln, lerr
}

// inNetns runs fn on an OS thread moved into network namespace ns, and
// waits for it: a socket fn makes stays in ns. The thread goes back to the
// host's namespace afterwards (if it cannot, it stays locked and exits
// with its goroutine, never serving others).
func inNetns(ns string, fn func()) error {
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		orig, err := os.Open("/proc/thread-self/ns/net")
		if err != nil {
			runtime.UnlockOSThread()
			errc <- err
			return
		}
		defer orig.Close()
		target, err := os.Open(filepath.Join("/var/run/netns", ns))
		if err != nil {
			runtime.UnlockOSThread()
			errc <- fmt.Errorf("pod network namespace: %w", err)
			return
		}
		defer target.Close()
		if err := unix.Setns(int(target.Fd()), unix.CLONE_NEWNET); err != nil {
			runtime.UnlockOSThread()
			errc <- fmt.Errorf("enter network namespace %s: %w", ns, err)
			return
		}
		fn()
		if unix.Setns(int(orig.Fd()), unix.CLONE_NEWNET) == nil {
			runtime.UnlockOSThread()
		}
		errc <- nil
	}()
	return <-errc
}

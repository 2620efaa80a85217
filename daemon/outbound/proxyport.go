package outbound

import (
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/sbx-dev/sbx/daemon/proxy"
)

// startProxy starts the proxy with o. When o.Listen leaves the port to the
// system (port 0) and portPath remembers an earlier one, that port is
// tried first; the port the proxy got is remembered for next time. A
// remembered port another process took since is given up for a new one,
// which the log says (environments made with the old one must be made
// again).
func startProxy(o proxy.Options, portPath string, log *slog.Logger) (*proxy.Server, error) {
	host, port, err := net.SplitHostPort(o.Listen)
	if portPath == "" || err != nil || port != "0" {
		return proxy.New(o)
	}
	if prev := readPort(portPath); prev != 0 {
		po := o
		po.Listen = net.JoinHostPort(host, strconv.Itoa(int(prev)))
		p, err := proxy.New(po)
		if err == nil {
			return p, nil
		}
		log.Warn("the outbound proxy's port of the last run is taken; picking another (make environments from `sbx env` again)",
			"port", prev, "err", err)
	}
	p, err := proxy.New(o)
	if err != nil {
		return nil, err
	}
	if ap, perr := netip.ParseAddrPort(p.Addr().String()); perr == nil {
		if werr := writePort(portPath, ap.Port()); werr != nil {
			log.Warn("cannot remember the outbound proxy's port; it may change after a restart", "path", portPath, "err", werr)
		}
	}
	return p, nil
}

func readPort(path string) uint16 {
	b, err := os.ReadFile(path)
	if err != nil {
		return 0
	}
	n, err := strconv.ParseUint(strings.TrimSpace(string(b)), 10, 16)
	if err != nil {
		return 0
	}
	return uint16(n)
}

func writePort(path string, port uint16) error {
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return err
	}
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, []byte(fmt.Sprintln(port)), 0o600); err != nil {
		return err
	}
	return os.Rename(tmp, path)
}

package sim

import (
	"context"
	"net/netip"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/sbx-dev/sbx/relay"
)

// defaultRelay is the relay Start runs unless Options.Relay says otherwise:
// the real relay from the container's command line, the way `sbx relay`
// does in a pod: relay.ParseArgs on the template's args, then
// relay.New with the pod's sockets, DNS and dialer.
func defaultRelay(ctx context.Context, p RelayProcess) error {
	opts, err := relay.ParseArgs(p.Args)
	if err != nil {
		return err
	}
	r, err := relay.New(opts, relay.Deps{
		Logger:   p.Logger,
		Dialer:   p.Resolver,
		Resolver: p.Resolver,
		Listen:   p.Listen,
		Registry: prometheus.NewRegistry(),
		LocalAddrs: func() ([]netip.Addr, error) {
			return []netip.Addr{p.PodIP, netip.MustParseAddr("127.0.0.1"), netip.IPv6Loopback()}, nil
		},
		Version: "sim",
	})
	if err != nil {
		return err
	}
	return r.Run(ctx)
}

package outbound_test

import (
	"context"
	"net"
	"path/filepath"
	"sync"

	"k8s.io/client-go/kubernetes"

	"github.com/sbx-dev/sbx/cluster/discovery"
	"github.com/sbx-dev/sbx/daemon/config"
	"github.com/sbx-dev/sbx/daemon/outbound"
)

// Example shows how the daemon wires outbound access for a sandbox:
// discovery feeds the Catalog, the Manager follows the user config, and
// the Dialer opens tunnel streams through the sandbox's session
// (daemon.(*Daemon).DialOutbound). It is compiled, not run.
func Example() {
	var (
		kube         kubernetes.Interface // the sandbox's cluster
		cfg          = config.Default()   // from the config Watcher
		stateDir     = "/home/alice/.local/state/sbx"
		sandbox      = "alice"
		routingKey   = "k3x9q2m7p1z0a"
		ownNS        = []string{"hotrod"} // the sandbox's namespaces, in spec order
		dialOutbound func(ctx context.Context, sandbox, target, source string) (net.Conn, error)
	)
	cat := outbound.NewCatalog("", ownNS)
	w, err := discovery.New(discovery.Options{
		Client:     kube,
		Namespaces: append(append([]string{}, ownNS...), cfg.Outbound.Namespaces...),
		Selector:   "app.kubernetes.io/managed-by!=sbx", // not sbx's own Services
		OnEvent:    cat.Apply,
	})
	if err != nil {
		return
	}
	m := outbound.NewManager(outbound.ManagerOptions{
		Catalog: cat,
		Dial: func(ctx context.Context, target string) (net.Conn, error) {
			return dialOutbound(ctx, sandbox, target, outbound.SourceFromContext(ctx))
		},
		LockPath:  filepath.Join(stateDir, "hosts.lock"),
		StatePath: filepath.Join(stateDir, "hosts-ips.json"),
		Baggage:   func() (string, string) { return cfg.BaggageKey, routingKey },
	}, cfg.Outbound)

	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Add(2)
	go func() { defer wg.Done(); _ = w.Run(ctx) }()
	go func() { defer wg.Done(); _ = m.Run(ctx) }()

	// In the config Watcher's OnChange: m.SetConfig(newConfig.Outbound).
	// In the daemon's status: Outbound = m.Status() (sbx run and sbx env
	// read outbound.proxyAddr from it).
	_ = m.Status()

	cancel() // on daemon shutdown: hosts block removed, proxy closed
	wg.Wait()
}

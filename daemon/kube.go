package daemon

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"

	"github.com/sbx-dev/sbx/cluster"
	"github.com/sbx-dev/sbx/cluster/kube"
	"github.com/sbx-dev/sbx/cluster/portforward"
	"github.com/sbx-dev/sbx/cluster/spec"
	"github.com/sbx-dev/sbx/daemon/api"
	"github.com/sbx-dev/sbx/relay/relayargs"
)

// KubeOptions configure KubeClusters.
type KubeOptions struct {
	Logger *slog.Logger
	// DefaultRelayImage is used when the user config names none
	// (cluster.DefaultRelayImageRepo + ":" + version).
	DefaultRelayImage string
	// WaitTimeout bounds one wait for the relay pod; the supervisor then
	// retries (default 3 minutes).
	WaitTimeout time.Duration
	// GCGrace is how long after its lease expired gc keeps a sandbox
	// (default 10 minutes: a laptop that slept gets it back).
	GCGrace time.Duration
	// PortForwardConnections is how many API server connections each
	// relay's port-forwards are spread over (default 2, the pool size).
	PortForwardConnections int
	// Now is the clock (default time.Now).
	Now func() time.Time
	// RouteResync is how often a connected sandbox's routes are checked
	// when no VirtualService change was seen (default 30 s).
	RouteResync time.Duration
}

// KubeClusters opens real clusters from kubeconfig: objects through
// package cluster, tunnel connections through cluster/portforward. It
// caches one connection per kubeconfig source and what the context
// resolves to (see Open). Close it when the daemon stops.
type KubeClusters struct {
	o KubeOptions

	mu sync.Mutex
	// clusters are the connections by source and connectionKey. One
	// superseded by a changed kubeconfig stays until Close: sandboxes
	// connected through it may still be using it.
	clusters map[string]*kubeCluster
	// slots are what Open knows of each (source, requested context) pair
	// it was asked for; see Open.
	slots map[string]*kubeSlot
}

// kubeSlot is what Open remembers of one (source, requested context).
type kubeSlot struct {
	opened       bool      // it opened a cluster before
	failingSince time.Time // zero unless its last Open failed
}

// rewriteGrace is how long a kubeconfig may fail to yield a context before
// that is taken as the user's doing (the context deleted, the file removed
// or broken) rather than a rewrite in progress: then the sandbox fails
// with the reason instead of reconnecting forever.
const rewriteGrace = time.Minute

// NewKubeClusters returns a KubeClusters.
func NewKubeClusters(o KubeOptions) *KubeClusters {
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	if o.WaitTimeout <= 0 {
		o.WaitTimeout = 3 * time.Minute
	}
	if o.GCGrace <= 0 {
		o.GCGrace = 10 * time.Minute
	}
	if o.PortForwardConnections <= 0 {
		o.PortForwardConnections = 2
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	return &KubeClusters{o: o, clusters: map[string]*kubeCluster{}, slots: map[string]*kubeSlot{}}
}

// Open is a ClusterProvider. It reads the kubeconfig on every call, as
// kubectl does on every run, and reuses a cached connection only when the
// context resolves to the same name, namespace, server and credentials:
// after `kubectl config use-context other` an Open without a context is
// the other cluster, not the one the daemon happened to open first.
//
// A kubeconfig that does not exist or lacks the context is the user's to
// fix (a PermanentError), unless the same source and context opened
// before: then it is likely a file being rewritten (kubectl does not
// replace it atomically). That, and any other kubeconfig error (one that
// does not parse, a certificate file it names missing), the caller
// retries, until the same source and context have failed for
// rewriteGrace: then it is a PermanentError too.
func (k *KubeClusters) Open(_ context.Context, src api.KubeconfigSource, kubeContext string) (Cluster, error) {
	opts := SourceOptions(src)
	opts.Context, opts.UserAgent = kubeContext, "sbx-daemon"
	kc, err := kube.Resolve(opts)
	slot := src.Key() + "\x00" + kubeContext
	k.mu.Lock()
	defer k.mu.Unlock()
	st := k.slots[slot]
	if st == nil {
		st = &kubeSlot{}
		k.slots[slot] = st
	}
	if err != nil {
		now := k.o.Now()
		if st.failingSince.IsZero() {
			st.failingSince = now
		}
		failing := now.Sub(st.failingSince)
		missing := errors.Is(err, kube.ErrNoKubeconfig) || errors.Is(err, kube.ErrUnknownContext) || errors.Is(err, fs.ErrNotExist)
		switch {
		case missing && !st.opened:
			return nil, &PermanentError{&kubeconfigError{err, "pass --kubeconfig/--context, or set KUBECONFIG, and connect again"}}
		case failing >= rewriteGrace:
			return nil, &PermanentError{&kubeconfigError{err, fmt.Sprintf("still failing after %s: fix the kubeconfig, or pass --kubeconfig/--context, and connect again",
				failing.Round(time.Second))}}
		case st.opened:
			return nil, &kubeconfigError{err, fmt.Sprintf("it was readable before, so it may be in the middle of a rewrite; retrying for up to %s", rewriteGrace)}
		}
		return nil, &kubeconfigError{err, fmt.Sprintf("fix the kubeconfig; retrying for up to %s", rewriteGrace)}
	}
	key := src.Key() + "\x00" + connectionKey(kc)
	c, ok := k.clusters[key]
	if !ok {
		if err := kc.BuildClients(); err != nil {
			return nil, &kubeconfigError{err, "fix the kubeconfig's server and credentials, or pass --kubeconfig/--context"}
		}
		c = k.fromKube(kc)
		c.owner = k
		k.clusters[key] = c
		k.o.Logger.Debug("cluster connection opened", "kubeconfig", describeSource(src), "context", kc.Context, "namespace", kc.Namespace, "server", redactedURL(kc.REST.Host))
	}
	st.opened, st.failingSince = true, time.Time{}
	return c, nil
}

// kubeconfigError is a kubeconfig Open could not use, with the next step
// for a sandbox's supervisor (connect again, or wait for its retries). A
// request that is not retried (list, gc, disconnect) says its own next
// step instead: see kubeconfigCause.
type kubeconfigError struct {
	err  error
	hint string
}

func (e *kubeconfigError) Error() string { return e.err.Error() + " (" + e.hint + ")" }
func (e *kubeconfigError) Unwrap() error { return e.err }

func (e *kubeconfigError) nextStep() string { return e.hint }

// kubeconfigCause is err without the next step Open added for a sandbox's
// supervisor; other errors are returned as they are.
func kubeconfigCause(err error) error {
	var ke *kubeconfigError
	if errors.As(err, &ke) {
		return ke.err
	}
	return err
}

// openError is the answer to a one-shot request (list, gc, disconnect
// --orphan) whose cluster could not be opened. The errors of package
// cluster/kube for a missing kubeconfig or context say what to pass;
// others get the flags to check.
func openError(err error) error {
	err = kubeconfigCause(err)
	msg := fmt.Sprintf("open the cluster: %v", err)
	if !errors.Is(err, kube.ErrNoKubeconfig) && !errors.Is(err, kube.ErrUnknownContext) {
		msg += " (fix the kubeconfig, or pass --kubeconfig/--context, and run the command again)"
	}
	return &httpError{http.StatusBadGateway, msg}
}

// redactedURL is a server or proxy URL for logs: a password in it (legal
// in a kubeconfig's server:, if rare) becomes "xxxxx".
func redactedURL(s string) string {
	u, err := url.Parse(s)
	if err != nil {
		return "(unparsable URL)"
	}
	return u.Redacted()
}

// connectionKey identifies what a resolved context connects to and as
// whom: its name, its namespace (List and GC fall back to it), the server,
// how it is reached (TLS, proxy-url, compression) and the credentials. A
// context that `kubectl config set-context` points elsewhere, or a
// replaced token or certificate, thus gets a new connection rather than
// the old one. Secrets go into a hash, never into a map key as they are.
// An auth-provider's settings are left out except its name: the provider
// writes refreshed tokens into the kubeconfig, and each refresh would
// otherwise open another connection.
func connectionKey(kc *kube.Cluster) string {
	r := kc.REST
	id := struct {
		Namespace, Host, APIPath, Proxy               string
		DisableCompression                            bool
		Username, Password, BearerToken, BearerTokenF string
		Impersonate                                   rest.ImpersonationConfig
		TLS                                           rest.TLSClientConfig
		Exec                                          *clientcmdapi.ExecConfig // its cluster extension is json:"-"
		AuthProvider                                  string
	}{
		Namespace: kc.Namespace, Host: r.Host, APIPath: r.APIPath, DisableCompression: r.DisableCompression,
		Username: r.Username, Password: r.Password, BearerToken: r.BearerToken, BearerTokenF: r.BearerTokenFile,
		Impersonate: r.Impersonate, TLS: r.TLSClientConfig, Exec: r.ExecProvider,
	}
	if r.Proxy != nil {
		// clientcmd sets proxy-url as http.ProxyURL, which ignores the
		// request; a func is not comparable, its answer is.
		if u, err := r.Proxy(&http.Request{URL: &url.URL{Scheme: "https", Host: r.Host}}); err == nil && u != nil {
			id.Proxy = u.String()
		}
	}
	if r.AuthProvider != nil {
		id.AuthProvider = r.AuthProvider.Name
	}
	b, err := json.Marshal(id)
	if err != nil { // plain strings, bytes and bools: cannot happen; never share a connection then
		b = fmt.Appendf(nil, "%p", kc)
	}
	sum := sha256.Sum256(b)
	return kc.Context + "\x00" + hex.EncodeToString(sum[:])
}

// SourceOptions are the kube.Options that load s's kubeconfig, as
// kubectl with the CLI's flag and environment would.
func SourceOptions(s api.KubeconfigSource) kube.Options {
	env := strings.Join(s.KubeconfigEnv, string(filepath.ListSeparator))
	return kube.Options{
		Kubeconfig: s.KubeconfigFile,
		// Only KUBECONFIG is read through Getenv; the daemon's own is not
		// the user's shell's.
		Getenv: func(k string) string {
			if k == clientcmd.RecommendedConfigPathEnvVar {
				return env
			}
			return os.Getenv(k)
		},
	}
}

// describeSource names s for logs.
func describeSource(s api.KubeconfigSource) string {
	switch {
	case s.KubeconfigFile != "":
		return "--kubeconfig " + s.KubeconfigFile
	case len(s.KubeconfigEnv) > 0:
		return "KUBECONFIG=" + strings.Join(s.KubeconfigEnv, string(filepath.ListSeparator))
	}
	return clientcmd.RecommendedHomeFile
}

// sameCluster reports whether a sandbox saved with src and kubeContext
// lives in the cluster creq selects. Sources are compared as Open's cache
// keys compare them and contexts once resolved: a sandbox is saved with the
// context it was connected to, and a request without --context means the
// current one. current is currentContext(creq.KubeconfigSource), which an
// empty context on either side resolves to; a named context resolves to
// itself, so gc reads the kubeconfig once for all its sandboxes.
func sameCluster(src api.KubeconfigSource, kubeContext string, creq api.ClusterRequest, current string) bool {
	if src.Key() != creq.KubeconfigSource.Key() {
		return false
	}
	resolve := func(kctx string) string {
		if kctx == "" {
			return current
		}
		return kctx
	}
	return kubeContext == creq.Context || resolve(kubeContext) == resolve(creq.Context)
}

// specContext resolves the spec.cluster of a connect without --context to
// the kube context it names, through the user config's contexts mapping
// (read from configPath), as package cluster/kube does. An unknown name is
// the user's to fix, so it is refused at once (400) rather than becoming a
// sandbox that fails in the background.
func specContext(req api.ConnectRequest, contexts map[string]string, configPath string) (string, error) {
	opts := SourceOptions(req.KubeconfigSource)
	opts.Cluster, opts.ClusterContexts, opts.ConfigFile = req.Spec.Spec.Cluster, contexts, configPath
	name, _, err := kube.ChooseContext(opts)
	if err != nil {
		return "", badRequest("sandbox %s: %v", req.Spec.Name, err)
	}
	return name, nil
}

// currentContext is the kubeconfig's current context, which a sandbox
// connected without --context or spec.cluster is pinned to, so that a
// later `kubectl config use-context` does not move it (its objects stay
// where they were applied, and disconnect must find them there). It is ""
// when the kubeconfig cannot be read: opening the cluster then reports
// why, in the background, as before.
func currentContext(src api.KubeconfigSource) string {
	name, _, err := kube.ChooseContext(SourceOptions(src))
	if err != nil {
		return ""
	}
	return name
}

func (k *KubeClusters) fromKube(kc *kube.Cluster) *kubeCluster {
	c := &kubeCluster{
		o:         k.o,
		clients:   cluster.Clients{Kube: kc.Kube, Istio: kc.Istio, Dynamic: kc.Dynamic},
		namespace: kc.Namespace,
		log:       k.o.Logger.With("context", kc.Context),
		dialers:   map[relayRef]*portforward.Dialer{},
		server:    apiServer{context: kc.Context},
	}
	if kc.REST != nil {
		c.server.url = redactedURL(kc.REST.Host)
	}
	c.dial = func(ctx context.Context, t Target) (net.Conn, error) { return c.portForward(ctx, kc, t) }
	return c
}

// NewClusterFromKube returns the Cluster for an already loaded connection
// (REST config and clientsets), with port-forwards to the relays; the
// simulated cluster's clients and port-forward server plug in here. Its
// Close closes the port-forwards.
func NewClusterFromKube(kc *kube.Cluster, o KubeOptions) interface {
	Cluster
	Close() error
} {
	return NewKubeClusters(o).fromKube(kc)
}

// Close closes the cluster's port-forwards.
func (c *kubeCluster) Close() error {
	c.closeDialers("", nil)
	return nil
}

// Close closes every cached port-forward.
func (k *KubeClusters) Close() error {
	k.mu.Lock()
	defer k.mu.Unlock()
	for key, c := range k.clusters {
		c.closeDialers("", nil)
		delete(k.clusters, key)
	}
	return nil
}

// closeDialers closes the sandbox's port-forwards but keep in every
// cached connection: one superseded by a changed kubeconfig may still
// hold some.
func (k *KubeClusters) closeDialers(sandbox string, keep *portforward.Dialer) {
	k.mu.Lock()
	cs := make([]*kubeCluster, 0, len(k.clusters))
	for _, c := range k.clusters {
		cs = append(cs, c)
	}
	k.mu.Unlock()
	for _, c := range cs {
		c.closeDialers(sandbox, keep)
	}
}

// closeSandboxDialers closes the sandbox's port-forwards but keep, in
// every connection of c's KubeClusters (only c's for NewClusterFromKube).
func (c *kubeCluster) closeSandboxDialers(sandbox string, keep *portforward.Dialer) {
	if c.owner != nil {
		c.owner.closeDialers(sandbox, keep)
	} else {
		c.closeDialers(sandbox, keep)
	}
}

// kubeCluster adapts package cluster to the daemon's Cluster.
type kubeCluster struct {
	o         KubeOptions
	owner     *KubeClusters // nil for NewClusterFromKube
	clients   cluster.Clients
	namespace string // the context's namespace
	dial      func(ctx context.Context, t Target) (net.Conn, error)
	log       *slog.Logger
	server    apiServer // for the hints of failed calls

	mu      sync.Mutex
	dialers map[relayRef]*portforward.Dialer
}

// ServiceClient returns the clientset outbound access watches Services
// with (ServiceDiscoverer).
func (c *kubeCluster) ServiceClient() kubernetes.Interface { return c.clients.Kube }

func eventsTo(progress func(string)) func(cluster.Event) {
	return func(e cluster.Event) {
		if progress != nil {
			progress(e.String())
		}
	}
}

func (c *kubeCluster) Apply(ctx context.Context, sb *spec.Sandbox, o ApplyOptions, progress func(string)) (Applied, error) {
	image := o.RelayImage
	if image == "" {
		image = c.o.DefaultRelayImage
	}
	res, err := cluster.Apply(ctx, c.clients, sb, cluster.Options{
		RoutingKey:          o.RoutingKey,
		TokenVerifier:       o.TokenVerifier,
		RefuseOtherVerifier: o.RefuseOtherVerifier,
		RelayImage:          image,
		RelayMaxStreams:     o.RelayMaxStreams,
		RelayDeny:           o.RelayDeny,
		BaggageKey:          o.BaggageKey,
		Holder:              o.Holder,
		ClusterDomain:       o.ClusterDomain,
	}, eventsTo(progress))
	if errors.Is(err, cluster.ErrVerifierMismatch) {
		// The caller's "apply the cluster objects" does not name it.
		return Applied{}, verifierConflict(sb.Name, fmt.Errorf("sandbox %s: %w", sb.Name, err))
	}
	if err != nil {
		// Apply reads, creates and patches many kinds: a refusal names
		// the resource, and the hint asks what the user may do.
		var home string
		if nss := sb.Namespaces(); len(nss) > 0 {
			home = nss[0]
		}
		err = explainAPIError(err, c.server, apiOp{namespace: home})
		if apierrors.IsForbidden(err) {
			return Applied{}, &PermanentError{err}
		}
		if !transient(err) {
			return Applied{}, &PermanentError{err}
		}
		return Applied{}, err
	}
	out := Applied{
		Target: Target{Sandbox: sb.Name, RoutingKey: res.RoutingKey, Namespace: res.Namespace, Namespaces: sb.Namespaces(),
			TokenVerifier: o.TokenVerifier},
		Services: map[MappingKey][]string{},
	}
	if res.Routes != nil {
		rc := routeCheck(res.Routes, nil, c.server)
		out.Routes = &rc
	}
	if res.Objects != nil {
		for _, w := range res.Objects.Workloads {
			for _, p := range w.Ports {
				key := MappingKey{Workload: w.Local.Name, Port: p.Port}
				for _, svc := range p.Services {
					out.Services[key] = append(out.Services[key], svc.Name+"."+svc.Namespace)
				}
			}
		}
	}
	return out, nil
}

func (c *kubeCluster) WaitRelay(ctx context.Context, t Target, progress func(string)) error {
	ctx, cancel := context.WithTimeout(ctx, c.o.WaitTimeout)
	defer cancel()
	_, err := cluster.WaitRelay(ctx, c.clients, cluster.WaitOptions{
		Namespace: t.Namespace, Sandbox: t.Sandbox, RoutingKey: t.RoutingKey, TokenVerifier: t.TokenVerifier,
		RelayImage: c.o.DefaultRelayImage,
	}, eventsTo(progress))
	if errors.Is(err, cluster.ErrVerifierMismatch) {
		return verifierConflict(t.Sandbox, err) // the caller names the relay's sandbox
	}
	return explainAPIError(err, c.server, apiOp{namespace: t.Namespace})
}

// verifierConflict is the end of a sandbox whose relay another daemon
// applied with its own token since (or someone edited): this daemon stops
// rather than take it back by itself, which would break the other's
// tunnel and make the two take turns; the user decides.
func verifierConflict(sandbox string, err error) error {
	return &PermanentError{&nextStepError{
		fmt.Errorf("%w; this daemon stopped reconnecting so that two daemons do not take turns", err),
		fmt.Sprintf("to take the sandbox back here, run `sbx connect %s --rotate-token` (or connect it again with -f FILE); the other daemon then stops the same way", sandbox)}}
}

// relayRef keys the port-forward dialers: one per relay.
type relayRef struct{ namespace, sandbox, key string }

func dialerKey(t Target) relayRef { return relayRef{t.Namespace, t.Sandbox, t.RoutingKey} }

func (c *kubeCluster) DialRelay(ctx context.Context, t Target) (net.Conn, error) {
	return c.dial(ctx, t)
}

// portForward opens a port-forwarded connection to the relay's tunnel
// port. The dialer looks the ready pod up on every dial, so a moved pod is
// found.
func (c *kubeCluster) portForward(ctx context.Context, kc *kube.Cluster, t Target) (net.Conn, error) {
	c.mu.Lock()
	d, ok := c.dialers[dialerKey(t)]
	if !ok {
		sel := labels.Set{
			cluster.LabelSandbox:    t.Sandbox,
			cluster.LabelRoutingKey: t.RoutingKey,
			cluster.LabelComponent:  "relay",
		}.String()
		var err error
		d, err = portforward.New(portforward.Config{
			REST:        kc.REST,
			Client:      kc.Kube,
			Namespace:   t.Namespace,
			Selector:    sel,
			Port:        relayargs.TunnelPort,
			Connections: c.o.PortForwardConnections,
			Logger:      c.log.With("sandbox", t.Sandbox),
		})
		if err != nil {
			c.mu.Unlock()
			return nil, err
		}
		c.dialers[dialerKey(t)] = d
		c.mu.Unlock()
		// A session dials one relay through one connection at a time,
		// and its previous attempt's tunnel is closed before this one
		// dials. A dialer it left in a connection superseded by a
		// changed kubeconfig, or for a relay it no longer uses, would
		// keep its API server connections open until disconnect.
		c.closeSandboxDialers(t.Sandbox, d)
	} else {
		c.mu.Unlock()
	}
	conn, err := d.Dial(ctx)
	if err != nil {
		return nil, err
	}
	return conn, nil
}

// closeDialers closes the dialers of one sandbox ("" = all) except keep
// (nil: none).
func (c *kubeCluster) closeDialers(sandbox string, keep *portforward.Dialer) {
	c.mu.Lock()
	var ds []*portforward.Dialer
	for k, d := range c.dialers {
		if d != keep && (sandbox == "" || k.sandbox == sandbox) {
			ds = append(ds, d)
			delete(c.dialers, k)
		}
	}
	c.mu.Unlock()
	for _, d := range ds {
		_ = d.Close()
	}
}

func (c *kubeCluster) RenewLease(ctx context.Context, t Target) error {
	err := cluster.RenewLease(ctx, c.clients, cluster.Ref{Name: t.Sandbox, Namespaces: t.Namespaces}, c.o.Now())
	if err == nil {
		return nil
	}
	// Tell "the sandbox is gone" (gc, kubectl delete) from a failed call:
	// only the first is cured by applying again.
	nss := t.Namespaces
	if len(nss) == 0 {
		nss = []string{t.Namespace}
	}
	for _, ns := range nss {
		_, gerr := c.clients.Kube.CoordinationV1().Leases(ns).Get(ctx, cluster.LeaseName(t.Sandbox), metav1.GetOptions{})
		if apierrors.IsNotFound(gerr) {
			return fmt.Errorf("%w: %w", ErrSandboxGone, err)
		}
	}
	return explainAPIError(err, c.server, apiOp{verb: "update", resource: "leases.coordination.k8s.io", namespace: nss[0]})
}

func (c *kubeCluster) Delete(ctx context.Context, t Target, sb *spec.Sandbox) error {
	c.closeSandboxDialers(t.Sandbox, nil)
	nss := t.Namespaces
	if len(nss) == 0 && sb != nil {
		nss = sb.Namespaces()
	}
	err := cluster.Delete(ctx, c.clients, cluster.Ref{Name: t.Sandbox, Namespaces: nss}, nil)
	if errors.Is(err, cluster.ErrSandboxNotFound) {
		return nil // already gone (gc, or deleted by hand)
	}
	// Without namespaces, Delete finds them by listing Leases
	// cluster-wide; with them, it reads, lists and deletes many kinds.
	op := apiOp{verb: "list", resource: "leases.coordination.k8s.io"}
	if len(nss) > 0 {
		op = apiOp{namespace: nss[0]}
	}
	return explainAPIError(err, c.server, op)
}

// namespaces turns a -n value into the namespaces to look in: all when
// empty.
func namespaces(ns string) []string {
	if ns == "" {
		return nil
	}
	return []string{ns}
}

func (c *kubeCluster) List(ctx context.Context, ns string) ([]ClusterSandbox, error) {
	infos, err := cluster.List(ctx, c.clients, namespaces(ns), c.o.Now())
	if err != nil && ns == "" && apierrors.IsForbidden(err) && c.namespace != "" {
		// No cluster-wide list: fall back to the context's namespace.
		ns = c.namespace
		infos, err = cluster.List(ctx, c.clients, []string{c.namespace}, c.o.Now())
	}
	if err != nil {
		return nil, explainAPIError(err, c.server, apiOp{verb: "list", resource: "leases.coordination.k8s.io", namespace: ns})
	}
	out := make([]ClusterSandbox, 0, len(infos))
	for _, in := range infos {
		out = append(out, ClusterSandbox{Name: in.Name, RoutingKey: in.RoutingKey, Namespace: in.Namespace, LeaseExpires: in.Expires})
	}
	return out, nil
}

func (c *kubeCluster) GC(ctx context.Context, ns string) ([]string, error) {
	nss := namespaces(ns)
	deleted, err := cluster.GC(ctx, c.clients, cluster.GCOptions{Namespaces: nss, Grace: c.o.GCGrace, Now: c.o.Now()}, nil)
	if err != nil && ns == "" && apierrors.IsForbidden(err) && c.namespace != "" {
		ns = c.namespace
		deleted, err = cluster.GC(ctx, c.clients, cluster.GCOptions{Namespaces: []string{c.namespace}, Grace: c.o.GCGrace, Now: c.o.Now()}, nil)
	}
	// Across all namespaces the part that needs more than a namespaced
	// Role is listing the Leases; in one, gc reads and deletes many kinds.
	op := apiOp{namespace: ns}
	if ns == "" {
		op = apiOp{verb: "list", resource: "leases.coordination.k8s.io"}
	}
	return deleted, explainAPIError(err, c.server, op)
}

// transient reports whether an Apply error may go away by itself, so the
// supervisor should retry: the network, the API server being unavailable
// or slow, expired credentials (the user logs in again), conflicts.
// Everything else — a workload that does not exist, a port no Service
// exposes, a VirtualService sbx must not touch — needs the user to change
// something; retrying it forever would only hide the message.
func transient(err error) bool {
	var (
		ne  net.Error
		ue  *url.Error
		api apierrors.APIStatus
	)
	switch {
	case errors.Is(err, context.DeadlineExceeded), errors.Is(err, context.Canceled), errors.Is(err, cluster.ErrRouteConflict):
		return true
	case errors.As(err, &ne), errors.As(err, &ue):
		return true
	case errors.As(err, &api):
		return apierrors.IsServerTimeout(err) || apierrors.IsTimeout(err) || apierrors.IsTooManyRequests(err) ||
			apierrors.IsInternalError(err) || apierrors.IsServiceUnavailable(err) || apierrors.IsUnexpectedServerError(err) ||
			apierrors.IsConflict(err) || apierrors.IsUnauthorized(err) || api.Status().Code >= 500
	}
	return false
}

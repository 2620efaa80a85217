package live

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"net/http"
	"net/url"
	"sync"
	"time"

	"k8s.io/client-go/rest"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"

	"github.com/sbx-dev/sbx/cluster/kube"
	"github.com/sbx-dev/sbx/cluster/portforward"
)

// Options configure Clusters.
type Options struct {
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

// Clusters opens real clusters from kubeconfig: objects through package
// cluster, tunnel connections through cluster/portforward. It caches one
// connection per kubeconfig source and what the context resolves to (see
// Open). Close it when the daemon stops.
type Clusters struct {
	o Options

	mu sync.Mutex
	// clusters are the connections by source and connectionKey. One
	// superseded by a changed kubeconfig stays until Close: sandboxes
	// connected through it may still be using it.
	clusters map[string]*Cluster
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

// NewClusters returns a Clusters.
func NewClusters(o Options) *Clusters {
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
	return &Clusters{o: o, clusters: map[string]*Cluster{}, slots: map[string]*kubeSlot{}}
}

// Source is where a kubeconfig is read from.
type Source struct {
	// Key identifies the source: equal keys read the same files with the
	// same KUBECONFIG.
	Key string
	// Options load the kubeconfig as kubectl would; Open sets Context.
	Options kube.Options
	// Name names the source in logs ("--kubeconfig FILE", "KUBECONFIG=…").
	Name string
}

// Open returns the cluster src's kubeContext ("" = the current one)
// connects to. It reads the kubeconfig on every call, as kubectl does on
// every run, and reuses a cached connection only when the context
// resolves to the same name, namespace, server and credentials: after
// `kubectl config use-context other` an Open without a context is the
// other cluster, not the one opened first.
//
// Its errors are *KubeconfigError. A kubeconfig that does not exist or
// lacks the context is the user's to fix (Permanent), unless the same
// source and context opened before: then it is likely a file being
// rewritten (kubectl does not replace it atomically). That, and any other
// kubeconfig error (one that does not parse, a certificate file it names
// missing), is worth retrying until the same source and context have
// failed for rewriteGrace: then it is permanent too.
func (k *Clusters) Open(src Source, kubeContext string) (*Cluster, error) {
	opts := src.Options
	opts.Context, opts.UserAgent = kubeContext, "sbx-daemon"
	kc, err := kube.Resolve(opts)
	slot := src.Key + "\x00" + kubeContext
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
			return nil, &KubeconfigError{Err: err, Hint: "pass --kubeconfig/--context, or set KUBECONFIG, and connect again", Permanent: true}
		case failing >= rewriteGrace:
			return nil, &KubeconfigError{Err: err, Hint: fmt.Sprintf("still failing after %s: fix the kubeconfig, or pass --kubeconfig/--context, and connect again",
				failing.Round(time.Second)), Permanent: true}
		case st.opened:
			return nil, &KubeconfigError{Err: err, Hint: fmt.Sprintf("it was readable before, so it may be in the middle of a rewrite; retrying for up to %s", rewriteGrace)}
		}
		return nil, &KubeconfigError{Err: err, Hint: fmt.Sprintf("fix the kubeconfig; retrying for up to %s", rewriteGrace)}
	}
	key := src.Key + "\x00" + connectionKey(kc)
	c, ok := k.clusters[key]
	if !ok {
		if err := kc.BuildClients(); err != nil {
			return nil, &KubeconfigError{Err: err, Hint: "fix the kubeconfig's server and credentials, or pass --kubeconfig/--context"}
		}
		c = newCluster(kc, k.o)
		c.owner = k
		c.server.kubeconfig = src.Options.Kubeconfig
		k.clusters[key] = c
		k.o.Logger.Debug("cluster connection opened", "kubeconfig", src.Name, "context", kc.Context, "namespace", kc.Namespace, "server", redactedURL(kc.REST.Host))
	}
	st.opened, st.failingSince = true, time.Time{}
	return c, nil
}

// KubeconfigError is a kubeconfig Open could not use, with the next step
// for a sandbox's supervisor (connect again, or wait for its retries). A
// request that is not retried (list, gc, disconnect) says its own next
// step instead: see RequestError.
type KubeconfigError struct {
	Err  error
	Hint string
	// Permanent is set when retrying will not help: the user must fix
	// the kubeconfig or the flags and connect again.
	Permanent bool
}

func (e *KubeconfigError) Error() string { return e.Err.Error() + " (" + e.Hint + ")" }
func (e *KubeconfigError) Unwrap() error { return e.Err }

// NextStep is what the user does about it.
func (e *KubeconfigError) NextStep() string { return e.Hint }

// IsPermanent reports whether retrying cannot cure it.
func (e *KubeconfigError) IsPermanent() bool { return e.Permanent }

// Cause is err without the next step Open added for a sandbox's
// supervisor; other errors are returned as they are.
func Cause(err error) error {
	var ke *KubeconfigError
	if errors.As(err, &ke) {
		return ke.Err
	}
	return err
}

// RequestError is what a one-shot request (list, gc, disconnect
// --orphan) says when Open failed. The errors of package cluster/kube for
// a missing kubeconfig or context say what to pass; others get the flags
// to check.
func RequestError(err error) error {
	err = Cause(err)
	if !errors.Is(err, kube.ErrNoKubeconfig) && !errors.Is(err, kube.ErrUnknownContext) {
		return fmt.Errorf("open the cluster: %w (fix the kubeconfig, or pass --kubeconfig/--context, and run the command again)", err)
	}
	return fmt.Errorf("open the cluster: %w", err)
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

// Close closes every cached connection's port-forwards.
func (k *Clusters) Close() error {
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
func (k *Clusters) closeDialers(sandbox string, keep *portforward.Dialer) {
	k.mu.Lock()
	cs := make([]*Cluster, 0, len(k.clusters))
	for _, c := range k.clusters {
		cs = append(cs, c)
	}
	k.mu.Unlock()
	for _, c := range cs {
		c.closeDialers(sandbox, keep)
	}
}

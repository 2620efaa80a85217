// Package api is the daemon's local API as its clients see it: the types
// that cross the unix socket, folding watch events into a Status, the
// paths the daemon and its clients agree on, and the errors the daemon
// answers with. It imports the standard library and Kubernetes-free sbx
// packages only (cluster/spec, cluster/meshreport), so that a client (the
// CLI's printing, the tray) does not link Kubernetes; the daemon fills
// these types, daemon/client carries them.
package api

import (
	"time"

	"github.com/sbx-dev/sbx/cluster/meshreport"
	"github.com/sbx-dev/sbx/cluster/spec"
)

// Phase is where a sandbox session is in its life.
type Phase string

// Session phases, in the order a healthy connect goes through them.
const (
	PhaseApplying      Phase = "applying"      // writing cluster objects
	PhaseWaitingRelay  Phase = "waiting-relay" // waiting for the relay pod to be ready
	PhaseConnecting    Phase = "connecting"    // port-forward + tunnel handshake
	PhaseReady         Phase = "ready"         // tunnel up, traffic flows
	PhaseReconnecting  Phase = "reconnecting"  // lost the tunnel, backing off
	PhaseDisconnecting Phase = "disconnecting" // removing cluster objects
	PhaseFailed        Phase = "failed"        // gave up; LastError says why
)

// MappingStatus is one inbound mapping and whether its local target accepts
// connections right now.
type MappingStatus struct {
	Workload  string `json:"workload"`
	Namespace string `json:"namespace"`
	Port      int32  `json:"port"`
	ToLocal   string `json:"toLocal"`
	Listening bool   `json:"listening"`
	// Services are the baseline Services ("name.namespace") whose keyed
	// requests on Port come to ToLocal; known once applied.
	Services []string `json:"services,omitempty"`
	// From is the baseline workload the local workload stands in for
	// (the spec's local[].from); `sbx run --env-from-baseline` reads its
	// environment.
	From *spec.Workload `json:"from,omitempty"`
}

// SandboxStatus is the state of one sandbox session. It never carries the
// tunnel token.
type SandboxStatus struct {
	Name       string `json:"name"`
	RoutingKey string `json:"routingKey"`
	BaggageKey string `json:"baggageKey"`
	Context    string `json:"context,omitempty"`
	// Kubeconfig is the kubeconfig the sandbox was connected through
	// (paths only), so that a command run from another shell, such as
	// `sbx env --env-from-baseline`, reads the same cluster.
	Kubeconfig  KubeconfigSource `json:"kubeconfigSource"`
	Namespaces  []string         `json:"namespaces"`
	Phase       Phase            `json:"phase"`
	Mappings    []MappingStatus  `json:"mappings"`
	Sessions    int              `json:"sessions"`
	RTT         time.Duration    `json:"rttNanos"`
	BytesIn     int64            `json:"bytesIn"`
	BytesOut    int64            `json:"bytesOut"`
	Streams     int              `json:"streams"`
	Reconnects  int              `json:"reconnects"`
	ReadySince  time.Time        `json:"readySince,omitzero"`
	LastError   string           `json:"lastError,omitempty"`
	LastErrorAt time.Time        `json:"lastErrorAt,omitzero"`
	// Routes says where keyed requests go, kept current while connected;
	// nil until the first apply.
	Routes *RouteState `json:"routes,omitempty"`
}

// Keyed states of RouteState, worst last.
const (
	KeyedSandbox  = meshreport.KeyedSandbox  // every client's keyed requests reach the sandbox
	KeyedPartial  = meshreport.KeyedPartial  // some clients' do
	KeyedBaseline = meshreport.KeyedBaseline // none do
)

// RouteState is what the sandbox's mesh routes do. While the sandbox is
// connected the daemon watches the VirtualServices they depend on and puts
// them back when something removes, reorders or shadows them (a CD sync).
type RouteState struct {
	// Keyed is the worst state of any mapped port and client namespace.
	Keyed string `json:"keyed"`
	// Message says why, where Keyed is not "sandbox".
	Message string `json:"message,omitempty"`
	// Restored counts how often the daemon put routes back; RestoredAt is
	// the last time and RestoredIn what it rewrote then.
	Restored   int       `json:"restored"`
	RestoredAt time.Time `json:"restoredAt,omitzero"`
	RestoredIn []string  `json:"restoredIn,omitempty"`
	// Warnings are what the last check found (routes that cannot work,
	// GitOps-synced VirtualServices, missing permissions).
	Warnings []string `json:"warnings,omitempty"`
	// Ports say, per mapped Service port and client namespace, which
	// VirtualService applies and whether keyed requests reach the sandbox.
	Ports []meshreport.PortReport `json:"ports,omitempty"`
	// Error is why the last check failed (the state above is older).
	Error     string    `json:"error,omitempty"`
	CheckedAt time.Time `json:"checkedAt,omitzero"`
}

// Status is the daemon's whole state as the CLI and tray see it.
type Status struct {
	Version     string          `json:"version"`
	PID         int             `json:"pid"`
	LogPath     string          `json:"logPath"`
	ConfigError string          `json:"configError,omitempty"`
	Sandboxes   []SandboxStatus `json:"sandboxes"`
	// Outbound is how local processes reach cluster names (hosts file or
	// proxy); `sbx run` and `sbx env` read outbound.proxyAddr.
	Outbound *OutboundStatus `json:"outbound,omitempty"`
	// Managed names the service manager that started the daemon and
	// restarts it when it fails ("systemd", "launchd", "schtasks"); empty
	// when a command started it on demand or a user ran `sbx daemon`.
	Managed string `json:"managed,omitempty"`
}

// Event is one message of the watch stream. The first event of a stream
// carries Snapshot; later ones carry exactly one of the other fields.
type Event struct {
	Snapshot *Status         `json:"snapshot,omitempty"`
	Sandbox  *SandboxStatus  `json:"sandbox,omitempty"` // added or changed
	Removed  string          `json:"removed,omitempty"` // name of a sandbox that is gone
	Config   *string         `json:"configError,omitempty"`
	Outbound *OutboundStatus `json:"outbound,omitempty"` // outbound access changed
}

// ConnectRequest is the body of PUT /v1/sandboxes/{name}: the parsed,
// validated spec and where to apply it.
type ConnectRequest struct {
	Spec spec.Sandbox `json:"spec"`
	// KubeconfigSource and Context select the cluster as kubectl would;
	// empty means kubectl's defaults (~/.kube/config, current context).
	// Context wins over the spec's spec.cluster, which is a context name
	// or a name the user config maps to one (package cluster/kube
	// resolves it at connect). The daemon saves the context resolved at
	// connect, so a later `kubectl config use-context` does not move a
	// connected sandbox.
	KubeconfigSource
	Context string `json:"context,omitempty"`
	// Wait streams Progress lines until the sandbox is ready, failed, or
	// Timeout passed; without it the daemon answers with the accepted
	// SandboxStatus at once and connects in the background.
	Wait    bool          `json:"wait,omitempty"`
	Timeout time.Duration `json:"timeoutNanos,omitempty"`
	// RotateToken mints a new tunnel token for the sandbox and applies its
	// verifier: the relay rolls, the tunnel moves to the new pod, and the
	// old token is refused from then on. With a spec that names the
	// sandbox and nothing else (no spec.local), the connected sandbox keeps
	// its spec and cluster (`sbx connect NAME --rotate-token`).
	RotateToken bool `json:"rotateToken,omitempty"`
}

// RotateOnly reports whether req only rotates the token of a connected
// sandbox, keeping its spec.
func (req ConnectRequest) RotateOnly() bool {
	return req.RotateToken && len(req.Spec.Spec.Local) == 0
}

// Progress is one line of the NDJSON stream a waiting connect returns. The
// last line has Done set, and either Sandbox (ready) or Error (gave up
// waiting; the daemon keeps retrying in the background unless Phase is
// PhaseFailed).
type Progress struct {
	Time    time.Time      `json:"time"`
	Phase   Phase          `json:"phase,omitempty"`
	Message string         `json:"message,omitempty"`
	Error   string         `json:"error,omitempty"`
	Done    bool           `json:"done,omitempty"`
	Sandbox *SandboxStatus `json:"sandbox,omitempty"`
	// DaemonStopping ends a stream the daemon's shutdown broke off: the
	// request was not finished, and a new daemon resumes it.
	DaemonStopping bool `json:"daemonStopping,omitempty"`
	// ErrorKind says whose a failure (PhaseFailed) is: KindUser when the
	// spec does not fit the cluster (a workload that does not exist, a
	// port no Service exposes); empty when the daemon cannot tell.
	ErrorKind ErrorKind `json:"errorKind,omitempty"`
}

// DisconnectResult lists the sandboxes a DELETE removed.
type DisconnectResult struct {
	Disconnected []string `json:"disconnected"`
}

// ListEntry is one sandbox known to the daemon, the cluster, or both.
type ListEntry struct {
	Name       string `json:"name"`
	RoutingKey string `json:"routingKey,omitempty"`
	Namespace  string `json:"namespace,omitempty"`
	// Phase is the daemon's session phase; empty when this daemon has no
	// session for the sandbox.
	Phase     Phase `json:"phase,omitempty"`
	InDaemon  bool  `json:"inDaemon"`
	InCluster bool  `json:"inCluster"`
	// Orphan marks cluster objects no daemon keeps: not this daemon's,
	// and their Lease expired (left by a crashed daemon or a laptop that
	// went away). `sbx gc` removes them after a grace period. A sandbox
	// of another daemon whose Lease is renewed is no orphan: Holder says
	// whose it is.
	Orphan bool `json:"orphan,omitempty"`
	// Holder is the Lease's holder (user@host of the daemon that applied
	// it), for sandboxes found in the cluster.
	Holder       string    `json:"holder,omitempty"`
	LeaseExpires time.Time `json:"leaseExpires,omitzero"`
}

// ListResult is the answer to GET /v1/list. ClusterError is set when the
// cluster could not be listed; the daemon's own sandboxes are still there.
type ListResult struct {
	Sandboxes    []ListEntry `json:"sandboxes"`
	ClusterError string      `json:"clusterError,omitempty"`
	// Leftovers are VirtualServices holding routes of sandboxes that are
	// gone (their Lease was deleted or collected): `sbx gc` removes them.
	Leftovers []meshreport.Leftover `json:"leftovers,omitempty"`
}

// ClusterRequest selects a cluster for list and gc, as kubectl flags would.
type ClusterRequest struct {
	KubeconfigSource
	Context   string `json:"context,omitempty"`
	Namespace string `json:"namespace,omitempty"`
}

// KubeconfigSource says which kubeconfig files select the cluster, as
// kubectl reads them: --kubeconfig is one file, never split; otherwise
// $KUBECONFIG is a list of files, merged (the first to set a value wins);
// otherwise ~/.kube/config. The CLI sends its own flag and environment
// because the daemon may have been started from another shell; the
// daemon never consults its own $KUBECONFIG. Build one with
// NewKubeconfigSource; the daemon normalises a source once where it
// enters (a request, the state file), and uses it as it is from there.
//
// The two are separate fields because one string cannot carry both: a
// --kubeconfig path may contain the list separator (a directory named
// "a:b"), which a joined $KUBECONFIG cannot be told from.
type KubeconfigSource struct {
	// KubeconfigFile is the --kubeconfig flag: one absolute path, the only
	// file read when set.
	KubeconfigFile string `json:"kubeconfigFile,omitempty"`
	// KubeconfigEnv is the CLI's $KUBECONFIG split into absolute paths,
	// empty elements dropped (kubectl ignores them; made absolute they
	// would name the working directory). A JSON array rather than a
	// joined string, so that nobody has to split it again.
	KubeconfigEnv []string `json:"kubeconfigEnv,omitempty"`
}

// GCResult names the sandboxes whose expired objects gc deleted, and the
// VirtualServices it removed dead routes from (or deleted).
type GCResult struct {
	// Deleted names the sandboxes collected (with DryRun: to collect).
	Deleted []string `json:"deleted"`
	// Routes are the dead routes removed (with DryRun: to remove).
	Routes []meshreport.Leftover `json:"routes,omitempty"`
	// Waiting are sandboxes whose Lease expired less than Grace ago: kept
	// for their daemon to come back (a laptop that slept), collected
	// by a gc after that.
	Waiting []GCWaiting   `json:"waiting,omitempty"`
	Grace   time.Duration `json:"graceNanos"`
	DryRun  bool          `json:"dryRun,omitempty"`
}

// GCWaiting is a sandbox gc keeps for now: its Lease expired, but less
// than the grace period ago.
type GCWaiting struct {
	Name          string    `json:"name"`
	Namespace     string    `json:"namespace"`
	Holder        string    `json:"holder,omitempty"`
	LeaseExpired  time.Time `json:"leaseExpired"`
	CollectableAt time.Time `json:"collectableAt"`
}

// GCRequest is the body of POST /v1/gc.
type GCRequest struct {
	ClusterRequest
	// DryRun reports what gc would delete, deleting nothing.
	DryRun bool `json:"dryRun,omitempty"`
}

// ProxyCredential is what a client of the outbound proxy authenticates
// with (SOCKS5 user/password, HTTP Proxy-Authorization: Basic). Only the
// local API's socket, private to the user, serves it; it is never part of
// Status, so `sbx status -o json` and the tray never show it.
type ProxyCredential struct {
	Username string `json:"username"`
	Password string `json:"password"`
}

// LogsInfo says where the daemon writes its log.
type LogsInfo struct {
	Path string `json:"path"`
}

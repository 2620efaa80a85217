package daemon

import "time"

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
}

// SandboxStatus is the state of one sandbox session. It never carries the
// tunnel token.
type SandboxStatus struct {
	Name        string          `json:"name"`
	RoutingKey  string          `json:"routingKey"`
	BaggageKey  string          `json:"baggageKey"`
	Context     string          `json:"context,omitempty"`
	Namespaces  []string        `json:"namespaces"`
	Phase       Phase           `json:"phase"`
	Mappings    []MappingStatus `json:"mappings"`
	Sessions    int             `json:"sessions"`
	RTT         time.Duration   `json:"rttNanos"`
	BytesIn     int64           `json:"bytesIn"`
	BytesOut    int64           `json:"bytesOut"`
	Streams     int             `json:"streams"`
	Reconnects  int             `json:"reconnects"`
	ReadySince  time.Time       `json:"readySince,omitzero"`
	LastError   string          `json:"lastError,omitempty"`
	LastErrorAt time.Time       `json:"lastErrorAt,omitzero"`
}

// Status is the daemon's whole state as the CLI and tray see it.
type Status struct {
	Version     string          `json:"version"`
	PID         int             `json:"pid"`
	LogPath     string          `json:"logPath"`
	ConfigError string          `json:"configError,omitempty"`
	Sandboxes   []SandboxStatus `json:"sandboxes"`
}

// Event is one message of the watch stream. The first event of a stream
// carries Snapshot; later ones carry exactly one of the other fields.
type Event struct {
	Snapshot *Status        `json:"snapshot,omitempty"`
	Sandbox  *SandboxStatus `json:"sandbox,omitempty"` // added or changed
	Removed  string         `json:"removed,omitempty"` // name of a sandbox that is gone
	Config   *string        `json:"configError,omitempty"`
}

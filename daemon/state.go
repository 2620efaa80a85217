package daemon

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/sbx-dev/sbx/cluster"
	"github.com/sbx-dev/sbx/cluster/spec"
	"github.com/sbx-dev/sbx/daemon/api"
)

// stateVersion is bumped when the file's shape changes incompatibly.
const stateVersion = 1

// savedSandbox is what the daemon remembers about a sandbox across
// restarts: enough to reconnect it with the same routing key and tunnel
// token, so a restarted daemon's apply changes nothing and the relay does
// not roll.
type savedSandbox struct {
	Name       string `json:"name"`
	RoutingKey string `json:"routingKey"`
	// Token is the tunnel token this daemon minted for the sandbox: the
	// only copy there is (the relay holds its SHA-256), which is why the
	// file is 0600 in a 0700 directory. It never leaves this file and the
	// tunnel handshake: not in status, logs or errors (LogValue).
	Token     string `json:"token,omitempty"`
	Namespace string `json:"namespace,omitempty"`
	// KubeconfigSource is where the sandbox's kubeconfig came from, as
	// the connect request said.
	api.KubeconfigSource
	// Context is the context the sandbox was connected to, resolved at
	// connect ("" when the kubeconfig could not be read then).
	Context   string       `json:"context,omitempty"`
	Spec      spec.Sandbox `json:"spec"`
	CreatedAt time.Time    `json:"createdAt"`
}

// ref is the sandbox as the cluster knows it.
func (s savedSandbox) ref() cluster.Ref {
	return cluster.Ref{Name: s.Name, RoutingKey: s.RoutingKey, Namespace: s.Namespace, Namespaces: s.Spec.Namespaces()}
}

// LogValue keeps the token out of logs.
func (s savedSandbox) LogValue() slog.Value {
	return slog.GroupValue(slog.String("name", s.Name), slog.String("routingKey", s.RoutingKey),
		slog.String("namespace", s.Namespace), slog.String("context", s.Context))
}

// String keeps the token out of fmt's %v and %s.
func (s savedSandbox) String() string {
	return fmt.Sprintf("sandbox %s (routing key %s, context %q)", s.Name, s.RoutingKey, s.Context)
}

// GoString keeps the token out of %#v.
func (s savedSandbox) GoString() string { return s.String() }

type stateDoc struct {
	Version   int            `json:"version"`
	Sandboxes []savedSandbox `json:"sandboxes"`
}

// stateFile persists the daemon's sandboxes in one JSON file, written
// atomically (temp file in the same directory, fsync, rename) with mode
// 0600, so a crash leaves either the old or the new state, never half.
type stateFile struct {
	path string
	mu   sync.Mutex
}

func (f *stateFile) Load() ([]savedSandbox, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	b, err := os.ReadFile(f.path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("read state %s: %w", f.path, err)
	}
	var doc stateDoc
	if err := json.Unmarshal(b, &doc); err != nil {
		return nil, fmt.Errorf("state file %s is corrupt: %w (move it away; the daemon then starts with no sandboxes and `sbx list` shows their cluster objects as orphans)", f.path, err)
	}
	if doc.Version != stateVersion {
		return nil, fmt.Errorf("state file %s has version %d, this sbx understands %d (upgrade sbx or move the file away)", f.path, doc.Version, stateVersion)
	}
	if err := refuseOneFieldKubeconfig(f.path, b); err != nil {
		return nil, err
	}
	for i := range doc.Sandboxes {
		doc.Sandboxes[i].KubeconfigSource = doc.Sandboxes[i].KubeconfigSource.Normalized()
	}
	return doc.Sandboxes, nil
}

// refuseOneFieldKubeconfig refuses a state file written before the
// kubeconfig source had two fields, when a sandbox's "kubeconfig" held
// --kubeconfig or a joined $KUBECONFIG. This sbx does not read that
// field; ignored, it would silently move the sandbox to the default
// kubeconfig, where a context of the same name may be another cluster.
func refuseOneFieldKubeconfig(path string, b []byte) error {
	var doc struct {
		Sandboxes []struct {
			Name       string  `json:"name"`
			Kubeconfig *string `json:"kubeconfig"`
		} `json:"sandboxes"`
	}
	if json.Unmarshal(b, &doc) != nil {
		return nil // it decoded as a stateDoc, so this cannot fail
	}
	for _, sb := range doc.Sandboxes {
		if sb.Kubeconfig != nil {
			return fmt.Errorf(`state file %s: sandbox %s has a "kubeconfig" field, which this sbx no longer reads; `+
				`rename it to "kubeconfigFile" (a --kubeconfig path) or "kubeconfigEnv" (a list of $KUBECONFIG paths), `+
				"or move the file away (the daemon then starts with no sandboxes and `sbx list` shows their cluster objects as orphans)", path, sb.Name)
		}
	}
	return nil
}

func (f *stateFile) Save(sbs []savedSandbox) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	sbs = slices.Clone(sbs)
	slices.SortFunc(sbs, func(a, b savedSandbox) int { return strings.Compare(a.Name, b.Name) })
	if sbs == nil {
		sbs = []savedSandbox{}
	}
	b, err := json.MarshalIndent(stateDoc{Version: stateVersion, Sandboxes: sbs}, "", "  ")
	if err != nil {
		return err
	}
	return writeFileAtomic(f.path, append(b, '\n'), 0o600)
}

// writeFileAtomic replaces path with data: readers see the old or the new
// content, never a mix.
func writeFileAtomic(path string, data []byte, perm os.FileMode) error {
	dir := filepath.Dir(path)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("create %s: %w", dir, err)
	}
	tmp, err := os.CreateTemp(dir, "."+filepath.Base(path)+".tmp-*")
	if err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	defer func() { _ = os.Remove(tmp.Name()) }()
	if err := tmp.Chmod(perm); err != nil {
		_ = tmp.Close()
		return fmt.Errorf("write %s: %w", path, err)
	}
	if _, err := tmp.Write(data); err != nil {
		_ = tmp.Close()
		return fmt.Errorf("write %s: %w", path, err)
	}
	if err := tmp.Sync(); err != nil {
		_ = tmp.Close()
		return fmt.Errorf("write %s: %w", path, err)
	}
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	if err := os.Rename(tmp.Name(), path); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	return nil
}

// SavedSandboxes lists the names of the sandboxes in the state file at
// p: those a daemon starting now would reconnect.
func SavedSandboxes(p api.Paths) ([]string, error) {
	sbs, err := (&stateFile{path: p.State()}).Load()
	if err != nil {
		return nil, err
	}
	names := make([]string, 0, len(sbs))
	for _, sb := range sbs {
		names = append(names, sb.Name)
	}
	return names, nil
}

// Package client is the Go client of the daemon's local API: plain HTTP over
// the unix socket, errors as the typed values of daemon/api. Open and
// Ensure find the daemon, Ensure starting one (in the background, or
// through the service manager) when none answers. It imports daemon/api,
// daemon/service and the standard library only, so that the tray and
// other clients do not link the daemon's Kubernetes adapter.
package client

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"sync"

	"github.com/sbx-dev/sbx/daemon/api"
)

// Client talks to the daemon's local API. The zero value works: it dials
// the default socket (api.DefaultPaths). It is safe for concurrent use; do not
// copy it after first use.
type Client struct {
	// Socket is the socket path; empty means api.DefaultPaths(nil).Socket().
	Socket string
	// Dial opens a connection to the daemon; nil dials Socket. Tests swap
	// it.
	Dial func(ctx context.Context) (net.Conn, error)

	once sync.Once
	hc   *http.Client
}

func (c *Client) socket() string {
	if c.Socket != "" {
		return c.Socket
	}
	return api.DefaultPaths(nil).Socket()
}

func (c *Client) http() *http.Client {
	c.once.Do(func() {
		dial := c.Dial
		if dial == nil {
			sock := c.socket()
			dial = func(ctx context.Context) (net.Conn, error) {
				var d net.Dialer
				return d.DialContext(ctx, "unix", sock)
			}
		}
		c.hc = &http.Client{Transport: &http.Transport{
			DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
				conn, err := dial(ctx)
				if err != nil {
					return nil, &api.NotRunningError{Socket: c.socket(), Err: err}
				}
				return conn, nil
			},
			DisableCompression: true,
			MaxIdleConns:       4,
		}}
	})
	return c.hc
}

// do sends a request and returns the response if its status is 2xx; any
// other status becomes an *APIError.
func (c *Client) do(ctx context.Context, method, path string, body any) (*http.Response, error) {
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return nil, err
		}
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, "http://"+api.Host+path, rd)
	if err != nil {
		return nil, err
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := c.http().Do(req)
	if err != nil {
		var nr *api.NotRunningError
		if errors.As(err, &nr) {
			return nil, nr
		}
		return nil, fmt.Errorf("sbx daemon at %s: %w", c.socket(), err)
	}
	if resp.StatusCode/100 != 2 {
		defer resp.Body.Close()
		b, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
		var e struct {
			Error string        `json:"error"`
			Kind  api.ErrorKind `json:"kind"`
		}
		if json.Unmarshal(b, &e) != nil || e.Error == "" {
			e.Error = fmt.Sprintf("daemon answered %s: %s", resp.Status, bytes.TrimSpace(b))
		}
		if e.Kind == "" {
			e.Kind = api.KindInternal // not an answer of this daemon's shape
		}
		return nil, &api.APIError{StatusCode: resp.StatusCode, Message: e.Error, Kind: e.Kind}
	}
	return resp, nil
}

func (c *Client) doJSON(ctx context.Context, method, path string, body, out any) error {
	resp, err := c.do(ctx, method, path, body)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if out == nil {
		_, _ = io.Copy(io.Discard, resp.Body)
		return nil
	}
	if err := json.NewDecoder(resp.Body).Decode(out); err != nil {
		return fmt.Errorf("decode the daemon's answer to %s %s: %w", method, path, err)
	}
	return nil
}

// Status returns the daemon's whole state.
func (c *Client) Status(ctx context.Context) (api.Status, error) {
	var st api.Status
	err := c.doJSON(ctx, http.MethodGet, "/v1/status", nil, &st)
	return st, err
}

// ProxyCredential returns the outbound proxy's user name and password,
// which `sbx run` and `sbx env` put into the proxy URLs. A daemon older
// than the credential answers with an *APIError of status 404.
func (c *Client) ProxyCredential(ctx context.Context) (api.ProxyCredential, error) {
	var pc api.ProxyCredential
	err := c.doJSON(ctx, http.MethodGet, "/v1/proxy-credential", nil, &pc)
	return pc, err
}

// Sandbox returns one sandbox's status; IsNotFound(err) when unknown.
func (c *Client) Sandbox(ctx context.Context, name string) (api.SandboxStatus, error) {
	var st api.SandboxStatus
	err := c.doJSON(ctx, http.MethodGet, "/v1/sandboxes/"+url.PathEscape(name), nil, &st)
	return st, err
}

// Connect asks the daemon to connect req.Spec. Without req.Wait it returns
// the accepted status at once. With it, progress is called for every step
// and Connect returns the ready status, or a *ConnectError.
func (c *Client) Connect(ctx context.Context, req api.ConnectRequest, progress func(api.Progress)) (api.SandboxStatus, error) {
	resp, err := c.do(ctx, http.MethodPut, "/v1/sandboxes/"+url.PathEscape(req.Spec.Name), req)
	if err != nil {
		return api.SandboxStatus{}, err
	}
	defer resp.Body.Close()
	if !req.Wait {
		var st api.SandboxStatus
		if err := json.NewDecoder(resp.Body).Decode(&st); err != nil {
			return st, fmt.Errorf("decode the daemon's answer to connect: %w", err)
		}
		return st, nil
	}
	dec := json.NewDecoder(bufio.NewReader(resp.Body))
	for {
		var p api.Progress
		if err := dec.Decode(&p); err != nil {
			if ctx.Err() != nil {
				return api.SandboxStatus{}, ctx.Err()
			}
			return api.SandboxStatus{}, fmt.Errorf("the daemon ended the connect stream of sandbox %s early: %w (see `sbx logs`)", req.Spec.Name, err)
		}
		if !p.Done {
			if progress != nil {
				progress(p)
			}
			continue
		}
		if p.Sandbox != nil && p.Error == "" {
			if progress != nil {
				progress(p)
			}
			return *p.Sandbox, nil
		}
		return api.SandboxStatus{}, &api.ConnectError{Sandbox: req.Spec.Name, Phase: p.Phase, Message: p.Error, Kind: p.ErrorKind, DaemonStopping: p.DaemonStopping}
	}
}

// Bench measures the connected sandbox's path to its relay (`sbx bench
// cluster`): bare port-forward, tunnel and pool. progress is called for
// every line the daemon sends before the result; a benchmark that ends
// without one is a *api.BenchError, an unknown sandbox an *api.APIError
// (IsNotFound).
func (c *Client) Bench(ctx context.Context, name string, req api.BenchRequest, progress func(api.BenchProgress)) (api.BenchResult, error) {
	resp, err := c.do(ctx, http.MethodPost, "/v1/sandboxes/"+url.PathEscape(name)+"/bench", req)
	if err != nil {
		return api.BenchResult{}, err
	}
	defer resp.Body.Close()
	dec := json.NewDecoder(bufio.NewReader(resp.Body))
	for {
		var p api.BenchProgress
		if err := dec.Decode(&p); err != nil {
			if ctx.Err() != nil {
				return api.BenchResult{}, ctx.Err()
			}
			return api.BenchResult{}, fmt.Errorf("the daemon ended the benchmark stream of sandbox %s early: %w (see `sbx logs`)", name, err)
		}
		switch {
		case !p.Done:
			if progress != nil {
				progress(p)
			}
		case p.Result != nil && p.Error == "":
			return *p.Result, nil
		default:
			return api.BenchResult{}, &api.BenchError{Sandbox: name, Message: p.Error}
		}
	}
}

// Disconnect stops the named sandbox and deletes its cluster objects.
func (c *Client) Disconnect(ctx context.Context, name string) (api.DisconnectResult, error) {
	var res api.DisconnectResult
	err := c.doJSON(ctx, http.MethodDelete, "/v1/sandboxes/"+url.PathEscape(name), nil, &res)
	return res, err
}

// Forget stops the named sandbox and drops it from the daemon without
// touching the cluster (which may be gone or unreachable); its objects
// stay until `sbx gc` collects them after the lease expired.
func (c *Client) Forget(ctx context.Context, name string) (api.DisconnectResult, error) {
	var res api.DisconnectResult
	err := c.doJSON(ctx, http.MethodDelete, "/v1/sandboxes/"+url.PathEscape(name)+"?forget=true", nil, &res)
	return res, err
}

// DeleteOrphan deletes the cluster objects of a sandbox that this daemon
// does not own (see ListEntry.Orphan), in the cluster creq selects.
//
// A sandbox whose Lease another daemon renews is refused (409) unless
// force.
func (c *Client) DeleteOrphan(ctx context.Context, name string, creq api.ClusterRequest, force bool) (api.DisconnectResult, error) {
	q := creq.Query()
	q.Set("orphan", "true")
	if force {
		q.Set("force", "true")
	}
	var res api.DisconnectResult
	err := c.doJSON(ctx, http.MethodDelete, "/v1/sandboxes/"+url.PathEscape(name)+"?"+q.Encode(), nil, &res)
	return res, err
}

// ForgetAll forgets every sandbox (see Forget).
func (c *Client) ForgetAll(ctx context.Context) (api.DisconnectResult, error) {
	var res api.DisconnectResult
	err := c.doJSON(ctx, http.MethodDelete, "/v1/sandboxes?forget=true", nil, &res)
	return res, err
}

// DisconnectAll disconnects every sandbox.
func (c *Client) DisconnectAll(ctx context.Context) (api.DisconnectResult, error) {
	var res api.DisconnectResult
	err := c.doJSON(ctx, http.MethodDelete, "/v1/sandboxes", nil, &res)
	return res, err
}

// List returns the daemon's sandboxes and, with includeCluster, the sbx
// objects found in the cluster selected by creq, orphans marked.
func (c *Client) List(ctx context.Context, creq api.ClusterRequest, includeCluster bool) (api.ListResult, error) {
	q := creq.Query()
	if !includeCluster {
		q.Set("cluster", "false")
	}
	path := "/v1/list"
	if len(q) > 0 {
		path += "?" + q.Encode()
	}
	var res api.ListResult
	err := c.doJSON(ctx, http.MethodGet, path, nil, &res)
	return res, err
}

// GC deletes expired sandboxes in the cluster selected by creq.
func (c *Client) GC(ctx context.Context, req api.GCRequest) (api.GCResult, error) {
	var res api.GCResult
	err := c.doJSON(ctx, http.MethodPost, "/v1/gc", req, &res)
	return res, err
}

// LogPath returns the path of the daemon's log file. It answers before the
// daemon is ready.
func (c *Client) LogPath(ctx context.Context) (string, error) {
	var li api.LogsInfo
	err := c.doJSON(ctx, http.MethodGet, "/v1/logs", nil, &li)
	return li.Path, err
}

// Shutdown asks the daemon to stop. Its sandboxes' cluster objects stay and
// the next daemon reconnects them.
func (c *Client) Shutdown(ctx context.Context) error {
	return c.doJSON(ctx, http.MethodPost, "/v1/shutdown", nil, nil)
}

// Watcher reads a watch stream.
type Watcher struct {
	body io.ReadCloser
	dec  *json.Decoder
}

// Watch opens a watch stream: the first event is a full snapshot, later
// ones carry changes. Close it when done.
func (c *Client) Watch(ctx context.Context) (*Watcher, error) {
	resp, err := c.do(ctx, http.MethodGet, "/v1/watch", nil)
	if err != nil {
		return nil, err
	}
	return &Watcher{body: resp.Body, dec: json.NewDecoder(bufio.NewReader(resp.Body))}, nil
}

// Next returns the next event. It returns ErrWatchDropped when the daemon
// dropped this watcher for falling behind, io.EOF when the daemon ended the
// stream.
func (w *Watcher) Next() (api.Event, error) {
	var raw struct {
		api.Event
		Error string `json:"error"`
	}
	if err := w.dec.Decode(&raw); err != nil {
		if errors.Is(err, io.ErrUnexpectedEOF) {
			err = io.EOF
		}
		return api.Event{}, err
	}
	if raw.Error != "" {
		if raw.Error == api.WatchDroppedMessage {
			return api.Event{}, api.ErrWatchDropped
		}
		return api.Event{}, fmt.Errorf("watch ended: %s: %w", raw.Error, io.EOF)
	}
	return raw.Event, nil
}

// Close ends the stream.
func (w *Watcher) Close() error { return w.body.Close() }

// Close releases the client's idle connections to the daemon.
func (c *Client) Close() {
	c.http().CloseIdleConnections()
}

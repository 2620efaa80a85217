package daemon

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"slices"
	"strings"
	"time"

	"github.com/sbx-dev/sbx/daemon/api"
	"github.com/sbx-dev/sbx/daemon/proxy"
)

// maxRequestBody bounds request bodies (a spec is a few KiB).
const maxRequestBody = 4 << 20

// peerUIDKey keys the client's uid in a request's context.
type peerUIDKey struct{}

// httpError is an error with the HTTP status it maps to.
type httpError struct {
	code int
	msg  string
}

func (e *httpError) Error() string { return e.msg }

func badRequest(format string, args ...any) error {
	return &httpError{http.StatusBadRequest, fmt.Sprintf(format, args...)}
}

// handlerFunc is an API handler; an error it returns becomes the
// {"error": "...", "kind": "..."} body with the status and kind its type
// maps to (errorAnswer).
type handlerFunc func(w http.ResponseWriter, r *http.Request) error

// route is one entry of the handler table.
type apiRoute struct {
	pattern string // Go ServeMux pattern, method included
	handler handlerFunc
	// early handlers answer before the daemon is ready (liveness, logs,
	// shutdown); every other request waits for readiness.
	early bool
}

func (d *Daemon) routes() []apiRoute {
	return []apiRoute{
		{"GET /v1/status", d.handleStatus, false},
		{"GET /v1/watch", d.handleWatch, false},
		{"GET /v1/sandboxes/{name}", d.handleGetSandbox, false},
		{"PUT /v1/sandboxes/{name}", d.handleConnect, false},
		{"DELETE /v1/sandboxes/{name}", d.handleDisconnect, false},
		{"POST /v1/sandboxes/{name}/bench", d.handleBench, false},
		{"DELETE /v1/sandboxes", d.handleDisconnectAll, false},
		{"GET /v1/list", d.handleList, false},
		{"POST /v1/gc", d.handleGC, false},
		{"GET /v1/proxy-credential", d.handleProxyCredential, false},
		{"GET /v1/logs", d.handleLogs, true},
		{"POST /v1/shutdown", d.handleShutdown, true},
	}
}

func (d *Daemon) newHandler() http.Handler {
	mux := http.NewServeMux()
	for _, rt := range d.routes() {
		mux.Handle(rt.pattern, d.wrap(rt))
	}
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		writeError(w, &httpError{http.StatusNotFound, fmt.Sprintf("no such endpoint %s %s (is the CLI newer than the daemon? restart it with `sbx daemon stop`)", r.Method, r.URL.Path)})
	})
	return guard(mux)
}

// guard refuses anything that looks like it came through a browser: the
// socket is private to the user, but a browser on the same machine can be
// tricked into speaking to local HTTP servers.
//
// The socket's modes keep other users out; where the OS tells the peer's
// uid, a process of another user (other than root) is refused as well, in
// case the directory's mode was loosened.
func guard(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if uid, ok := r.Context().Value(peerUIDKey{}).(int); ok && uid != os.Getuid() && uid != 0 {
			writeError(w, &httpError{http.StatusForbidden, fmt.Sprintf("uid %d may not use the sbx daemon of uid %d", uid, os.Getuid())})
			return
		}
		// Presence, not value: an empty Origin or Referer still means a
		// browser-like client, and Get cannot tell empty from absent.
		if len(r.Header.Values("Origin")) > 0 || len(r.Header.Values("Referer")) > 0 {
			writeError(w, &httpError{http.StatusForbidden, "requests with Origin or Referer are refused: the sbx API is for local clients only"})
			return
		}
		host := r.Host
		if h, _, err := net.SplitHostPort(host); err == nil {
			host = h
		}
		if host != api.Host && host != "localhost" && host != "" {
			writeError(w, &httpError{http.StatusForbidden, fmt.Sprintf("Host %q refused: the sbx API is for local clients only", r.Host)})
			return
		}
		next.ServeHTTP(w, r)
	})
}

func (d *Daemon) wrap(rt apiRoute) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !rt.early {
			select {
			case <-d.ready:
			case <-r.Context().Done():
				// Without an answer the client would read an empty 200.
				if d.mgr.stopping(r.Context().Err()) {
					writeError(w, errStopping)
				}
				return
			case <-d.stopping:
				writeError(w, errStopping)
				return
			}
		}
		if err := rt.handler(w, r); err != nil {
			var se *stoppingError
			if !errors.As(err, &se) && d.mgr.stopping(err) {
				err = errStopping
			}
			writeError(w, err)
		}
	})
}

// writeError answers err with the status code and the kind (api.ErrorKind)
// its type calls for.
func writeError(w http.ResponseWriter, err error) {
	code, kind := errorAnswer(err)
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	_ = json.NewEncoder(w).Encode(map[string]string{"error": err.Error(), "kind": string(kind)})
}

func errorAnswer(err error) (int, api.ErrorKind) {
	var he *httpError
	var nf *notFoundError
	var ce *conflictError
	var cle *clusterError
	var se *stoppingError
	switch {
	case errors.As(err, &se):
		return http.StatusServiceUnavailable, api.KindStopping
	case errors.As(err, &cle):
		return http.StatusBadGateway, api.KindCluster
	case errors.As(err, &he):
		// The handler chose the code for its meaning: 4xx the request,
		// 502 the cluster's answer, 503 a stopping daemon.
		switch {
		case he.code < 500:
			return he.code, api.KindUser
		case he.code == http.StatusBadGateway:
			return he.code, api.KindCluster
		case he.code == http.StatusServiceUnavailable:
			return he.code, api.KindStopping
		case he.code == http.StatusGatewayTimeout:
			return he.code, api.KindClusterTimeout
		}
		return he.code, api.KindInternal
	case errors.As(err, &nf):
		return http.StatusNotFound, api.KindUser
	case errors.As(err, &ce):
		return http.StatusConflict, api.KindUser
	case errors.Is(err, context.DeadlineExceeded):
		return http.StatusGatewayTimeout, api.KindClusterTimeout
	}
	return http.StatusInternalServerError, api.KindInternal
}

func writeJSON(w http.ResponseWriter, v any) error {
	w.Header().Set("Content-Type", "application/json")
	return json.NewEncoder(w).Encode(v)
}

func readJSON(r *http.Request, v any) error {
	dec := json.NewDecoder(io.LimitReader(r.Body, maxRequestBody))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return badRequest("invalid request body: %v", err)
	}
	return nil
}

// ndjson writes one JSON value per line and flushes it at once.
type ndjson struct {
	w   http.ResponseWriter
	enc *json.Encoder
	f   http.Flusher
}

func newNDJSON(w http.ResponseWriter) *ndjson {
	w.Header().Set("Content-Type", "application/x-ndjson")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(http.StatusOK)
	f, _ := w.(http.Flusher)
	n := &ndjson{w: w, enc: json.NewEncoder(w), f: f}
	n.flush()
	return n
}

func (n *ndjson) send(v any) error {
	if err := n.enc.Encode(v); err != nil {
		return err
	}
	n.flush()
	return nil
}

func (n *ndjson) flush() {
	if n.f != nil {
		n.f.Flush()
	}
}

func (d *Daemon) handleStatus(w http.ResponseWriter, r *http.Request) error {
	return writeJSON(w, d.store.Status())
}

func (d *Daemon) handleGetSandbox(w http.ResponseWriter, r *http.Request) error {
	name := r.PathValue("name")
	st, ok := d.store.Sandbox(name)
	if !ok {
		return &notFoundError{name}
	}
	return writeJSON(w, st)
}

// watchError is the last line of a watch stream the daemon ended itself.
type watchError struct {
	Error string `json:"error"`
}

func (d *Daemon) handleWatch(w http.ResponseWriter, r *http.Request) error {
	wt := d.store.Subscribe()
	defer d.store.Unsubscribe(wt)
	out := newNDJSON(w)
	for {
		select {
		case <-r.Context().Done():
			return nil
		case ev, ok := <-wt.C:
			if !ok {
				msg := "the daemon is shutting down"
				if d.store.Dropped(wt) {
					msg = api.WatchDroppedMessage
				}
				_ = out.send(watchError{Error: msg})
				return nil
			}
			if err := out.send(ev); err != nil {
				return nil
			}
		}
	}
}

func (d *Daemon) handleConnect(w http.ResponseWriter, r *http.Request) error {
	var req api.ConnectRequest
	if err := readJSON(r, &req); err != nil {
		return err
	}
	req.KubeconfigSource = req.KubeconfigSource.Normalized()
	name := r.PathValue("name")
	if req.Spec.Name != name {
		return badRequest("the spec's name %q does not match the sandbox %q in the URL", req.Spec.Name, name)
	}
	if err := validateRequestSpec(&req); err != nil {
		return err
	}
	s, sub, restarted, err := d.mgr.Connect(req)
	if err != nil {
		return err
	}
	defer s.unsubscribe(sub)
	if !req.Wait {
		st, _ := d.store.Sandbox(name)
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusAccepted)
		return json.NewEncoder(w).Encode(st)
	}
	out := newNDJSON(w)
	return d.awaitConnect(r.Context(), name, req.Timeout, restarted, sub, func(p api.Progress) error { return out.send(p) })
}

// stoppedConnecting ends a connect stream the daemon's shutdown broke off.
func stoppedConnecting(now time.Time, name string) api.Progress {
	return api.Progress{Time: now, Done: true, DaemonStopping: true,
		Error: fmt.Sprintf("the sbx daemon is stopping, so it stopped connecting sandbox %s: connect again (a new daemon resumes it)", name)}
}

func (d *Daemon) handleDisconnect(w http.ResponseWriter, r *http.Request) error {
	name := r.PathValue("name")
	if r.URL.Query().Get("orphan") == "true" {
		creq, err := clusterRequestFromQuery(r, "orphan", "force")
		if err != nil {
			return err
		}
		res, err := d.deleteOrphan(r.Context(), creq, name, r.URL.Query().Get("force") == "true")
		if err != nil {
			return err
		}
		return writeJSON(w, res)
	}
	if err := d.mgr.Disconnect(r.Context(), name, r.URL.Query().Get("forget") == "true"); err != nil {
		return err
	}
	return writeJSON(w, api.DisconnectResult{Disconnected: []string{name}})
}

func (d *Daemon) handleDisconnectAll(w http.ResponseWriter, r *http.Request) error {
	res := api.DisconnectResult{Disconnected: []string{}}
	var errs []string
	code := http.StatusBadGateway
	for _, name := range d.mgr.Names() {
		if err := d.mgr.Disconnect(r.Context(), name, r.URL.Query().Get("forget") == "true"); err != nil {
			var se *stoppingError
			if errors.As(err, &se) {
				code = http.StatusServiceUnavailable
			}
			errs = append(errs, err.Error())
			continue
		}
		res.Disconnected = append(res.Disconnected, name)
	}
	if len(errs) > 0 {
		return &httpError{code, strings.Join(errs, "; ")}
	}
	return writeJSON(w, res)
}

// A parameter it does not know, besides the endpoint's own (also), is an
// error rather than ignored: a client that means another kubeconfig or
// namespace must not get an answer about the default one.
func clusterRequestFromQuery(r *http.Request, also ...string) (api.ClusterRequest, error) {
	q := r.URL.Query()
	for k := range q {
		switch {
		case k == "kubeconfigFile", k == "kubeconfigEnv", k == "context", k == "namespace", slices.Contains(also, k):
		default:
			return api.ClusterRequest{}, badRequest("unknown query parameter %q for %s (known: kubeconfigFile, kubeconfigEnv, context, namespace%s)",
				k, r.URL.Path, strings.Join(append([]string{""}, also...), ", "))
		}
	}
	return api.ClusterRequest{
		KubeconfigSource: api.KubeconfigSource{
			KubeconfigFile: q.Get("kubeconfigFile"),
			KubeconfigEnv:  q["kubeconfigEnv"],
		}.Normalized(),
		Context:   q.Get("context"),
		Namespace: q.Get("namespace"),
	}, nil
}

func (d *Daemon) handleList(w http.ResponseWriter, r *http.Request) error {
	creq, err := clusterRequestFromQuery(r, "cluster")
	if err != nil {
		return err
	}
	res, err := d.list(r.Context(), creq, r.URL.Query().Get("cluster") != "false")
	if err != nil {
		return err
	}
	return writeJSON(w, res)
}

func (d *Daemon) handleGC(w http.ResponseWriter, r *http.Request) error {
	var req api.GCRequest
	if r.ContentLength != 0 {
		if err := readJSON(r, &req); err != nil {
			return err
		}
	}
	res, err := d.gc(r.Context(), req)
	if err != nil {
		return err
	}
	return writeJSON(w, res)
}

func (d *Daemon) handleProxyCredential(w http.ResponseWriter, r *http.Request) error {
	pw, err := d.proxyCred.get()
	if err != nil {
		return err
	}
	w.Header().Set("Cache-Control", "no-store")
	return writeJSON(w, api.ProxyCredential{Username: proxy.Username, Password: pw})
}

func (d *Daemon) handleLogs(w http.ResponseWriter, r *http.Request) error {
	return writeJSON(w, api.LogsInfo{Path: d.logPath})
}

func (d *Daemon) handleShutdown(w http.ResponseWriter, r *http.Request) error {
	if err := writeJSON(w, struct{}{}); err != nil {
		return err
	}
	d.requestStop()
	return nil
}

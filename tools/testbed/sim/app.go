package sim

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"time"
)

// Hop is one service's answer in the sample app: who served the request and
// what the services it called answered. Every service answers with its own
// Hop, nesting the Hops of its downstream calls, so one response shows the
// whole path a request took.
type Hop struct {
	Service   string `json:"service"`
	Version   string `json:"version"`
	Namespace string `json:"namespace,omitempty"`
	Pod       string `json:"pod,omitempty"`
	// Path is the request path the service received.
	Path string `json:"path,omitempty"`
	// Baggage is the baggage header the service received (and propagated).
	Baggage string `json:"baggage,omitempty"`
	// Status is the HTTP status of this hop as its caller saw it.
	Status int `json:"status,omitempty"`
	// Error describes a failed downstream call (the body of a non-JSON
	// answer, or the transport error).
	Error string `json:"error,omitempty"`
	Calls []Hop  `json:"calls,omitempty"`
}

// Find returns the first hop (depth first, this one included) of service, or
// nil.
func (h *Hop) Find(service string) *Hop {
	if h.Service == service {
		return h
	}
	for i := range h.Calls {
		if f := h.Calls[i].Find(service); f != nil {
			return f
		}
	}
	return nil
}

// Versions maps each service on the path to the version that served it
// ("" for a hop that failed before reaching a server).
func (h *Hop) Versions() map[string]string {
	out := map[string]string{}
	var walk func(*Hop)
	walk = func(x *Hop) {
		if _, seen := out[x.Service]; !seen {
			out[x.Service] = x.Version
		}
		for i := range x.Calls {
			walk(&x.Calls[i])
		}
	}
	walk(h)
	return out
}

// String renders the path, e.g. "frontend@baseline(route@v2(driver@baseline), driver@baseline)";
// a failed call is "name!STATUS", or "name!(error)" when nothing answered.
func (h *Hop) String() string {
	var b strings.Builder
	b.WriteString(h.Service)
	switch {
	case h.Error != "" && h.Status == 0:
		fmt.Fprintf(&b, "!(%s)", h.Error) // no answer at all: say why
	case h.Error != "":
		fmt.Fprintf(&b, "!%d", h.Status)
	case h.Version != "":
		b.WriteString("@" + h.Version)
	}
	if len(h.Calls) > 0 {
		b.WriteString("(")
		for i := range h.Calls {
			if i > 0 {
				b.WriteString(", ")
			}
			b.WriteString(h.Calls[i].String())
		}
		b.WriteString(")")
	}
	return b.String()
}

// AppConfig describes one service of the sample app.
type AppConfig struct {
	Service   string // e.g. "route"
	Version   string // e.g. "baseline" or "v2"
	Namespace string
	Pod       string
	// Calls are the URLs the service calls for every request it serves, in
	// order, e.g. "http://route:8083/route". The path of the incoming request
	// is not forwarded.
	Calls []string
	// Client makes the downstream calls: inside the cluster one that dials
	// through the simulated network, on the laptop one that goes through the
	// sbx daemon. nil means http.DefaultClient.
	Client *http.Client
	Logger *slog.Logger
}

// BaggageHeader is the W3C baggage header the sample app propagates.
const BaggageHeader = "Baggage"

// NewAppHandler returns the HTTP handler of one sample app service. For every
// request it calls its downstream URLs, forwarding the baggage header as a
// tracing-instrumented service would, and answers a JSON Hop. If a
// downstream call fails it answers 502 with the Hop that shows which.
func NewAppHandler(cfg AppConfig) http.Handler {
	client := cfg.Client
	if client == nil {
		client = http.DefaultClient
	}
	logger := cfg.Logger
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		hop := Hop{
			Service:   cfg.Service,
			Version:   cfg.Version,
			Namespace: cfg.Namespace,
			Pod:       cfg.Pod,
			Path:      r.URL.Path,
			Baggage:   strings.Join(r.Header.Values(BaggageHeader), ","),
			Status:    http.StatusOK,
		}
		failed := false
		for _, u := range cfg.Calls {
			child := callHop(r.Context(), client, u, r.Header.Values(BaggageHeader))
			if child.Error != "" || child.Status >= 400 {
				failed = true
				logger.Info("downstream call failed", "service", cfg.Service, "url", u,
					"status", child.Status, "error", child.Error)
			}
			hop.Calls = append(hop.Calls, child)
		}
		w.Header().Set("Content-Type", "application/json")
		if failed {
			hop.Status = http.StatusBadGateway
			w.WriteHeader(http.StatusBadGateway)
		}
		_ = json.NewEncoder(w).Encode(hop)
	})
}

// callHop calls u with the given baggage and turns the answer into a Hop.
func callHop(ctx context.Context, client *http.Client, u string, baggage []string) Hop {
	name := u
	if pu, err := url.Parse(u); err == nil {
		name = strings.SplitN(pu.Hostname(), ".", 2)[0]
	}
	failed := Hop{Service: name}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		failed.Error = err.Error()
		return failed
	}
	for _, b := range baggage {
		req.Header.Add(BaggageHeader, b)
	}
	resp, err := client.Do(req)
	if err != nil {
		failed.Error = err.Error()
		return failed
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err != nil {
		failed.Status = resp.StatusCode
		failed.Error = "reading the answer: " + err.Error()
		return failed
	}
	var h Hop
	if strings.HasPrefix(resp.Header.Get("Content-Type"), "application/json") &&
		json.Unmarshal(body, &h) == nil && h.Service != "" {
		h.Status = resp.StatusCode
		return h
	}
	// Not an app answer: a proxy (mesh, relay) answered for the service.
	failed.Status = resp.StatusCode
	failed.Error = strings.TrimSpace(string(body))
	if failed.Error == "" {
		failed.Error = resp.Status
	}
	return failed
}

// AppServer is one sample app service listening on loopback.
type AppServer struct {
	cfg  AppConfig
	ln   net.Listener
	srv  *http.Server
	done chan struct{}
	// stopHandlers cancels the requests in flight, so that Close can wait
	// for their handlers (and their own downstream calls) to end.
	stopHandlers context.CancelFunc

	mu     sync.Mutex
	closed bool
}

// StartApp starts a sample app service on addr ("127.0.0.1:0" for any free
// port). Close stops it.
func StartApp(cfg AppConfig, addr string) (*AppServer, error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("start sample service %s (%s) on %s: %w", cfg.Service, cfg.Version, addr, err)
	}
	return ServeApp(cfg, ln), nil
}

// ServeApp serves a sample app service on an existing listener.
func ServeApp(cfg AppConfig, ln net.Listener) *AppServer {
	hctx, stop := context.WithCancel(context.Background())
	s := &AppServer{
		cfg:          cfg,
		ln:           ln,
		done:         make(chan struct{}),
		stopHandlers: stop,
		srv: &http.Server{
			Handler:           NewAppHandler(cfg),
			ReadHeaderTimeout: 10 * time.Second,
			BaseContext:       func(net.Listener) context.Context { return hctx },
		},
	}
	go func() {
		defer close(s.done)
		if err := s.srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) && cfg.Logger != nil {
			cfg.Logger.Warn("sample service stopped", "service", cfg.Service, "error", err)
		}
	}()
	return s
}

// Addr is the address the service listens on.
func (s *AppServer) Addr() string { return s.ln.Addr().String() }

// URL is the service's base URL, e.g. "http://127.0.0.1:41234".
func (s *AppServer) URL() string { return "http://" + s.Addr() }

// Close stops the server at once, closing open connections, and waits for
// it. Calling it again is harmless.
func (s *AppServer) Close() error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		<-s.done
		return nil
	}
	s.closed = true
	s.mu.Unlock()
	err := closeServer(s.srv, s.stopHandlers)
	<-s.done
	if s.cfg.Client != nil {
		// Only now: a handler still calling downstream would put its
		// connection back into the idle pool after this.
		s.cfg.Client.CloseIdleConnections()
	}
	return err
}

// closeServer stops srv at once and waits for its handlers: it cancels
// their requests (stopHandlers cancels srv's BaseContext), lets Shutdown
// wait for them to return, and closes whatever is left after a moment.
// http.Server.Close alone returns while handlers still run.
func closeServer(srv *http.Server, stopHandlers context.CancelFunc) error {
	stopHandlers()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := srv.Shutdown(ctx); err != nil {
		return srv.Close()
	}
	return nil
}

// StartLocalRoute starts the "v2" route service as a developer would run it
// on the laptop: on addr, answering as version "v2", calling calls (for
// example "http://driver.hotrod.svc.cluster.local:8082/driver") with client.
func StartLocalRoute(addr string, calls []string, client *http.Client, logger *slog.Logger) (*AppServer, error) {
	return StartApp(AppConfig{
		Service: "route",
		Version: "v2",
		Pod:     "laptop",
		Calls:   calls,
		Client:  client,
		Logger:  logger,
	}, addr)
}

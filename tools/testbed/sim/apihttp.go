package sim

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"os"
	"strings"
	"sync"
	"time"

	istioscheme "istio.io/client-go/pkg/clientset/versioned/scheme"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/runtime/serializer"
	"k8s.io/apimachinery/pkg/watch"
	kubescheme "k8s.io/client-go/kubernetes/scheme"
	clienttesting "k8s.io/client-go/testing"
	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"
)

// apiHTTP serves the simulated API over HTTP, as a Kubernetes API server
// does, so that a separate process (the sbx binary, kubectl) can use the
// simulated cluster through a kubeconfig. It covers what sbx needs: get,
// list (label and field selectors), watch (including streaming lists),
// create, update (and the status subresource), delete, and the pods'
// portforward subresource; and what kubectl needs besides
// (apihttp_kubectl.go, apihttp_table.go, discovery.go): discovery, patch
// and server-side apply, field validation, the pods' log subresource,
// access reviews and Tables. Requests go through the same fake clientsets
// (and so the same simulated API server behaviour) as in-process clients.
type apiHTTP struct {
	c      *Cluster
	log    *slog.Logger
	scheme *runtime.Scheme
	codecs serializer.CodecFactory
	params runtime.ParameterCodec
	kinds  map[schema.GroupVersionResource]schema.GroupVersionKind
	disc   *discovery
	pf     *httputil.ReverseProxy

	ln   net.Listener
	srv  *http.Server
	done chan struct{}

	mu      sync.Mutex
	watches map[chan struct{}]bool // open watches, ended by close
}

func newAPIHTTP(c *Cluster, logger *slog.Logger) (*apiHTTP, error) {
	s := runtime.NewScheme()
	if err := kubescheme.AddToScheme(s); err != nil {
		return nil, err
	}
	if err := istioscheme.AddToScheme(s); err != nil {
		return nil, err
	}
	metav1.AddToGroupVersion(s, schema.GroupVersion{Version: "v1"})
	a := &apiHTTP{
		c:       c,
		log:     logger.With("component", "apiserver"),
		scheme:  s,
		codecs:  serializer.NewCodecFactory(s),
		params:  runtime.NewParameterCodec(s),
		kinds:   map[schema.GroupVersionResource]schema.GroupVersionKind{},
		done:    make(chan struct{}),
		watches: map[chan struct{}]bool{},
	}
	for gvk := range s.AllKnownTypes() {
		if gvk.Version == runtime.APIVersionInternal || strings.HasSuffix(gvk.Kind, "List") ||
			strings.HasSuffix(gvk.Kind, "Options") || gvk.Kind == "WatchEvent" || gvk.Kind == "Status" {
			continue
		}
		plural, _ := meta.UnsafeGuessKindToResource(gvk)
		a.kinds[plural] = gvk
	}
	a.disc = newDiscovery(s, a.kinds)
	pfURL, err := url.Parse(c.PortForward.URL())
	if err != nil {
		return nil, err
	}
	a.pf = &httputil.ReverseProxy{
		Rewrite:  func(pr *httputil.ProxyRequest) { pr.SetURL(pfURL); pr.Out.Host = pr.In.Host },
		ErrorLog: slog.NewLogLogger(a.log.Handler(), slog.LevelDebug),
	}
	a.ln, err = net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	a.srv = &http.Server{Handler: a, ReadHeaderTimeout: 10 * time.Second,
		ErrorLog: slog.NewLogLogger(a.log.Handler(), slog.LevelDebug)}
	go func() {
		defer close(a.done)
		_ = a.srv.Serve(a.ln)
	}()
	return a, nil
}

// URL is the server's base URL.
func (a *apiHTTP) URL() string { return "http://" + a.ln.Addr().String() }

func (a *apiHTTP) close() {
	a.mu.Lock()
	for ch := range a.watches {
		close(ch)
	}
	a.watches = map[chan struct{}]bool{}
	a.mu.Unlock()
	_ = a.srv.Close()
	<-a.done
}

// WriteKubeconfig writes a kubeconfig whose context "sim" (namespace
// hotrod) points at the simulated API server. Any kubeconfig-driven client
// can then use the simulated cluster.
func (c *Cluster) WriteKubeconfig(path string) error {
	if c.api == nil {
		return errors.New("the simulated API server is not running")
	}
	cfg := clientcmdapi.NewConfig()
	cfg.Clusters["sim"] = &clientcmdapi.Cluster{Server: c.api.URL()}
	cfg.AuthInfos["sim"] = &clientcmdapi.AuthInfo{}
	cfg.Contexts["sim"] = &clientcmdapi.Context{Cluster: "sim", AuthInfo: "sim", Namespace: AppNamespace}
	cfg.CurrentContext = "sim"
	if err := clientcmd.WriteToFile(*cfg, path); err != nil {
		return fmt.Errorf("write kubeconfig %s: %w", path, err)
	}
	return os.Chmod(path, 0o600)
}

// APIServerURL is the base URL of the simulated API server over HTTP.
func (c *Cluster) APIServerURL() string { return c.api.URL() }

func (a *apiHTTP) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	parts := strings.Split(strings.Trim(r.URL.Path, "/"), "/")
	var gv schema.GroupVersion
	var rest []string
	if r.Method == http.MethodGet && a.serveDiscovery(w, r, parts) {
		return
	}
	switch {
	case len(parts) >= 2 && parts[0] == "api":
		gv, rest = schema.GroupVersion{Version: parts[1]}, parts[2:]
	case len(parts) >= 3 && parts[0] == "apis":
		gv, rest = schema.GroupVersion{Group: parts[1], Version: parts[2]}, parts[3:]
	default:
		a.writeErr(w, notServed(r.URL.Path+" is not a path of the simulated API server: it serves /version, /api, /apis, /openapi/v3 and the resources they list"))
		return
	}
	ns := ""
	if len(rest) >= 3 && rest[0] == "namespaces" {
		ns, rest = rest[1], rest[2:]
	}
	if len(rest) == 0 || len(rest) > 3 {
		a.writeErr(w, notServed(r.URL.Path+" is not a path of the simulated API server: it serves /version, /api, /apis, /openapi/v3 and the resources they list"))
		return
	}
	resource, name, sub := rest[0], "", ""
	if len(rest) > 1 {
		name = rest[1]
	}
	if len(rest) > 2 {
		sub = rest[2]
	}
	if gv.Group == "" && resource == "pods" && sub == "portforward" {
		a.pf.ServeHTTP(w, r)
		return
	}
	if gv.Group == "" && resource == "pods" && sub == "log" && r.Method == http.MethodGet {
		a.podLog(w, r, ns, name)
		return
	}
	if gvr := gv.WithResource(resource); (gvr == selfSubjectAccessReviews || gvr == selfSubjectRulesReviews) && r.Method == http.MethodPost && name == "" {
		a.accessReview(w, r, gvr)
		return
	}
	if sub != "" && sub != "status" {
		a.writeErr(w, notServed(fmt.Sprintf("%s/%s is not simulated (%s): the simulated API server serves the status subresource, and pods' log and portforward; use kubectl logs or kubectl port-forward",
			resource, sub, r.URL.Path)))
		return
	}
	gvr := gv.WithResource(resource)
	gvk, ok := a.kinds[gvr]
	if !ok {
		a.writeErr(w, notServed(fmt.Sprintf("resource %s (%s) is not served by the simulated API server: kubectl api-resources lists what it serves", gvr.GroupResource(), gvr.GroupVersion())))
		return
	}
	fake := &a.c.Clients.Kube.Fake
	if strings.HasSuffix(gv.Group, "istio.io") {
		fake = &a.c.Clients.Istio.Fake
	}
	switch {
	case r.Method == http.MethodGet && name != "":
		obj, err := fake.Invokes(clienttesting.NewGetAction(gvr, ns, name), nil)
		if wantsTable(r) {
			a.respondTable(w, r, gvk, obj, err)
			return
		}
		a.respond(w, gvk, http.StatusOK, obj, err)
	case r.Method == http.MethodGet:
		var opts metav1.ListOptions
		if err := a.params.DecodeParameters(r.URL.Query(), schema.GroupVersion{Version: "v1"}, &opts); err != nil {
			a.writeErr(w, apierrors.NewBadRequest(err.Error()))
			return
		}
		if opts.Watch {
			a.watch(w, r, fake, gvr, gvk, ns, opts)
			return
		}
		list, err := a.list(fake, gvr, gvk, ns, opts)
		if wantsTable(r) {
			a.respondTable(w, r, gvk, list, err)
			return
		}
		a.respond(w, gvk, http.StatusOK, list, err)
	case r.Method == http.MethodPost && name == "":
		obj, err := a.decode(w, r, gvk)
		if err != nil {
			a.writeErr(w, err)
			return
		}
		out, err := fake.Invokes(clienttesting.NewCreateAction(gvr, ns, obj), nil)
		a.respond(w, gvk, http.StatusCreated, out, err)
	case r.Method == http.MethodPut && name != "":
		obj, err := a.decode(w, r, gvk)
		if err != nil {
			a.writeErr(w, err)
			return
		}
		var action clienttesting.Action = clienttesting.NewUpdateAction(gvr, ns, obj)
		if sub != "" {
			action = clienttesting.NewUpdateSubresourceAction(gvr, sub, ns, obj)
		}
		out, err := fake.Invokes(action, nil)
		a.respond(w, gvk, http.StatusOK, out, err)
	case r.Method == http.MethodPatch && name != "":
		out, err := a.patch(w, r, fake, gvr, gvk, ns, name, sub)
		a.respond(w, gvk, http.StatusOK, out, err)
	case r.Method == http.MethodDelete && name != "":
		_, err := fake.Invokes(clienttesting.NewDeleteAction(gvr, ns, name), nil)
		if err != nil {
			a.writeErr(w, err)
			return
		}
		writeJSON(w, http.StatusOK, &metav1.Status{TypeMeta: metav1.TypeMeta{Kind: "Status", APIVersion: "v1"},
			Status: metav1.StatusSuccess, Details: &metav1.StatusDetails{Name: name, Group: gv.Group, Kind: gvr.Resource}})
	default:
		a.writeErr(w, apierrors.NewMethodNotSupported(gvr.GroupResource(), r.Method))
	}
}

// list lists and filters by the label and field selectors (the fake
// tracker ignores them).
func (a *apiHTTP) list(fake *clienttesting.Fake, gvr schema.GroupVersionResource, gvk schema.GroupVersionKind, ns string, opts metav1.ListOptions) (runtime.Object, error) {
	obj, err := fake.Invokes(clienttesting.NewListActionWithOptions(gvr, gvk, ns, opts), nil)
	if err != nil {
		return nil, err
	}
	match, err := selectorFilter(opts)
	if err != nil {
		return nil, err
	}
	items, err := meta.ExtractList(obj)
	if err != nil {
		return nil, err
	}
	kept := items[:0]
	for _, it := range items {
		if match(it) {
			kept = append(kept, it)
		}
	}
	return obj, meta.SetList(obj, kept)
}

// selectorFilter returns a predicate for the label and field selectors of
// opts (fields: metadata.name and metadata.namespace).
func selectorFilter(opts metav1.ListOptions) (func(runtime.Object) bool, error) {
	ls := labels.Everything()
	fs := fields.Everything()
	var err error
	if opts.LabelSelector != "" {
		if ls, err = labels.Parse(opts.LabelSelector); err != nil {
			return nil, apierrors.NewBadRequest(err.Error())
		}
	}
	if opts.FieldSelector != "" {
		if fs, err = fields.ParseSelector(opts.FieldSelector); err != nil {
			return nil, apierrors.NewBadRequest(err.Error())
		}
	}
	return func(o runtime.Object) bool {
		m, err := meta.Accessor(o)
		if err != nil {
			return false
		}
		return ls.Matches(labels.Set(m.GetLabels())) &&
			fs.Matches(fields.Set{"metadata.name": m.GetName(), "metadata.namespace": m.GetNamespace()})
	}, nil
}

// watch streams watch events as JSON. A streaming list (sendInitialEvents)
// gets the current objects, then the bookmark that ends the initial
// events, then the changes after them.
func (a *apiHTTP) watch(w http.ResponseWriter, r *http.Request, fake *clienttesting.Fake, gvr schema.GroupVersionResource,
	gvk schema.GroupVersionKind, ns string, opts metav1.ListOptions) {
	match, err := selectorFilter(opts)
	if err != nil {
		a.writeErr(w, err)
		return
	}
	var initial []runtime.Object
	from := opts.ResourceVersion
	streamList := opts.SendInitialEvents != nil && *opts.SendInitialEvents
	if streamList {
		list, err := a.list(fake, gvr, gvk, ns, metav1.ListOptions{LabelSelector: opts.LabelSelector, FieldSelector: opts.FieldSelector})
		if err != nil {
			a.writeErr(w, err)
			return
		}
		if initial, err = meta.ExtractList(list); err != nil {
			a.writeErr(w, err)
			return
		}
		lm, _ := meta.ListAccessor(list)
		from = lm.GetResourceVersion()
	}
	wi, err := fake.InvokesWatch(clienttesting.NewWatchActionWithOptions(gvr, ns, metav1.ListOptions{ResourceVersion: from}))
	if err != nil {
		a.writeErr(w, err)
		return
	}
	defer wi.Stop()
	stop := make(chan struct{})
	a.mu.Lock()
	a.watches[stop] = true
	a.mu.Unlock()
	defer func() {
		a.mu.Lock()
		delete(a.watches, stop)
		a.mu.Unlock()
	}()

	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Transfer-Encoding", "chunked")
	w.WriteHeader(http.StatusOK)
	flusher, _ := w.(http.Flusher)
	enc := json.NewEncoder(w)
	asTable := wantsTable(r)
	send := func(typ watch.EventType, obj runtime.Object) bool {
		var raw []byte
		var err error
		if asTable && typ != watch.Error {
			var t *metav1.Table
			if t, err = a.table(r, gvk, obj); err == nil {
				raw, err = json.Marshal(t)
			}
		} else {
			raw, err = runtime.Encode(a.codecs.LegacyCodec(gvk.GroupVersion()), obj)
		}
		if err != nil {
			a.log.Warn("cannot encode watch event", "resource", gvr.String(), "error", err)
			return true
		}
		if err := enc.Encode(&metav1.WatchEvent{Type: string(typ), Object: runtime.RawExtension{Raw: raw}}); err != nil {
			return false
		}
		if flusher != nil {
			flusher.Flush()
		}
		return true
	}
	for _, obj := range initial {
		if !send(watch.Added, obj) {
			return
		}
	}
	if streamList {
		bm, err := a.scheme.New(gvk)
		if err == nil {
			m, _ := meta.Accessor(bm)
			m.SetResourceVersion(from)
			m.SetAnnotations(map[string]string{metav1.InitialEventsAnnotationKey: "true"})
			if !send(watch.Bookmark, bm) {
				return
			}
		}
	}
	for {
		select {
		case <-r.Context().Done():
			return
		case <-stop:
			return
		case ev, ok := <-wi.ResultChan():
			if !ok {
				return
			}
			if ev.Type != watch.Bookmark && ev.Type != watch.Error && !match(ev.Object) {
				continue
			}
			if !send(ev.Type, ev.Object) {
				return
			}
		}
	}
}

func (a *apiHTTP) decode(w http.ResponseWriter, r *http.Request, gvk schema.GroupVersionKind) (runtime.Object, error) {
	body, err := io.ReadAll(io.LimitReader(r.Body, 8<<20))
	if err != nil {
		return nil, apierrors.NewBadRequest(err.Error())
	}
	mediaType := r.Header.Get("Content-Type")
	if i := strings.Index(mediaType, ";"); i >= 0 {
		mediaType = mediaType[:i]
	}
	return a.decodeBody(w, r, mediaType, body, gvk)
}

// decodeBody decodes body as a gvk and applies the request's
// fieldValidation to unknown and duplicate fields: Strict refuses them,
// Warn (the default) answers a warning, Ignore drops them.
func (a *apiHTTP) decodeBody(w http.ResponseWriter, r *http.Request, mediaType string, body []byte, gvk schema.GroupVersionKind) (runtime.Object, error) {
	info, ok := runtime.SerializerInfoForMediaType(a.codecs.SupportedMediaTypes(), mediaType)
	if !ok {
		info, _ = runtime.SerializerInfoForMediaType(a.codecs.SupportedMediaTypes(), runtime.ContentTypeJSON)
	}
	dec := info.Serializer
	if info.StrictSerializer != nil {
		dec = info.StrictSerializer
	}
	obj, _, err := a.codecs.DecoderToVersion(dec, gvk.GroupVersion()).Decode(body, &gvk, nil)
	if err != nil && runtime.IsStrictDecodingError(err) && obj != nil {
		switch v := r.URL.Query().Get("fieldValidation"); v {
		case "Strict":
			return nil, apierrors.NewBadRequest(fmt.Sprintf("%s %q: %v (fieldValidation=Strict; fix the manifest, or pass --validate=warn to kubectl)",
				gvk.Kind, nameOf(obj), err))
		case "", "Warn":
			if se, ok := runtime.AsStrictDecodingError(err); ok {
				for _, e := range se.Errors() {
					w.Header().Add("Warning", fmt.Sprintf("299 - %q", e.Error()))
				}
			}
			return obj, nil
		case "Ignore":
			return obj, nil
		default:
			return nil, apierrors.NewBadRequest(fmt.Sprintf("fieldValidation=%q: use Strict, Warn or Ignore", v))
		}
	}
	if err != nil {
		return nil, apierrors.NewBadRequest(fmt.Sprintf("decode %s: %v", gvk.Kind, err))
	}
	return obj, nil
}

func nameOf(obj runtime.Object) string {
	if m, err := meta.Accessor(obj); err == nil {
		return m.GetName()
	}
	return ""
}

func (a *apiHTTP) respond(w http.ResponseWriter, gvk schema.GroupVersionKind, code int, obj runtime.Object, err error) {
	if err != nil {
		a.writeErr(w, err)
		return
	}
	raw, err := runtime.Encode(a.codecs.LegacyCodec(gvk.GroupVersion()), obj)
	if err != nil {
		a.writeErr(w, apierrors.NewInternalError(err))
		return
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	_, _ = w.Write(raw)
}

func (a *apiHTTP) writeErr(w http.ResponseWriter, err error) {
	var st apierrors.APIStatus
	if !errors.As(err, &st) {
		st = apierrors.NewInternalError(err)
	}
	s := st.Status()
	s.TypeMeta = metav1.TypeMeta{Kind: "Status", APIVersion: "v1"}
	code := int(s.Code)
	if code == 0 {
		code = http.StatusInternalServerError
	}
	writeJSON(w, code, &s)
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	_ = json.NewEncoder(w).Encode(v)
}

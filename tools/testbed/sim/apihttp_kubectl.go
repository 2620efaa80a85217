package sim

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net/http"
	"slices"
	"strconv"
	"strings"

	jsonpatch "gopkg.in/evanphx/json-patch.v4"
	authorizationv1 "k8s.io/api/authorization/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/strategicpatch"
	clienttesting "k8s.io/client-go/testing"
	"sigs.k8s.io/yaml"
)

// This file is what kubectl needs beyond what sbx uses: discovery, the
// pods' log subresource, PATCH (kubectl apply, label, annotate) and
// SelfSubjectAccessReview (kubectl auth can-i).

// simVersion is what /version answers.
var simVersion = map[string]string{"major": "1", "minor": "37", "gitVersion": "v1.37.0-sim", "platform": "sim"}

// serveDiscovery answers the discovery paths (/version, /api, /apis,
// /api/v1, /apis/GROUP[/VERSION]) and reports whether parts was one.
func (a *apiHTTP) serveDiscovery(w http.ResponseWriter, r *http.Request, parts []string) bool {
	switch {
	case len(parts) == 1 && parts[0] == "version":
		writeJSON(w, http.StatusOK, simVersion)
	case len(parts) == 1 && parts[0] == "api":
		writeJSON(w, http.StatusOK, &metav1.APIVersions{TypeMeta: metav1.TypeMeta{Kind: "APIVersions"}, Versions: []string{"v1"},
			ServerAddressByClientCIDRs: []metav1.ServerAddressByClientCIDR{{ClientCIDR: "0.0.0.0/0", ServerAddress: r.Host}}})
	case len(parts) == 2 && parts[0] == "api":
		a.writeResourceList(w, r, schema.GroupVersion{Version: parts[1]})
	case len(parts) == 1 && parts[0] == "apis":
		writeJSON(w, http.StatusOK, a.disc.groupList())
	case len(parts) == 2 && parts[0] == "apis":
		g, ok := a.disc.group(parts[1])
		if !ok {
			a.writeErr(w, notServed(fmt.Sprintf("API group %s is not served by the simulated API server; see /apis for the groups it serves", parts[1])))
			return true
		}
		writeJSON(w, http.StatusOK, g)
	case len(parts) == 3 && parts[0] == "apis":
		a.writeResourceList(w, r, schema.GroupVersion{Group: parts[1], Version: parts[2]})
	case len(parts) >= 2 && parts[0] == "openapi" && parts[1] == "v3":
		a.serveOpenAPIV3(w, r, parts[2:])
	case len(parts) >= 1 && parts[0] == "openapi":
		a.writeErr(w, notServed(r.URL.Path+" is not served: the simulated API server serves only /openapi/v3, without schemas (kubectl validates on the server)"))
	default:
		return false
	}
	return true
}

// serveOpenAPIV3 serves the part of OpenAPI v3 kubectl reads to decide
// how to validate (kubectl apply/create --validate, on by default): for
// every resource, its PATCH and POST operations with the fieldValidation
// query parameter, which this server implements (decodeBody). It has no
// schemas: kubectl then validates on the server and builds client-side
// apply patches from its compiled-in types (JSON merge patches for Istio's
// kinds).
func (a *apiHTTP) serveOpenAPIV3(w http.ResponseWriter, r *http.Request, rest []string) {
	if len(rest) == 0 {
		paths := map[string]any{}
		for gv := range a.disc.resources {
			p := gvPath(gv)
			paths[p] = map[string]string{"serverRelativeURL": "/openapi/v3/" + p}
		}
		writeJSON(w, http.StatusOK, map[string]any{"paths": paths})
		return
	}
	var gv schema.GroupVersion
	switch {
	case len(rest) == 2 && rest[0] == "api":
		gv = schema.GroupVersion{Version: rest[1]}
	case len(rest) == 3 && rest[0] == "apis":
		gv = schema.GroupVersion{Group: rest[1], Version: rest[2]}
	}
	list, ok := a.disc.resources[gv]
	if !ok || gv.Version == "" {
		a.writeErr(w, notServed(r.URL.Path+" is not served: no such group version in the simulated API server; see /openapi/v3 for the ones it has"))
		return
	}
	fieldValidation := []map[string]any{{"name": "fieldValidation", "in": "query", "schema": map[string]string{"type": "string"},
		"description": "Strict, Warn (default) or Ignore: what to do with unknown or duplicate fields"}}
	paths := map[string]any{}
	for _, res := range list.APIResources {
		if strings.Contains(res.Name, "/") || !slices.Contains(res.Verbs, "patch") {
			continue
		}
		op := map[string]any{"x-kubernetes-group-version-kind": map[string]string{"group": gv.Group, "version": gv.Version, "kind": res.Kind},
			"parameters": fieldValidation}
		base := "/" + gvPath(gv)
		if res.Namespaced {
			base += "/namespaces/{namespace}"
		}
		paths[base+"/"+res.Name] = map[string]any{"post": op}
		paths[base+"/"+res.Name+"/{name}"] = map[string]any{"patch": op, "put": op}
	}
	writeJSON(w, http.StatusOK, map[string]any{"openapi": "3.0.0",
		"info":       map[string]string{"title": "sbx simulated cluster", "version": simVersion["gitVersion"]},
		"paths":      paths,
		"components": map[string]any{"schemas": map[string]any{}}})
}

func gvPath(gv schema.GroupVersion) string {
	if gv.Group == "" {
		return "api/" + gv.Version
	}
	return "apis/" + gv.Group + "/" + gv.Version
}

func (a *apiHTTP) writeResourceList(w http.ResponseWriter, r *http.Request, gv schema.GroupVersion) {
	list, ok := a.disc.resources[gv]
	if !ok {
		a.writeErr(w, notServed(r.URL.Path+" is not served: the simulated API server serves one version per API group; see /api and /apis for which"))
		return
	}
	writeJSON(w, http.StatusOK, list)
}

// notServed is a 404 whose message is msg as it stands (NewNotFound
// would wrap it as `X "msg" not found`).
func notServed(msg string) error {
	return &apierrors.StatusError{ErrStatus: metav1.Status{Status: metav1.StatusFailure, Code: http.StatusNotFound,
		Reason: metav1.StatusReasonNotFound, Message: msg}}
}

// podLog serves GET pods/NAME/log: the lines pod ns/name's simulated
// containers logged (an empty log for a pod whose container logs
// nothing), with tailLines, limitBytes and follow.
func (a *apiHTTP) podLog(w http.ResponseWriter, r *http.Request, ns, name string) {
	var opts struct{ tail, limit int }
	q := r.URL.Query()
	for key, dst := range map[string]*int{"tailLines": &opts.tail, "limitBytes": &opts.limit} {
		if v := q.Get(key); v != "" {
			n, err := strconv.Atoi(v)
			if err != nil || n < 0 {
				a.writeErr(w, apierrors.NewBadRequest(fmt.Sprintf("log of pod %s/%s: %s=%q is not a non-negative number", ns, name, key, v)))
				return
			}
			*dst = n
		}
	}
	if q.Get("previous") == "true" {
		a.writeErr(w, apierrors.NewBadRequest(fmt.Sprintf("log of pod %s/%s: the simulated kubelet keeps one log per pod across container restarts; drop --previous", ns, name)))
		return
	}
	pods := a.c.Clients.Kube.CoreV1().Pods(ns)
	if _, err := pods.Get(r.Context(), name, metav1.GetOptions{}); err != nil {
		a.writeErr(w, err)
		return
	}
	lines, next, _ := a.c.logs.lines(ns, name, 0)
	if q.Has("tailLines") && opts.tail < len(lines) {
		lines = lines[len(lines)-opts.tail:]
	}
	w.Header().Set("Content-Type", "text/plain")
	w.WriteHeader(http.StatusOK)
	bw := bufio.NewWriter(w)
	var out io.Writer = bw
	if q.Has("limitBytes") {
		out = &limitWriter{w: bw, left: opts.limit}
	}
	flusher, _ := w.(http.Flusher)
	emit := func(ls []string) bool {
		for _, l := range ls {
			if _, err := io.WriteString(out, l); err != nil {
				return false
			}
		}
		if bw.Flush() != nil {
			return false
		}
		if flusher != nil {
			flusher.Flush()
		}
		return true
	}
	if !emit(lines) || q.Get("follow") != "true" {
		return
	}
	gone := func() bool {
		_, err := pods.Get(context.Background(), name, metav1.GetOptions{})
		return apierrors.IsNotFound(err)
	}
	ctx, cancel := context.WithCancel(r.Context())
	defer cancel()
	stop := make(chan struct{})
	a.mu.Lock()
	a.watches[stop] = true
	a.mu.Unlock()
	defer func() {
		a.mu.Lock()
		delete(a.watches, stop)
		a.mu.Unlock()
	}()
	go func() {
		select {
		case <-stop:
			cancel()
		case <-ctx.Done():
		}
	}()
	a.c.logs.follow(ctx, ns, name, next, gone, emit)
}

type limitWriter struct {
	w    io.Writer
	left int
}

func (l *limitWriter) Write(b []byte) (int, error) {
	if l.left <= 0 {
		return 0, io.EOF
	}
	if len(b) > l.left {
		b = b[:l.left]
	}
	n, err := l.w.Write(b)
	l.left -= n
	return n, err
}

// accessReview answers a SelfSubjectAccessReview or a
// SelfSubjectRulesReview: the simulated cluster has no authorization, so
// every request is allowed.
func (a *apiHTTP) accessReview(w http.ResponseWriter, r *http.Request, gvr schema.GroupVersionResource) {
	kind := "SelfSubjectAccessReview"
	if gvr == selfSubjectRulesReviews {
		kind = "SelfSubjectRulesReview"
	}
	gvk := gvr.GroupVersion().WithKind(kind)
	obj, err := a.decode(w, r, gvk)
	if err != nil {
		a.writeErr(w, err)
		return
	}
	const why = "the simulated cluster has no RBAC: every request is allowed"
	switch review := obj.(type) {
	case *authorizationv1.SelfSubjectAccessReview:
		review.Status = authorizationv1.SubjectAccessReviewStatus{Allowed: true, Reason: why}
	case *authorizationv1.SelfSubjectRulesReview:
		review.Status = authorizationv1.SubjectRulesReviewStatus{
			ResourceRules:    []authorizationv1.ResourceRule{{Verbs: []string{"*"}, APIGroups: []string{"*"}, Resources: []string{"*"}}},
			NonResourceRules: []authorizationv1.NonResourceRule{{Verbs: []string{"*"}, NonResourceURLs: []string{"*"}}},
		}
	default:
		a.writeErr(w, apierrors.NewBadRequest(fmt.Sprintf("the body is a %T, not a %s", obj, kind)))
		return
	}
	a.respond(w, gvk, http.StatusCreated, obj, nil)
}

// patch applies a PATCH to ns/name: JSON patch, JSON merge patch,
// strategic merge patch (built-in kinds only, as a real API server) and
// server-side apply. Server-side apply here is a simplification: it
// creates the object if it does not exist and otherwise merges the applied
// configuration into it like a JSON merge patch, without field managers (a
// field dropped from the configuration stays; conflicts are not detected).
func (a *apiHTTP) patch(w http.ResponseWriter, r *http.Request, fake *clienttesting.Fake, gvr schema.GroupVersionResource, gvk schema.GroupVersionKind, ns, name, sub string) (runtime.Object, error) {
	body, err := io.ReadAll(io.LimitReader(r.Body, 8<<20))
	if err != nil {
		return nil, apierrors.NewBadRequest(err.Error())
	}
	pt := types.PatchType(strings.TrimSpace(strings.SplitN(r.Header.Get("Content-Type"), ";", 2)[0]))
	object := fmt.Sprintf("%s %s/%s", gvr.GroupResource(), ns, name)
	apply := pt == types.ApplyYAMLPatchType
	if apply || pt == types.ApplyCBORPatchType {
		if pt == types.ApplyCBORPatchType {
			return nil, apierrors.NewGenericServerResponse(http.StatusUnsupportedMediaType, "patch", gvr.GroupResource(), name,
				"the simulated API server takes server-side apply as YAML or JSON, not CBOR", 0, false)
		}
		if body, err = yaml.YAMLToJSON(body); err != nil {
			return nil, apierrors.NewBadRequest(fmt.Sprintf("apply %s: the body is not YAML: %v", object, err))
		}
		pt = types.MergePatchType
	}
	current, err := fake.Invokes(clienttesting.NewGetAction(gvr, ns, name), nil)
	if apierrors.IsNotFound(err) && apply {
		obj, derr := a.decodeBody(w, r, runtime.ContentTypeJSON, body, gvk)
		if derr != nil {
			return nil, derr
		}
		return fake.Invokes(clienttesting.NewCreateAction(gvr, ns, obj), nil)
	}
	if err != nil {
		return nil, err
	}
	original, err := runtime.Encode(a.codecs.LegacyCodec(gvk.GroupVersion()), current)
	if err != nil {
		return nil, apierrors.NewInternalError(err)
	}
	var patched []byte
	switch pt {
	case types.JSONPatchType:
		p, perr := jsonpatch.DecodePatch(body)
		if perr != nil {
			return nil, apierrors.NewBadRequest(fmt.Sprintf("patch %s: the JSON patch is malformed: %v", object, perr))
		}
		patched, err = p.Apply(original)
	case types.MergePatchType:
		patched, err = jsonpatch.MergePatch(original, body)
	case types.StrategicMergePatchType:
		if strings.HasSuffix(gvk.Group, "istio.io") {
			return nil, apierrors.NewGenericServerResponse(http.StatusUnsupportedMediaType, "patch", gvr.GroupResource(), name,
				"strategic merge patch is not supported for custom resources; use a JSON merge patch (kubectl patch --type=merge)", 0, false)
		}
		var typed runtime.Object
		if typed, err = a.scheme.New(gvk); err == nil {
			patched, err = strategicpatch.StrategicMergePatch(original, body, typed)
		}
	default:
		return nil, apierrors.NewGenericServerResponse(http.StatusUnsupportedMediaType, "patch", gvr.GroupResource(), name,
			fmt.Sprintf("patch type %q is not supported: use JSON patch, merge patch, strategic merge patch or apply", pt), 0, false)
	}
	if err != nil {
		return nil, apierrors.NewBadRequest(fmt.Sprintf("patch %s: %v", object, err))
	}
	obj, err := a.decodeBody(w, r, runtime.ContentTypeJSON, patched, gvk)
	if err != nil {
		return nil, err
	}
	var action clienttesting.Action = clienttesting.NewUpdateAction(gvr, ns, obj)
	if sub != "" {
		action = clienttesting.NewUpdateSubresourceAction(gvr, sub, ns, obj)
	}
	return fake.Invokes(action, nil)
}

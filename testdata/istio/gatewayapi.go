package istio

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"

	"istio.io/istio/pkg/config/crd"
	apiextensions "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions"
	apiextensionsv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
	structuralschema "k8s.io/apiextensions-apiserver/pkg/apiserver/schema"
	structuraldefaulting "k8s.io/apiextensions-apiserver/pkg/apiserver/schema/defaulting"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	gwv1 "sigs.k8s.io/gateway-api/apis/v1"
	"sigs.k8s.io/yaml"
)

// Gateway API routes (HTTPRoutes and GRPCRoutes) reach Istio the way they
// do in a cluster: the API server first applies the route's CRD defaults and
// validation (OpenAPI schema and CEL rules), then istiod's kube gateway
// controller (pilot/pkg/config/kube/gateway) reads the stored object and
// converts it. Istio's conversion relies on the defaults (it dereferences an
// HTTPRoute match's path, which only the CRD's default fills in), so the
// World stores every route as the API server would: AdmitHTTPRoute,
// AdmitGRPCRoute.
//
// The CRDs are the standard channel's, from the gateway-api module this
// module builds with (the version the main module's planner is written
// against): the experimental channel's extra fields are pruned by a
// standard install, so a route that needs them fails here as an unknown
// field.

const (
	httpRouteCRDFile = "config/crd/standard/gateway.networking.k8s.io_httproutes.yaml"
	grpcRouteCRDFile = "config/crd/standard/gateway.networking.k8s.io_grpcroutes.yaml"
)

type crdSchema struct {
	validator  *crd.Validator
	structural *structuralschema.Structural
	err        error
}

var (
	crdMu      sync.Mutex
	crdSchemas = map[string]*crdSchema{}
)

// gatewayAPIDir is the directory of the sigs.k8s.io/gateway-api module
// version this module selects. Test binaries run in the package directory,
// inside the module, so `go list -m` answers for it.
func gatewayAPIDir() (string, error) {
	out, err := exec.Command("go", "list", "-m", "-f", "{{.Dir}}", "sigs.k8s.io/gateway-api").Output()
	if err != nil {
		var ee *exec.ExitError
		if errors.As(err, &ee) {
			return "", fmt.Errorf("go list -m sigs.k8s.io/gateway-api: %v: %s", err, ee.Stderr)
		}
		return "", fmt.Errorf("go list -m sigs.k8s.io/gateway-api: %v", err)
	}
	dir := strings.TrimSpace(string(out))
	if dir == "" {
		return "", errors.New("go list -m sigs.k8s.io/gateway-api: module not downloaded")
	}
	return dir, nil
}

// loadCRDSchema reads (once) the gateway-api CRD at rel (a path inside the
// module) for its v1 validation and defaults.
func loadCRDSchema(rel string) *crdSchema {
	crdMu.Lock()
	defer crdMu.Unlock()
	if s, ok := crdSchemas[rel]; ok {
		return s
	}
	s := readCRDSchema(rel)
	crdSchemas[rel] = s
	return s
}

func readCRDSchema(rel string) *crdSchema {
	dir, err := gatewayAPIDir()
	if err != nil {
		return &crdSchema{err: err}
	}
	file := filepath.Join(dir, rel)
	// Istio's own CRD validator (pkg/config/crd, what its tests use to
	// check Gateway API objects): schema, list types, unknown fields, CEL.
	v, err := crd.NewValidatorFromFiles(file)
	if err != nil {
		return &crdSchema{err: fmt.Errorf("CRD %s: %w", file, err)}
	}
	// The same CRD's structural schema, for the defaults.
	data, err := os.ReadFile(file)
	if err != nil {
		return &crdSchema{err: err}
	}
	var v1crd apiextensionsv1.CustomResourceDefinition
	if err := yaml.Unmarshal(data, &v1crd); err != nil {
		return &crdSchema{err: fmt.Errorf("CRD %s: %w", file, err)}
	}
	var internal apiextensions.CustomResourceDefinition
	if err := apiextensionsv1.Convert_v1_CustomResourceDefinition_To_apiextensions_CustomResourceDefinition(&v1crd, &internal, nil); err != nil {
		return &crdSchema{err: err}
	}
	for _, ver := range internal.Spec.Versions {
		if ver.Name != "v1" {
			continue
		}
		// Versions with identical schemas share the top-level one.
		schema := internal.Spec.Validation
		if ver.Schema != nil {
			schema = ver.Schema
		}
		if schema == nil {
			break
		}
		s, err := structuralschema.NewStructural(schema.OpenAPIV3Schema)
		if err != nil {
			return &crdSchema{err: err}
		}
		return &crdSchema{validator: v, structural: s}
	}
	return &crdSchema{err: fmt.Errorf("CRD %s has no v1", file)}
}

// admit stores in (a typed gateway.networking.k8s.io/v1 object of kind)
// into out as the API server would with the CRD at rel installed.
func admit(rel, kind string, in runtime.Object, out any) error {
	s := loadCRDSchema(rel)
	if s.err != nil {
		return s.err
	}
	content, err := runtime.DefaultUnstructuredConverter.ToUnstructured(in)
	if err != nil {
		return err
	}
	content["apiVersion"], content["kind"] = gwv1.GroupVersion.String(), kind
	if md, _ := content["metadata"].(map[string]any); md == nil || md["namespace"] == nil || md["namespace"] == "" {
		return errors.New("metadata.namespace is required")
	}
	// Status is the controller's; metadata is validated by the API server
	// itself, not by the CRD schema.
	delete(content, "status")
	structuraldefaulting.Default(content, s.structural)
	if err := s.validator.ValidateCustomResource(&unstructured.Unstructured{Object: content}); err != nil {
		return err
	}
	js, err := json.Marshal(content)
	if err != nil {
		return err
	}
	if err := strictJSON(js, out); err != nil {
		return fmt.Errorf("the defaulted %s does not decode: %w", kind, err)
	}
	return nil
}

// AdmitHTTPRoute returns the HTTPRoute as the API server would store it
// with the standard HTTPRoute CRD installed: its defaults applied (e.g. a
// rule without matches gets a "/" prefix match, a match without path the
// "/" prefix, a backendRef weight 1), or the error the API server would
// reject it with (schema, CEL rules, or fields the CRD does not have).
func AdmitHTTPRoute(in *gwv1.HTTPRoute) (*gwv1.HTTPRoute, error) {
	out := &gwv1.HTTPRoute{}
	if err := admit(httpRouteCRDFile, "HTTPRoute", in.DeepCopy(), out); err != nil {
		return nil, err
	}
	return out, nil
}

// AdmitGRPCRoute is AdmitHTTPRoute for a GRPCRoute and the standard
// GRPCRoute CRD (whose defaults are fewer: a method match's type Exact, a
// header match's type Exact, a backendRef's kind Service and weight 1; a
// rule without matches keeps none).
func AdmitGRPCRoute(in *gwv1.GRPCRoute) (*gwv1.GRPCRoute, error) {
	out := &gwv1.GRPCRoute{}
	if err := admit(grpcRouteCRDFile, "GRPCRoute", in.DeepCopy(), out); err != nil {
		return nil, err
	}
	return out, nil
}

func parseHTTPRoute(js []byte) (*gwv1.HTTPRoute, error) {
	r := &gwv1.HTTPRoute{}
	if err := strictJSON(js, r); err != nil {
		return nil, err
	}
	return AdmitHTTPRoute(r)
}

func parseGRPCRoute(js []byte) (*gwv1.GRPCRoute, error) {
	r := &gwv1.GRPCRoute{}
	if err := strictJSON(js, r); err != nil {
		return nil, err
	}
	return AdmitGRPCRoute(r)
}

// ServiceParent reports whether a route's parentRefs name a Service (core
// group): a GAMMA mesh route.
func ServiceParent(refs []gwv1.ParentReference) bool {
	for _, p := range refs {
		if p.Kind != nil && *p.Kind == "Service" && (p.Group == nil || *p.Group == "" || *p.Group == "core") {
			return true
		}
	}
	return false
}

// HTTPRouteYAML renders a route (for logs and failure messages).
func HTTPRouteYAML(r *gwv1.HTTPRoute) string {
	r = r.DeepCopy()
	r.ManagedFields = nil
	return routeYAML(r)
}

// GRPCRouteYAML renders a GRPCRoute (for logs and failure messages).
func GRPCRouteYAML(r *gwv1.GRPCRoute) string {
	r = r.DeepCopy()
	r.ManagedFields = nil
	return routeYAML(r)
}

func routeYAML(r any) string {
	js, err := json.Marshal(r)
	if err != nil {
		return err.Error()
	}
	y, err := yaml.JSONToYAML(js)
	if err != nil {
		return err.Error()
	}
	return string(bytes.TrimSpace(y))
}

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

// Gateway API HTTPRoutes reach Istio the way they do in a cluster: the API
// server first applies the HTTPRoute CRD's defaults and validation (OpenAPI
// schema and CEL rules), then istiod's kube gateway controller
// (pilot/pkg/config/kube/gateway) reads the stored object and converts it.
// Istio's conversion relies on the defaults (it dereferences a match's path,
// which only the CRD's default fills in), so the World stores every
// HTTPRoute as the API server would: AdmitHTTPRoute.
//
// The CRD is the standard channel's, from the gateway-api module this module
// builds with (the version the main module's planner is written against):
// the experimental channel's extra fields are pruned by a standard install,
// so a route that needs them fails here as an unknown field.

const httpRouteCRDFile = "config/crd/standard/gateway.networking.k8s.io_httproutes.yaml"

type httpRouteSchema struct {
	validator  *crd.Validator
	structural *structuralschema.Structural
	err        error
}

var (
	crdOnce   sync.Once
	crdSchema httpRouteSchema
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

func loadHTTPRouteSchema() httpRouteSchema {
	crdOnce.Do(func() {
		dir, err := gatewayAPIDir()
		if err != nil {
			crdSchema.err = err
			return
		}
		file := filepath.Join(dir, httpRouteCRDFile)
		// Istio's own CRD validator (pkg/config/crd, what its tests use to
		// check Gateway API objects): schema, list types, unknown fields, CEL.
		v, err := crd.NewValidatorFromFiles(file)
		if err != nil {
			crdSchema.err = fmt.Errorf("HTTPRoute CRD %s: %w", file, err)
			return
		}
		// The same CRD's structural schema, for the defaults.
		data, err := os.ReadFile(file)
		if err != nil {
			crdSchema.err = err
			return
		}
		var v1crd apiextensionsv1.CustomResourceDefinition
		if err := yaml.Unmarshal(data, &v1crd); err != nil {
			crdSchema.err = fmt.Errorf("HTTPRoute CRD %s: %w", file, err)
			return
		}
		var internal apiextensions.CustomResourceDefinition
		if err := apiextensionsv1.Convert_v1_CustomResourceDefinition_To_apiextensions_CustomResourceDefinition(&v1crd, &internal, nil); err != nil {
			crdSchema.err = err
			return
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
				crdSchema.err = err
				return
			}
			crdSchema = httpRouteSchema{validator: v, structural: s}
			return
		}
		crdSchema.err = fmt.Errorf("HTTPRoute CRD %s has no v1", file)
	})
	return crdSchema
}

// AdmitHTTPRoute returns the HTTPRoute as the API server would store it
// with the standard HTTPRoute CRD installed: its defaults applied (e.g. a
// rule without matches gets a "/" prefix match, a match without path the
// "/" prefix, a backendRef weight 1), or the error the API server would
// reject it with (schema, CEL rules, or fields the CRD does not have).
func AdmitHTTPRoute(in *gwv1.HTTPRoute) (*gwv1.HTTPRoute, error) {
	s := loadHTTPRouteSchema()
	if s.err != nil {
		return nil, s.err
	}
	if in.Namespace == "" {
		return nil, errors.New("metadata.namespace is required")
	}
	r := in.DeepCopy()
	r.APIVersion, r.Kind = gwv1.GroupVersion.String(), "HTTPRoute"
	content, err := runtime.DefaultUnstructuredConverter.ToUnstructured(r)
	if err != nil {
		return nil, err
	}
	// Status is the controller's; metadata is validated by the API server
	// itself, not by the CRD schema.
	delete(content, "status")
	structuraldefaulting.Default(content, s.structural)
	if err := s.validator.ValidateCustomResource(&unstructured.Unstructured{Object: content}); err != nil {
		return nil, err
	}
	js, err := json.Marshal(content)
	if err != nil {
		return nil, err
	}
	out := &gwv1.HTTPRoute{}
	if err := strictJSON(js, out); err != nil {
		return nil, fmt.Errorf("the defaulted route does not decode: %w", err)
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

// ServiceParent reports whether the route has a Service (core group) as a
// parent: a GAMMA mesh route.
func ServiceParent(r *gwv1.HTTPRoute) bool {
	for _, p := range r.Spec.ParentRefs {
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

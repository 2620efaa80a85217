package istiovs

import (
	"maps"
	"slices"
	"strings"

	"google.golang.org/protobuf/proto"
	networking "istio.io/api/networking/v1alpha3"
)

// This file follows pilot/pkg/model/virtualservice.go (MergeHTTPRoutes and
// its helpers): how Istio combines a root route that delegates with each
// route of the delegate. A delegate route whose matches conflict with the
// root's is dropped.

// mergeHTTPRoute returns the delegate route as merged under root, or nil
// when their matches conflict. Neither argument is modified.
func mergeHTTPRoute(root, delegate *networking.HTTPRoute) *networking.HTTPRoute {
	matches, conflict := mergeHTTPMatchRequests(root.Match, delegate.Match)
	if conflict {
		return nil
	}
	out := proto.Clone(delegate).(*networking.HTTPRoute)
	out.Match = matches
	switch {
	case out.Name == "":
		out.Name = root.Name
	case root.Name != "":
		out.Name = root.Name + "-" + out.Name
	}
	if out.Rewrite == nil {
		out.Rewrite = root.Rewrite
	}
	if out.DirectResponse == nil {
		out.DirectResponse = root.DirectResponse
	}
	if out.Timeout == nil {
		out.Timeout = root.Timeout
	}
	if out.Retries == nil {
		out.Retries = root.Retries
	}
	if out.Fault == nil {
		out.Fault = root.Fault
	}
	if out.Mirror == nil {
		out.Mirror = root.Mirror
	}
	if out.MirrorPercent == nil { //nolint:staticcheck // Istio still merges the deprecated field
		out.MirrorPercent = root.MirrorPercent //nolint:staticcheck
	}
	if out.MirrorPercentage == nil {
		out.MirrorPercentage = root.MirrorPercentage
	}
	if out.CorsPolicy == nil {
		out.CorsPolicy = root.CorsPolicy
	}
	if out.Mirrors == nil {
		out.Mirrors = root.Mirrors
	}
	if out.Headers == nil {
		out.Headers = root.Headers
	}
	return proto.Clone(out).(*networking.HTTPRoute)
}

func mergeHTTPMatchRequests(root, delegate []*networking.HTTPMatchRequest) ([]*networking.HTTPMatchRequest, bool) {
	if len(root) == 0 {
		return delegate, false
	}
	if len(delegate) == 0 {
		return root, false
	}
	var out []*networking.HTTPMatchRequest
	for _, sub := range delegate {
		found := false
		for _, r := range root {
			if hasConflict(r, sub) {
				continue
			}
			out = append(out, mergeHTTPMatchRequest(r, sub))
			found = true
		}
		if !found {
			return nil, true
		}
	}
	return out, len(out) == 0
}

func mergeHTTPMatchRequest(root, delegate *networking.HTTPMatchRequest) *networking.HTTPMatchRequest {
	out := proto.Clone(delegate).(*networking.HTTPMatchRequest)
	switch {
	case out.Name == "":
		out.Name = root.Name
	case root.Name != "":
		out.Name = root.Name + "-" + out.Name
	}
	if out.Uri == nil {
		out.Uri = root.Uri
	}
	if out.Scheme == nil {
		out.Scheme = root.Scheme
	}
	if out.Method == nil {
		out.Method = root.Method
	}
	if out.Authority == nil {
		out.Authority = root.Authority
	}
	out.Headers = mergeMaps(root.Headers, delegate.Headers)
	out.WithoutHeaders = mergeMaps(root.WithoutHeaders, delegate.WithoutHeaders)
	out.QueryParams = mergeMaps(root.QueryParams, delegate.QueryParams)
	if out.Port == 0 {
		out.Port = root.Port
	}
	out.SourceLabels = mergeMaps(root.SourceLabels, delegate.SourceLabels)
	if out.SourceNamespace == "" {
		out.SourceNamespace = root.SourceNamespace
	}
	if len(out.Gateways) == 0 {
		out.Gateways = root.Gateways
	}
	if out.StatPrefix == "" {
		out.StatPrefix = root.StatPrefix
	}
	return out
}

// mergeMaps is Istio's maps.MergeCopy: the delegate's entries win.
func mergeMaps[V any](root, delegate map[string]V) map[string]V {
	if len(root) == 0 && len(delegate) == 0 {
		return nil
	}
	out := make(map[string]V, len(root)+len(delegate))
	maps.Copy(out, root)
	maps.Copy(out, delegate)
	return out
}

func hasConflict(root, leaf *networking.HTTPMatchRequest) bool {
	roots := []*networking.StringMatch{root.Uri, root.Scheme, root.Method, root.Authority}
	leaves := []*networking.StringMatch{leaf.Uri, leaf.Scheme, leaf.Method, leaf.Authority}
	for i := range roots {
		if stringMatchConflict(roots[i], leaves[i]) {
			return true
		}
	}
	for k, v := range leaf.Headers {
		if stringMatchConflict(root.Headers[k], v) {
			return true
		}
	}
	for k, v := range leaf.WithoutHeaders {
		if stringMatchConflict(root.WithoutHeaders[k], v) {
			return true
		}
	}
	for k, v := range leaf.QueryParams {
		if stringMatchConflict(root.QueryParams[k], v) {
			return true
		}
	}
	if root.IgnoreUriCase != leaf.IgnoreUriCase {
		return true
	}
	if root.Port > 0 && leaf.Port > 0 && root.Port != leaf.Port {
		return true
	}
	if root.SourceNamespace != "" && leaf.SourceNamespace != root.SourceNamespace {
		return true
	}
	for k, v := range leaf.SourceLabels {
		if rv, ok := root.SourceLabels[k]; ok && rv != v {
			return true
		}
	}
	if len(root.Gateways) > 0 && len(leaf.Gateways) > 0 {
		if len(root.Gateways) < len(leaf.Gateways) {
			return true
		}
		for _, g := range leaf.Gateways {
			if !slices.Contains(root.Gateways, g) {
				return true
			}
		}
	}
	return false
}

func stringMatchConflict(root, leaf *networking.StringMatch) bool {
	if root == nil || leaf == nil {
		return false
	}
	if root.GetRegex() != "" && (leaf.GetRegex() != "" || leaf.GetPrefix() != "" || leaf.GetExact() != "") {
		return true
	}
	if leaf.GetRegex() != "" && (root.GetRegex() != "" || root.GetPrefix() != "" || root.GetExact() != "") {
		return true
	}
	if exact := root.GetExact(); exact != "" {
		return leaf.GetPrefix() != "" || leaf.GetExact() != exact
	}
	if prefix := root.GetPrefix(); prefix != "" {
		if leaf.GetPrefix() != "" {
			return !strings.HasPrefix(leaf.GetPrefix(), prefix)
		}
		if leaf.GetExact() != "" {
			return !strings.HasPrefix(leaf.GetExact(), prefix)
		}
	}
	return true
}

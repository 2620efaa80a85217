package sim

import (
	"reflect"
	"slices"
	"strings"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/version"
)

// discovery is what the simulated API server answers on /api, /apis and
// /api/v1, /apis/GROUP/VERSION (legacy, unaggregated discovery), so that
// kubectl can map `pods`, `deploy` or `vs` to a URL. It is derived from
// what ServeHTTP really serves: every kind of the scheme that has a list
// kind (so get, list, watch, create, update, patch and delete work on it
// through the fake clientsets), in one version per group only — the fake
// object store keeps each version apart, where a real API server shows one
// object in every version — plus the subresources ServeHTTP serves
// (status, pods' log and portforward) and selfsubjectaccessreviews.
type discovery struct {
	groups    []metav1.APIGroup
	resources map[schema.GroupVersion]*metav1.APIResourceList
}

// clusterScoped are the kinds of the scheme that are not namespaced. The
// scheme does not say; this is Kubernetes' own split for the kinds
// client-go's and Istio's schemes hold (any kind not here is served, and
// announced, as namespaced), checked against kube-apiserver by
// TestSimDiscoveryMatchesRealAPIServer (tools/testbed/realcp/scenarios).
var clusterScoped = map[schema.GroupKind]bool{
	{Kind: "Namespace"}: true, {Kind: "Node"}: true, {Kind: "PersistentVolume"}: true, {Kind: "ComponentStatus"}: true,
	{Group: "rbac.authorization.k8s.io", Kind: "ClusterRole"}:                         true,
	{Group: "rbac.authorization.k8s.io", Kind: "ClusterRoleBinding"}:                  true,
	{Group: "storage.k8s.io", Kind: "StorageClass"}:                                   true,
	{Group: "storage.k8s.io", Kind: "CSIDriver"}:                                      true,
	{Group: "storage.k8s.io", Kind: "CSINode"}:                                        true,
	{Group: "storage.k8s.io", Kind: "VolumeAttachment"}:                               true,
	{Group: "storage.k8s.io", Kind: "VolumeAttributesClass"}:                          true,
	{Group: "scheduling.k8s.io", Kind: "PriorityClass"}:                               true,
	{Group: "node.k8s.io", Kind: "RuntimeClass"}:                                      true,
	{Group: "networking.k8s.io", Kind: "IngressClass"}:                                true,
	{Group: "networking.k8s.io", Kind: "IPAddress"}:                                   true,
	{Group: "networking.k8s.io", Kind: "ServiceCIDR"}:                                 true,
	{Group: "certificates.k8s.io", Kind: "CertificateSigningRequest"}:                 true,
	{Group: "certificates.k8s.io", Kind: "ClusterTrustBundle"}:                        true,
	{Group: "admissionregistration.k8s.io", Kind: "MutatingWebhookConfiguration"}:     true,
	{Group: "admissionregistration.k8s.io", Kind: "ValidatingWebhookConfiguration"}:   true,
	{Group: "admissionregistration.k8s.io", Kind: "ValidatingAdmissionPolicy"}:        true,
	{Group: "admissionregistration.k8s.io", Kind: "ValidatingAdmissionPolicyBinding"}: true,
	{Group: "admissionregistration.k8s.io", Kind: "MutatingAdmissionPolicy"}:          true,
	{Group: "admissionregistration.k8s.io", Kind: "MutatingAdmissionPolicyBinding"}:   true,
	{Group: "flowcontrol.apiserver.k8s.io", Kind: "FlowSchema"}:                       true,
	{Group: "flowcontrol.apiserver.k8s.io", Kind: "PriorityLevelConfiguration"}:       true,
	{Group: "internal.apiserver.k8s.io", Kind: "StorageVersion"}:                      true,
	{Group: "storagemigration.k8s.io", Kind: "StorageVersionMigration"}:               true,
	{Group: "resource.k8s.io", Kind: "DeviceClass"}:                                   true,
	{Group: "resource.k8s.io", Kind: "ResourceSlice"}:                                 true,
	{Group: "resource.k8s.io", Kind: "DeviceTaintRule"}:                               true,
	{Group: "apiextensions.k8s.io", Kind: "CustomResourceDefinition"}:                 true,
	{Group: "apiregistration.k8s.io", Kind: "APIService"}:                             true,
}

// shortNames and categories are what a real API server (with Istio's
// CRDs) announces (kubectl knows no short names of its own: `kubectl get
// deploy` needs them from discovery). TestSimDiscoveryMatchesRealAPIServer
// in tools/testbed/realcp/scenarios checks them, and clusterScoped,
// against kube-apiserver.
var (
	shortNames = map[schema.GroupResource][]string{
		{Resource: "pods"}: {"po"}, {Resource: "services"}: {"svc"}, {Resource: "namespaces"}: {"ns"},
		{Resource: "configmaps"}: {"cm"}, {Resource: "endpoints"}: {"ep"}, {Resource: "events"}: {"ev"},
		{Resource: "nodes"}: {"no"}, {Resource: "serviceaccounts"}: {"sa"},
		{Resource: "persistentvolumeclaims"}: {"pvc"}, {Resource: "persistentvolumes"}: {"pv"},
		{Resource: "replicationcontrollers"}: {"rc"}, {Resource: "limitranges"}: {"limits"},
		{Resource: "resourcequotas"}:             {"quota"},
		{Group: "apps", Resource: "deployments"}: {"deploy"}, {Group: "apps", Resource: "replicasets"}: {"rs"},
		{Group: "apps", Resource: "statefulsets"}: {"sts"}, {Group: "apps", Resource: "daemonsets"}: {"ds"},
		{Group: "batch", Resource: "cronjobs"}:                                 {"cj"},
		{Group: "autoscaling", Resource: "horizontalpodautoscalers"}:           {"hpa"},
		{Group: "networking.k8s.io", Resource: "ingresses"}:                    {"ing"},
		{Group: "networking.k8s.io", Resource: "networkpolicies"}:              {"netpol"},
		{Group: "policy", Resource: "poddisruptionbudgets"}:                    {"pdb"},
		{Group: "networking.istio.io", Resource: "virtualservices"}:            {"vs"},
		{Group: "networking.istio.io", Resource: "destinationrules"}:           {"dr"},
		{Group: "networking.istio.io", Resource: "gateways"}:                   {"gw"},
		{Group: "networking.istio.io", Resource: "serviceentries"}:             {"se"},
		{Group: "networking.istio.io", Resource: "workloadentries"}:            {"we"},
		{Group: "networking.istio.io", Resource: "workloadgroups"}:             {"wg"},
		{Group: "security.istio.io", Resource: "authorizationpolicies"}:        {"ap"},
		{Group: "security.istio.io", Resource: "peerauthentications"}:          {"pa"},
		{Group: "security.istio.io", Resource: "requestauthentications"}:       {"ra"},
		{Group: "telemetry.istio.io", Resource: "telemetries"}:                 {"telemetry"},
		{Resource: "componentstatuses"}:                                        {"cs"},
		{Group: "events.k8s.io", Resource: "events"}:                           {"ev"},
		{Group: "networking.k8s.io", Resource: "ipaddresses"}:                  {"ip"},
		{Group: "storage.k8s.io", Resource: "storageclasses"}:                  {"sc"},
		{Group: "storage.k8s.io", Resource: "volumeattributesclasses"}:         {"vac"},
		{Group: "certificates.k8s.io", Resource: "certificatesigningrequests"}: {"csr"},
		{Group: "scheduling.k8s.io", Resource: "priorityclasses"}:              {"pc"},
	}
	inCategoryAll = map[schema.GroupResource]bool{
		{Resource: "pods"}: true, {Resource: "services"}: true, {Resource: "replicationcontrollers"}: true,
		{Group: "apps", Resource: "deployments"}: true, {Group: "apps", Resource: "replicasets"}: true,
		{Group: "apps", Resource: "statefulsets"}: true, {Group: "apps", Resource: "daemonsets"}: true,
		{Group: "batch", Resource: "jobs"}: true, {Group: "batch", Resource: "cronjobs"}: true,
		{Group: "autoscaling", Resource: "horizontalpodautoscalers"}: true,
	}
)

// selfSubjectAccessReviews and selfSubjectRulesReviews are the
// create-only resources the simulated API server answers (kubectl auth
// can-i, and with --list; it has no RBAC: everything is allowed).
var (
	selfSubjectAccessReviews = schema.GroupVersionResource{Group: "authorization.k8s.io", Version: "v1", Resource: "selfsubjectaccessreviews"}
	selfSubjectRulesReviews  = schema.GroupVersionResource{Group: "authorization.k8s.io", Version: "v1", Resource: "selfsubjectrulesreviews"}
)

// namespaced reports whether resources of kind gk live in a namespace.
func namespaced(gk schema.GroupKind) bool { return !clusterScoped[gk] }

var metaPackage = reflect.TypeFor[metav1.Status]().PkgPath()

// newDiscovery derives discovery from kinds (the resources ServeHTTP
// dispatches on) and scheme.
func newDiscovery(s *runtime.Scheme, kinds map[schema.GroupVersionResource]schema.GroupVersionKind) *discovery {
	served := map[schema.GroupVersionResource]schema.GroupVersionKind{}
	versions := map[string][]string{}
	for gvr, gvk := range kinds {
		t, ok := s.AllKnownTypes()[gvk]
		if !ok || t.PkgPath() == metaPackage || !s.Recognizes(gvk.GroupVersion().WithKind(gvk.Kind+"List")) {
			continue // not a collection: an option, a review, a meta type
		}
		served[gvr] = gvk
		if !slices.Contains(versions[gvr.Group], gvr.Version) {
			versions[gvr.Group] = append(versions[gvr.Group], gvr.Version)
		}
	}
	d := &discovery{resources: map[schema.GroupVersion]*metav1.APIResourceList{}}
	preferred := map[string]string{}
	for group, vs := range versions {
		slices.SortFunc(vs, func(a, b string) int { return version.CompareKubeAwareVersionStrings(b, a) })
		preferred[group] = vs[0]
		gv := schema.GroupVersion{Group: group, Version: vs[0]}
		d.resources[gv] = &metav1.APIResourceList{TypeMeta: metav1.TypeMeta{Kind: "APIResourceList", APIVersion: "v1"},
			GroupVersion: gv.String()}
		if group != "" {
			gvd := metav1.GroupVersionForDiscovery{GroupVersion: gv.String(), Version: gv.Version}
			d.groups = append(d.groups, metav1.APIGroup{Name: group, Versions: []metav1.GroupVersionForDiscovery{gvd}, PreferredVersion: gvd})
		}
	}
	slices.SortFunc(d.groups, func(a, b metav1.APIGroup) int { return strings.Compare(a.Name, b.Name) })
	verbs := metav1.Verbs{"create", "delete", "get", "list", "patch", "update", "watch"}
	for gvr, gvk := range served {
		if preferred[gvr.Group] != gvr.Version {
			continue
		}
		list := d.resources[gvr.GroupVersion()]
		gr := gvr.GroupResource()
		r := metav1.APIResource{Name: gvr.Resource, SingularName: strings.ToLower(gvk.Kind), Namespaced: namespaced(gvk.GroupKind()),
			Kind: gvk.Kind, Verbs: verbs, ShortNames: shortNames[gr]}
		if inCategoryAll[gr] {
			r.Categories = []string{"all"}
		}
		list.APIResources = append(list.APIResources, r)
		if t := s.AllKnownTypes()[gvk]; t.Kind() == reflect.Struct {
			if _, ok := t.FieldByName("Status"); ok {
				list.APIResources = append(list.APIResources, metav1.APIResource{Name: gvr.Resource + "/status",
					Namespaced: r.Namespaced, Kind: gvk.Kind, Verbs: metav1.Verbs{"get", "patch", "update"}})
			}
		}
		if gr == (schema.GroupResource{Resource: "pods"}) {
			list.APIResources = append(list.APIResources,
				metav1.APIResource{Name: "pods/log", Namespaced: true, Kind: "Pod", Verbs: metav1.Verbs{"get"}},
				metav1.APIResource{Name: "pods/portforward", Namespaced: true, Kind: "PodPortForwardOptions", Verbs: metav1.Verbs{"create", "get"}})
		}
	}
	if list := d.resources[selfSubjectAccessReviews.GroupVersion()]; list != nil {
		list.APIResources = append(list.APIResources, metav1.APIResource{Name: selfSubjectAccessReviews.Resource,
			SingularName: "selfsubjectaccessreview", Kind: "SelfSubjectAccessReview", Verbs: metav1.Verbs{"create"}},
			metav1.APIResource{Name: selfSubjectRulesReviews.Resource,
				SingularName: "selfsubjectrulesreview", Kind: "SelfSubjectRulesReview", Verbs: metav1.Verbs{"create"}})
	}
	for _, list := range d.resources {
		slices.SortFunc(list.APIResources, func(a, b metav1.APIResource) int { return strings.Compare(a.Name, b.Name) })
	}
	return d
}

// groupList is the answer to /apis.
func (d *discovery) groupList() *metav1.APIGroupList {
	return &metav1.APIGroupList{TypeMeta: metav1.TypeMeta{Kind: "APIGroupList", APIVersion: "v1"}, Groups: d.groups}
}

// group is the answer to /apis/GROUP.
func (d *discovery) group(name string) (*metav1.APIGroup, bool) {
	for i := range d.groups {
		if d.groups[i].Name == name {
			g := d.groups[i]
			g.TypeMeta = metav1.TypeMeta{Kind: "APIGroup", APIVersion: "v1"}
			return &g, true
		}
	}
	return nil, false
}

// KubectlExamples are the kubectl commands (arguments after "kubectl")
// that `sbx demo --keep` prints for its cluster; the kubectlsim tests of
// tools/testbed/realcp run each with the real kubectl.
var KubectlExamples = [][]string{
	{"get", "pods,deploy,svc,virtualservices", "-n", AppNamespace},
	{"describe", "pod", "-n", AppNamespace, "-l", "app=route"},
	{"logs", "-n", AppNamespace, "deploy/route"},
}

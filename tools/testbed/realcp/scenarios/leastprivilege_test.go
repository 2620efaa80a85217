package scenarios

import (
	"flag"
	"fmt"
	"sort"
	"strings"

	"github.com/sbx-dev/sbx/cluster"
	"github.com/sbx-dev/sbx/tools/testbed/realcp/controlplane"
)

// unusedGrants returns the permissions of deploy/rbac.yaml
// (cluster.RequiredAccess, which a unit test holds equal to it) that no
// request of the developer in the audit log used: after the whole suite,
// every grant must have been needed by some scenario, so the Role is the
// least that works. It returns nil, nil when only some tests ran.
func unusedGrants() ([]string, error) {
	if f := flag.Lookup("test.run"); f != nil && f.Value.String() != "" {
		return nil, nil
	}
	if f := flag.Lookup("test.skip"); f != nil && f.Value.String() != "" {
		return nil, nil
	}
	events, err := cp.AuditEvents()
	if err != nil {
		return nil, err
	}
	used := map[string]bool{}
	for _, e := range events {
		if e.User.Username != controlplane.DeveloperUser || e.ObjectRef == nil {
			continue
		}
		res := e.ObjectRef.Resource
		if e.ObjectRef.Subresource != "" {
			res += "/" + e.ObjectRef.Subresource
		}
		// A name-limited grant counts only for that name; a namespaced
		// one for any namespace, a cluster-wide one at cluster scope.
		for _, name := range []string{"", e.ObjectRef.Name} {
			used[grantKey(e.Verb, e.ObjectRef.APIGroup, res, name, e.ObjectRef.Namespace == "")] = true
		}
	}
	var unused []string
	for _, a := range cluster.RequiredAccess {
		if !used[grantKey(a.Verb, a.Group, a.Resource, a.Name, a.ClusterWide)] {
			unused = append(unused, fmt.Sprintf("%s %s/%s %s (cluster-wide %v: %s)", a.Verb, a.Group, a.Resource, a.Name, a.ClusterWide, a.Why))
		}
	}
	sort.Strings(unused)
	return unused, nil
}

func grantKey(verb, group, resource, name string, clusterWide bool) string {
	return strings.Join([]string{verb, group, resource, name, fmt.Sprint(clusterWide)}, "|")
}

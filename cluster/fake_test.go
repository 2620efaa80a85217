package cluster

import (
	"fmt"
	"os"
	"strconv"
	"sync/atomic"
	"testing"

	istionet "istio.io/client-go/pkg/apis/networking/v1"
	istiofake "istio.io/client-go/pkg/clientset/versioned/fake"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	kubefake "k8s.io/client-go/kubernetes/fake"
	k8stesting "k8s.io/client-go/testing"

	"github.com/stretchr/testify/require"

	"github.com/sbx-dev/sbx/cluster/spec"
	"github.com/sbx-dev/sbx/tunnel"
)

const testKey = "k3x9a0b1c2d3e"
const testKey2 = "z9y8x7w6v5u4t"
const testImage = "ghcr.io/sbx-dev/sbx:v0.1.0"

type fakeClients struct {
	Clients
	kube  *kubefake.Clientset
	istio *istiofake.Clientset
}

// newFake returns fake clientsets seeded with objs, with what the fakes
// lack and sbx relies on: UIDs on create, and optimistic concurrency
// (resourceVersion checks on update, as the API server does).
func newFake(t *testing.T, objs ...runtime.Object) *fakeClients {
	t.Helper()
	var kubeObjs, istioObjs []runtime.Object
	for _, o := range objs {
		if _, ok := o.(*istionet.VirtualService); ok {
			istioObjs = append(istioObjs, o)
		} else {
			kubeObjs = append(kubeObjs, o)
		}
	}
	for _, o := range objs {
		m, _ := meta.Accessor(o)
		if m.GetResourceVersion() == "" {
			m.SetResourceVersion("1")
		}
	}
	k := kubefake.NewClientset(kubeObjs...)
	is := istiofake.NewSimpleClientset(istioObjs...)
	var seq atomic.Int64
	for _, f := range []*k8stesting.Fake{&k.Fake, &is.Fake} {
		tracker := k.Tracker()
		if f == &is.Fake {
			tracker = is.Tracker()
		}
		f.PrependReactor("create", "*", func(a k8stesting.Action) (bool, runtime.Object, error) {
			m, err := meta.Accessor(a.(k8stesting.CreateAction).GetObject())
			if err == nil {
				if m.GetUID() == "" {
					m.SetUID(types.UID(fmt.Sprintf("uid-%s-%d", m.GetName(), seq.Add(1))))
				}
				m.SetResourceVersion("1")
			}
			return false, nil, nil
		})
		f.PrependReactor("update", "*", func(a k8stesting.Action) (bool, runtime.Object, error) {
			ua := a.(k8stesting.UpdateAction)
			if ua.GetSubresource() != "" {
				return false, nil, nil
			}
			obj := ua.GetObject()
			m, err := meta.Accessor(obj)
			if err != nil {
				return false, nil, nil
			}
			cur, err := tracker.Get(ua.GetResource(), ua.GetNamespace(), m.GetName())
			if err != nil {
				return true, nil, err
			}
			cm, _ := meta.Accessor(cur)
			if m.GetResourceVersion() != cm.GetResourceVersion() {
				return true, nil, apierrors.NewConflict(ua.GetResource().GroupResource(), m.GetName(),
					fmt.Errorf("the object has been modified; please apply your changes to the latest version and try again"))
			}
			rv, _ := strconv.Atoi(cm.GetResourceVersion())
			m.SetResourceVersion(strconv.Itoa(rv + 1))
			return false, nil, nil
		})
	}
	return &fakeClients{Clients: Clients{Kube: k, Istio: is}, kube: k, istio: is}
}

// writes returns the create/update/delete/patch actions recorded so far.
func (f *fakeClients) writes() []string {
	var out []string
	for _, fk := range []*k8stesting.Fake{&f.kube.Fake, &f.istio.Fake} {
		for _, a := range fk.Actions() {
			switch a.GetVerb() {
			case "create", "update", "delete", "patch", "deletecollection":
				name := ""
				switch x := a.(type) {
				case k8stesting.CreateAction:
					m, _ := meta.Accessor(x.GetObject())
					name = m.GetName()
				case k8stesting.UpdateAction:
					m, _ := meta.Accessor(x.GetObject())
					name = m.GetName()
				case k8stesting.DeleteAction:
					name = x.GetName()
				}
				out = append(out, a.GetVerb()+" "+a.GetResource().Resource+" "+a.GetNamespace()+"/"+name)
			}
		}
	}
	return out
}

func (f *fakeClients) clearActions() {
	f.kube.ClearActions()
	f.istio.ClearActions()
}

// hotrodManifests parses testdata/baseline/hotrod.yaml.
func hotrodManifests(t *testing.T) *ManifestBaseline {
	t.Helper()
	f, err := os.Open("../testdata/baseline/hotrod.yaml")
	require.NoError(t, err)
	defer f.Close()
	m, err := ParseManifests(f, "default")
	require.NoError(t, err)
	return m
}

// hotrodFake is a fake cluster holding the hotrod baseline.
func hotrodFake(t *testing.T, extra ...runtime.Object) *fakeClients {
	t.Helper()
	return newFake(t, append(hotrodManifests(t).Objects(), extra...)...)
}

func routeSandbox(name string) *spec.Sandbox {
	return &spec.Sandbox{Name: name, Spec: spec.Spec{
		Description: "route on my laptop",
		Labels:      map[string]string{"team": "backend"},
		Local: []spec.Local{{
			Name:     "route",
			From:     spec.Workload{Kind: spec.KindDeployment, Namespace: "hotrod", Name: "route"},
			Mappings: []spec.Mapping{{Port: 8083, ToLocal: "localhost:8083"}},
		}},
	}}
}

func testOptions(key string) Options {
	return Options{RoutingKey: key, TokenVerifier: testVerifier(key), RelayImage: testImage, Holder: "alice@laptop"}
}

// testToken is the tunnel token a daemon would hold for key; the cluster
// gets only testVerifier(key).
func testToken(key string) string { return "test-token-" + key }

func testVerifier(key string) string { return tunnel.VerifierOf(testToken(key)).String() }

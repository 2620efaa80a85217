package sim

import (
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"reflect"
	"strconv"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	clienttesting "k8s.io/client-go/testing"
)

// apiServer adds to a fake clientset the bits of API server behaviour that
// sbx relies on and the plain fake lacks:
//
//   - create: uid, creationTimestamp, resourceVersion, generation 1, and
//     metadata.generateName;
//   - update: optimistic concurrency (a stale resourceVersion is a 409
//     Conflict), uid/creationTimestamp preserved, generation bumped when the
//     spec changes, status kept on a main-resource update and only status
//     taken from a status update;
//   - per-resource create hooks (a Service gets its ClusterIP).
//
// One apiServer is shared by the Kubernetes and the Istio fakes, so resource
// versions are unique across both, as in one etcd.
type apiServer struct {
	mu      sync.Mutex
	rv      int64
	now     func() time.Time
	onCreat map[string]func(obj runtime.Object) error // by resource name
	// onWrite hooks run on create and on main-resource update, by
	// resource name (defaulting and normalisation such as a Secret's
	// stringData).
	onWrite map[string]func(obj runtime.Object)
}

func newAPIServer(now func() time.Time) *apiServer {
	if now == nil {
		now = time.Now
	}
	return &apiServer{
		now:     now,
		onCreat: map[string]func(runtime.Object) error{},
		onWrite: map[string]func(runtime.Object){"secrets": mergeStringData},
	}
}

func (s *apiServer) nextRV() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.rv++
	return strconv.FormatInt(s.rv, 10)
}

// install prepends the reactor to fake; tracker is the fake's object store.
func (s *apiServer) install(fake *clienttesting.Fake, tracker clienttesting.ObjectTracker) {
	fake.PrependReactor("*", "*", func(action clienttesting.Action) (bool, runtime.Object, error) {
		switch a := action.(type) {
		case clienttesting.CreateActionImpl:
			if a.GetSubresource() != "" {
				return false, nil, nil
			}
			return s.create(a)
		case clienttesting.UpdateActionImpl:
			return s.update(tracker, a)
		}
		return false, nil, nil
	})
}

func (s *apiServer) create(a clienttesting.CreateActionImpl) (bool, runtime.Object, error) {
	obj := a.GetObject()
	m, err := meta.Accessor(obj)
	if err != nil {
		return false, nil, nil
	}
	gr := a.GetResource().GroupResource()
	if m.GetName() == "" && m.GetGenerateName() != "" {
		m.SetName(m.GetGenerateName() + randSuffix(5))
	}
	if m.GetName() == "" {
		return true, nil, apierrors.NewBadRequest(fmt.Sprintf("creating a %s: metadata.name or metadata.generateName is required", gr))
	}
	if m.GetNamespace() == "" {
		m.SetNamespace(a.GetNamespace())
	}
	m.SetUID(types.UID(newUID()))
	m.SetCreationTimestamp(metav1.NewTime(s.now().Truncate(time.Second)))
	m.SetResourceVersion(s.nextRV())
	m.SetGeneration(1)
	if hook := s.onWrite[gr.Resource]; hook != nil {
		hook(obj)
	}
	if hook := s.onCreat[gr.Resource]; hook != nil {
		if err := hook(obj); err != nil {
			return true, nil, apierrors.NewInternalError(err)
		}
	}
	return false, nil, nil
}

func (s *apiServer) update(tracker clienttesting.ObjectTracker, a clienttesting.UpdateActionImpl) (bool, runtime.Object, error) {
	obj := a.GetObject()
	m, err := meta.Accessor(obj)
	if err != nil {
		return false, nil, nil
	}
	gvr := a.GetResource()
	old, err := tracker.Get(gvr, a.GetNamespace(), m.GetName())
	if err != nil {
		return false, nil, nil // the tracker reports NotFound
	}
	om, err := meta.Accessor(old)
	if err != nil {
		return false, nil, nil
	}
	if rv := m.GetResourceVersion(); rv != "" && rv != om.GetResourceVersion() {
		return true, nil, apierrors.NewConflict(gvr.GroupResource(), m.GetName(),
			errors.New("the object has been modified; please apply your changes to the latest version and try again"))
	}
	m.SetUID(om.GetUID())
	m.SetCreationTimestamp(om.GetCreationTimestamp())
	m.SetGeneration(om.GetGeneration())
	if a.GetSubresource() == "status" {
		// Only the status changes; everything else stays as stored.
		status, ok := fieldValue(obj, "Status")
		if ok {
			fresh := old.DeepCopyObject()
			setField(fresh, "Status", status)
			fm, _ := meta.Accessor(fresh)
			fm.SetResourceVersion(s.nextRV())
			return false, nil, replaceObject(obj, fresh)
		}
	} else {
		if hook := s.onWrite[gvr.Resource]; hook != nil {
			hook(obj)
		}
		if status, ok := fieldValue(old, "Status"); ok {
			setField(obj, "Status", status)
		}
		if !sameJSON(old, obj, "Spec") {
			m.SetGeneration(om.GetGeneration() + 1)
		}
	}
	m.SetResourceVersion(s.nextRV())
	return false, nil, nil
}

// fieldValue returns a deep copy of the named struct field of obj (a
// pointer to a struct).
func fieldValue(obj runtime.Object, name string) (reflect.Value, bool) {
	v := reflect.ValueOf(obj)
	if v.Kind() != reflect.Pointer || v.Elem().Kind() != reflect.Struct {
		return reflect.Value{}, false
	}
	f := v.Elem().FieldByName(name)
	if !f.IsValid() {
		return reflect.Value{}, false
	}
	cp := reflect.New(f.Type())
	// Round-trip through JSON to copy without sharing maps or slices.
	b, err := json.Marshal(f.Addr().Interface())
	if err != nil || json.Unmarshal(b, cp.Interface()) != nil {
		return reflect.Value{}, false
	}
	return cp, true
}

// setField sets the named struct field of obj from a pointer value made by
// fieldValue.
func setField(obj runtime.Object, name string, ptr reflect.Value) {
	f := reflect.ValueOf(obj).Elem().FieldByName(name)
	if f.IsValid() && f.CanSet() {
		b, err := json.Marshal(ptr.Interface())
		if err == nil {
			fresh := reflect.New(f.Type())
			if json.Unmarshal(b, fresh.Interface()) == nil {
				f.Set(fresh.Elem())
			}
		}
	}
}

// replaceObject overwrites dst's content with src's (same type).
func replaceObject(dst, src runtime.Object) error {
	b, err := json.Marshal(src)
	if err != nil {
		return fmt.Errorf("copy object: %w", err)
	}
	dv := reflect.ValueOf(dst).Elem()
	fresh := reflect.New(dv.Type())
	if err := json.Unmarshal(b, fresh.Interface()); err != nil {
		return fmt.Errorf("copy object: %w", err)
	}
	dv.Set(fresh.Elem())
	return nil
}

// sameJSON compares the named field of a and b by their JSON encoding.
func sameJSON(a, b runtime.Object, field string) bool {
	fa, okA := fieldValue(a, field)
	fb, okB := fieldValue(b, field)
	if !okA || !okB {
		return true
	}
	ja, errA := json.Marshal(fa.Interface())
	jb, errB := json.Marshal(fb.Interface())
	return errA == nil && errB == nil && string(ja) == string(jb)
}

func newUID() string {
	var b [16]byte
	_, _ = rand.Read(b[:])
	b[6] = b[6]&0x0f | 0x40
	b[8] = b[8]&0x3f | 0x80
	return fmt.Sprintf("%x-%x-%x-%x-%x", b[0:4], b[4:6], b[6:8], b[8:10], b[10:])
}

// randSuffix returns n characters as the API server uses for generateName.
func randSuffix(n int) string {
	const alphabet = "bcdfghjklmnpqrstvwxz2456789"
	b := make([]byte, n)
	_, _ = rand.Read(b)
	for i := range b {
		b[i] = alphabet[int(b[i])%len(alphabet)]
	}
	return string(b)
}

// mergeStringData moves a Secret's write-only stringData into data, as the
// API server does on every write.
func mergeStringData(obj runtime.Object) {
	s, ok := obj.(*corev1.Secret)
	if !ok || len(s.StringData) == 0 {
		return
	}
	if s.Data == nil {
		s.Data = map[string][]byte{}
	}
	for k, v := range s.StringData {
		s.Data[k] = []byte(v)
	}
	s.StringData = nil
}

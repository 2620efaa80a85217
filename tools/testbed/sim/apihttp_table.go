package sim

import (
	"encoding/json"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"time"

	istionet "istio.io/client-go/pkg/apis/networking/v1"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/util/duration"
)

// Server-side printing: kubectl get asks for a meta.k8s.io Table and
// prints its columns; without one it can print only NAME and AGE. The
// columns are those of a real API server (and of Istio's CRDs) for the
// kinds kubectl users look at here; any other kind gets NAME and AGE.

// wantsTable reports whether the request accepts a Table.
func wantsTable(r *http.Request) bool {
	for _, part := range strings.Split(r.Header.Get("Accept"), ",") {
		if strings.Contains(part, "as=Table") && strings.Contains(part, "g=meta.k8s.io") {
			return true
		}
	}
	return false
}

type column struct {
	def  metav1.TableColumnDefinition
	cell func(obj runtime.Object) any
}

func col(name, typ string, priority int32, cell func(runtime.Object) any) column {
	return column{def: metav1.TableColumnDefinition{Name: name, Type: typ, Priority: priority}, cell: cell}
}

func ageOf(obj runtime.Object) any {
	m, err := meta.Accessor(obj)
	if err != nil {
		return "<unknown>"
	}
	created := m.GetCreationTimestamp()
	if created.IsZero() {
		return "<unknown>"
	}
	return duration.HumanDuration(time.Since(created.Time))
}

func nameCol() column {
	return column{def: metav1.TableColumnDefinition{Name: "Name", Type: "string", Format: "name"}, cell: func(o runtime.Object) any { return nameOf(o) }}
}

// columnsFor returns the printed columns of gvk.
func columnsFor(gvk schema.GroupVersionKind) []column {
	age := col("Age", "string", 0, ageOf)
	switch gvk.GroupKind() {
	case schema.GroupKind{Kind: "Pod"}:
		return []column{nameCol(),
			col("Ready", "string", 0, func(o runtime.Object) any {
				p := o.(*corev1.Pod)
				ready := 0
				for _, s := range p.Status.ContainerStatuses {
					if s.Ready {
						ready++
					}
				}
				return fmt.Sprintf("%d/%d", ready, len(p.Spec.Containers))
			}),
			col("Status", "string", 0, func(o runtime.Object) any { return podStatus(o.(*corev1.Pod)) }),
			col("Restarts", "string", 0, func(o runtime.Object) any {
				n := int32(0)
				for _, s := range o.(*corev1.Pod).Status.ContainerStatuses {
					n += s.RestartCount
				}
				return strconv.Itoa(int(n))
			}),
			age,
			col("IP", "string", 1, func(o runtime.Object) any { return orNone(o.(*corev1.Pod).Status.PodIP) }),
			col("Node", "string", 1, func(o runtime.Object) any { return orNone(o.(*corev1.Pod).Spec.NodeName) }),
		}
	case schema.GroupKind{Group: "apps", Kind: "Deployment"}:
		return []column{nameCol(),
			col("Ready", "string", 0, func(o runtime.Object) any {
				d := o.(*appsv1.Deployment)
				want := int32(1)
				if d.Spec.Replicas != nil {
					want = *d.Spec.Replicas
				}
				return fmt.Sprintf("%d/%d", d.Status.ReadyReplicas, want)
			}),
			col("Up-to-date", "integer", 0, func(o runtime.Object) any { return int64(o.(*appsv1.Deployment).Status.UpdatedReplicas) }),
			col("Available", "integer", 0, func(o runtime.Object) any { return int64(o.(*appsv1.Deployment).Status.AvailableReplicas) }),
			age,
		}
	case schema.GroupKind{Kind: "Service"}:
		return []column{nameCol(),
			col("Type", "string", 0, func(o runtime.Object) any { return string(o.(*corev1.Service).Spec.Type) }),
			col("Cluster-IP", "string", 0, func(o runtime.Object) any { return orNone(o.(*corev1.Service).Spec.ClusterIP) }),
			col("External-IP", "string", 0, func(o runtime.Object) any { return "<none>" }),
			col("Port(s)", "string", 0, func(o runtime.Object) any {
				var ps []string
				for _, p := range o.(*corev1.Service).Spec.Ports {
					ps = append(ps, fmt.Sprintf("%d/%s", p.Port, p.Protocol))
				}
				return orNone(strings.Join(ps, ","))
			}),
			age,
		}
	case schema.GroupKind{Kind: "Namespace"}:
		return []column{nameCol(),
			col("Status", "string", 0, func(o runtime.Object) any { return string(o.(*corev1.Namespace).Status.Phase) }),
			age,
		}
	case schema.GroupKind{Kind: "ConfigMap"}:
		return []column{nameCol(),
			col("Data", "integer", 0, func(o runtime.Object) any {
				cm := o.(*corev1.ConfigMap)
				return int64(len(cm.Data) + len(cm.BinaryData))
			}),
			age,
		}
	case schema.GroupKind{Group: "networking.istio.io", Kind: "VirtualService"}:
		return []column{nameCol(),
			col("Gateways", "string", 0, func(o runtime.Object) any { return fmt.Sprint(o.(*istionet.VirtualService).Spec.Gateways) }),
			col("Hosts", "string", 0, func(o runtime.Object) any { return fmt.Sprint(o.(*istionet.VirtualService).Spec.Hosts) }),
			age,
		}
	}
	return []column{nameCol(), age}
}

func orNone(s string) string {
	if s == "" {
		return "<none>"
	}
	return s
}

// podStatus is the STATUS kubectl shows: a waiting or terminated
// container's reason, else the phase.
func podStatus(p *corev1.Pod) string {
	if p.DeletionTimestamp != nil {
		return "Terminating"
	}
	for _, s := range p.Status.ContainerStatuses {
		if s.State.Waiting != nil && s.State.Waiting.Reason != "" {
			return s.State.Waiting.Reason
		}
		if s.State.Terminated != nil && s.State.Terminated.Reason != "" {
			return s.State.Terminated.Reason
		}
	}
	if p.Status.Reason != "" {
		return p.Status.Reason
	}
	return string(p.Status.Phase)
}

// respondTable answers obj (one object or a list) as a Table.
func (a *apiHTTP) respondTable(w http.ResponseWriter, r *http.Request, gvk schema.GroupVersionKind, obj runtime.Object, err error) {
	if err != nil {
		a.writeErr(w, err)
		return
	}
	table, err := a.table(r, gvk, obj)
	if err != nil {
		a.writeErr(w, apierrors.NewInternalError(err))
		return
	}
	writeJSON(w, http.StatusOK, table)
}

// table prints obj (one object or a list) as a Table with the columns of
// gvk and, per row, the object as the request's includeObject asks
// (default: its metadata).
func (a *apiHTTP) table(r *http.Request, gvk schema.GroupVersionKind, obj runtime.Object) (*metav1.Table, error) {
	items := []runtime.Object{obj}
	table := &metav1.Table{TypeMeta: metav1.TypeMeta{Kind: "Table", APIVersion: "meta.k8s.io/v1"}}
	if meta.IsListType(obj) {
		var err error
		if items, err = meta.ExtractList(obj); err != nil {
			return nil, err
		}
		if lm, err := meta.ListAccessor(obj); err == nil {
			table.ResourceVersion = lm.GetResourceVersion()
		}
	} else if m, err := meta.Accessor(obj); err == nil {
		table.ResourceVersion = m.GetResourceVersion()
	}
	cols := columnsFor(gvk)
	for _, c := range cols {
		table.ColumnDefinitions = append(table.ColumnDefinitions, c.def)
	}
	include := r.URL.Query().Get("includeObject")
	for _, it := range items {
		row := metav1.TableRow{}
		for _, c := range cols {
			row.Cells = append(row.Cells, c.cell(it))
		}
		switch include {
		case "None":
		case "Object":
			raw, err := runtime.Encode(a.codecs.LegacyCodec(gvk.GroupVersion()), it)
			if err != nil {
				return nil, err
			}
			row.Object.Raw = raw
		default: // Metadata
			m, err := meta.Accessor(it)
			if err != nil {
				return nil, err
			}
			pom := &metav1.PartialObjectMetadata{TypeMeta: metav1.TypeMeta{Kind: "PartialObjectMetadata", APIVersion: "meta.k8s.io/v1"}}
			pom.ObjectMeta = metav1.ObjectMeta{Name: m.GetName(), Namespace: m.GetNamespace(), UID: m.GetUID(),
				ResourceVersion: m.GetResourceVersion(), CreationTimestamp: m.GetCreationTimestamp(), Labels: m.GetLabels(),
				Annotations: m.GetAnnotations(), OwnerReferences: m.GetOwnerReferences(), Generation: m.GetGeneration()}
			if row.Object.Raw, err = json.Marshal(pom); err != nil {
				return nil, err
			}
		}
		table.Rows = append(table.Rows, row)
	}
	return table, nil
}

package cluster

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	coordinationv1 "k8s.io/api/coordination/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/util/retry"
	"k8s.io/utils/ptr"
)

// LeaseDuration is how long a sandbox stays alive without renewal; every
// Lease sbx writes carries it. It is fixed rather than an option because the
// daemon's renewal period (daemon.Options.LeaseInterval, default 20s) is
// chosen as a third of it: a longer or shorter Lease needs both changed
// together. sbx gc reads each Lease's own leaseDurationSeconds, so changing
// it later needs no migration.
const LeaseDuration = 60 * time.Second

// sandboxLease is the Lease that anchors a sandbox in one namespace. It is
// the owner of every other object of the sandbox there, so deleting it (by
// sbx or by GC) lets the cluster's garbage collector remove the rest; and
// its renewTime says whether the sandbox is still alive.
func sandboxLease(sandbox, namespace, key, holder string, sbLabels map[string]string, description string) *coordinationv1.Lease {
	meta := objectMeta(LeaseName(sandbox), namespace, sandbox, key)
	for k, v := range sbLabels {
		if _, ours := meta.Labels[k]; !ours {
			meta.Labels[k] = v
		}
	}
	meta.Labels[LabelComponent] = "lease"
	if description != "" {
		meta.Annotations = map[string]string{AnnotationDescription: description}
	}
	return &coordinationv1.Lease{
		TypeMeta:   metav1.TypeMeta{APIVersion: "coordination.k8s.io/v1", Kind: "Lease"},
		ObjectMeta: meta,
		Spec: coordinationv1.LeaseSpec{
			HolderIdentity:       ptr.To(holder),
			LeaseDurationSeconds: ptr.To(int32(LeaseDuration / time.Second)),
		},
	}
}

// ownerRef points at a sandbox's Lease.
func ownerRef(lease *coordinationv1.Lease) metav1.OwnerReference {
	return metav1.OwnerReference{
		APIVersion: "coordination.k8s.io/v1",
		Kind:       "Lease",
		Name:       lease.Name,
		UID:        lease.UID,
		Controller: ptr.To(true),
	}
}

// leaseExpiry is when a Lease runs out: renewTime (or acquireTime, or the
// creation time) plus its duration.
func leaseExpiry(l *coordinationv1.Lease) time.Time {
	var t time.Time
	switch {
	case l.Spec.RenewTime != nil:
		t = l.Spec.RenewTime.Time
	case l.Spec.AcquireTime != nil:
		t = l.Spec.AcquireTime.Time
	default:
		t = l.CreationTimestamp.Time
	}
	d := LeaseDuration // a Lease edited by hand may lack its duration
	if l.Spec.LeaseDurationSeconds != nil {
		d = time.Duration(*l.Spec.LeaseDurationSeconds) * time.Second
	}
	return t.Add(d)
}

// leaseNamespaces returns the namespaces recorded on a home Lease.
func leaseNamespaces(l *coordinationv1.Lease) []string {
	v := l.Annotations[AnnotationNamespaces]
	if v == "" {
		return []string{l.Namespace}
	}
	return strings.Split(v, ",")
}

// ErrSandboxGone is returned (wrapped) by RenewLease when a Lease of the
// sandbox is gone: gc removed the sandbox after a long sleep, or someone
// deleted it. Applying the sandbox again recreates it.
var ErrSandboxGone = errors.New("the sandbox's objects are gone from the cluster")

// RenewLease moves the renewTime of the sandbox's Leases (one per namespace
// in ref) to now. The daemon calls it periodically while the sandbox is
// connected; a Lease that is gone is an error, because the sandbox was
// garbage-collected and must be applied again.
func RenewLease(ctx context.Context, c Clients, ref Ref, now time.Time) error {
	nss, err := ref.namespaces(ctx, c)
	if err != nil {
		return err
	}
	name := LeaseName(ref.Name)
	for _, ns := range nss {
		err := retry.RetryOnConflict(retry.DefaultRetry, func() error {
			l, err := c.Kube.CoordinationV1().Leases(ns).Get(ctx, name, metav1.GetOptions{})
			if err != nil {
				return err
			}
			l.Spec.RenewTime = &metav1.MicroTime{Time: now}
			_, err = c.Kube.CoordinationV1().Leases(ns).Update(ctx, l, metav1.UpdateOptions{})
			return err
		})
		if apierrors.IsNotFound(err) {
			return fmt.Errorf("renew Lease %s/%s of sandbox %s: %w (deleted, or garbage-collected after it expired)", ns, name, ref.Name, ErrSandboxGone)
		}
		if err != nil {
			return fmt.Errorf("renew Lease %s/%s: %w", ns, name, err)
		}
	}
	return nil
}

// leaseOwner is the owner reference for objects of a sandbox in a
// namespace, from the Lease as it exists in the cluster.
func leaseOwner(name string, uid types.UID) metav1.OwnerReference {
	return metav1.OwnerReference{APIVersion: "coordination.k8s.io/v1", Kind: "Lease", Name: name, UID: uid, Controller: ptr.To(true)}
}

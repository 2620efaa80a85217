package cluster

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/sbx-dev/sbx/tunnel"
)

// ProbePrefix starts the name of every relay probe's sandbox: `sbx list`
// shows a probe for the seconds it lives, under a name that says what it
// is.
const ProbePrefix = "doctor-"

// ProbeOptions say where to start a relay probe and with what.
type ProbeOptions struct {
	Namespace string
	// Image is the relay image to try (required).
	Image string
	// Holder is written into the probe's Lease (who started it).
	Holder string
	// MaxStreams sizes the probe's memory like a real relay's.
	MaxStreams int
	// Interval between polls while waiting (default 1s).
	Interval time.Duration
}

// ProbeResult is a probe that started: the pod that became ready and how
// long it took from creation.
type ProbeResult struct {
	Pod  string
	Took time.Duration
}

// ProbeRelay checks that the cluster pulls and runs the relay image in a
// namespace, the way sbx connect will: it creates a sandbox of its own (a
// Lease owning a relay Deployment — the relay pod sbx connect renders,
// with no inbound port, no Service, no mesh route, and a verifier of a
// token nobody keeps, so nothing can reach it), waits until the pod is
// ready or cannot start, and deletes it. Errors are WaitRelay's: an image
// the cluster cannot pull or a pod the kubelet refuses fail at once
// (*RelayError), a pod not ready before ctx's deadline is a
// *RelayTimeoutError. The probe is deleted whatever happens; if that
// fails too, the error says how to delete it (and, like any sandbox, its
// Lease expires and `sbx gc` collects it).
func ProbeRelay(ctx context.Context, c Clients, o ProbeOptions, progress func(Event)) (*ProbeResult, error) {
	if progress == nil {
		progress = func(Event) {}
	}
	if o.Image == "" {
		return nil, errors.New("relay probe: no image")
	}
	var b [4]byte
	if _, err := rand.Read(b[:]); err != nil {
		return nil, err
	}
	name := ProbePrefix + hex.EncodeToString(b[:])
	token, err := NewToken()
	if err != nil {
		return nil, err
	}
	ref := Ref{Name: name, RoutingKey: name, Namespace: o.Namespace, Namespaces: []string{o.Namespace},
		TokenVerifier: tunnel.VerifierOf(token).String()}
	holder := o.Holder
	if holder == "" {
		holder = "sbx doctor"
	}
	start := time.Now()
	lease, err := c.Kube.CoordinationV1().Leases(o.Namespace).Create(ctx,
		sandboxLease(name, o.Namespace, ref.RoutingKey, holder, nil, "sbx doctor: checks that the cluster runs the relay image; deleted within a minute"),
		metav1.CreateOptions{FieldValidation: "Strict"})
	if err != nil {
		return nil, fmt.Errorf("create the probe's Lease %s/%s: %w", o.Namespace, LeaseName(name), err)
	}
	progress(Event{Action: ActionCreated, Kind: "Lease", Namespace: o.Namespace, Name: lease.Name})
	res, err := probe(ctx, c, o, ref, ownerRef(lease), progress)
	if res != nil {
		res.Took = time.Since(start)
	}
	// Deleting the Lease lets the garbage collector take the Deployment;
	// Delete removes both at once, as for any sandbox.
	dctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 30*time.Second)
	defer cancel()
	if derr := Delete(dctx, c, ref, progress); derr != nil && !apierrors.IsNotFound(derr) {
		derr = fmt.Errorf("delete the relay probe %s: %w (`sbx disconnect %s --orphan --force -n %s` deletes it; its Lease expires in %s and `sbx gc` collects it then)",
			name, derr, name, o.Namespace, LeaseDuration)
		if err == nil {
			return res, derr
		}
		return nil, errors.Join(err, derr)
	}
	return res, err
}

// probe creates the probe's relay Deployment, owned by its Lease, and
// waits for its pod.
func probe(ctx context.Context, c Clients, o ProbeOptions, ref Ref, owner metav1.OwnerReference, progress func(Event)) (*ProbeResult, error) {
	d := relayDeployment(ref.Name, o.Namespace, ref.RoutingKey, ref.TokenVerifier, o.Image, o.MaxStreams, nil, nil)
	d.OwnerReferences = []metav1.OwnerReference{owner}
	if _, err := c.Kube.AppsV1().Deployments(o.Namespace).Create(ctx, d, metav1.CreateOptions{FieldValidation: "Strict"}); err != nil {
		return nil, fmt.Errorf("create the probe's relay Deployment %s/%s: %w", o.Namespace, d.Name, err)
	}
	progress(Event{Action: ActionCreated, Kind: "Deployment", Namespace: o.Namespace, Name: d.Name})
	pod, err := WaitRelay(ctx, c, WaitOptions{Ref: ref, Interval: o.Interval, RelayImage: o.Image}, progress)
	if err != nil {
		return nil, err
	}
	return &ProbeResult{Pod: pod.Name}, nil
}

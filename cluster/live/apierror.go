package live

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
)

// apiServer names the API server a cluster connection talks to, for the
// hints of its failures: its URL (password redacted), kube context, and
// the --kubeconfig file it was opened with ("" = kubectl's default
// lookup, which the user's shell does too), so that a suggested kubectl
// command talks to the same cluster.
type apiServer struct{ url, context, kubeconfig string }

// apiOp is what a failed call to the API server tried: the verb and
// resource `kubectl auth can-i` checks, and where ("" = all namespaces).
// An empty verb means the call needs several (apply): the hint then asks
// for the list of what the user may do.
type apiOp struct {
	verb, resource, namespace string
}

// apiCause is why a call to the API server failed, as far as the next step
// depends on it.
type apiCause int

const (
	causeOther        apiCause = iota // no hint: any guess would mislead
	causeForbidden                    // RBAC said no
	causeUnauthorized                 // the credentials were not accepted
	causeUnreachable                  // no answer: network, VPN, timeout, refused
)

// classifyAPIError tells why a call to the API server failed. A
// certificate the client does not trust is not "unreachable" (the server
// answered), and a cancelled call has no cause of the cluster's.
//
// Unreachable is a network error (dial, DNS, a read or write on the
// connection) or a timeout, not any net.Error: every error of an HTTP
// round trip comes wrapped in a *url.Error, which is one, including a
// credential plugin that failed before anything was sent ("getting
// credentials: exec: executable gke-gcloud-auth-plugin not found"), for
// which "check your network or VPN" would mislead.
func classifyAPIError(err error) apiCause {
	var (
		unknownCA x509.UnknownAuthorityError
		hostname  x509.HostnameError
		invalid   x509.CertificateInvalidError
		verify    *tls.CertificateVerificationError
		op        *net.OpError
		dns       *net.DNSError
		ne        net.Error
	)
	switch {
	case err == nil, errors.Is(err, context.Canceled):
		return causeOther
	case apierrors.IsForbidden(err):
		return causeForbidden
	case apierrors.IsUnauthorized(err):
		return causeUnauthorized
	case errors.As(err, &unknownCA), errors.As(err, &hostname), errors.As(err, &invalid), errors.As(err, &verify):
		return causeOther
	case errors.Is(err, context.DeadlineExceeded), errors.As(err, &op), errors.As(err, &dns),
		errors.As(err, &ne) && ne.Timeout():
		return causeUnreachable
	}
	return causeOther
}

// hintedError is an API server error with the next step its cause calls
// for.
type hintedError struct {
	err  error
	hint string
}

func (e *hintedError) Error() string { return e.err.Error() + " (" + e.hint + ")" }
func (e *hintedError) Unwrap() error { return e.err }

// explainAPIError adds to err the next step its cause calls for (see
// classifyAPIError); an error of another cause, or one already explained,
// is returned as it is. Every place that reports a failed call to the API
// server goes through it, so that a hint always fits its cause.
func explainAPIError(err error, srv apiServer, op apiOp) error {
	var he *hintedError
	if err == nil || errors.As(err, &he) {
		return err
	}
	kubectl := "kubectl"
	if srv.kubeconfig != "" {
		kubectl += " --kubeconfig " + srv.kubeconfig
	}
	if srv.context != "" {
		kubectl += " --context " + srv.context
	}
	server := "the API server"
	if srv.url != "" {
		server += " at " + srv.url
	}
	var hint string
	switch classifyAPIError(err) {
	case causeForbidden:
		resource := op.resource
		var st apierrors.APIStatus
		if errors.As(err, &st) && st.Status().Details != nil && st.Status().Details.Kind != "" {
			// What the server refused, which may be another resource
			// than the one the operation is mostly about.
			d := st.Status().Details
			resource = d.Kind
			if d.Group != "" {
				resource += "." + d.Group
			}
		}
		where := "--all-namespaces"
		if op.namespace != "" {
			where = "-n " + op.namespace
		}
		// A namespaced Role cannot grant what is asked of all
		// namespaces: that is the read-only ClusterRole's.
		role := "the sbx Role (sbx-developer) in deploy/rbac.yaml"
		if op.namespace == "" {
			role = "a binding to the read-only ClusterRole sbx-route-reader in deploy/rbac.yaml"
		}
		if op.verb == "" {
			hint = fmt.Sprintf("your credentials may not do this with %s: see what they may do with `%s auth can-i --list %s`, and ask for %s", resource, kubectl, where, role)
		} else {
			hint = fmt.Sprintf("your credentials may not %s %s: check with `%s auth can-i %s %s %s`, and ask for %s", op.verb, resource, kubectl, op.verb, resource, where, role)
		}
		if op.namespace == "" && op.verb == "list" {
			hint += "; or pass -n NAMESPACE to look in one namespace"
		}
	case causeUnauthorized:
		hint = fmt.Sprintf("%s did not accept your credentials: log in again or renew the token of your kubeconfig, and check that `%s get ns` works", server, kubectl)
	case causeUnreachable:
		hint = fmt.Sprintf("%s did not answer: check your network or VPN, and that `%s get ns` works", server, kubectl)
	default:
		return err
	}
	return &hintedError{err: err, hint: hint}
}

package daemon

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/url"
	"testing"

	"github.com/stretchr/testify/require"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/runtime/schema"
)

func TestTransientApplyErrors(t *testing.T) {
	gr := schema.GroupResource{Group: "apps", Resource: "deployments"}
	cases := []struct {
		name string
		err  error
		want bool
	}{
		{"network", fmt.Errorf("apply: %w", &net.OpError{Op: "dial", Err: errors.New("connection refused")}), true},
		{"url", &url.Error{Op: "Get", URL: "https://api", Err: errors.New("EOF")}, true},
		{"deadline", fmt.Errorf("x: %w", context.DeadlineExceeded), true},
		{"server timeout", apierrors.NewServerTimeout(gr, "create", 1), true},
		{"unavailable", apierrors.NewServiceUnavailable("down"), true},
		{"internal", apierrors.NewInternalError(errors.New("webhook")), true},
		{"conflict", apierrors.NewConflict(gr, "x", errors.New("rv")), true},
		{"unauthorized", apierrors.NewUnauthorized("token expired"), true},
		{"too many", apierrors.NewTooManyRequests("slow down", 1), true},
		{"not found wrapped", fmt.Errorf("read Deployment hotrod/x: %w", apierrors.NewNotFound(gr, "x")), false},
		{"resolution", errors.New("Deployment hotrod/rout not found: check spec.local[].from"), false},
		{"invalid", apierrors.NewBadRequest("bad"), false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			require.Equal(t, tc.want, transient(tc.err))
		})
	}
}

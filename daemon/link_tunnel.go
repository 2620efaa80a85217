package daemon

import (
	"context"
	"errors"
)

// tunnelLinker builds links from the tunnel package.
// TODO(daemon): replace with the tunnel pool once branch tunnel lands.
func tunnelLinker(ctx context.Context, p linkParams) (link, error) {
	return nil, errors.New("tunnel not available in this build")
}

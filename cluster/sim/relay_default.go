package sim

import (
	"context"
	"errors"
)

// defaultRelay is used until the relay package is linked in.
func defaultRelay(ctx context.Context, p RelayProcess) error {
	return errors.New("no relay implementation linked into the simulator")
}

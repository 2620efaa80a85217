package sim

import (
	"testing"

	"github.com/stretchr/testify/require"
)

func TestHopString(t *testing.T) {
	for _, tc := range []struct {
		hop  Hop
		want string
	}{
		{Hop{Service: "frontend", Version: "baseline"}, "frontend@baseline"},
		{Hop{Service: "frontend", Version: "baseline", Calls: []Hop{
			{Service: "route", Version: "v2", Calls: []Hop{{Service: "driver", Version: "baseline"}}},
			{Service: "driver", Status: 502, Error: "bad gateway"},
		}}, "frontend@baseline(route@v2(driver@baseline), driver!502)"},
		// Nothing answered: the reason, not a meaningless status 0.
		{Hop{Service: "route", Error: "dial tcp 10.0.0.1:8083: connection refused"}, "route!(dial tcp 10.0.0.1:8083: connection refused)"},
	} {
		require.Equal(t, tc.want, tc.hop.String())
	}
}

package fieldpath

import (
	"testing"

	"github.com/stretchr/testify/require"
)

func TestPathHelpers(t *testing.T) {
	tests := []struct{ path, parent string }{
		{"name", ""},
		{"spec.local", "spec"},
		{"spec.local[1]", "spec.local"},
		{"spec.local[1].mappings[0].toLocal", "spec.local[1].mappings[0]"},
		{`spec.labels["sbx.dev/x"]`, "spec.labels"},
		{`spec.labels["a[b]"]`, "spec.labels"},
		{"", ""},
	}
	for _, tc := range tests {
		require.Equal(t, tc.parent, Parent(tc.path), tc.path)
	}
	require.Equal(t, "a.b", Join("a", "b"))
	require.Equal(t, "b", Join("", "b"))
	require.Equal(t, "a[3]", Index("a", 3))
	require.Equal(t, "labels.team", Key("labels", "team"))
	require.Equal(t, `labels["example.com/x"]`, Key("labels", "example.com/x"))
}

func TestSuggest(t *testing.T) {
	allowed := []string{"name", "from", "mappings"}
	require.Equal(t, "mappings", Suggest("mapping", allowed))
	require.Equal(t, "mappings", Suggest("Mappings", allowed))
	require.Equal(t, "name", Suggest("nmae", allowed))
	require.Equal(t, "", Suggest("description", allowed))
	require.Equal(t, "", Suggest(string(make([]byte, 100)), allowed))
}

package strictyaml

import (
	"testing"

	"github.com/sbx-dev/sbx/cluster/spec/fieldpath"
	"github.com/stretchr/testify/require"
	"go.yaml.in/yaml/v3"
)

func decodeOne(t *testing.T, src string) (*Decoder, *yaml.Node) {
	t.Helper()
	root, errs := ParseDocument("f.yaml", []byte(src))
	require.Nil(t, errs)
	d := &Decoder{File: "f.yaml"}
	return d, root
}

func TestScalars(t *testing.T) {
	ints := []struct {
		src  string
		want int64
		ok   bool
	}{
		{"v: 8083", 8083, true},
		{"v: '8083'", 8083, true},
		{"v: \" 42 \"", 42, true},
		{"v: 0x1F", 31, true},
		{"v: -3", -3, true},
		{"v: 1.5", 0, false},
		{"v: abc", 0, false},
		{"v: '0x1F'", 0, false},
		{"v: 99999999999999999999", 0, false},
		{"v: [1]", 0, false},
		{"v: true", 0, false},
	}
	for _, tc := range ints {
		d, root := decodeOne(t, tc.src)
		f := d.Fields(root, "", "v")
		got, ok := d.Int(f["v"], "v", "1-9")
		require.Equal(t, tc.ok, ok, tc.src)
		require.Equal(t, tc.want, got, tc.src)
		require.Equal(t, !tc.ok, len(d.Errs) == 1, tc.src)
		require.Equal(t, !tc.ok, d.Bad("v"), tc.src)
	}
	bools := []struct {
		src      string
		want, ok bool
	}{
		{"v: true", true, true}, {"v: false", false, true}, {"v: 'True'", true, true},
		{"v: yes", false, false}, {"v: 1", false, false},
	}
	for _, tc := range bools {
		d, root := decodeOne(t, tc.src)
		got, ok := d.Bool(d.Fields(root, "", "v")["v"], "v")
		require.Equal(t, tc.ok, ok, tc.src)
		require.Equal(t, tc.want, got, tc.src)
	}
	d, root := decodeOne(t, "v: 8083\nw: true\nx: ~\n")
	f := d.Fields(root, "", "v", "w", "x")
	require.Equal(t, "8083", d.String(f["v"], "v"), "numbers keep their spelling as strings")
	require.Equal(t, "true", d.String(f["w"], "w"))
	require.Equal(t, "", d.String(f["x"], "x"))
	require.Empty(t, d.Errs)
}

func TestFieldsAndPositions(t *testing.T) {
	d, root := decodeOne(t, "a: 1\nb:\n  c: [x, y]\nzz: 2\na: 3\n")
	f := d.Fields(root, "", "a", "b")
	require.Len(t, d.Errs, 2)
	require.Equal(t, `f.yaml:4:1: zz: unknown field "zz" (allowed: a, b)`, d.Errs[0].Error())
	require.Equal(t, `f.yaml:5:1: a: field "a" is given twice (first on line 1); keep one`, d.Errs[1].Error())
	bf := d.Fields(f["b"], "b", "c")
	items := d.Seq(bf["c"], "b.c")
	require.Len(t, items, 2)
	require.Equal(t, Pos{Line: 3, Column: 10}, d.Pos("b.c[1]"))
	require.Equal(t, Pos{Line: 3, Column: 6}, d.Pos("b.c"))
	require.Equal(t, Pos{Line: 3, Column: 3}, d.Pos("b.missing"), "an absent field is placed at its parent")
	require.True(t, d.Bad("zz"))
	require.False(t, d.Bad("b.c"))
}

func TestAliases(t *testing.T) {
	d, root := decodeOne(t, "a: &x {k: v}\nb: *x\n")
	f := d.Fields(root, "", "a", "b")
	m := d.StringMap(f["b"], "b")
	require.Equal(t, map[string]string{"k": "v"}, m)
	require.Empty(t, d.Errs)
}

func TestParseDocument(t *testing.T) {
	root, errs := ParseDocument("f.yaml", nil)
	require.Nil(t, root)
	require.Nil(t, errs)
	_, errs = ParseDocument("f.yaml", []byte("a: 1\n---\nb: 2\n"))
	require.Equal(t, "f.yaml:2:1: a second YAML document (after ---) is not allowed; put one object in each file", errs.Error())
	_, errs = ParseDocument("f.yaml", []byte("a: 1\nb: @x\n"))
	require.Equal(t, "f.yaml:2: invalid YAML: found character that cannot start any token (a value that starts with @ must be quoted, e.g. name: '@{name}')", errs.Error())
	require.Nil(t, ErrorList(nil).Err())
}

func TestFieldErrorFormat(t *testing.T) {
	require.Equal(t, "f:3:4: a.b: m", (&FieldError{File: "f", Line: 3, Column: 4, Field: "a.b", Message: "m"}).Error())
	require.Equal(t, "f:3: m", (&FieldError{File: "f", Line: 3, Message: "m"}).Error())
	require.Equal(t, "f: m", (&FieldError{File: "f", Message: "m"}).Error())
	require.Equal(t, "line 3: x: m", (&FieldError{Line: 3, Field: "x", Message: "m"}).Error())
	require.Equal(t, "x: m", (&FieldError{Field: "x", Message: "m"}).Error())
}

func TestSuggestLimits(t *testing.T) {
	require.Equal(t, "", fieldpath.Suggest("zz", []string{"a", "b"}), "no guesses for very short names")
	require.Equal(t, "name", fieldpath.Suggest("nmae", []string{"name", "spec"}), "a swap is one edit")
	require.Equal(t, "", fieldpath.Suggest("nam", []string{"spec"}))
	require.Equal(t, "toLocal", fieldpath.Suggest("to_local", []string{"port", "toLocal"}))
}

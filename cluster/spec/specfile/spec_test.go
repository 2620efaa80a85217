package specfile

import (
	"encoding/json"
	"errors"
	"flag"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/sbx-dev/sbx/cluster/spec"
	"github.com/stretchr/testify/require"
)

var update = flag.Bool("update", false, "rewrite the expected .err and .json files in testdata/specs")

const specsDir = "../../../testdata/specs"

// fileVars reads the "# set: k=v k=v" header line a test spec may carry.
func fileVars(t *testing.T, data []byte) map[string]string {
	t.Helper()
	var sets []string
	for _, line := range strings.Split(string(data), "\n") {
		if rest, ok := strings.CutPrefix(line, "# set: "); ok {
			sets = append(sets, strings.Fields(rest)...)
		}
	}
	vars, err := ParseSetFlags(sets)
	require.NoError(t, err)
	return vars
}

// checkGolden compares got with the file at path, or rewrites it with -update.
func checkGolden(t *testing.T, path, got string) {
	t.Helper()
	if *update {
		require.NoError(t, os.WriteFile(path, []byte(got), 0o644))
		return
	}
	want, err := os.ReadFile(path)
	require.NoError(t, err, "missing expected output; run go test ./cluster/spec -update and review it")
	require.Equal(t, string(want), got)
}

func TestValidSpecs(t *testing.T) {
	files, err := filepath.Glob(filepath.Join(specsDir, "valid", "*.yaml"))
	require.NoError(t, err)
	require.GreaterOrEqual(t, len(files), 5)
	for _, f := range files {
		t.Run(filepath.Base(f), func(t *testing.T) {
			data, err := os.ReadFile(f)
			require.NoError(t, err)
			s, err := Load(f, fileVars(t, data))
			require.NoError(t, err)
			require.NoError(t, s.Validate(), "a parsed spec must validate again")
			out, err := json.MarshalIndent(s, "", "  ")
			require.NoError(t, err)
			checkGolden(t, strings.TrimSuffix(f, ".yaml")+".json", string(out)+"\n")

			// The JSON form (what the CLI sends to the daemon) round-trips.
			var back spec.Sandbox
			require.NoError(t, json.Unmarshal(out, &back))
			require.Equal(t, *s, back)
		})
	}
}

func TestInvalidSpecs(t *testing.T) {
	dir := filepath.Join(specsDir, "invalid")
	files, err := filepath.Glob(filepath.Join(dir, "*.yaml"))
	require.NoError(t, err)
	require.GreaterOrEqual(t, len(files), 30)
	for _, f := range files {
		t.Run(filepath.Base(f), func(t *testing.T) {
			data, err := os.ReadFile(f)
			require.NoError(t, err)
			s, err := Load(f, fileVars(t, data))
			require.Error(t, err)
			require.Nil(t, s)
			var list spec.ErrorList
			require.True(t, errors.As(err, &list), "want an spec.ErrorList, got %T", err)
			for _, fe := range list {
				require.Equal(t, f, fe.File, "every error names the file")
				require.NotEmpty(t, fe.Message)
			}
			got := strings.ReplaceAll(err.Error(), dir+string(filepath.Separator), "")
			checkGolden(t, strings.TrimSuffix(f, ".yaml")+".err", got+"\n")
		})
	}
}

func TestParseTemplating(t *testing.T) {
	const base = "name: '%s'\nspec:\n  local:\n    - name: route\n      from: {kind: Deployment, namespace: hotrod, name: route}\n      mappings: [{port: 8083, toLocal: localhost:8083}]\n"
	tests := []struct {
		name    string
		value   string
		vars    map[string]string
		want    string
		wantErr string
	}{
		{name: "plain", value: "alice", want: "alice"},
		{name: "var", value: "@{user}", vars: map[string]string{"user": "alice"}, want: "alice"},
		{name: "spaces inside", value: "@{ user }", vars: map[string]string{"user": "bob"}, want: "bob"},
		{name: "two vars", value: "@{a}-@{b}", vars: map[string]string{"a": "x", "b": "y"}, want: "x-y"},
		{name: "prefix and suffix", value: "pr-@{n}-dev", vars: map[string]string{"n": "12"}, want: "pr-12-dev"},
		{name: "lone at sign kept", value: "a@b", wantErr: `"a@b" is not a valid sandbox name`},
		{name: "missing var", value: "@{user}", wantErr: `variable "user" is not set; pass --set user=VALUE`},
		{name: "two missing", value: "@{a}@{b}", wantErr: "variable \"a\" is not set; pass --set a=VALUE\ntest.yaml:1:7: name: variable \"b\" is not set"},
		{name: "empty placeholder", value: "@{}", wantErr: "placeholder @{} is not valid"},
		{name: "unterminated", value: "x@{user", wantErr: `unterminated placeholder "@{user"`},
		{name: "value not re-expanded", value: "@{a}", vars: map[string]string{"a": "@{b}"}, wantErr: `"@{b}" is not a valid sandbox name`},
		{name: "embed empty path", value: "@{embed:}", wantErr: "needs a file path"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			s, err := Parse("test.yaml", []byte(strings.Replace(base, "%s", tc.value, 1)), tc.vars)
			if tc.wantErr != "" {
				require.ErrorContains(t, err, tc.wantErr)
				require.ErrorContains(t, err, "test.yaml:1:7: name: ")
				return
			}
			require.NoError(t, err)
			require.Equal(t, tc.want, s.Name)
		})
	}
}

func TestEmbed(t *testing.T) {
	dir := t.TempDir()
	require.NoError(t, os.WriteFile(filepath.Join(dir, "name.txt"), []byte("alice\r\n"), 0o644))
	require.NoError(t, os.WriteFile(filepath.Join(dir, "two.txt"), []byte("line1\nline2\n\n"), 0o644))
	require.NoError(t, os.WriteFile(filepath.Join(dir, "vars.txt"), []byte("@{name}"), 0o644))
	require.NoError(t, os.WriteFile(filepath.Join(dir, "big.txt"), make([]byte, MaxEmbedSize+1), 0o644))
	spec := func(name, desc string) []byte {
		return []byte("name: '" + name + "'\nspec:\n  description: '" + desc + "'\n  local:\n    - name: route\n      from: {kind: Deployment, namespace: hotrod, name: route}\n      mappings: [{port: 8083, toLocal: localhost:8083}]\n")
	}
	path := filepath.Join(dir, "sb.yaml")

	s, err := Parse(path, spec("@{embed: name.txt}", "@{embed: two.txt}"), nil)
	require.NoError(t, err)
	require.Equal(t, "alice", s.Name, "CRLF dropped")
	require.Equal(t, "line1\nline2\n", s.Spec.Description, "only one trailing newline dropped")

	s, err = Parse(path, spec("alice", "@{embed: "+filepath.Join(dir, "vars.txt")+"}"), map[string]string{"name": "x"})
	require.NoError(t, err)
	require.Equal(t, "@{name}", s.Spec.Description, "absolute path; embedded content is not expanded")

	_, err = Parse(path, spec("alice", "@{embed: big.txt}"), nil)
	require.ErrorContains(t, err, `spec.description: cannot embed "big.txt": larger than`)

	_, err = Parse(path, spec("alice", "@{embed: nope.txt}"), nil)
	require.ErrorContains(t, err, `cannot embed "nope.txt"`)
	require.ErrorContains(t, err, "looked for "+filepath.Join(dir, "nope.txt"))
}

func TestParseSetFlags(t *testing.T) {
	tests := []struct {
		in      []string
		want    map[string]string
		wantErr string
	}{
		{in: nil, want: map[string]string{}},
		{in: []string{"name=alice", "port=8083"}, want: map[string]string{"name": "alice", "port": "8083"}},
		{in: []string{"desc=a=b,c"}, want: map[string]string{"desc": "a=b,c"}},
		{in: []string{"empty="}, want: map[string]string{"empty": ""}},
		{in: []string{"name=alice", "name=alice"}, want: map[string]string{"name": "alice"}},
		{in: []string{"git.sha=abc", "_x-y=1"}, want: map[string]string{"git.sha": "abc", "_x-y": "1"}},
		{in: []string{"name=alice", "name=bob"}, wantErr: `variable "name" is set twice with different values ("alice" and "bob")`},
		{in: []string{"name"}, wantErr: `--set "name": want name=value`},
		{in: []string{"=alice"}, wantErr: `variable name "" is not valid`},
		{in: []string{"1x=a"}, wantErr: `variable name "1x" is not valid`},
		{in: []string{"a b=c"}, wantErr: `variable name "a b" is not valid`},
	}
	for _, tc := range tests {
		t.Run(strings.Join(tc.in, ","), func(t *testing.T) {
			got, err := ParseSetFlags(tc.in)
			if tc.wantErr != "" {
				require.ErrorContains(t, err, tc.wantErr)
				return
			}
			require.NoError(t, err)
			require.Equal(t, tc.want, got)
		})
	}
}

// TestValidateStruct covers specs that did not come from a file, e.g. the
// daemon's API: errors carry field paths but no file or line.
func TestValidateStruct(t *testing.T) {
	good := func() *spec.Sandbox {
		return &spec.Sandbox{Name: "alice", Spec: spec.Spec{Local: []spec.Local{{
			Name: "route", From: spec.Workload{Kind: spec.KindDeployment, Namespace: "hotrod", Name: "route"},
			Mappings: []spec.Mapping{{Port: 8083, ToLocal: "localhost:8083"}},
		}}}}
	}
	require.NoError(t, good().Validate())

	tests := []struct {
		name   string
		mutate func(s *spec.Sandbox)
		want   string
	}{
		{"port zero", func(s *spec.Sandbox) { s.Spec.Local[0].Mappings[0].Port = 0 }, "spec.local[0].mappings[0].port: port 0 is out of range; allowed 1-65535"},
		{"negative port", func(s *spec.Sandbox) { s.Spec.Local[0].Mappings[0].Port = -1 }, "spec.local[0].mappings[0].port: port -1 is out of range"},
		{"no name", func(s *spec.Sandbox) { s.Name = "" }, "name: the sandbox name is required"},
		{"no local", func(s *spec.Sandbox) { s.Spec.Local = nil }, "spec.local: at least one local workload is required"},
		{"bad kind", func(s *spec.Sandbox) { s.Spec.Local[0].From.Kind = "Job" }, `spec.local[0].from.kind: unknown kind "Job"`},
		{"cluster spaces", func(s *spec.Sandbox) { s.Spec.Cluster = " staging" }, `spec.cluster: " staging" has surrounding spaces`},
		{"label key with dots", func(s *spec.Sandbox) { s.Spec.Labels = map[string]string{"sbx.dev/x": "y"} }, `spec.labels["sbx.dev/x"]: label key "sbx.dev/x" is reserved`},
		{"toLocal ipv6 unbracketed", func(s *spec.Sandbox) { s.Spec.Local[0].Mappings[0].ToLocal = "::1:80" }, `"::1:80" is not host:port`},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			s := good()
			tc.mutate(s)
			err := s.Validate()
			require.Error(t, err)
			require.Contains(t, err.Error(), tc.want)
			require.NotContains(t, err.Error(), "line ", "no positions without a file")
		})
	}
}

func TestErrorListCollectsAll(t *testing.T) {
	_, err := Load(filepath.Join(specsDir, "invalid", "many-errors.yaml"), nil)
	var list spec.ErrorList
	require.True(t, errors.As(err, &list))
	require.GreaterOrEqual(t, len(list), 6)
	require.Equal(t, len(list), strings.Count(err.Error(), "\n")+1, "one line per error")
	for i := 1; i < len(list); i++ {
		require.LessOrEqual(t, list[i-1].Line, list[i].Line, "file order")
	}
	var fe *spec.FieldError
	require.True(t, errors.As(err, &fe), "each problem is reachable with errors.As")
}

func TestLoadMissingFile(t *testing.T) {
	_, err := Load(filepath.Join(t.TempDir(), "nope.yaml"), nil)
	require.ErrorIs(t, err, os.ErrNotExist)
	require.ErrorContains(t, err, "nope.yaml")
}

func TestNamespaces(t *testing.T) {
	s, err := Load(filepath.Join(specsDir, "valid", "two-namespaces.yaml"), nil)
	require.NoError(t, err)
	require.Equal(t, []string{"shop", "payments"}, s.Namespaces())
}

func TestEmbedBudget(t *testing.T) {
	dir := t.TempDir()
	require.NoError(t, os.WriteFile(filepath.Join(dir, "big.txt"), make([]byte, MaxEmbedSize), 0o644))
	desc := strings.Repeat("@{embed: big.txt}", 5)
	data := "name: alice\nspec:\n  description: '" + desc + "'\n"
	_, err := Parse(filepath.Join(dir, "sb.yaml"), []byte(data), nil)
	require.ErrorContains(t, err, "sb.yaml:3:16: spec.description: templating produced more than")
}

func TestUnusedVars(t *testing.T) {
	data := []byte("name: '@{name}'\nspec:\n  description: '@{ team }-@{embed: x}'\n")
	require.Empty(t, UnusedVars(data, map[string]string{"name": "a", "team": "b"}))
	require.Equal(t, []string{"nmae", "zone"}, UnusedVars(data, map[string]string{"nmae": "a", "zone": "b", "team": "c"}))
	require.Empty(t, UnusedVars(data, nil))
}

func TestReadRefusesOversizedSpec(t *testing.T) {
	_, err := Read("big.yaml", strings.NewReader(strings.Repeat("#", MaxSpecSize+1)))
	require.ErrorContains(t, err, "sandbox spec big.yaml is larger than")
	data, err := Read("ok.yaml", strings.NewReader("name: a\n"))
	require.NoError(t, err)
	require.Equal(t, "name: a\n", string(data))
}

package specfile

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"

	"go.yaml.in/yaml/v3"

	"github.com/sbx-dev/sbx/cluster/spec/strictyaml"
)

// MaxEmbedSize bounds a file embedded with @{embed: path}; a spec is a small
// document and a huge embed is almost certainly the wrong path.
const MaxEmbedSize = 1 << 20

// maxExpanded bounds the text templating may produce for one spec, so that
// a spec embedding the same large file many times cannot exhaust memory.
const maxExpanded = 4 << 20

// varNameRE is what a template variable may be called: the same names work
// in --set and in @{…}.
var varNameRE = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_.-]*$`)

const varNameAllowed = "letters, digits, '_', '.' and '-', starting with a letter or '_'"

// ParseSetFlags turns repeated --set name=value flags into template
// variables. A name given twice with different values is an error; the
// same value twice is accepted (scripts often repeat flags).
func ParseSetFlags(sets []string) (map[string]string, error) {
	vars := make(map[string]string, len(sets))
	var errs []string
	for _, s := range sets {
		name, value, ok := strings.Cut(s, "=")
		name = strings.TrimSpace(name)
		switch {
		case !ok:
			errs = append(errs, fmt.Sprintf("--set %q: want name=value, e.g. --set name=alice", s))
		case !varNameRE.MatchString(name):
			errs = append(errs, fmt.Sprintf("--set %q: variable name %q is not valid; use %s", s, name, varNameAllowed))
		default:
			if old, dup := vars[name]; dup && old != value {
				errs = append(errs, fmt.Sprintf("--set: variable %q is set twice with different values (%q and %q); keep one", name, old, value))
				continue
			}
			vars[name] = value
		}
	}
	if len(errs) > 0 {
		return nil, fmt.Errorf("%s", strings.Join(errs, "\n"))
	}
	return vars, nil
}

// templater fills @{var} and @{embed: path} placeholders in scalar values.
// It works on single values after YAML parsing, so a value can never inject
// YAML structure and every error keeps its line.
type templater struct {
	d     *strictyaml.Decoder
	vars  map[string]string
	dir   string // embeds are relative to the spec file's directory
	total int    // bytes produced so far, bounded by maxExpanded
}

func (t *templater) expand(path string, n *yaml.Node) (string, bool) {
	in := n.Value
	var out strings.Builder
	ok := true
	for {
		i := strings.Index(in, "@{")
		if i < 0 {
			out.WriteString(in)
			break
		}
		out.WriteString(in[:i])
		rest := in[i+2:]
		j := strings.IndexByte(rest, '}')
		if j < 0 {
			t.d.Errorf(n, path, "unterminated placeholder %q; write @{name} or @{embed: path}", truncate(in[i:], 40))
			return "", false
		}
		body := strings.TrimSpace(rest[:j])
		in = rest[j+1:]
		if p, isEmbed := strings.CutPrefix(body, "embed:"); isEmbed {
			content, err := t.embed(strings.TrimSpace(p))
			if err != nil {
				t.d.Errorf(n, path, "%v", err)
				ok = false
				continue
			}
			if t.total+out.Len()+len(content) > maxExpanded {
				t.d.Errorf(n, path, "templating produced more than %d bytes; embed smaller files", maxExpanded)
				return "", false
			}
			out.WriteString(content)
			continue
		}
		if !varNameRE.MatchString(body) {
			t.d.Errorf(n, path, "placeholder @{%s} is not valid; a variable name has %s, or use @{embed: path}", truncate(body, 40), varNameAllowed)
			ok = false
			continue
		}
		v, found := t.vars[body]
		if !found {
			t.d.Errorf(n, path, "variable %q is not set; pass --set %s=VALUE", body, body)
			ok = false
			continue
		}
		out.WriteString(v)
	}
	t.total += out.Len()
	if t.total > maxExpanded {
		t.d.Errorf(n, path, "templating produced more than %d bytes; embed smaller files", maxExpanded)
		return "", false
	}
	return out.String(), ok
}

// embed reads a file for @{embed: path}. One trailing newline is dropped so
// that a file holding a single line can fill a name, as $(cat file) does in
// a shell. The content is used as is: placeholders inside it are not
// expanded.
func (t *templater) embed(p string) (string, error) {
	if p == "" {
		return "", fmt.Errorf("@{embed: } needs a file path, e.g. @{embed: description.txt}")
	}
	full := p
	if !filepath.IsAbs(p) {
		full = filepath.Join(t.dir, p)
	}
	f, err := os.Open(full)
	if err != nil {
		cause := err
		if pe := (*fs.PathError)(nil); errors.As(err, &pe) {
			cause = pe.Err
		}
		return "", fmt.Errorf("cannot embed %q: %v (looked for %s; relative paths start at the spec file's directory)", p, cause, full)
	}
	defer f.Close()
	if fi, err := f.Stat(); err == nil && fi.IsDir() {
		return "", fmt.Errorf("cannot embed %q: it is a directory; embed a file", p)
	}
	b, err := io.ReadAll(io.LimitReader(f, MaxEmbedSize+1))
	if err != nil {
		return "", fmt.Errorf("cannot embed %q: %v", p, err)
	}
	if len(b) > MaxEmbedSize {
		return "", fmt.Errorf("cannot embed %q: larger than %d bytes", p, MaxEmbedSize)
	}
	s := string(b)
	if t, ok := strings.CutSuffix(s, "\r\n"); ok {
		s = t
	} else {
		s = strings.TrimSuffix(s, "\n")
	}
	return s, nil
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "…"
}

var placeholderRE = regexp.MustCompile(`@\{\s*([A-Za-z_][A-Za-z0-9_.-]*)\s*\}`)

// UnusedVars returns, sorted, the names in vars that no @{name} placeholder
// in data mentions: usually a typo in a --set flag that the user should
// hear about (it is a warning, not an error, since scripts may pass a
// common set of variables to several specs).
func UnusedVars(data []byte, vars map[string]string) []string {
	used := map[string]bool{}
	for _, m := range placeholderRE.FindAllSubmatch(data, -1) {
		used[string(m[1])] = true
	}
	var out []string
	for name := range vars {
		if !used[name] {
			out = append(out, name)
		}
	}
	slices.Sort(out)
	return out
}

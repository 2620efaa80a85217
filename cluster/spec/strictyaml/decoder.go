package strictyaml

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"regexp"
	"strconv"
	"strings"

	"github.com/sbx-dev/sbx/cluster/spec/fieldpath"

	"go.yaml.in/yaml/v3"
)

// Pos, FieldError and ErrorList are package fieldpath's: what the
// decoder reports problems in.
type (
	Pos        = fieldpath.Pos
	FieldError = fieldpath.FieldError
	ErrorList  = fieldpath.ErrorList
)

// Decoder walks a YAML node tree and records, for every field it visits,
// where it was, and every problem it meets. It is used once per file.
type Decoder struct {
	// File names the file in errors.
	File string
	// Errs collects the problems found so far.
	Errs ErrorList
	// Expand, when set, rewrites each scalar value before it is
	// interpreted (templating). It reports its own problems with Errorf and
	// returns ok=false to mark the value as unusable.
	Expand func(path string, n *yaml.Node) (value string, ok bool)

	pos map[string]Pos
	bad map[string]bool
}

// ParseDocument parses data as exactly one YAML document and returns its
// root node (nil for an empty document). Syntax errors come back located.
func ParseDocument(file string, data []byte) (*yaml.Node, ErrorList) {
	dec := yaml.NewDecoder(bytes.NewReader(data))
	var doc yaml.Node
	if err := dec.Decode(&doc); err != nil {
		if errors.Is(err, io.EOF) {
			return nil, nil
		}
		return nil, ErrorList{syntaxError(file, data, err)}
	}
	var extra yaml.Node
	if err := dec.Decode(&extra); !errors.Is(err, io.EOF) {
		if err != nil {
			return nil, ErrorList{syntaxError(file, data, err)}
		}
		return nil, ErrorList{{File: file, Line: extra.Line, Column: extra.Column,
			Message: "a second YAML document (after ---) is not allowed; put one object in each file"}}
	}
	if len(doc.Content) == 0 {
		return nil, nil
	}
	return doc.Content[0], nil
}

var (
	yamlLineRE = regexp.MustCompile(`^yaml: line (\d+): (.*)$`)
	// unquotedAtRE finds a plain value starting with @, which YAML
	// reserves: the usual cause of "cannot start any token" in a spec.
	unquotedAtRE = regexp.MustCompile(`^\s*(-\s+)?([^#'"\s][^#'"]*:\s+)?@`)
)

// syntaxError turns yaml.v3's "yaml: line N: msg" into a located error and
// adds the hint most people need: a value starting with @ must be quoted.
func syntaxError(file string, data []byte, err error) *FieldError {
	msg := strings.TrimPrefix(err.Error(), "yaml: ")
	fe := &FieldError{File: file}
	if m := yamlLineRE.FindStringSubmatch(err.Error()); m != nil {
		fe.Line, _ = strconv.Atoi(m[1])
		msg = m[2]
	}
	if strings.Contains(msg, "cannot start any token") {
		for i, line := range strings.Split(string(data), "\n") {
			if (fe.Line == 0 || fe.Line == i+1) && unquotedAtRE.MatchString(line) {
				fe.Line = i + 1
				msg += " (a value that starts with @ must be quoted, e.g. name: '@{name}')"
				break
			}
		}
	}
	fe.Message = "invalid YAML: " + msg
	return fe
}

// Errorf records a problem at node n (which may be nil) for field path and
// marks path as bad so that later checks do not report it again.
func (d *Decoder) Errorf(n *yaml.Node, path, format string, args ...any) {
	fe := &FieldError{File: d.File, Field: path, Message: fmt.Sprintf(format, args...)}
	if n != nil {
		fe.Line, fe.Column = n.Line, n.Column
	} else {
		p := d.Pos(path)
		fe.Line, fe.Column = p.Line, p.Column
	}
	d.Errs = append(d.Errs, fe)
	d.MarkBad(path)
}

// MarkBad records that path could not be decoded.
func (d *Decoder) MarkBad(path string) {
	if d.bad == nil {
		d.bad = map[string]bool{}
	}
	d.bad[path] = true
}

// Bad reports whether path or one of its parents could not be decoded, so
// that validation can skip what decoding already reported.
func (d *Decoder) Bad(path string) bool {
	for p := path; ; p = fieldpath.Parent(p) {
		if d.bad[p] {
			return true
		}
		if p == "" {
			return false
		}
	}
}

// Pos returns the position of path, or of its nearest recorded parent when
// the field itself is absent (a missing field is reported at its parent).
func (d *Decoder) Pos(path string) Pos {
	for p := path; ; p = fieldpath.Parent(p) {
		if pos, ok := d.pos[p]; ok {
			return pos
		}
		if p == "" {
			return Pos{}
		}
	}
}

func (d *Decoder) record(n *yaml.Node, path string) {
	if d.pos == nil {
		d.pos = map[string]Pos{}
	}
	d.pos[path] = Pos{Line: n.Line, Column: n.Column}
}

// resolve follows aliases (bounded, since aliases cannot form cycles in
// yaml.v3 output but a hostile file should not make us loop).
func resolve(n *yaml.Node) *yaml.Node {
	for i := 0; n != nil && n.Kind == yaml.AliasNode && i < 100; i++ {
		n = n.Alias
	}
	return n
}

func isNull(n *yaml.Node) bool {
	return n == nil || (n.Kind == yaml.ScalarNode && n.Tag == "!!null")
}

func kindName(n *yaml.Node) string {
	switch n.Kind {
	case yaml.MappingNode:
		return "a mapping"
	case yaml.SequenceNode:
		return "a list"
	case yaml.ScalarNode:
		if n.Tag == "!!str" {
			return fmt.Sprintf("the string %q", n.Value)
		}
		return fmt.Sprintf("%q", n.Value)
	default:
		return "an alias"
	}
}

// Fields checks that n is a mapping whose keys are all in allowed, reports
// unknown and duplicate keys, and returns the value nodes by key. A null or
// absent node yields an empty map.
func (d *Decoder) Fields(n *yaml.Node, path string, allowed ...string) map[string]*yaml.Node {
	n = resolve(n)
	out := map[string]*yaml.Node{}
	if isNull(n) {
		return out
	}
	d.record(n, path)
	if n.Kind != yaml.MappingNode {
		d.Errorf(n, path, "must be a mapping with the fields %s, not %s", strings.Join(allowed, ", "), kindName(n))
		return out
	}
	keys := map[string]bool{}
	for _, k := range allowed {
		keys[k] = true
	}
	for i := 0; i+1 < len(n.Content); i += 2 {
		kn, vn := resolve(n.Content[i]), n.Content[i+1]
		key := kn.Value
		fp := fieldpath.Join(path, key)
		switch {
		case key == "<<" && kn.Tag == "!!merge":
			d.Errorf(kn, path, "YAML merge keys (<<) are not supported; write the fields out")
		case !keys[key]:
			msg := fmt.Sprintf("unknown field %q", key)
			if s := fieldpath.Suggest(key, allowed); s != "" {
				msg += fmt.Sprintf("; did you mean %q?", s)
				// The typo explains the missing field: do not also
				// report the intended field as required.
				d.MarkBad(fieldpath.Join(path, s))
			}
			d.Errorf(kn, fp, "%s (allowed: %s)", msg, strings.Join(allowed, ", "))
		case out[key] != nil:
			d.Errorf(kn, fp, "field %q is given twice (first on line %d); keep one", key, d.pos[fp].Line)
		default:
			out[key] = vn
			d.record(resolve(vn), fp)
		}
	}
	return out
}

// StringMap decodes a mapping of strings to strings (e.g. labels).
func (d *Decoder) StringMap(n *yaml.Node, path string) map[string]string {
	n = resolve(n)
	if isNull(n) {
		return nil
	}
	d.record(n, path)
	if n.Kind != yaml.MappingNode {
		d.Errorf(n, path, "must be a mapping of names to values, not %s", kindName(n))
		return nil
	}
	out := map[string]string{}
	for i := 0; i+1 < len(n.Content); i += 2 {
		kn := resolve(n.Content[i])
		fp := fieldpath.Key(path, kn.Value)
		if kn.Kind != yaml.ScalarNode {
			d.Errorf(kn, path, "keys must be strings, not %s", kindName(kn))
			continue
		}
		if _, dup := out[kn.Value]; dup {
			d.Errorf(kn, fp, "key %q is given twice; keep one", kn.Value)
			continue
		}
		d.record(kn, fp)
		out[kn.Value] = d.String(n.Content[i+1], fp)
	}
	return out
}

// Seq checks that n is a list and returns its items (nil for null).
func (d *Decoder) Seq(n *yaml.Node, path string) []*yaml.Node {
	n = resolve(n)
	if isNull(n) {
		return nil
	}
	d.record(n, path)
	if n.Kind != yaml.SequenceNode {
		d.Errorf(n, path, "must be a list, not %s", kindName(n))
		return nil
	}
	for i, it := range n.Content {
		d.record(resolve(it), fieldpath.Index(path, i))
	}
	return n.Content
}

// scalar returns the (expanded) value of a scalar node; ok is false when
// the node is absent, null, not a scalar (reported) or failed expansion.
func (d *Decoder) scalar(n *yaml.Node, path, want string) (string, bool) {
	n = resolve(n)
	if isNull(n) {
		return "", false
	}
	d.record(n, path)
	if n.Kind != yaml.ScalarNode {
		d.Errorf(n, path, "must be %s, not %s", want, kindName(n))
		return "", false
	}
	if d.Expand != nil && strings.Contains(n.Value, "@{") {
		return d.Expand(path, n)
	}
	return n.Value, true
}

// String decodes a scalar as text; numbers and booleans keep their literal
// spelling ("8083", "true"). Null and absent give "".
func (d *Decoder) String(n *yaml.Node, path string) string {
	v, _ := d.scalar(n, path, "a string")
	return v
}

var decimalRE = regexp.MustCompile(`^\s*[+-]?[0-9]+\s*$`)

// Int decodes an integer. A quoted decimal string ("8083", as templating
// produces) is accepted too. ok is false when absent or invalid (reported).
func (d *Decoder) Int(n *yaml.Node, path, allowed string) (int64, bool) {
	v, ok := d.scalar(n, path, "an integer ("+allowed+")")
	if !ok {
		return 0, false
	}
	rn := resolve(n)
	if rn.Tag == "!!int" && !strings.Contains(rn.Value, "@{") {
		var i int64
		if err := rn.Decode(&i); err == nil {
			return i, true
		}
	} else if decimalRE.MatchString(v) {
		if i, err := strconv.ParseInt(strings.TrimSpace(v), 10, 64); err == nil {
			return i, true
		}
	}
	d.Errorf(rn, path, "must be an integer (%s), not %q", allowed, v)
	return 0, false
}

// Bool decodes true or false (also as quoted strings).
func (d *Decoder) Bool(n *yaml.Node, path string) (bool, bool) {
	v, ok := d.scalar(n, path, "true or false")
	if !ok {
		return false, false
	}
	switch strings.ToLower(strings.TrimSpace(v)) {
	case "true":
		return true, true
	case "false":
		return false, true
	}
	d.Errorf(resolve(n), path, "must be true or false, not %q", v)
	return false, false
}

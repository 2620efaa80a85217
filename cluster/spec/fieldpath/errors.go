// Package fieldpath is how sbx locates a problem in a file: field paths
// ("spec.local[0].mappings[1].port"), positions, one problem (FieldError)
// and all of them (ErrorList), and "did you mean" suggestions. It imports
// no YAML library, so the sandbox spec's types and validation (and the
// daemon's API, and the tray) need none; package strictyaml decodes YAML
// into these.
package fieldpath

import (
	"regexp"
	"sort"
	"strconv"
	"strings"
)

// FieldError is one problem in a file, located as precisely as possible.
type FieldError struct {
	// File is the file name as the user gave it; empty for values that did
	// not come from a file (for example a spec received over an API).
	File string `json:"file,omitempty"`
	// Line and Column are 1-based; zero when unknown.
	Line   int `json:"line,omitempty"`
	Column int `json:"column,omitempty"`
	// Field is the path of the field, e.g. spec.local[1].mappings[0].toLocal;
	// empty for problems with the file as a whole.
	Field string `json:"field,omitempty"`
	// Message says what is wrong and what is allowed.
	Message string `json:"message"`
}

// Error renders the error compiler-style ("file:line:col: field: message")
// so that editors and terminals can jump to the spot.
func (e *FieldError) Error() string {
	var b strings.Builder
	switch {
	case e.File != "" && e.Line > 0:
		b.WriteString(e.File + ":" + strconv.Itoa(e.Line))
		if e.Column > 0 {
			b.WriteString(":" + strconv.Itoa(e.Column))
		}
		b.WriteString(": ")
	case e.File != "":
		b.WriteString(e.File + ": ")
	case e.Line > 0:
		b.WriteString("line " + strconv.Itoa(e.Line) + ": ")
	}
	if e.Field != "" {
		b.WriteString(e.Field + ": ")
	}
	b.WriteString(e.Message)
	return b.String()
}

// ErrorList is every problem found in one file, in file order. Its Error
// has one line per problem.
type ErrorList []*FieldError

// Error joins the problems, one per line.
func (l ErrorList) Error() string {
	lines := make([]string, len(l))
	for i, e := range l {
		lines[i] = e.Error()
	}
	return strings.Join(lines, "\n")
}

// Err returns the list as an error, or nil when it is empty, so that callers
// never return a non-nil error holding an empty list.
func (l ErrorList) Err() error {
	if len(l) == 0 {
		return nil
	}
	return l
}

// Sort orders the problems by position in the file; problems without a
// line (about the file as a whole) come first, ties keep their order.
func (l ErrorList) Sort() {
	sort.SliceStable(l, func(i, j int) bool {
		if l[i].Line != l[j].Line {
			return l[i].Line < l[j].Line
		}
		return l[i].Column < l[j].Column
	})
}

// Unwrap lets errors.As and errors.Is look at each problem.
func (l ErrorList) Unwrap() []error {
	out := make([]error, len(l))
	for i, e := range l {
		out[i] = e
	}
	return out
}

// Pos is a 1-based line and column in a file; zero when unknown.
type Pos struct{ Line, Column int }

// Join appends a field name to a path.
func Join(path, field string) string {
	if path == "" {
		return field
	}
	return path + "." + field
}

// Index appends a list index to a path.
func Index(path string, i int) string {
	return path + "[" + strconv.Itoa(i) + "]"
}

var plainKeyRE = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_-]*$`)

// Key appends a map key to a path, quoting keys that contain dots, slashes
// or other characters that would make the path ambiguous.
func Key(path, key string) string {
	if plainKeyRE.MatchString(key) {
		return Join(path, key)
	}
	return path + "[" + strconv.Quote(key) + "]"
}

// Parent strips the last element of a path ("" for a top-level field).
func Parent(path string) string {
	depth := 0
	for i := len(path) - 1; i >= 0; i-- {
		switch path[i] {
		case ']':
			depth++
		case '[':
			depth--
			if depth == 0 {
				return path[:i]
			}
		case '.':
			if depth == 0 {
				return path[:i]
			}
		}
	}
	return ""
}

// Suggest returns the allowed name closest to s when it is close enough to
// be a likely typo: the same ignoring case, or one edit (two for names of
// six letters or more) away, counting a swap of neighbours as one edit.
func Suggest(s string, allowed []string) string {
	limit := 0
	switch {
	case len(s) >= 6:
		limit = 2
	case len(s) >= 3:
		limit = 1
	}
	best, bestD := "", limit+1
	for _, a := range allowed {
		if strings.EqualFold(a, s) {
			return a
		}
		if dist := editDistance(strings.ToLower(s), strings.ToLower(a)); dist < bestD {
			best, bestD = a, dist
		}
	}
	return best
}

// editDistance is the optimal string alignment distance (Levenshtein plus
// transpositions) of two short strings.
func editDistance(a, b string) int {
	if len(a) > 64 || len(b) > 64 {
		return 99
	}
	d := make([][]int, len(a)+1)
	for i := range d {
		d[i] = make([]int, len(b)+1)
		d[i][0] = i
	}
	for j := range d[0] {
		d[0][j] = j
	}
	for i := 1; i <= len(a); i++ {
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			d[i][j] = min(d[i-1][j]+1, d[i][j-1]+1, d[i-1][j-1]+cost)
			if i > 1 && j > 1 && a[i-1] == b[j-2] && a[i-2] == b[j-1] {
				d[i][j] = min(d[i][j], d[i-2][j-2]+1)
			}
		}
	}
	return d[len(a)][len(b)]
}

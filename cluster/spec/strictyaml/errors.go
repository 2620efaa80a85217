// Package strictyaml decodes small YAML files by walking yaml.v3 nodes so
// that every problem is reported with its file, line, column and field path,
// unknown fields are errors, and all problems are collected rather than only
// the first. The sandbox spec and the sbx user config share it so that their
// errors look the same.
package strictyaml

import (
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

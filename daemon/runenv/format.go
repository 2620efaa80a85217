package runenv

import (
	"bytes"
	"encoding/json"
	"fmt"
	"strings"
	"unicode/utf8"
)

// Formats for `sbx env --format`.
const (
	FormatDotenv = "dotenv" // VS Code envFile, docker --env-file style; read back by github.com/joho/godotenv
	FormatJSON   = "json"   // an object, e.g. for launch.json "env"
	FormatShell  = "shell"  // export NAME='value' lines for `eval "$(sbx env NAME --format shell)"`
)

// Formats lists the supported formats.
var Formats = []string{FormatDotenv, FormatJSON, FormatShell}

// Format renders e. Variables whose name or value the format cannot carry
// are left out and reported in skipped (with why); json carries anything.
func Format(e Env, format string) (out []byte, skipped []string, err error) {
	var b bytes.Buffer
	switch format {
	case FormatJSON:
		b.WriteString("{")
		for i, v := range e.Vars {
			if i > 0 {
				b.WriteString(",")
			}
			k, _ := json.Marshal(v.Name)
			val, _ := json.Marshal(v.Value)
			fmt.Fprintf(&b, "\n  %s: %s", k, val)
		}
		if len(e.Vars) > 0 {
			b.WriteString("\n")
		}
		b.WriteString("}\n")
	case FormatShell:
		for _, v := range e.Vars {
			if !shellName(v.Name) {
				skipped = append(skipped, v.Name+": not a valid shell variable name")
				continue
			}
			fmt.Fprintf(&b, "export %s=%s\n", v.Name, ShellQuote(v.Value))
		}
	case FormatDotenv:
		for _, v := range e.Vars {
			if !shellName(v.Name) {
				skipped = append(skipped, v.Name+": not a valid variable name for dotenv files")
				continue
			}
			q, ok := DotenvQuote(v.Value)
			if !ok {
				skipped = append(skipped, v.Name+": its value cannot be written in a dotenv file (use --format json or shell)")
				continue
			}
			fmt.Fprintf(&b, "%s=%s\n", v.Name, q)
		}
	default:
		return nil, nil, fmt.Errorf("unknown env format %q; use one of %s", format, strings.Join(Formats, ", "))
	}
	return b.Bytes(), skipped, nil
}

// shellName reports whether s is a POSIX shell variable name.
func shellName(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c == '_', c >= 'A' && c <= 'Z', c >= 'a' && c <= 'z':
		case c >= '0' && c <= '9' && i > 0:
		default:
			return false
		}
	}
	return true
}

// ShellQuote quotes s for a POSIX shell: inside single quotes nothing is
// special, and a single quote itself ends the quoting, is written
// escaped, and the quoting starts again. Safe for spaces, quotes,
// newlines, $, backquotes and backslashes.
func ShellQuote(s string) string {
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}

// DotenvQuote writes v so that godotenv v1.5.1 (and dotenv parsers that
// follow the same rules) reads back exactly v. ok is false when no
// spelling works; see the cases below for that parser's limits.
func DotenvQuote(v string) (quoted string, ok bool) {
	if v == "" {
		return "''", true
	}
	if plainDotenv(v) {
		return v, true
	}
	// Single quotes: no escapes and no $ expansion. The parser ends the
	// value at the first ' not preceded by a backslash and trims every
	// leading and trailing ', and turns \r\n into \n before parsing.
	if !strings.ContainsAny(v, "'\r") && !strings.HasSuffix(v, `\`) {
		return "'" + v + "'", true
	}
	// Unquoted: the rest of the line, trimmed, cut at " #", with $
	// expanded unless written \$ (a backslash before anything else stays).
	if unquotedDotenv(v) {
		return strings.ReplaceAll(v, "$", `\$`), true
	}
	// Double quotes: \n and \r escapes, \X for any other X, \$ to stop
	// expansion. The parser also trims every leading and trailing " of
	// the raw value and cannot end a value with a backslash.
	if strings.HasPrefix(v, `"`) || strings.HasSuffix(v, `"`) || strings.HasSuffix(v, `\`) {
		return "", false
	}
	var b strings.Builder
	b.WriteByte('"')
	for i := 0; i < len(v); i++ { // bytes: invalid UTF-8 passes through as is
		switch c := v[i]; c {
		case '\n':
			b.WriteString(`\n`)
		case '\r':
			b.WriteString(`\r`)
		case '\\', '"', '$', '`', '!':
			b.WriteByte('\\')
			b.WriteByte(c)
		default:
			b.WriteByte(c)
		}
	}
	b.WriteByte('"')
	return b.String(), true
}

// plainDotenv: values that need no quotes in any dotenv dialect.
func plainDotenv(v string) bool {
	for i := 0; i < len(v); i++ {
		c := v[i]
		switch {
		case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9':
		case strings.IndexByte("_-./:,@%+=", c) >= 0:
		default:
			return false
		}
	}
	return true
}

// dotenvSpace is what godotenv trims around unquoted values and treats as
// the blank before a comment.
func dotenvSpace(r rune) bool {
	switch r {
	case '\t', '\v', '\f', '\r', ' ', 0x85, 0xA0:
		return true
	}
	return false
}

func unquotedDotenv(v string) bool {
	// godotenv reads unquoted values as runes: invalid UTF-8 would change.
	if !utf8.ValidString(v) || strings.ContainsAny(v, "\r\n") || v[0] == '\'' || v[0] == '"' {
		return false
	}
	rs := []rune(v)
	if dotenvSpace(rs[0]) || dotenvSpace(rs[len(rs)-1]) {
		return false
	}
	for i := 1; i < len(rs); i++ {
		if rs[i] == '#' && dotenvSpace(rs[i-1]) {
			return false
		}
	}
	return true
}

package hostsfile

import (
	"bytes"
	"fmt"
	"net/netip"
	"strconv"
	"strings"
)

// Marker lines. The BEGIN line carries the owner's pid so a human (and the
// next daemon) can tell who wrote the block.
const (
	beginPrefix = "# BEGIN sbx"
	endLine     = "# END sbx"
	lockPrefix  = "# lock: "
)

// Entry is one line of the block: an IP and the names that resolve to it.
type Entry struct {
	IP    netip.Addr
	Names []string
}

// blockInfo is what a block says about its owner.
type blockInfo struct {
	PID      int    // 0 when the marker carries none
	LockPath string // "" when the block has no lock line
}

// span is one sbx block inside a hosts file: content[start:end] is the
// BEGIN line through the END line and its terminator (if any).
type span struct {
	start, end int
	// terminated is false when the END line is the file's last line and
	// has no line terminator: the block was appended to a file that did
	// not end in a newline, and removing it must remove the newline that
	// was added before it.
	terminated bool
	// crlf is set when the block's lines end in CRLF: the line break
	// added before an unterminated block was the same.
	crlf bool
	info blockInfo
}

// ParseError reports a hosts file whose sbx markers are broken (a BEGIN
// without an END); sbx then refuses to edit the file rather than guess
// which lines are its own.
type ParseError struct {
	Line int
	Msg  string
}

func (e *ParseError) Error() string {
	return fmt.Sprintf("line %d: %s", e.Line, e.Msg)
}

// lineEnding returns the terminator the file uses: that of its first line,
// "\n" when it has none.
func lineEnding(content []byte) string {
	i := bytes.IndexByte(content, '\n')
	if i > 0 && content[i-1] == '\r' {
		return "\r\n"
	}
	return "\n"
}

// findBlocks returns every sbx block in content, in order.
func findBlocks(content []byte) ([]span, error) {
	var (
		out    []span
		cur    *span
		lineNo int
		begun  int
	)
	for off := 0; off < len(content); {
		lineNo++
		next := len(content)
		term := false
		if i := bytes.IndexByte(content[off:], '\n'); i >= 0 {
			next = off + i + 1
			term = true
		}
		line := strings.TrimRight(string(content[off:next]), "\r\n")
		trimmed := strings.TrimSpace(line)
		switch {
		case isBegin(trimmed):
			if cur != nil {
				return nil, &ParseError{Line: lineNo, Msg: fmt.Sprintf("sbx block opened again before the one on line %d was closed", begun)}
			}
			cur = &span{start: off, info: blockInfo{PID: parsePID(trimmed)},
				crlf: bytes.HasSuffix(content[off:next], []byte("\r\n"))}
			begun = lineNo
		case cur != nil && trimmed == endLine:
			cur.end = next
			cur.terminated = term
			out = append(out, *cur)
			cur = nil
		case cur != nil && strings.HasPrefix(trimmed, lockPrefix):
			cur.info.LockPath = strings.TrimSpace(strings.TrimPrefix(trimmed, lockPrefix))
		}
		off = next
	}
	if cur != nil {
		return nil, &ParseError{Line: begun, Msg: "sbx block has no \"" + endLine + "\" line"}
	}
	return out, nil
}

func isBegin(trimmed string) bool {
	if !strings.HasPrefix(trimmed, beginPrefix) {
		return false
	}
	rest := trimmed[len(beginPrefix):]
	return rest == "" || rest[0] == ' '
}

// parsePID reads "pid N" from a BEGIN line; 0 when absent.
func parsePID(begin string) int {
	i := strings.Index(begin, "(pid ")
	if i < 0 {
		return 0
	}
	s := begin[i+len("(pid "):]
	j := strings.IndexAny(s, ",)")
	if j < 0 {
		return 0
	}
	pid, err := strconv.Atoi(strings.TrimSpace(s[:j]))
	if err != nil || pid <= 0 {
		return 0
	}
	return pid
}

// removeBlocks returns content without any sbx block, exactly as it was
// before the blocks were inserted, and the offset where the first block
// was (-1 when there was none).
func removeBlocks(content []byte, blocks []span) ([]byte, int) {
	if len(blocks) == 0 {
		return content, -1
	}
	out := make([]byte, 0, len(content))
	prev := 0
	first := -1
	for _, b := range blocks {
		part := content[prev:b.start]
		if !b.terminated {
			// Undo the line break added before a block appended to a
			// file without a trailing newline.
			eol := []byte("\n")
			if b.crlf {
				eol = []byte("\r\n")
			}
			part = bytes.TrimSuffix(part, eol)
		}
		out = append(out, part...)
		if first < 0 {
			first = len(out)
		}
		prev = b.end
	}
	out = append(out, content[prev:]...)
	if first > len(out) {
		first = len(out)
	}
	return out, first
}

// renderBlock formats the block's lines with the file's line ending; the
// last line is terminated only when terminated is set.
func renderBlock(pid int, lockPath string, entries []Entry, eol string, terminated bool) []byte {
	var b bytes.Buffer
	fmt.Fprintf(&b, "%s (pid %d, do not edit)%s", beginPrefix, pid, eol)
	if lockPath != "" {
		fmt.Fprintf(&b, "%s%s%s", lockPrefix, lockPath, eol)
	}
	for _, e := range entries {
		if len(e.Names) == 0 {
			continue
		}
		fmt.Fprintf(&b, "%s\t%s%s", e.IP, strings.Join(e.Names, " "), eol)
	}
	b.WriteString(endLine)
	if terminated {
		b.WriteString(eol)
	}
	return b.Bytes()
}

// withBlock returns clean (content without sbx blocks) with a new block
// inserted at pos (where the old block was) or appended when pos < 0.
func withBlock(clean []byte, pos int, block func(terminated bool) []byte, eol string) []byte {
	out := make([]byte, 0, len(clean)+256)
	if pos >= 0 && pos < len(clean) {
		// In the middle: the text after it starts on a line of its own.
		out = append(out, clean[:pos]...)
		out = append(out, block(true)...)
		return append(out, clean[pos:]...)
	}
	out = append(out, clean...)
	if len(clean) > 0 && clean[len(clean)-1] != '\n' {
		// The file does not end in a newline: start the block on a new
		// line and leave the block unterminated, so removing it restores
		// the file byte for byte.
		out = append(out, eol...)
		return append(out, block(false)...)
	}
	return append(out, block(true)...)
}

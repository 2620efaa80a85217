package hostsfile

import (
	"bytes"
	"net/netip"
	"strings"
)

// removeFragments removes what sbx versions before the padded in-place
// rewrite (writeInPlace) could leave after a block. Those wrote the new
// contents over the old ones, then truncated; killed in between with a
// block shorter than before, they left the new file followed by the old
// file's last bytes: the tail of the old block (cut anywhere in a line),
// its "# END sbx" line, and whatever followed the old block. No owner ever
// removed it, and its lines can point cluster names at dead addresses.
//
// Exactly two shapes are removed, each only right after a block's END
// line (blocks are those of content, in order):
//
//  1. A run ending in a stray "# END sbx" line (one outside any block)
//     whose lines, all but the first, are lines sbx writes inside a block
//     ("<IP>\t<names>" with a valid address and names, or "# lock: ...");
//     the first line is exempt because the cut can fall anywhere in a
//     line. When the text after the stray END (T, up to the next block or
//     the end of the file) also appears right after the block's END, the
//     run is looked for after that copy and removed with it: the old block
//     was in the middle of the file and T, the user's lines after it, was
//     left twice.
//  2. At the end of the file, after the last block: a suffix of the "# END
//     sbx" line and its line break with at least one visible character
//     ("sbx\n", "D sbx\n"...), alone or between two copies of the same
//     text T as in 1 (T's last line may lack a line break, and the suffix
//     then follows it on the same line).
//
// Not removed, because nothing tells it from the user's own lines: the
// line break alone of the old END line (a blank line at the end), what a
// kill left when the old block was in the middle of the file and shrank by
// no more than the length of the lines after it (the fragment is then only
// a copy of the tail of those lines), and what an in-place removal of the
// whole block (daemon exit) left before lines that followed it (no block
// remains to anchor on). It returns the new contents, its blocks, and how
// many fragments were removed.
func removeFragments(content []byte, blocks []span) ([]byte, []span, int) {
	removed := 0
	for range 64 { // each pass removes one fragment; a file holds few
		cut := -1
		var k int
		for i := len(blocks) - 1; i >= 0 && cut < 0; i-- {
			b := blocks[i]
			if !b.terminated {
				continue
			}
			next := len(content)
			if i+1 < len(blocks) {
				next = blocks[i+1].start
			}
			if n := fragmentAfter(content[b.end:next], b.crlf, next == len(content)); n > 0 {
				cut, k = b.end, n
			}
		}
		if cut < 0 {
			return content, blocks, removed
		}
		content = append(content[:cut:cut], content[cut+k:]...)
		removed++
		var err error
		if blocks, err = findBlocks(content); err != nil {
			// Cannot happen: whole lines without markers were removed.
			panic("hostsfile: removing a fragment broke the block structure: " + err.Error())
		}
	}
	return content, blocks, removed
}

// fragmentAfter returns how many bytes at the start of a (the text after a
// block's END line, up to the next block) are a fragment, 0 when none.
func fragmentAfter(a []byte, crlf, atEOF bool) int {
	// Shape 1: a run ending in a stray END line.
	for off := 0; off < len(a); {
		next := len(a)
		if i := bytes.IndexByte(a[off:], '\n'); i >= 0 {
			next = off + i + 1
		}
		if strings.TrimSpace(string(a[off:next])) == endLine {
			t := a[next:]
			if blockTail(a[:next]) {
				return next
			}
			if len(t) > 0 && len(t) <= off && bytes.HasPrefix(a, t) && blockTail(a[len(t):next]) {
				return next
			}
			break
		}
		off = next
	}
	// Shape 2: the end of an END line (or all of it), at the end of the
	// file.
	if !atEOF {
		return 0
	}
	z := endLine + "\n"
	if crlf {
		z = endLine + "\r\n"
	}
	for j := 1; j <= len(z); j++ {
		suffix := z[len(z)-j:]
		if strings.TrimSpace(suffix) == "" || len(a) < j || (len(a)-j)%2 != 0 {
			continue
		}
		h := (len(a) - j) / 2
		if string(a[h:h+j]) == suffix && bytes.Equal(a[:h], a[h+j:]) {
			return h + j
		}
	}
	return 0
}

// blockTail reports whether y, which ends with a stray END line, can be the
// end of an sbx block cut anywhere in its first line: every line between
// the first and the END is one sbx writes inside a block.
func blockTail(y []byte) bool {
	lines := strings.SplitAfter(string(y), "\n")
	if lines[len(lines)-1] == "" {
		lines = lines[:len(lines)-1]
	}
	for i := 1; i < len(lines)-1; i++ {
		if !blockLine(strings.TrimRight(lines[i], "\r\n")) {
			return false
		}
	}
	return true
}

// blockLine reports whether line is one renderBlock writes between the
// markers: "# lock: <path>" or "<IP>\t<name> <name>...".
func blockLine(line string) bool {
	if strings.HasPrefix(line, lockPrefix) {
		return true
	}
	ip, names, ok := strings.Cut(line, "\t")
	if !ok {
		return false
	}
	if _, err := netip.ParseAddr(ip); err != nil {
		return false
	}
	for _, n := range strings.Split(names, " ") {
		if !validName(n) {
			return false
		}
	}
	return true
}

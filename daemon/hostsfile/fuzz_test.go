package hostsfile

import (
	"bytes"
	"testing"
)

// FuzzBlocks feeds arbitrary hosts file contents to the block parser: it
// must never panic, and for any file it parses, inserting a block and
// removing it again must give back the file without its old blocks, byte
// for byte.
func FuzzBlocks(f *testing.F) {
	for _, tc := range oddContents {
		f.Add([]byte(tc.content))
	}
	f.Add([]byte("a\n# BEGIN sbx (pid 12, do not edit)\n# lock: /x\n1.2.3.4\tn\n# END sbx\nb"))
	f.Add([]byte("# BEGIN sbx (pid 12, do not edit)\r\n# END sbx"))
	f.Add([]byte("# BEGIN sbx\n# BEGIN sbx\n# END sbx\n"))
	f.Add([]byte("# END sbx\n# BEGIN sbxy\n"))
	f.Fuzz(func(t *testing.T, content []byte) {
		blocks, err := findBlocks(content)
		if err != nil {
			return
		}
		clean, pos := removeBlocks(content, blocks)
		for _, b := range blocks {
			if b.start < 0 || b.end > len(content) || b.start > b.end {
				t.Fatalf("bad span %+v for %d bytes", b, len(content))
			}
		}
		if pos > len(clean) {
			t.Fatalf("insert position %d beyond %d bytes", pos, len(clean))
		}
		if rest, err := findBlocks(clean); err == nil && len(rest) > 0 {
			// A file may hold marker-like lines that only form a block
			// once the real block is cut out; that is the user's text
			// and is not checked further.
			return
		}
		eol := lineEnding(clean)
		with := withBlock(clean, pos, func(term bool) []byte {
			return renderBlock(7, "/lock", entriesAB(), eol, term)
		}, eol)
		again, err := findBlocks(with)
		if err != nil || len(again) != 1 {
			t.Fatalf("inserted block not found once: %v %d\n%q", err, len(again), with)
		}
		back, _ := removeBlocks(with, again)
		if !bytes.Equal(back, clean) {
			t.Fatalf("round trip changed the file:\n%q\n%q", clean, back)
		}
		if again[0].info.PID != 7 || again[0].info.LockPath != "/lock" {
			t.Fatalf("owner info lost: %+v", again[0].info)
		}
	})
}

// FuzzRepair feeds arbitrary contents to what Owner.read does before it
// edits a file (stripPadding, removeFragments): it must never panic, the
// result must parse with the same blocks, nothing up to the end of the
// first block may change, and a second pass must find nothing left.
func FuzzRepair(f *testing.F) {
	for _, tc := range oddContents {
		f.Add([]byte(tc.content))
	}
	b := "a\n# BEGIN sbx (pid 12, do not edit)\n# lock: /x\n1.2.3.4\tn\n# END sbx\n"
	f.Add([]byte(b + "n.svc\n1.2.3.5\tm\n# END sbx\n"))
	f.Add([]byte(b + "u\nD sbx\nu\n"))
	f.Add([]byte(b + "u\n4\tn\n# END sbx\nu\n"))
	f.Add([]byte(b + "sbx\n\t# sbx padding\n\n"))
	f.Add([]byte(b + "# END sbx\n# END sbx\n# BEGIN sbx\n# END sbx\nsbx\n"))
	f.Fuzz(func(t *testing.T, content []byte) {
		c, _ := stripPadding(content)
		blocks, err := findBlocks(c)
		if err != nil {
			return
		}
		out, outBlocks, n := removeFragments(bytes.Clone(c), blocks)
		again, err := findBlocks(out)
		if err != nil {
			t.Fatalf("repair broke the file: %v\n%q\n%q", err, c, out)
		}
		if len(again) != len(blocks) || len(outBlocks) != len(blocks) {
			t.Fatalf("repair changed the blocks\n%q\n%q", c, out)
		}
		for i := range again {
			if again[i].info != blocks[i].info || again[i] != outBlocks[i] {
				t.Fatalf("repair changed block %d\n%q\n%q", i, c, out)
			}
		}
		if len(blocks) > 0 && !bytes.HasPrefix(out, c[:blocks[0].end]) {
			t.Fatalf("repair changed the file before the end of the first block\n%q\n%q", c, out)
		}
		if n == 0 && !bytes.Equal(out, c) {
			t.Fatalf("no fragment removed, yet the file changed")
		}
		if _, _, m := removeFragments(bytes.Clone(out), again); m != 0 {
			t.Fatalf("a second pass removed %d more\n%q", m, out)
		}
	})
}

package hostsfile

import (
	"fmt"
	"net/netip"
	"os"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

// bigEntries is a block of five Services.
func bigEntries() []Entry {
	var out []Entry
	for i, ns := range []string{"hotrod", "shared", "payments", "search", "mail"} {
		name := fmt.Sprintf("svc%d", i)
		out = append(out, Entry{IP: netip.AddrFrom4([4]byte{127, 241, 0, byte(10 + i)}),
			Names: []string{name + "." + ns, name + "." + ns + ".svc", name + "." + ns + ".svc.cluster.local"}})
	}
	return out
}

// repaired is what Owner.read makes of content.
func repaired(t *testing.T, content string) string {
	t.Helper()
	c, _ := stripPadding([]byte(content))
	blocks, err := findBlocks(c)
	require.NoError(t, err, "%q", content)
	out, _, _ := removeFragments(c, blocks)
	return string(out)
}

// oldWriterKilled is what sbx's in-place rewrite before the padding left
// when killed between its WriteAt and its Truncate.
func oldWriterKilled(old, new string) string {
	if len(new) >= len(old) {
		return new
	}
	return new + old[len(new):]
}

// varyingBlocks returns blocks of many lengths, one byte apart over most of
// the range, so the cut of an old writer's kill falls at every offset of
// the lines of a bigger block.
func varyingBlocks(eol string) []string {
	out := []string{string(renderBlock(7, "/s/hosts.lock", nil, eol, true))}
	for k := 1; k <= 400; k++ {
		var names []string
		for rest := k; rest > 0; rest -= 40 {
			names = append(names, "n"+strings.Repeat("x", min(rest, 40)-1))
		}
		out = append(out, string(renderBlock(7, "/s/hosts.lock", []Entry{{IP: netip.MustParseAddr("127.241.0.99"), Names: names}}, eol, true)))
	}
	return out
}

func TestRemoveFragmentsOfTheOldWriter(t *testing.T) {
	for _, eol := range []string{"\n", "\r\n"} {
		big := string(renderBlock(7, "/s/hosts.lock", bigEntries(), eol, true))
		prefix := "127.0.0.1 localhost" + eol + "::1 localhost" + eol
		for _, after := range []string{"", "10.0.0.5 after" + eol, "10.0.0.5 after" + eol + "# comment" + eol + "10.0.0.6\tlooks-like-ours" + eol, "10.0.0.7 unterminated"} {
			removedAll, keptCopies := 0, 0
			for _, small := range varyingBlocks(eol) {
				old, new := prefix+big+after, prefix+small+after
				if len(new) >= len(old) {
					continue
				}
				left := oldWriterKilled(old, new)
				got := repaired(t, left)
				d := len(old) - len(new)
				if d > len(after) && strings.TrimSpace(left[len(new):len(new)+d-len(after)]) == "" {
					// What is left of the old block is only the line
					// break of its END line: a blank line, documented as
					// kept.
					require.Equal(t, left, got)
					continue
				}
				if after == "" || d > len(after) {
					require.Equal(t, new, got, "fragment of %d bytes after %q", d, after)
					removedAll++
					continue
				}
				// The fragment is a copy of the tail of the user's lines:
				// documented as kept.
				require.Equal(t, left, got)
				require.Equal(t, after[len(after)-d:], left[len(new):])
				keptCopies++
			}
			require.Positive(t, removedAll)
			t.Logf("eol %q after %q: %d removed, %d copies of user lines kept", eol, after, removedAll, keptCopies)
		}
	}
}

// Two kills of the old writer in a row stack two fragments.
func TestRemoveFragmentsStacked(t *testing.T) {
	p := "127.0.0.1 localhost\n"
	b0 := string(renderBlock(7, "/l", bigEntries(), "\n", true))
	b1 := string(renderBlock(7, "/l", bigEntries()[:3], "\n", true))
	b2 := string(renderBlock(7, "/l", bigEntries()[:1], "\n", true))
	first := oldWriterKilled(p+b0, p+b1)        // b1 + fragment of b0
	frag := first[len(p+b1):]                   // what the old writer kept reading as outside
	second := oldWriterKilled(first, p+b2+frag) // b2 + fragment + fragment
	require.GreaterOrEqual(t, strings.Count(second, endLine+"\n")-1, 2, "stray END lines")
	require.Equal(t, p+b2, repaired(t, second))
	require.Equal(t, p+b1, repaired(t, first))
}

func TestRemoveFragmentsKeepsTheUsersLines(t *testing.T) {
	block := "127.0.0.1 localhost\n" + string(renderBlock(7, "/l", entriesAB(), "\n", true))
	for _, tail := range []string{
		"",
		"10.0.0.5 host\n",
		"10.0.0.5\thost\n",   // shaped like sbx's lines, but no stray END
		"\n", "\n\n", "\r\n", // blank lines are not the end of an END line
		" \n",
		"10.0.0.5 a\n10.0.0.6 b\n# END sbx\n", // a stray END, but the user's lines before it
		"10.0.0.5 host\n" + string(renderBlock(8, "/m", entriesAB()[:1], "\n", true)) + "\n",
		"# END sbx is what the user wrote\n",
		"END sbx\n# more\n", // an END tail not at the end of the file
		"sbx\nx",            // nor this one
	} {
		require.Equal(t, block+tail, repaired(t, block+tail), "%q", tail)
	}
	// A stray END before any block is not after a block's END.
	s := "# END sbx\n127.241.0.1\tx\n# END sbx\n" + block
	require.Equal(t, s, repaired(t, s))
}

func TestRemoveFragmentsShapes(t *testing.T) {
	p := "127.0.0.1 localhost\n"
	b := string(renderBlock(7, "/l", entriesAB()[:1], "\n", true))
	for _, tc := range []struct{ name, tail, keep string }{
		{"only an END", "# END sbx\n", ""},
		{"END without newline", "# END sbx", ""},
		{"cut in an entry", "ed.svc redis.shared.svc.cluster.local\n127.241.0.9\tx.y\n# END sbx\n", ""},
		{"cut in the lock line", "ts/hosts.lock\n127.241.0.9\tx.y\n# END sbx\n", ""},
		{"cut in the BEGIN line", "(pid 8, do not edit)\n# lock: /l\n127.241.0.9\tx.y\n# END sbx\n", ""},
		{"the user appended after it", "cal\n# END sbx\n10.0.0.5 later\n", "10.0.0.5 later\n"},
		{"user lines twice", "10.0.0.5 after\n1.0.0.9\tx.y\n# END sbx\n10.0.0.5 after\n", "10.0.0.5 after\n"},
		{"user lines twice, unterminated", "10.0.0.5 after.shared.svc\n# END sbx\n10.0.0.5 after", "10.0.0.5 after"},
		{"END tail", "sbx\n", ""},
		{"END tail x", "x\n", ""},
		{"END tail between user copies", "10.0.0.5 a\nD sbx\n10.0.0.5 a\n", "10.0.0.5 a\n"},
	} {
		got := repaired(t, p+b+tc.tail)
		require.Equal(t, p+b+tc.keep, got, tc.name)
	}
	crlf := "a\r\n" + string(renderBlock(7, "/l", entriesAB(), "\r\n", true))
	require.Equal(t, crlf, repaired(t, crlf+"x.y\r\n127.1.1.1\tz\r\n# END sbx\r\n"))
	require.Equal(t, crlf, repaired(t, crlf+"bx\r\n"))
	require.Equal(t, crlf+"bx\n", repaired(t, crlf+"bx\n"), "not the end of this file's END line")
}

// The owner removes fragments when it starts and on its next write, and
// says so.
func TestOwnerRemovesFragments(t *testing.T) {
	orig := "127.0.0.1 localhost\n"
	deadLock := lockIn(t)
	left := oldWriterKilled(orig+string(renderBlock(999999, deadLock, bigEntries(), "\n", true)),
		orig+string(renderBlock(999999, deadLock, nil, "\n", true)))
	require.Contains(t, left, "svc4.mail")
	p := newHosts(t, left, 0o644)
	o, err := Acquire(Options{Path: p, LockPath: lockIn(t)})
	require.NoError(t, err)
	require.NotContains(t, read(t, p), "svc4")
	require.Equal(t, orig, outside(t, read(t, p)))
	require.NoError(t, o.Set(entriesAB()))

	// The live owner's next write removes one that appears meanwhile.
	cur := read(t, p)
	require.NoError(t, os.WriteFile(p, []byte(cur+"127.241.0.99\tstale.ns\n# END sbx\n"), 0o644))
	require.NoError(t, o.Set(entriesAB()), "the same entries: written anyway")
	require.Equal(t, cur, read(t, p))
	require.NoError(t, o.Close())
	require.Equal(t, orig, read(t, p))
}

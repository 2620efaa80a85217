package tunnel

import (
	"crypto/sha256"
	"encoding/hex"
	"go/ast"
	"go/parser"
	"go/token"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

func TestTokenVerifier(t *testing.T) {
	const tok = "Zm9vYmFyYmF6cXV4LXRoaXMtaXMtYS10ZXN0LXRva2Vu"
	v := VerifierOf(tok)
	sum := sha256.Sum256([]byte(tok))
	require.Equal(t, hex.EncodeToString(sum[:]), v.String(), "plain SHA-256, as sha256sum prints it")

	require.True(t, v.Verify(tok))
	require.False(t, v.Verify(tok+"x"))
	require.False(t, v.Verify(tok[:len(tok)-1]))
	require.False(t, v.Verify(""))
	require.False(t, VerifierOf("").Verify(""), "an empty token never matches, even its own verifier")
	require.False(t, TokenVerifier{}.Verify(tok))
	require.True(t, TokenVerifier{}.IsZero())
	require.False(t, v.IsZero())

	for _, s := range []string{v.String(), strings.ToUpper(v.String())} {
		p, err := ParseTokenVerifier(s)
		require.NoError(t, err)
		require.Equal(t, v, p)
	}
	for _, bad := range []string{"", "abc", v.String() + "0", strings.Repeat("g", 64), tok} {
		_, err := ParseTokenVerifier(bad)
		require.Error(t, err, bad)
		require.Contains(t, err.Error(), "64 hex digits")
	}
}

// TestVerifyIsConstantTime reads Verify's source: the digests must be
// compared with crypto/subtle, never with == or bytes.Equal, which return at
// the first differing byte. (A timing measurement would be flaky; the
// property is in the code.)
func TestVerifyIsConstantTime(t *testing.T) {
	f, err := parser.ParseFile(token.NewFileSet(), "verifier.go", nil, 0)
	require.NoError(t, err)
	var verify *ast.FuncDecl
	for _, d := range f.Decls {
		if fd, ok := d.(*ast.FuncDecl); ok && fd.Name.Name == "Verify" {
			verify = fd
		}
	}
	require.NotNil(t, verify)
	subtleCalls := 0
	ast.Inspect(verify.Body, func(n ast.Node) bool {
		switch n := n.(type) {
		case *ast.SelectorExpr:
			if id, ok := n.X.(*ast.Ident); ok {
				if id.Name == "subtle" && n.Sel.Name == "ConstantTimeCompare" {
					subtleCalls++
				}
				require.NotEqual(t, "bytes", id.Name, "Verify must not use package bytes")
			}
		case *ast.BinaryExpr:
			if n.Op == token.EQL || n.Op == token.NEQ {
				// Only the result of ConstantTimeCompare and the empty
				// token may be compared.
				lit, ok := n.Y.(*ast.BasicLit)
				require.True(t, ok, "Verify compares something other than a constant with ==")
				require.Contains(t, []string{"1", `""`}, lit.Value)
			}
		}
		return true
	})
	require.Equal(t, 1, subtleCalls, "Verify compares the digests with subtle.ConstantTimeCompare")
}

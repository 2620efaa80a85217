package runenv

import (
	"testing"

	"github.com/joho/godotenv"
)

// FuzzDotenvQuote: any value DotenvQuote accepts must read back exactly
// through godotenv, alone and between other lines.
func FuzzDotenvQuote(f *testing.F) {
	for _, v := range tricky {
		f.Add(v)
	}
	for _, v := range Build(aliceInProxyMode, nil).Vars {
		f.Add(v.Value) // proxy URLs with the credential in them
	}
	f.Add("a\nb\\")
	f.Add("\"x\"")
	f.Add(" #x")
	f.Fuzz(func(t *testing.T, v string) {
		q, ok := DotenvQuote(v)
		if !ok {
			return
		}
		doc := "BEFORE=1\nVALUE=" + q + "\nAFTER=2\n"
		got, err := godotenv.Unmarshal(doc)
		if err != nil {
			t.Fatalf("%q written as %q does not parse: %v", v, q, err)
		}
		if got["VALUE"] != v || got["BEFORE"] != "1" || got["AFTER"] != "2" {
			t.Fatalf("%q written as %q reads back as %q (%v)", v, q, got["VALUE"], got)
		}
	})
}

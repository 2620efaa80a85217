package runenv

import (
	"bytes"
	"context"
	"encoding/json"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/joho/godotenv"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

var alice = Sandbox{Name: "alice", RoutingKey: "k3x9q2m7p1z0a", BaggageKey: "sbx-routing-key"}

// credential looks like the daemon's proxy credential (base64url, with
// both of its punctuation characters).
const credential = "q-9Zk_3xV0aBcDeFgHiJkLmNoPqRsTuVwXyZ012345"

// aliceInProxyMode is alice with the daemon's proxy and its credential.
var aliceInProxyMode = Sandbox{Name: "alice", RoutingKey: "k3x9q2m7p1z0a", BaggageKey: "sbx-routing-key",
	ProxyAddr: "127.0.0.1:41234", ProxyUsername: "sbx", ProxyPassword: credential}

// tricky values every format must carry.
var tricky = map[string]string{
	"PLAIN":      "postgres://db.hotrod:5432/app?sslmode=disable",
	"SPACES":     "  two  spaces  ",
	"SINGLE":     "it's",
	"DOUBLE":     `say "hi"`,
	"BOTH":       `it's "both"`,
	"NEWLINES":   "line1\nline2\n",
	"DOLLAR":     "$HOME ${PATH} $(id) $$",
	"BACKTICK":   "`id`",
	"BACKSLASH":  `C:\path\to\n`,
	"HASH":       "a #not a comment",
	"EMPTY":      "",
	"UNICODE":    "grüße ☃",
	"MIXED":      "it's $HOME\nand \"more\" ok",
	"EQUALS":     "a=b=c",
	"JSONISH":    `{"a": [1, 2]}`,
	"LEADINGQ":   `'quoted'`,
	"TAB":        "a\tb",
	"TRAILINGBS": `ends with \`,
}

func trickyEnv() Env {
	var e Env
	for _, k := range sortedKeys(tricky) {
		e.Set(k, tricky[k], SourceBaseline)
	}
	return e
}

// trickyBuilt is alice's environment with the tricky values added and a
// name that is not a valid shell or dotenv variable ("my-dashed.name").
func trickyBuilt() Env {
	e := Build(aliceInProxyMode, nil)
	for _, v := range trickyEnv().Vars {
		e.Set(v.Name, v.Value, v.Source)
	}
	e.Set("my-dashed.name", "x", SourceBaseline)
	return e
}

func TestBuild(t *testing.T) {
	base := &Env{}
	base.Set("DB_URL", "postgres://db", SourceBaseline)
	base.Set(VarSandbox, "from-the-pod", SourceBaseline)
	base.Note("FOO: left out")

	e := Build(alice, base)
	get := func(n string) string { v, _ := e.Get(n); return v }
	require.Equal(t, "alice", get(VarSandbox), "sbx variables win over baseline ones")
	require.Equal(t, alice.RoutingKey, get(VarRoutingKey))
	require.Equal(t, "sbx-routing-key=k3x9q2m7p1z0a", get(VarBaggage))
	require.Equal(t, "postgres://db", get("DB_URL"))
	require.Equal(t, []string{"FOO: left out"}, e.Notes)
	_, ok := e.Get("HTTP_PROXY")
	require.False(t, ok, "no proxy variables outside proxy mode")

	px := alice
	px.ProxyAddr = "127.0.0.1:41234"
	e = Build(px, nil)
	for name, want := range map[string]string{
		"HTTP_PROXY": "http://127.0.0.1:41234", "http_proxy": "http://127.0.0.1:41234",
		"HTTPS_PROXY": "http://127.0.0.1:41234", "https_proxy": "http://127.0.0.1:41234",
		"ALL_PROXY": "socks5h://127.0.0.1:41234", "all_proxy": "socks5h://127.0.0.1:41234",
		"NO_PROXY": "localhost,127.0.0.1,::1", "no_proxy": "localhost,127.0.0.1,::1",
	} {
		v, ok := e.Get(name)
		require.True(t, ok, name)
		require.Equal(t, want, v, name)
	}

	// With the proxy's credential, as the daemon hands it out: in every
	// URL, and read back by Go's own proxy lookup.
	px.ProxyUsername, px.ProxyPassword = "sbx", credential
	e = Build(px, nil)
	for name, want := range map[string]string{
		"HTTP_PROXY": "http://sbx:" + credential + "@127.0.0.1:41234", "http_proxy": "http://sbx:" + credential + "@127.0.0.1:41234",
		"HTTPS_PROXY": "http://sbx:" + credential + "@127.0.0.1:41234", "https_proxy": "http://sbx:" + credential + "@127.0.0.1:41234",
		"ALL_PROXY": "socks5h://sbx:" + credential + "@127.0.0.1:41234", "all_proxy": "socks5h://sbx:" + credential + "@127.0.0.1:41234",
	} {
		v, ok := e.Get(name)
		require.True(t, ok, name)
		require.Equal(t, want, v, name)
		u, err := url.Parse(v)
		require.NoError(t, err)
		pw, _ := u.User.Password()
		require.Equal(t, "sbx", u.User.Username())
		require.Equal(t, credential, pw)
	}

	environ := e.Environ([]string{"PATH=/bin", "SBX_SANDBOX=old", "http_proxy=http://corp:3128", "WEIRD"})
	require.Contains(t, environ, "PATH=/bin")
	require.Contains(t, environ, "WEIRD")
	require.Contains(t, environ, "SBX_SANDBOX=alice")
	require.NotContains(t, environ, "SBX_SANDBOX=old")
	require.NotContains(t, environ, "http_proxy=http://corp:3128")
}

func TestFormatDotenvParsesWithGodotenv(t *testing.T) {
	e := trickyBuilt()
	out, skipped, err := Format(e, FormatDotenv)
	require.NoError(t, err)
	got, err := godotenv.Unmarshal(string(out))
	require.NoError(t, err, "%s", out)
	for _, v := range e.Vars {
		if v.Name == "my-dashed.name" {
			continue
		}
		if v.Name == "TRAILINGBS" {
			continue // checked below
		}
		require.Equal(t, v.Value, got[v.Name], "%s in\n%s", v.Name, out)
	}
	require.Contains(t, skipped, "my-dashed.name: not a valid variable name for dotenv files")
	// A value godotenv cannot read back (ends in a backslash and has a
	// quote) is reported rather than written wrong; one it can is written.
	require.Equal(t, tricky["TRAILINGBS"], got["TRAILINGBS"])

	e2 := Env{}
	e2.Set("IMPOSSIBLE", "two\nlines, then a backslash\\", SourceBaseline)
	out, skipped, err = Format(e2, FormatDotenv)
	require.NoError(t, err)
	require.Empty(t, out)
	require.Len(t, skipped, 1)
	require.Contains(t, skipped[0], "IMPOSSIBLE")
}

func TestFormatShellRoundTripsThroughSh(t *testing.T) {
	if _, err := exec.LookPath("sh"); err != nil {
		t.Skip("no sh")
	}
	e := Build(aliceInProxyMode, nil) // proxy URLs with the credential
	for _, v := range trickyEnv().Vars {
		e.Set(v.Name, v.Value, v.Source)
	}
	out, skipped, err := Format(e, FormatShell)
	require.NoError(t, err)
	require.Empty(t, skipped)
	file := filepath.Join(t.TempDir(), "env.sh")
	require.NoError(t, os.WriteFile(file, out, 0o600))
	// Source the file, then print each variable NUL-terminated; a clean
	// environment proves the values come from the file.
	var script strings.Builder
	script.WriteString(". \"$1\"\n")
	for _, v := range e.Vars {
		script.WriteString(`printf '%s\0' "$` + v.Name + "\"\n")
	}
	cmd := exec.Command("sh", "-c", script.String(), "sh", file)
	cmd.Env = []string{"PATH=" + os.Getenv("PATH")}
	res, err := cmd.Output()
	require.NoError(t, err)
	vals := strings.Split(string(res), "\x00")
	require.Len(t, vals, len(e.Vars)+1)
	for i, v := range e.Vars {
		require.Equal(t, v.Value, vals[i], v.Name)
	}

	// eval "$(sbx env --format shell)" is the documented use: same result.
	cmd = exec.Command("sh", "-c", `eval "$(cat "$1")"; printf '%s' "$MIXED"`, "sh", file)
	res, err = cmd.Output()
	require.NoError(t, err)
	require.Equal(t, tricky["MIXED"], string(res))
}

func TestFormatJSON(t *testing.T) {
	e := trickyBuilt()
	out, skipped, err := Format(e, FormatJSON)
	require.NoError(t, err)
	require.Empty(t, skipped)
	var got map[string]string
	require.NoError(t, json.Unmarshal(out, &got))
	require.Len(t, got, len(e.Vars))
	for _, v := range e.Vars {
		require.Equal(t, v.Value, got[v.Name])
	}
	require.True(t, strings.Index(string(out), VarSandbox) < strings.Index(string(out), "BACKSLASH"), "order kept")

	out, _, err = Format(Env{}, FormatJSON)
	require.NoError(t, err)
	require.Equal(t, "{}\n", string(out))

	_, _, err = Format(e, "yaml")
	require.ErrorContains(t, err, "dotenv, json, shell")
}

// syncBuffer is a bytes.Buffer safe to read while the child writes.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

func TestRunEnvAndExitCodes(t *testing.T) {
	e := Build(alice, nil)
	env := e.Environ([]string{"PATH=" + os.Getenv("PATH")})
	for _, tc := range []struct {
		name   string
		script string
		code   int
		out    string
	}{
		{"env present", `printf '%s|%s|%s' "$SBX_SANDBOX" "$SBX_ROUTING_KEY" "$SBX_BAGGAGE"`, 0,
			"alice|k3x9q2m7p1z0a|sbx-routing-key=k3x9q2m7p1z0a"},
		{"exit code", "exit 3", 3, ""},
		{"killed by a signal", "kill -KILL $$", 128 + 9, ""},
		{"terminated by a signal", "kill -TERM $$", 128 + 15, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var out syncBuffer
			code, err := Run(context.Background(), RunOptions{Args: []string{"sh", "-c", tc.script}, Env: env, Stdout: &out, Stderr: &out})
			require.NoError(t, err)
			require.Equal(t, tc.code, code)
			require.Equal(t, tc.out, out.String())
		})
	}
	_, err := Run(context.Background(), RunOptions{Args: []string{"/nonexistent/cmd"}})
	require.ErrorContains(t, err, "cannot run")
	var se *StartError
	require.ErrorAs(t, err, &se)
	require.Equal(t, 127, se.Code)
	notExec := filepath.Join(t.TempDir(), "script")
	require.NoError(t, os.WriteFile(notExec, []byte("#!/bin/sh\n"), 0o644))
	_, err = Run(context.Background(), RunOptions{Args: []string{notExec}})
	require.ErrorAs(t, err, &se)
	require.Equal(t, 126, se.Code)
	_, err = Run(context.Background(), RunOptions{})
	require.ErrorContains(t, err, "sbx run NAME --")
}

func TestExpand(t *testing.T) {
	vars := map[string]string{"A": "1", "B": "two"}
	lookup := func(n string) (string, bool) { v, ok := vars[n]; return v, ok }
	for in, want := range map[string]string{
		"plain":          "plain",
		"$(A)":           "1",
		"x$(A)y$(B)z":    "x1ytwoz",
		"$(MISSING)":     "$(MISSING)",
		"$$(A)":          "$(A)",
		"$$":             "$",
		"cost $5":        "cost $5",
		"$(unterminated": "$(unterminated",
		"end$":           "end$",
	} {
		require.Equal(t, want, expand(in, lookup), in)
	}
}

// Package runenv builds the environment of a process run against a
// sandbox (`sbx run`, `sbx env`): the sandbox's identity and routing key,
// proxy variables in proxy mode, and optionally the baseline container's
// own environment read from the cluster. It also formats that environment
// for IDEs and shells, and runs a command in it with signals forwarded.
package runenv

import (
	"net/url"
	"slices"
)

// Variable names sbx sets.
const (
	VarSandbox    = "SBX_SANDBOX"
	VarRoutingKey = "SBX_ROUTING_KEY"
	VarBaggage    = "SBX_BAGGAGE"
)

// Sources of variables, for notes and `sbx env -o json` consumers.
const (
	SourceSBX      = "sbx"
	SourceProxy    = "sbx proxy"
	SourceBaseline = "baseline"
)

// Var is one environment variable and where it came from.
type Var struct {
	Name   string `json:"name"`
	Value  string `json:"value"`
	Source string `json:"source"`
}

// Sandbox is what the daemon says about a sandbox that the environment
// needs.
type Sandbox struct {
	Name       string
	RoutingKey string
	BaggageKey string
	// ProxyAddr is the outbound proxy's host:port when outbound runs in
	// proxy mode; empty otherwise (hosts mode needs no variables).
	ProxyAddr string
	// ProxyUsername and ProxyPassword are the proxy's credential, which
	// goes into the proxy URLs as their user info (Go's net/http, curl,
	// Python requests and most SDKs send it: Proxy-Authorization for
	// HTTP, user/password authentication for SOCKS5). Empty: a daemon
	// older than the credential, whose proxy asks for none.
	ProxyUsername, ProxyPassword string
}

// proxyURL is the proxy's URL for scheme, with the credential.
func (sb Sandbox) proxyURL(scheme string) string {
	u := url.URL{Scheme: scheme, Host: sb.ProxyAddr}
	if sb.ProxyPassword != "" {
		u.User = url.UserPassword(sb.ProxyUsername, sb.ProxyPassword)
	}
	return u.String()
}

// Env is an ordered set of variables (a later Set of a name replaces the
// earlier value in place) plus notes about what was left out.
type Env struct {
	Vars  []Var
	Notes []string
}

// Set adds or replaces a variable.
func (e *Env) Set(name, value, source string) {
	for i := range e.Vars {
		if e.Vars[i].Name == name {
			e.Vars[i] = Var{Name: name, Value: value, Source: source}
			return
		}
	}
	e.Vars = append(e.Vars, Var{Name: name, Value: value, Source: source})
}

// Get returns a variable's value.
func (e *Env) Get(name string) (string, bool) {
	for _, v := range e.Vars {
		if v.Name == name {
			return v.Value, true
		}
	}
	return "", false
}

// Note records something the user should know (a value left out).
func (e *Env) Note(msg string) { e.Notes = append(e.Notes, msg) }

// noProxy keeps local traffic (the sandbox's own services on the laptop)
// off the proxy.
const noProxy = "localhost,127.0.0.1,::1"

// Build returns the environment for sb: baseline variables first (when
// given), then the sbx variables, which win over a baseline variable of
// the same name.
func Build(sb Sandbox, baseline *Env) Env {
	var e Env
	if baseline != nil {
		e.Vars = slices.Clone(baseline.Vars)
		e.Notes = slices.Clone(baseline.Notes)
	}
	e.Set(VarSandbox, sb.Name, SourceSBX)
	e.Set(VarRoutingKey, sb.RoutingKey, SourceSBX)
	if sb.BaggageKey != "" && sb.RoutingKey != "" {
		e.Set(VarBaggage, sb.BaggageKey+"="+sb.RoutingKey, SourceSBX)
	}
	if sb.ProxyAddr != "" {
		httpURL := sb.proxyURL("http")
		socksURL := sb.proxyURL("socks5h")
		for _, kv := range [][2]string{
			{"HTTP_PROXY", httpURL}, {"HTTPS_PROXY", httpURL}, {"ALL_PROXY", socksURL}, {"NO_PROXY", noProxy},
		} {
			e.Set(kv[0], kv[1], SourceProxy)
			// Many tools (curl, wget, Python requests) read only the
			// lower-case forms, some only the upper-case ones.
			e.Set(lower(kv[0]), kv[1], SourceProxy)
		}
	}
	return e
}

func lower(s string) string {
	b := []byte(s)
	for i, c := range b {
		if c >= 'A' && c <= 'Z' {
			b[i] = c + 'a' - 'A'
		}
	}
	return string(b)
}

// Environ returns base (e.g. os.Environ()) with e's variables set on top,
// in exec.Cmd.Env form. A variable of base that e sets is replaced, not
// duplicated.
func (e *Env) Environ(base []string) []string {
	set := make(map[string]bool, len(e.Vars))
	for _, v := range e.Vars {
		set[v.Name] = true
	}
	out := make([]string, 0, len(base)+len(e.Vars))
	for _, kv := range base {
		name := kv
		for i := 0; i < len(kv); i++ {
			if kv[i] == '=' && i > 0 {
				name = kv[:i]
				break
			}
		}
		if !set[name] {
			out = append(out, kv)
		}
	}
	for _, v := range e.Vars {
		out = append(out, v.Name+"="+v.Value)
	}
	return out
}

package service

import (
	"fmt"
	"path/filepath"
	"strings"
)

// PassedEnv are the variables a definition copies from the shell that
// installs it, when they are set there. Service managers start the daemon
// with a minimal environment: without PATH, exec credential plugins of
// the kubeconfig (gke-gcloud-auth-plugin, aws, kubelogin) are not found;
// without the XDG variables the daemon would use other paths for its
// socket, state and config than the CLI; without KUBECONFIG it would not
// read the kubeconfig the shell uses.
var PassedEnv = []string{"PATH", "KUBECONFIG", "XDG_CONFIG_HOME", "XDG_STATE_HOME", "XDG_RUNTIME_DIR"}

// Environment is what the definition on goos passes to the daemon: the
// PassedEnv variables getenv has, then each of extra (which must be set),
// with KUBECONFIG's files made absolute (abs, filepath.Abs in production),
// as the daemon's working directory is not the shell's. A Windows task
// runs with the user's environment and sets none.
func Environment(goos string, getenv func(string) string, extra []string, abs func(string) (string, error)) ([]Env, error) {
	if goos == "windows" {
		if len(extra) > 0 {
			return nil, fmt.Errorf("a Windows task cannot set environment variables (%s); it runs with your user environment: set them with `setx`", strings.Join(extra, ", "))
		}
		return nil, nil
	}
	var env []Env
	seen := map[string]bool{ManagerEnv: true}
	for _, name := range PassedEnv {
		seen[name] = true
		v := getenv(name)
		if v == "" {
			continue
		}
		if name == "KUBECONFIG" {
			var files []string
			for _, p := range filepath.SplitList(v) {
				if p == "" {
					continue // kubectl ignores empty elements
				}
				if a, err := abs(p); err == nil {
					p = a
				}
				files = append(files, p)
			}
			v = strings.Join(files, string(filepath.ListSeparator))
		}
		env = append(env, Env{name, v})
	}
	for _, name := range extra {
		if seen[name] {
			continue
		}
		seen[name] = true
		if name == "" || strings.ContainsAny(name, "= \t\n") {
			return nil, fmt.Errorf("--env %q is not a variable name", name)
		}
		v := getenv(name)
		if v == "" {
			return nil, fmt.Errorf("--env %s: %s is not set in this shell", name, name)
		}
		env = append(env, Env{name, v})
	}
	return env, nil
}

package api

import "strings"

// NewKubeconfigSource is the source for --kubeconfig file (empty when not
// given) and the $KUBECONFIG list env, as absolute paths. A file wins
// over env, as in kubectl.
func NewKubeconfigSource(file string, env []string) KubeconfigSource {
	return KubeconfigSource{KubeconfigFile: file, KubeconfigEnv: env}.Normalized()
}

// Normalized drops what kubectl would ignore: empty list elements, and
// the list when a file is given. Every source passes through it once,
// where it enters: NewKubeconfigSource, a connect request
// (handleConnect), a cluster request's query (clusterRequestFromQuery)
// and the state file (stateFile.Load). Everything after compares and
// reads sources as they are.
func (s KubeconfigSource) Normalized() KubeconfigSource {
	var env []string
	if s.KubeconfigFile == "" {
		for _, p := range s.KubeconfigEnv {
			if p != "" {
				env = append(env, p)
			}
		}
	}
	s.KubeconfigEnv = env
	return s
}

// Key identifies the source in cache keys and comparisons: equal for
// sources kubectl reads alike. A $KUBECONFIG of one file is that file:
// both read just it (and both fail when it is missing), so a sandbox
// connected with KUBECONFIG=f is in the cluster `sbx gc --kubeconfig f`
// asks about.
func (s KubeconfigSource) Key() string {
	switch {
	case s.KubeconfigFile != "":
		return "file\x00" + s.KubeconfigFile
	case len(s.KubeconfigEnv) == 1:
		return "file\x00" + s.KubeconfigEnv[0]
	}
	return "env\x00" + strings.Join(s.KubeconfigEnv, "\x00")
}

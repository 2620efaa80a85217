package spec

import (
	"fmt"
	"maps"
	"net"
	"net/netip"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"unicode"

	"github.com/sbx-dev/sbx/cluster/spec/fieldpath"
)

const (
	// PortRange is what a mapping's port may be, as errors say it.
	PortRange    = "1-65535"
	labelAllowed = "a DNS-1123 label: at most 63 lowercase letters, digits and '-', starting and ending with a letter or digit"
	subdomAllow  = "a DNS-1123 subdomain: at most 253 lowercase letters, digits, '-' and '.', starting and ending with a letter or digit"
	// ReservedLabelPrefix marks labels sbx sets itself on the objects it
	// creates; a spec may not set them.
	ReservedLabelPrefix = "sbx.dev/"
)

var (
	dns1123LabelRE     = regexp.MustCompile(`^[a-z0-9]([-a-z0-9]*[a-z0-9])?$`)
	dns1123SubdomainRE = regexp.MustCompile(`^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$`)
	labelNameRE        = regexp.MustCompile(`^([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]$`)
	hostnameRE         = regexp.MustCompile(`^[A-Za-z0-9]([-A-Za-z0-9]*[A-Za-z0-9])?(\.[A-Za-z0-9]([-A-Za-z0-9]*[A-Za-z0-9])?)*\.?$`)
)

// Kinds lists the workload kinds a local entry may name.
var kinds = []string{KindDeployment, KindStatefulSet, KindRollout}

// IsDNS1123Label reports whether s is a valid DNS-1123 label (the rule for
// namespaces, sandbox and workload names).
func IsDNS1123Label(s string) bool {
	return len(s) <= 63 && dns1123LabelRE.MatchString(s)
}

// FieldError is one located problem in a spec; see fieldpath.FieldError.
type FieldError = fieldpath.FieldError

// ErrorList is every problem found in a spec, one per line in its Error.
// specfile.Parse, specfile.Load and Validate return it (as error) so
// callers can errors.As it and show each problem.
type ErrorList = fieldpath.ErrorList

// Validate checks a sandbox that did not come from a file (for example one
// received over the daemon's API). Its errors carry field paths but no file
// or line. It returns an ErrorList or nil.
func (s *Sandbox) Validate() error {
	v := &validator{}
	v.sandbox(s)
	return v.errs.Err()
}

// ValidateDecoded checks a sandbox decoded from file: pos locates a field
// path in it, and skip says which paths decoding already reported (so
// each problem is said once). Package specfile calls it.
func ValidateDecoded(s *Sandbox, file string, pos func(path string) fieldpath.Pos, skip func(path string) bool) ErrorList {
	v := &validator{file: file, pos: pos, skip: skip}
	v.sandbox(s)
	return v.errs
}

// validator checks a decoded sandbox; pos and skip connect it to the
// decoder's positions and to the fields decoding already reported.
type validator struct {
	file string
	pos  func(path string) fieldpath.Pos
	skip func(path string) bool
	errs ErrorList
}

func (v *validator) add(path, format string, args ...any) {
	if v.skip != nil && v.skip(path) {
		return
	}
	fe := &FieldError{File: v.file, Field: path, Message: fmt.Sprintf(format, args...)}
	if v.pos != nil {
		p := v.pos(path)
		fe.Line, fe.Column = p.Line, p.Column
	}
	v.errs = append(v.errs, fe)
}

func (v *validator) sandbox(s *Sandbox) {
	switch {
	case s.Name == "":
		v.add("name", "the sandbox name is required; it must be %s, e.g. alice (use name: '@{name}' with --set name=alice to fill it per user)", labelAllowed)
	case !IsDNS1123Label(s.Name):
		v.add("name", "%q is not a valid sandbox name; it must be %s", s.Name, labelAllowed)
	}
	if c := s.Spec.Cluster; c != "" && (strings.TrimSpace(c) != c || strings.ContainsFunc(c, unicode.IsControl)) {
		v.add("spec.cluster", "%q has surrounding spaces or control characters; give a kube context name or a cluster name from the sbx config", c)
	}
	for _, k := range sortedKeys(s.Spec.Labels) {
		v.label(fieldpath.Key("spec.labels", k), k, s.Spec.Labels[k])
	}
	if len(s.Spec.Local) == 0 && !v.present("spec") {
		v.add("spec", "the spec is required: a mapping with at least local (the workloads to run locally), and optionally description, cluster and labels")
	} else if len(s.Spec.Local) == 0 {
		v.add("spec.local", "at least one local workload is required (a list of {name, from, mappings})")
	}
	names := map[string]int{}
	froms := map[Workload]int{}
	for i, l := range s.Spec.Local {
		p := fieldpath.Index("spec.local", i)
		v.local(p, l)
		if l.Name != "" {
			if j, dup := names[l.Name]; dup {
				v.add(p+".name", "%q is already used by spec.local[%d]; workload names must be unique within a sandbox", l.Name, j)
			} else {
				names[l.Name] = i
			}
		}
		if l.From.Kind != "" && l.From.Namespace != "" && l.From.Name != "" {
			if j, dup := froms[l.From]; dup {
				v.add(p+".from", "%s %s/%s is already replaced by spec.local[%d]; list each workload once, with all its mappings", l.From.Kind, l.From.Namespace, l.From.Name, j)
			} else {
				froms[l.From] = i
			}
		}
	}
}

func (v *validator) local(p string, l Local) {
	switch {
	case l.Name == "":
		v.add(p+".name", "the workload name is required; it must be %s, e.g. route", labelAllowed)
	case !IsDNS1123Label(l.Name):
		v.add(p+".name", "%q is not a valid workload name; it must be %s", l.Name, labelAllowed)
	}
	if l.From == (Workload{}) {
		v.add(p+".from", "the baseline workload is required, e.g. from: {kind: Deployment, namespace: hotrod, name: route}")
	} else {
		v.from(p+".from", l.From)
	}
	v.mappings(p, l.Mappings)
}

func (v *validator) from(p string, w Workload) {
	switch k := w.Kind; {
	case k == "":
		v.add(p+".kind", "the workload kind is required; allowed: %s", strings.Join(kinds, ", "))
	case !slices.Contains(kinds, k):
		msg := fmt.Sprintf("unknown kind %q; allowed: %s", k, strings.Join(kinds, ", "))
		if s := fieldpath.Suggest(k, kinds); s != "" {
			msg = fmt.Sprintf("unknown kind %q; did you mean %q? (allowed: %s)", k, s, strings.Join(kinds, ", "))
		}
		v.add(p+".kind", "%s", msg)
	}
	switch ns := w.Namespace; {
	case ns == "":
		v.add(p+".namespace", "the namespace of the baseline workload is required; it must be %s", labelAllowed)
	case !IsDNS1123Label(ns):
		v.add(p+".namespace", "%q is not a valid namespace; it must be %s", ns, labelAllowed)
	}
	switch n := w.Name; {
	case n == "":
		v.add(p+".name", "the name of the baseline workload is required; it must be %s", subdomAllow)
	case len(n) > 253 || !dns1123SubdomainRE.MatchString(n):
		v.add(p+".name", "%q is not a valid workload name; it must be %s", n, subdomAllow)
	}
}

func (v *validator) mappings(p string, ms []Mapping) {
	if len(ms) == 0 {
		v.add(p+".mappings", "at least one mapping is required, e.g. - {port: 8083, toLocal: localhost:8083}")
	}
	ports := map[int32]int{}
	for i, m := range ms {
		mp := fieldpath.Index(p+".mappings", i)
		switch {
		case m.Port == 0 && (v.skip == nil || !v.skip(mp+".port")) && !v.present(mp+".port"):
			v.add(mp+".port", "the baseline Service port is required (%s)", PortRange)
		case m.Port < 1 || m.Port > 65535:
			v.add(mp+".port", "port %d is out of range; allowed %s", m.Port, PortRange)
		default:
			if j, dup := ports[m.Port]; dup {
				v.add(mp+".port", "port %d is already mapped by %s.mappings[%d]; each port may be mapped once per workload", m.Port, p, j)
			} else {
				ports[m.Port] = i
			}
		}
		if msg := checkHostPort(m.ToLocal); msg != "" {
			v.add(mp+".toLocal", "%s", msg)
		}
	}
}

// present reports whether the decoder saw the field (so that "port: 0" is
// out of range while a missing port is "required").
func (v *validator) present(path string) bool {
	if v.pos == nil {
		return true // a struct from the API: zero means 0
	}
	return v.pos(path) != v.pos(fieldpath.Parent(path))
}

func (v *validator) label(p, k, val string) {
	name := k
	if prefix, n, ok := strings.Cut(k, "/"); ok {
		name = n
		if len(prefix) > 253 || !dns1123SubdomainRE.MatchString(prefix) {
			v.add(p, "label key %q has an invalid prefix %q; the prefix must be %s", k, prefix, subdomAllow)
			return
		}
		if prefix+"/" == ReservedLabelPrefix || strings.HasSuffix(prefix, ".sbx.dev") {
			v.add(p, "label key %q is reserved: sbx sets the %s* labels itself; choose another key", k, ReservedLabelPrefix)
			return
		}
	}
	if k == "app.kubernetes.io/managed-by" {
		v.add(p, "label key %q is reserved: sbx sets it on the objects it creates; choose another key", k)
		return
	}
	if len(name) > 63 || !labelNameRE.MatchString(name) {
		v.add(p, "label key %q is not valid; a key is an optional DNS subdomain prefix and '/', then at most 63 letters, digits, '-', '_' and '.', starting and ending with a letter or digit", k)
		return
	}
	if val != "" && (len(val) > 63 || !labelNameRE.MatchString(val)) {
		v.add(p, "label value %q is not valid; a value is empty or at most 63 letters, digits, '-', '_' and '.', starting and ending with a letter or digit", val)
	}
}

// checkHostPort validates a toLocal address and returns what is wrong with
// it, or "".
func checkHostPort(s string) string {
	const want = "want host:port with a port " + PortRange + ", e.g. localhost:8083 or 127.0.0.1:8083 or [::1]:8083"
	if s == "" {
		return "the local address is required; " + want
	}
	if _, err := strconv.Atoi(s); err == nil {
		return fmt.Sprintf("%q is missing the host; write localhost:%s", s, s)
	}
	host, port, err := net.SplitHostPort(s)
	if err != nil {
		return fmt.Sprintf("%q is not host:port; %s", s, want)
	}
	if host == "" {
		return fmt.Sprintf("%q is missing the host; write localhost%s", s, s)
	}
	if strings.HasPrefix(s, "[") {
		if _, err := netip.ParseAddr(host); err != nil || !strings.Contains(host, ":") {
			return fmt.Sprintf("%q: %q is not an IPv6 address; %s", s, host, want)
		}
	} else if _, err := netip.ParseAddr(host); err != nil && (len(host) > 253 || !hostnameRE.MatchString(host)) {
		return fmt.Sprintf("%q: %q is not a host name or IP address; %s", s, host, want)
	}
	n, err := strconv.Atoi(port)
	if err != nil {
		return fmt.Sprintf("%q: port %q is not a number; %s", s, port, want)
	}
	if n < 1 || n > 65535 {
		return fmt.Sprintf("%q: port %d is out of range; allowed %s", s, n, PortRange)
	}
	return ""
}

func sortedKeys(m map[string]string) []string {
	return slices.Sorted(maps.Keys(m))
}

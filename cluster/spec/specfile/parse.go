// Package specfile reads sandbox specs from files: templating (@{name},
// @{embed: path}), strict YAML decoding with located errors, and
// validation. It is apart from package spec, which holds the types and
// their validation, so that what only needs the types (the daemon's API,
// the tray) links no YAML library.
package specfile

import (
	"fmt"
	"io"
	"math"
	"os"
	"path/filepath"

	"go.yaml.in/yaml/v3"

	"github.com/sbx-dev/sbx/cluster/spec"
	"github.com/sbx-dev/sbx/cluster/spec/fieldpath"
	"github.com/sbx-dev/sbx/cluster/spec/strictyaml"
)

// MaxSpecSize bounds a spec file.
const MaxSpecSize = 1 << 20

// Load reads, templates, parses and validates the spec file at path. vars
// fills @{var} placeholders (see ParseSetFlags); @{embed: file} paths are
// relative to the spec's directory.
func Load(path string, vars map[string]string) (*spec.Sandbox, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("reading sandbox spec: %w", err)
	}
	defer f.Close()
	data, err := Read(path, f)
	if err != nil {
		return nil, err
	}
	return Parse(path, data, vars)
}

// Read reads one spec from r, refusing more than MaxSpecSize bytes so a
// wrong -f (a log, a device) fails fast instead of filling memory. name
// identifies the spec in errors.
func Read(name string, r io.Reader) ([]byte, error) {
	data, err := io.ReadAll(io.LimitReader(r, MaxSpecSize+1))
	if err != nil {
		return nil, fmt.Errorf("reading sandbox spec %s: %w", name, err)
	}
	if len(data) > MaxSpecSize {
		return nil, fmt.Errorf("sandbox spec %s is larger than %d bytes; is it the right file?", name, MaxSpecSize)
	}
	return data, nil
}

// Parse templates, decodes and validates one spec. filename names the spec
// in errors and anchors relative @{embed: …} paths. On failure it returns
// an ErrorList with every problem found.
func Parse(filename string, data []byte, vars map[string]string) (*spec.Sandbox, error) {
	d := &strictyaml.Decoder{File: filename}
	t := &templater{d: d, vars: vars, dir: filepath.Dir(filename)}
	d.Expand = t.expand

	root, errs := strictyaml.ParseDocument(filename, data)
	if errs != nil {
		return nil, errs
	}
	if root == nil {
		return nil, spec.ErrorList{{File: filename, Message: "the file is empty; a sandbox spec has the fields name and spec (`sbx connect --help` shows one)"}}
	}
	s := decodeSandbox(d, root)
	all := append(d.Errs, spec.ValidateDecoded(s, filename, d.Pos, d.Bad)...)
	if len(all) > 0 {
		all.Sort()
		return nil, all
	}
	return s, nil
}

func decodeSandbox(d *strictyaml.Decoder, root *yaml.Node) *spec.Sandbox {
	s := &spec.Sandbox{}
	f := d.Fields(root, "", "name", "spec")
	if d.Bad("") {
		// The document is not a mapping at all; nothing more to say.
		return s
	}
	s.Name = d.String(f["name"], "name")
	sf := d.Fields(f["spec"], "spec", "description", "cluster", "labels", "local")
	s.Spec.Description = d.String(sf["description"], "spec.description")
	s.Spec.Cluster = d.String(sf["cluster"], "spec.cluster")
	s.Spec.Labels = d.StringMap(sf["labels"], "spec.labels")
	for i, ln := range d.Seq(sf["local"], "spec.local") {
		s.Spec.Local = append(s.Spec.Local, decodeLocal(d, ln, fieldpath.Index("spec.local", i)))
	}
	return s
}

func decodeLocal(d *strictyaml.Decoder, n *yaml.Node, path string) spec.Local {
	var l spec.Local
	f := d.Fields(n, path, "name", "from", "mappings")
	l.Name = d.String(f["name"], path+".name")
	ff := d.Fields(f["from"], path+".from", "kind", "namespace", "name")
	l.From.Kind = d.String(ff["kind"], path+".from.kind")
	l.From.Namespace = d.String(ff["namespace"], path+".from.namespace")
	l.From.Name = d.String(ff["name"], path+".from.name")
	mp := path + ".mappings"
	for i, mn := range d.Seq(f["mappings"], mp) {
		p := fieldpath.Index(mp, i)
		var m spec.Mapping
		mf := d.Fields(mn, p, "port", "toLocal")
		if port, ok := d.Int(mf["port"], p+".port", spec.PortRange); ok {
			if port < 0 || port > math.MaxInt32 {
				d.Errorf(mf["port"], p+".port", "port %d is out of range; allowed %s", port, spec.PortRange)
			} else {
				m.Port = int32(port)
			}
		}
		m.ToLocal = d.String(mf["toLocal"], p+".toLocal")
		l.Mappings = append(l.Mappings, m)
	}
	return l
}

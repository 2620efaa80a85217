package main

import (
	"archive/tar"
	"bytes"
	"context"
	"debug/elf"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"time"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
	"github.com/google/go-containerregistry/pkg/v1/types"

	"github.com/sbx-dev/sbx/cluster"
)

// Image facts other sbx code relies on. The relay Deployment runs the
// container as cluster.RelayUID with command "sbx" (found on PATH), so the
// binary lives on PATH and the image's user is that same constant.
const (
	binaryPath = "/usr/local/bin/sbx"
	imagePath  = "PATH=/usr/local/bin"
	sourceURL  = "https://github.com/sbx-dev/sbx"
)

// annotationRefName tags an index in an OCI layout (the "tag").
const annotationRefName = "org.opencontainers.image.ref.name"

// binary is one prebuilt sbx binary for one platform.
type binary struct {
	OS, Arch string
	Path     string
}

func parseBinary(v string) (binary, error) {
	plat, path, ok := strings.Cut(v, "=")
	osName, arch, ok2 := strings.Cut(plat, "/")
	if !ok || !ok2 || path == "" || osName == "" || arch == "" {
		return binary{}, fmt.Errorf("--binary %q: want OS/ARCH=PATH, e.g. linux/amd64=dist/bin/linux-amd64/sbx", v)
	}
	return binary{OS: osName, Arch: arch, Path: path}, nil
}

type buildOptions struct {
	Version         string
	Out             string
	Binaries        []binary
	SourceDateEpoch string
}

// built describes the written image.
type built struct {
	Tag       string
	Digest    string
	Platforms []string
}

// tagRE is the OCI distribution spec's tag grammar.
var tagRE = regexp.MustCompile(`^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$`)

// elfMachines maps GOARCH to the ELF machine a binary for it must have, so a
// binary given for the wrong platform is caught before it ships.
var elfMachines = map[string]elf.Machine{
	"amd64": elf.EM_X86_64, "arm64": elf.EM_AARCH64, "arm": elf.EM_ARM,
	"386": elf.EM_386, "ppc64le": elf.EM_PPC64, "s390x": elf.EM_S390, "riscv64": elf.EM_RISCV,
}

// build writes an OCI layout at o.Out holding one image index tagged
// o.Version with one image per binary.
func build(o buildOptions) (built, error) {
	if !tagRE.MatchString(o.Version) {
		return built{}, fmt.Errorf("--version %q is not a valid image tag (letters, digits, '_', '.', '-'; at most 128)", o.Version)
	}
	if len(o.Binaries) == 0 {
		return built{}, errors.New("no --binary given: pass OS/ARCH=PATH for each platform")
	}
	created := time.Unix(0, 0).UTC()
	if o.SourceDateEpoch != "" {
		sec, err := strconv.ParseInt(o.SourceDateEpoch, 10, 64)
		if err != nil {
			return built{}, fmt.Errorf("SOURCE_DATE_EPOCH %q is not a number of seconds", o.SourceDateEpoch)
		}
		created = time.Unix(sec, 0).UTC()
	}

	idx := mutate.IndexMediaType(empty.Index, types.OCIImageIndex)
	var platforms []string
	seen := map[string]bool{}
	for _, b := range o.Binaries {
		plat := b.OS + "/" + b.Arch
		if seen[plat] {
			return built{}, fmt.Errorf("--binary: platform %s given twice", plat)
		}
		seen[plat] = true
		img, err := platformImage(b, o.Version, created)
		if err != nil {
			return built{}, err
		}
		idx = mutate.AppendManifests(idx, mutate.IndexAddendum{
			Add:        img,
			Descriptor: v1.Descriptor{Platform: &v1.Platform{OS: b.OS, Architecture: b.Arch}},
		})
		platforms = append(platforms, plat)
	}
	idx = mutate.Annotations(idx, map[string]string{
		"org.opencontainers.image.version": o.Version,
		"org.opencontainers.image.source":  sourceURL,
		"org.opencontainers.image.created": created.Format(time.RFC3339),
	}).(v1.ImageIndex)

	if err := os.RemoveAll(o.Out); err != nil {
		return built{}, fmt.Errorf("clearing %s: %w", o.Out, err)
	}
	p, err := layout.Write(o.Out, empty.Index)
	if err != nil {
		return built{}, fmt.Errorf("writing OCI layout %s: %w", o.Out, err)
	}
	if err := p.AppendIndex(idx, layout.WithAnnotations(map[string]string{annotationRefName: o.Version})); err != nil {
		return built{}, fmt.Errorf("writing the image index to %s: %w", o.Out, err)
	}
	d, err := idx.Digest()
	if err != nil {
		return built{}, err
	}
	return built{Tag: o.Version, Digest: d.String(), Platforms: platforms}, nil
}

// platformImage is the empty base plus one layer holding the binary.
func platformImage(b binary, version string, created time.Time) (v1.Image, error) {
	bin, err := os.ReadFile(b.Path)
	if err != nil {
		return nil, fmt.Errorf("reading the %s/%s binary: %w (build it first: make image builds both)", b.OS, b.Arch, err)
	}
	if err := checkStatic(b, bin); err != nil {
		return nil, err
	}
	tarball, err := layerTar(bin, created)
	if err != nil {
		return nil, err
	}
	layer, err := tarballLayer(tarball)
	if err != nil {
		return nil, err
	}
	img := mutate.MediaType(empty.Image, types.OCIManifestSchema1)
	img = mutate.ConfigMediaType(img, types.OCIConfigJSON)
	img, err = mutate.Append(img, mutate.Addendum{
		Layer:     layer,
		MediaType: types.OCILayer,
		History:   v1.History{Created: v1.Time{Time: created}, CreatedBy: "sbx tools/image: " + binaryPath, Comment: "static sbx " + version},
	})
	if err != nil {
		return nil, err
	}
	cf, err := img.ConfigFile()
	if err != nil {
		return nil, err
	}
	cf = cf.DeepCopy()
	cf.OS, cf.Architecture = b.OS, b.Arch
	cf.Created = v1.Time{Time: created}
	cf.Author = sourceURL
	uid := strconv.Itoa(cluster.RelayUID)
	cf.Config = v1.Config{
		User:       uid + ":" + uid,
		Entrypoint: []string{binaryPath},
		Cmd:        []string{"--help"},
		Env:        []string{imagePath},
		WorkingDir: "/",
		Labels: map[string]string{
			"org.opencontainers.image.title":   "sbx",
			"org.opencontainers.image.version": version,
			"org.opencontainers.image.source":  sourceURL,
		},
	}
	return mutate.ConfigFile(img, cf)
}

// checkStatic refuses a binary that is not an ELF for the platform or that
// needs a dynamic loader: the image has no libc.
func checkStatic(b binary, bin []byte) error {
	if b.OS != "linux" {
		return fmt.Errorf("--binary %s/%s: only linux images are built", b.OS, b.Arch)
	}
	f, err := elf.NewFile(bytes.NewReader(bin))
	if err != nil {
		return fmt.Errorf("%s is not a linux binary: %w", b.Path, err)
	}
	defer f.Close()
	if want, ok := elfMachines[b.Arch]; ok && f.Machine != want {
		return fmt.Errorf("%s is built for %v, not %s", b.Path, f.Machine, b.Arch)
	}
	for _, p := range f.Progs {
		if p.Type == elf.PT_INTERP {
			return fmt.Errorf("%s is dynamically linked; build it with CGO_ENABLED=0", b.Path)
		}
	}
	return nil
}

// layerTar is the one layer: /usr/local/bin/sbx owned by root, executable
// by all, with fixed timestamps so the same binary gives the same digest.
func layerTar(bin []byte, mtime time.Time) ([]byte, error) {
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, dir := range []string{"usr/", "usr/local/", "usr/local/bin/"} {
		if err := tw.WriteHeader(&tar.Header{Typeflag: tar.TypeDir, Name: dir, Mode: 0o755, ModTime: mtime, Format: tar.FormatPAX}); err != nil {
			return nil, err
		}
	}
	name := strings.TrimPrefix(binaryPath, "/")
	if err := tw.WriteHeader(&tar.Header{Typeflag: tar.TypeReg, Name: name, Mode: 0o755, Size: int64(len(bin)), ModTime: mtime, Format: tar.FormatPAX}); err != nil {
		return nil, err
	}
	if _, err := tw.Write(bin); err != nil {
		return nil, err
	}
	if err := tw.Close(); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}

func tarballLayer(tb []byte) (v1.Layer, error) {
	return tarball.LayerFromOpener(func() (io.ReadCloser, error) {
		return io.NopCloser(bytes.NewReader(tb)), nil
	}, tarball.WithMediaType(types.OCILayer), tarball.WithCompressedCaching)
}

// push uploads the tagged index of the layout at dir to ref.
func push(ctx context.Context, dir, ref string) (string, error) {
	if ref == "" {
		return "", errors.New("--ref is required, e.g. --ref ghcr.io/you/sbx:v1.2.3 (make image-push REGISTRY=ghcr.io/you)")
	}
	tag, err := name.NewTag(ref)
	if err != nil {
		return "", fmt.Errorf("--ref %q is not REGISTRY/REPO:TAG: %w", ref, err)
	}
	idx, err := layoutIndex(dir)
	if err != nil {
		return "", err
	}
	if err := remote.WriteIndex(tag, idx, remote.WithContext(ctx), remote.WithAuthFromKeychain(authn.DefaultKeychain)); err != nil {
		return "", fmt.Errorf("pushing %s: %w (log in with your registry's docker-credential helper or ~/.docker/config.json)", ref, err)
	}
	d, err := idx.Digest()
	if err != nil {
		return "", err
	}
	return d.String(), nil
}

// layoutIndex returns the one tagged image index in the OCI layout at dir.
func layoutIndex(dir string) (v1.ImageIndex, error) {
	p, err := layout.FromPath(filepath.Clean(dir))
	if err != nil {
		return nil, fmt.Errorf("opening OCI layout %s: %w (run make image first)", dir, err)
	}
	top, err := p.ImageIndex()
	if err != nil {
		return nil, fmt.Errorf("reading %s/index.json: %w", dir, err)
	}
	im, err := top.IndexManifest()
	if err != nil {
		return nil, err
	}
	if len(im.Manifests) != 1 || im.Manifests[0].MediaType != types.OCIImageIndex {
		return nil, fmt.Errorf("%s holds %d entries; want the one image index `image build` writes", dir, len(im.Manifests))
	}
	return top.ImageIndex(im.Manifests[0].Digest)
}

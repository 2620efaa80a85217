package main

import (
	"archive/tar"
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/registry"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/types"
	"github.com/stretchr/testify/require"

	"github.com/sbx-dev/sbx/cluster"
)

const testVersion = "v0.0.0-imagetest"

// goBuild builds pkg in dir as a static binary for linux/arch with the
// version stamped in, as the Makefile does.
func goBuild(dir, pkg, arch, out string) error {
	cmd := exec.Command(filepath.Join(runtime.GOROOT(), "bin", "go"), "build", "-trimpath",
		"-ldflags", "-s -w -X main.version="+testVersion, "-o", out, pkg)
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0", "GOOS=linux", "GOARCH="+arch)
	if b, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("go build %s for %s: %w\n%s", pkg, arch, err, b)
	}
	return nil
}

// binaries are built once for the whole test binary: the real sbx for the
// host architecture and a tiny static stand-in for the other one (compiling
// all of sbx twice would make the test slow; `make image` builds both).
var binaries struct {
	once       sync.Once
	dir        string
	host, stub string
	err        error
}

func TestMain(m *testing.M) {
	code := m.Run()
	if binaries.dir != "" {
		_ = os.RemoveAll(binaries.dir)
	}
	os.Exit(code)
}

func testBinaries(t *testing.T) (host, stub string) {
	t.Helper()
	if runtime.GOOS != "linux" || (runtime.GOARCH != "amd64" && runtime.GOARCH != "arm64") {
		t.Skip("runs the image's binary: needs linux/amd64 or linux/arm64")
	}
	binaries.once.Do(func() {
		binaries.dir, binaries.err = os.MkdirTemp("", "sbx-image-test-")
		if binaries.err != nil {
			return
		}
		dir := binaries.dir
		other := map[string]string{"amd64": "arm64", "arm64": "amd64"}[runtime.GOARCH]
		binaries.host = filepath.Join(dir, "sbx-"+runtime.GOARCH)
		if binaries.err = goBuild(filepath.Join("..", ".."), "./cmd/sbx", runtime.GOARCH, binaries.host); binaries.err != nil {
			return
		}
		stubDir := filepath.Join(dir, "stub")
		binaries.stub = filepath.Join(dir, "stub-"+other)
		if binaries.err = os.MkdirAll(stubDir, 0o755); binaries.err != nil {
			return
		}
		_ = os.WriteFile(filepath.Join(stubDir, "main.go"), []byte("package main\nfunc main() {}\n"), 0o644)
		_ = os.WriteFile(filepath.Join(stubDir, "go.mod"), []byte("module stub\n"), 0o644)
		binaries.err = goBuild(stubDir, ".", other, binaries.stub)
	})
	require.NoError(t, binaries.err)
	return binaries.host, binaries.stub
}

// buildTestImage writes the image layout at out from the test binaries.
func buildTestImage(t *testing.T, out string) built {
	t.Helper()
	host, stub := testBinaries(t)
	pick := func(arch string) string {
		if arch == runtime.GOARCH {
			return host
		}
		return stub
	}
	res, err := build(buildOptions{
		Version:  testVersion,
		Out:      out,
		Binaries: []binary{{OS: "linux", Arch: "amd64", Path: pick("amd64")}, {OS: "linux", Arch: "arm64", Path: pick("arm64")}},
	})
	require.NoError(t, err)
	return res
}

func TestImage(t *testing.T) {
	if testing.Short() {
		t.Skip("builds sbx")
	}
	out := filepath.Join(t.TempDir(), "image")
	res := buildTestImage(t, out)
	require.Equal(t, testVersion, res.Tag)
	require.Equal(t, []string{"linux/amd64", "linux/arm64"}, res.Platforms)

	// The layout's index.json tags the index with the version.
	var top v1.IndexManifest
	raw, err := os.ReadFile(filepath.Join(out, "index.json"))
	require.NoError(t, err)
	require.NoError(t, json.Unmarshal(raw, &top))
	require.Len(t, top.Manifests, 1)
	require.Equal(t, testVersion, top.Manifests[0].Annotations[annotationRefName])
	require.Equal(t, res.Digest, top.Manifests[0].Digest.String())

	idx, err := layoutIndex(out)
	require.NoError(t, err)
	im, err := idx.IndexManifest()
	require.NoError(t, err)
	require.Equal(t, types.OCIImageIndex, im.MediaType)
	require.Len(t, im.Manifests, 2)
	for _, d := range im.Manifests {
		t.Run(d.Platform.String(), func(t *testing.T) {
			require.Equal(t, "linux", d.Platform.OS)
			img, err := idx.Image(d.Digest)
			require.NoError(t, err)
			cf, err := img.ConfigFile()
			require.NoError(t, err)
			require.Equal(t, d.Platform.Architecture, cf.Architecture)
			require.Equal(t, "linux", cf.OS)

			user, group, ok := strings.Cut(cf.Config.User, ":")
			require.True(t, ok, "user %q is uid:gid", cf.Config.User)
			uid, err := strconv.Atoi(user)
			require.NoError(t, err, "the user is numeric, so runAsNonRoot can verify it")
			require.NotZero(t, uid, "non-root")
			require.Equal(t, cluster.RelayUID, uid, "matches the relay Deployment's runAsUser")
			require.Equal(t, user, group)
			require.Equal(t, []string{"/usr/local/bin/sbx"}, cf.Config.Entrypoint)
			require.Contains(t, cf.Config.Env, "PATH=/usr/local/bin", `the Deployment's command "sbx" is found on PATH`)
			require.Equal(t, testVersion, cf.Config.Labels["org.opencontainers.image.version"])

			files := imageFiles(t, img)
			require.Equal(t, []string{"usr", "usr/local", "usr/local/bin", "usr/local/bin/sbx"}, files.names)
			require.Equal(t, int64(0o755), files.modes["usr/local/bin/sbx"])
			for _, n := range files.names {
				require.NotContains(t, n, "sh", "no shell in the image")
			}
		})
	}

	// Same inputs, same digest: the build is reproducible.
	again := buildTestImage(t, filepath.Join(t.TempDir(), "again"))
	require.Equal(t, res.Digest, again.Digest)
}

type fileList struct {
	names []string
	modes map[string]int64
	data  map[string][]byte
}

func imageFiles(t *testing.T, img v1.Image) fileList {
	t.Helper()
	rc := mutate.Extract(img)
	defer rc.Close()
	fl := fileList{modes: map[string]int64{}, data: map[string][]byte{}}
	tr := tar.NewReader(rc)
	for {
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		require.NoError(t, err)
		fl.names = append(fl.names, h.Name)
		fl.modes[h.Name] = h.Mode
		if h.Typeflag == tar.TypeReg {
			b, err := io.ReadAll(tr)
			require.NoError(t, err)
			fl.data[h.Name] = b
		}
	}
	return fl
}

// TestImageBinaryRuns extracts the host platform's binary from the image and
// runs it: relay --help, the stamped version, and a relay that exits 0 on
// SIGTERM.
func TestImageBinaryRuns(t *testing.T) {
	if testing.Short() {
		t.Skip("builds sbx")
	}
	out := filepath.Join(t.TempDir(), "image")
	buildTestImage(t, out)
	idx, err := layoutIndex(out)
	require.NoError(t, err)
	im, err := idx.IndexManifest()
	require.NoError(t, err)
	var bin []byte
	for _, d := range im.Manifests {
		if d.Platform.Architecture == runtime.GOARCH {
			img, err := idx.Image(d.Digest)
			require.NoError(t, err)
			bin = imageFiles(t, img).data["usr/local/bin/sbx"]
		}
	}
	require.NotEmpty(t, bin)
	exe := filepath.Join(t.TempDir(), "sbx")
	require.NoError(t, os.WriteFile(exe, bin, 0o755))

	help, err := exec.Command(exe, "relay", "--help").CombinedOutput()
	require.NoError(t, err, "%s", help)
	require.Contains(t, string(help), "--inbound")
	require.Contains(t, string(help), "--drain-timeout")

	ver, err := exec.Command(exe, "version").CombinedOutput()
	require.NoError(t, err, "%s", ver)
	require.Contains(t, string(ver), testVersion, "the image tag's version is stamped into the binary")

	// As PID 1 in the pod the relay gets SIGTERM on deletion and must exit 0.
	// The relay gets the SHA-256 of the token the daemon minted, as sbx
	// writes it into the relay Deployment (what `sha256sum` prints).
	sum := sha256.Sum256([]byte("image-test-token"))
	verifier := hex.EncodeToString(sum[:])
	cmd := exec.Command(exe, "relay", "--sandbox", "imagetest", "--token-sha256", verifier, "--listen", "127.0.0.1:0", "--health-listen", "127.0.0.1:0", "--inbound", "0=route/8083")
	cmd.Env = []string{}
	_, err = cmd.CombinedOutput()
	require.Error(t, err, "container port 0 is refused")

	cmd = exec.Command(exe, "relay", "--sandbox", "imagetest", "--token-sha256", verifier, "--listen", "127.0.0.1:0", "--health-listen", "127.0.0.1:0")
	cmd.Env = []string{}
	stderr, err := cmd.StderrPipe()
	require.NoError(t, err)
	require.NoError(t, cmd.Start())
	serving := make(chan string, 1)
	var logs bytes.Buffer
	go func() {
		sc := bufio.NewScanner(stderr)
		for sc.Scan() {
			logs.WriteString(sc.Text() + "\n")
			if strings.Contains(sc.Text(), "relay serving") {
				serving <- sc.Text()
			}
		}
		close(serving)
	}()
	select {
	case line, ok := <-serving:
		require.True(t, ok, "relay exited before serving")
		require.Contains(t, line, verifier[:12], "the relay says which verifier it checks")
	case <-time.After(60 * time.Second):
		_ = cmd.Process.Kill()
		t.Fatal("relay did not start")
	}
	require.NoError(t, cmd.Process.Signal(syscall.SIGTERM))
	for range serving {
	}
	require.NoError(t, cmd.Wait(), "SIGTERM exits 0")
	require.NotContains(t, logs.String(), "image-test-token")
	require.Contains(t, logs.String(), "draining")
}

func TestPush(t *testing.T) {
	if testing.Short() {
		t.Skip("builds sbx")
	}
	out := filepath.Join(t.TempDir(), "image")
	res := buildTestImage(t, out)
	reg := httptest.NewServer(registry.New(registry.Logger(log.New(io.Discard, "", 0))))
	defer reg.Close()
	host := strings.TrimPrefix(reg.URL, "http://")
	ref := host + "/sbx-dev/sbx:" + testVersion

	digest, err := push(context.Background(), out, ref)
	require.NoError(t, err)
	require.Equal(t, res.Digest, digest)

	tag, err := name.NewTag(ref)
	require.NoError(t, err)
	got, err := remote.Index(tag)
	require.NoError(t, err)
	d, err := got.Digest()
	require.NoError(t, err)
	require.Equal(t, res.Digest, d.String())

	_, err = push(context.Background(), out, "")
	require.ErrorContains(t, err, "--ref is required")
	_, err = push(context.Background(), t.TempDir(), ref)
	require.ErrorContains(t, err, "run make image first")
}

func TestBuildRefusesBadInput(t *testing.T) {
	dir := t.TempDir()
	script := filepath.Join(dir, "sbx.sh")
	require.NoError(t, os.WriteFile(script, []byte("#!/bin/sh\necho hi\n"), 0o755))
	for _, tt := range []struct {
		o    buildOptions
		want string
	}{
		{buildOptions{Version: "v1+build", Out: dir}, "not a valid image tag"},
		{buildOptions{Version: "v1", Out: dir}, "no --binary given"},
		{buildOptions{Version: "v1", Out: dir, Binaries: []binary{{"linux", "amd64", script}}}, "is not a linux binary"},
		{buildOptions{Version: "v1", Out: dir, Binaries: []binary{{"linux", "amd64", filepath.Join(dir, "missing")}}}, "build it first"},
		{buildOptions{Version: "v1", Out: dir, Binaries: []binary{{"darwin", "arm64", script}}}, "only linux images"},
	} {
		_, err := build(tt.o)
		require.ErrorContains(t, err, tt.want)
	}
	_, err := parseBinary("linux-amd64:sbx")
	require.ErrorContains(t, err, "want OS/ARCH=PATH")

	// A stray argument is refused, not ignored.
	for _, args := range [][]string{
		{"build", "--version", "v1", "--out", dir, "dist/sbx-linux-amd64"},
		{"push", "--layout", dir, "--ref", "127.0.0.1:1/sbx:v1", "extra"},
	} {
		err := run(context.Background(), args, io.Discard, io.Discard)
		require.ErrorContains(t, err, "unexpected argument", args)
	}
}

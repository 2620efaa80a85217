package scenarios

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/sbx-dev/sbx/tools/testbed/sim"
)

// sbxCLI runs the sbx binary as the developer would, in a home of its own
// (XDG folders, config), against the control plane with the developer's
// kubeconfig.
type sbxCLI struct {
	t   *testing.T
	env []string
}

func newSbxCLI(t *testing.T) *sbxCLI {
	t.Helper()
	home, err := os.MkdirTemp("", "sbxh") // short: the socket lives here
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		// Nothing the binary started may outlive the test: a daemon left
		// in the background keeps running once its home (and socket) is
		// gone, and nothing could stop it then.
		for _, pid := range processesWithEnv("HOME=" + home) {
			t.Errorf("process %d (%s) outlived the test; killed", pid, cmdline(pid))
			if p, err := os.FindProcess(pid); err == nil {
				_ = p.Kill()
			}
		}
		os.RemoveAll(home)
	})
	cfgDir := filepath.Join(home, "cfg", "sbx")
	if err := os.MkdirAll(cfgDir, 0o700); err != nil {
		t.Fatal(err)
	}
	hosts := filepath.Join(home, "hosts")
	if err := os.WriteFile(hosts, []byte("127.0.0.1 localhost\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	conf := fmt.Sprintf("relayImage: %s\noutbound:\n  mode: proxy\n  hostsFile: %s\n  hostsRange: 127.244.0.0/16\n  proxyListen: 127.0.0.1:0\n", relayImage, hosts)
	if err := os.WriteFile(filepath.Join(cfgDir, "config.yaml"), []byte(conf), 0o600); err != nil {
		t.Fatal(err)
	}
	return &sbxCLI{t: t, env: append(os.Environ(),
		"HOME="+home,
		"XDG_RUNTIME_DIR="+filepath.Join(home, "rt"),
		"XDG_STATE_HOME="+filepath.Join(home, "state"),
		"XDG_CONFIG_HOME="+filepath.Join(home, "cfg"),
		"KUBECONFIG="+cp.DeveloperKubeconfig,
	)}
}

// daemon runs `sbx daemon` in the foreground until the test ends.
func (c *sbxCLI) daemon() {
	c.t.Helper()
	if err := os.MkdirAll(filepath.Join(c.envValue("XDG_RUNTIME_DIR")), 0o700); err != nil {
		c.t.Fatal(err)
	}
	cmd := exec.Command(sbxBin, "daemon")
	cmd.Env = c.env
	var log bytes.Buffer
	cmd.Stdout, cmd.Stderr = &log, &log
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		c.t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	c.t.Cleanup(func() {
		_ = cmd.Process.Signal(syscall.SIGINT)
		select {
		case <-exited:
		case <-time.After(15 * time.Second):
			_ = cmd.Process.Kill()
			<-exited
		}
		if c.t.Failed() {
			c.t.Logf("sbx daemon's output:\n%s", log.String())
		}
	})
}

func (c *sbxCLI) envValue(name string) string {
	for i := len(c.env) - 1; i >= 0; i-- {
		if v, ok := strings.CutPrefix(c.env[i], name+"="); ok {
			return v
		}
	}
	return ""
}

// run runs sbx with args and returns its output and exit code.
func (c *sbxCLI) run(args ...string) (string, int) {
	c.t.Helper()
	ctx, cancel := context.WithTimeout(c.t.Context(), 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, sbxBin, args...)
	cmd.Env = c.env
	out, err := cmd.CombinedOutput()
	code := 0
	if err != nil {
		code = -1
		if ee, ok := err.(*exec.ExitError); ok {
			code = ee.ExitCode()
		}
	}
	c.t.Logf("$ sbx %s (exit %d)\n%s", strings.Join(args, " "), code, out)
	return string(out), code
}

// The sbx binary as the developer, with the developer's kubeconfig:
// connect (the daemon in the foreground, as `sbx daemon`), a keyed
// request through the mesh reaches the laptop, sbx list shows the
// sandbox (in its namespace and in all), gc --dry-run has nothing to do,
// disconnect removes it. No request is forbidden (the audit log; the
// binary's writes are not checked for strict field validation, which the
// scenarios' in-process daemon adds).
func TestSbxBinaryConnectListDisconnect(t *testing.T) {
	e := newEnv(t, "binary", nil)
	e.lenientWrites = true
	cli := newSbxCLI(t)
	cli.daemon()
	local, err := sim.StartLocalRoute("127.0.0.1:0", nil, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = local.Close() })
	specPath := filepath.Join(t.TempDir(), "alice.yaml")
	spec := fmt.Sprintf("name: alice\nspec:\n  description: route on my laptop\n  local:\n    - name: route\n      from: {kind: Deployment, namespace: %s, name: route}\n      mappings:\n        - port: 8083\n          toLocal: %s\n", e.ns, local.Addr())
	if err := os.WriteFile(specPath, []byte(spec), 0o600); err != nil {
		t.Fatal(err)
	}
	out, code := cli.run("connect", "-f", specPath, "--timeout", "90s")
	if code != 0 {
		t.Fatalf("sbx connect: exit %d", code)
	}
	var key string
	for _, f := range strings.Fields(out) {
		if k, ok := strings.CutPrefix(f, "sbx-routing-key="); ok {
			key = strings.Trim(k, `"'`)
			break
		}
	}
	if key == "" {
		t.Fatalf("sbx connect did not show the routing key (sbx-routing-key=...)")
	}
	keyed := "sbx-routing-key=" + key
	eventually(t, 30*time.Second, "a keyed request reaches the laptop's route", func() error {
		hop, err := dispatch(t, e.ns, keyed)
		if err == nil && routeVersion(hop) != "v2" {
			err = fmt.Errorf("hops %s", &hop)
		}
		return err
	})
	for _, args := range [][]string{{"list", "-n", e.ns}, {"list"}, {"gc", "--dry-run", "-n", e.ns}} {
		out, code = cli.run(args...)
		if code != 0 || (args[0] == "list" && !strings.Contains(out, "alice")) {
			t.Errorf("sbx %s: exit %d, want success (and alice listed)", strings.Join(args, " "), code)
		}
	}
	if _, code = cli.run("disconnect", "alice"); code != 0 {
		t.Fatalf("sbx disconnect: exit %d", code)
	}
	if left := sandboxObjects(t, e, "alice"); len(left) > 0 {
		t.Errorf("after sbx disconnect these are left: %v", left)
	}
}

// processesWithEnv lists the processes whose environment holds kv.
func processesWithEnv(kv string) []int {
	entries, _ := os.ReadDir("/proc")
	var pids []int
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil || pid == os.Getpid() {
			continue
		}
		env, err := os.ReadFile(filepath.Join("/proc", e.Name(), "environ"))
		if err != nil {
			continue
		}
		if slices.Contains(strings.Split(string(env), "\x00"), kv) {
			pids = append(pids, pid)
		}
	}
	return pids
}

func cmdline(pid int) string {
	b, _ := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
	return strings.TrimSpace(strings.ReplaceAll(string(b), "\x00", " "))
}

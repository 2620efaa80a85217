package main

import (
	"context"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"testing"

	"github.com/joho/godotenv"
	"github.com/stretchr/testify/require"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes/fake"

	"github.com/sbx-dev/sbx/cluster/spec"
	"github.com/sbx-dev/sbx/daemon/api"
	"github.com/sbx-dev/sbx/daemon/client"
	"github.com/sbx-dev/sbx/daemon/config"
	"github.com/sbx-dev/sbx/daemon/runenv"
)

// connectAlice starts an in-process daemon and connects sandbox alice
// (its relay never gets ready, which run/env do not need: the routing key
// is known from the start).
func connectAlice(t *testing.T) api.SandboxStatus {
	t.Helper()
	dir := cliEnv(t)
	startInProcessDaemon(t, &cliCluster{ready: make(chan struct{})})
	code, _, errOut := runCLI(t, "connect", "-f", writeSpec(t, dir), "--set", "name=alice", "--wait=false")
	require.Equal(t, 0, code, errOut)
	c := &client.Client{}
	defer c.Close()
	st, err := c.Sandbox(context.Background(), "alice")
	require.NoError(t, err)
	require.Len(t, st.RoutingKey, 13)
	return st
}

func TestCLIEnvFormats(t *testing.T) {
	st := connectAlice(t)
	want := map[string]string{
		"SBX_SANDBOX":     "alice",
		"SBX_ROUTING_KEY": st.RoutingKey,
		"SBX_BAGGAGE":     "sbx-routing-key=" + st.RoutingKey,
	}

	code, out, errOut := runCLI(t, "env", "alice")
	require.Equal(t, 0, code, errOut)
	require.Contains(t, errOut, "work once it is ready", "a sandbox that is not ready yet is pointed out")
	got, err := godotenv.Unmarshal(out)
	require.NoError(t, err, out)
	require.Equal(t, want, got, "dotenv is the default; no proxy variables outside proxy mode")

	code, out, errOut = runCLI(t, "env", "alice", "--format", "json")
	require.Equal(t, 0, code, errOut)
	got = nil
	require.NoError(t, json.Unmarshal([]byte(out), &got))
	require.Equal(t, want, got)

	// The global -o json is honoured, not ignored in favour of dotenv.
	code, out, errOut = runCLI(t, "env", "alice", "-o", "json")
	require.Equal(t, 0, code, errOut)
	got = nil
	require.NoError(t, json.Unmarshal([]byte(out), &got), out)
	require.Equal(t, want, got)
	code, _, errOut = runCLI(t, "env", "alice", "-o", "yaml")
	require.Equal(t, 2, code)
	require.Contains(t, errOut, "dotenv, json, shell")
	code, _, errOut = runCLI(t, "env", "alice", "-o", "json", "--format", "shell")
	require.Equal(t, 2, code)
	require.Contains(t, errOut, "disagree")

	code, out, errOut = runCLI(t, "env", "alice", "--format", "shell")
	require.Equal(t, 0, code, errOut)
	file := filepath.Join(t.TempDir(), "env.sh")
	require.NoError(t, os.WriteFile(file, []byte(out), 0o600))
	res, err := exec.Command("sh", "-c", `. "$1"; printf '%s|%s|%s' "$SBX_SANDBOX" "$SBX_ROUTING_KEY" "$SBX_BAGGAGE"`, "sh", file).Output()
	require.NoError(t, err)
	require.Equal(t, "alice|"+st.RoutingKey+"|sbx-routing-key="+st.RoutingKey, string(res))

	code, _, errOut = runCLI(t, "env", "alice", "--format", "xml")
	require.Equal(t, 2, code)
	require.Contains(t, errOut, "dotenv, json, shell")

	code, _, errOut = runCLI(t, "env", "bob")
	require.Equal(t, 2, code)
	require.Contains(t, errOut, `sandbox "bob" is not connected`)

	code, _, errOut = runCLI(t, "env", "alice", "--include-secrets")
	require.Equal(t, 2, code)
	require.Contains(t, errOut, "--env-from-baseline")
}

// TestBaselineKubeOptions: --env-from-baseline reads the cluster the
// sandbox was connected through, whatever this shell's $KUBECONFIG says;
// --kubeconfig and --context override it.
func TestBaselineKubeOptions(t *testing.T) {
	dir := t.TempDir()
	connected, shell, flag := filepath.Join(dir, "connected"), filepath.Join(dir, "shell"), filepath.Join(dir, "flag")
	t.Setenv("KUBECONFIG", shell)
	src := api.NewKubeconfigSource(connected, nil)
	st := api.SandboxStatus{Name: "alice", Context: "staging", Kubeconfig: src}

	opts := baselineKubeOptions(&globalOptions{}, st)
	require.Equal(t, connected, opts.Kubeconfig)
	require.Equal(t, "staging", opts.Context)

	opts = baselineKubeOptions(&globalOptions{kubeconfig: flag, context: "other"}, st)
	require.Equal(t, flag, opts.Kubeconfig)
	require.Equal(t, "other", opts.Context)

	st.Kubeconfig = api.NewKubeconfigSource("", []string{connected})
	opts = baselineKubeOptions(&globalOptions{}, st)
	require.Empty(t, opts.Kubeconfig)
	require.Equal(t, connected, opts.Getenv("KUBECONFIG"), "the sandbox's $KUBECONFIG, not this shell's")
}

func TestCLIRun(t *testing.T) {
	st := connectAlice(t)

	code, out, errOut := runCLI(t, "run", "alice", "--", "sh", "-c", `printf '%s|%s|%s' "$SBX_SANDBOX" "$SBX_ROUTING_KEY" "$SBX_BAGGAGE"`)
	require.Equal(t, 0, code, errOut)
	require.Equal(t, "alice|"+st.RoutingKey+"|sbx-routing-key="+st.RoutingKey, out)

	code, _, _ = runCLI(t, "run", "alice", "--", "sh", "-c", "exit 42")
	require.Equal(t, 42, code, "the child's exit code")
	code, _, _ = runCLI(t, "run", "alice", "--", "sh", "-c", "kill -KILL $$")
	require.Equal(t, 137, code, "128+SIGKILL")

	code, _, errOut = runCLI(t, "run", "alice")
	require.Equal(t, 2, code)
	require.Contains(t, errOut, "after --")
	code, _, errOut = runCLI(t, "run", "alice", "extra", "--", "true")
	require.Equal(t, 2, code)
	require.Contains(t, errOut, "exactly one sandbox name")
	code, _, errOut = runCLI(t, "run", "bob", "--", "true")
	require.Equal(t, 2, code)
	require.Contains(t, errOut, "not connected")
	code, _, errOut = runCLI(t, "run", "alice", "--", "/nonexistent/program")
	require.Equal(t, 127, code, "not found: a shell's 127")
	require.Contains(t, errOut, "cannot run")
	code, _, errOut = runCLI(t, "run", "alice", "--", "no-such-program-sbx-test")
	require.Equal(t, 127, code, "not in $PATH: 127 too")
	require.Contains(t, errOut, "$PATH")
	notExec := filepath.Join(t.TempDir(), "script")
	require.NoError(t, os.WriteFile(notExec, []byte("#!/bin/sh\n"), 0o644))
	code, _, errOut = runCLI(t, "run", "alice", "--", notExec)
	require.Equal(t, 126, code, "found but not executable: a shell's 126")
	require.Contains(t, errOut, "cannot run")
	code, _, errOut = runCLI(t, "run", "-o", "json", "alice", "--", "true")
	require.Equal(t, 2, code, "the child's output cannot be JSON; -o json is refused")
	require.Contains(t, errOut, "not supported")
}

func TestProxyAddrOf(t *testing.T) {
	require.Equal(t, "", proxyAddrOf(api.Status{Version: "x"}))
	require.Equal(t, "127.0.0.1:4242", proxyAddrOf(api.Status{Outbound: &api.OutboundStatus{Mode: string(config.ModeProxy), ProxyAddr: "127.0.0.1:4242"}}))
	require.Equal(t, "", proxyAddrOf(api.Status{Outbound: &api.OutboundStatus{Mode: string(config.ModeHosts), HostsFile: "/etc/hosts"}}))
	// The JSON shape sbx run and older clients read.
	b, err := json.Marshal(api.Status{Outbound: &api.OutboundStatus{Mode: string(config.ModeProxy), ProxyAddr: "127.0.0.1:4242"}})
	require.NoError(t, err)
	require.Contains(t, string(b), `"outbound":{"mode":"proxy","proxyAddr":"127.0.0.1:4242"`)
}

// TestBaselineEnvHints: each way runenv.FromSandbox cannot pick the
// baseline container comes with the flag that fixes it.
func TestBaselineEnvHints(t *testing.T) {
	kc := fake.NewClientset(&appsv1.Deployment{ObjectMeta: metav1.ObjectMeta{Namespace: "hotrod", Name: "route"},
		Spec: appsv1.DeploymentSpec{Template: corev1.PodTemplateSpec{Spec: corev1.PodSpec{Containers: []corev1.Container{{Name: "app"}}}}}})
	one := api.SandboxStatus{Name: "alice", Mappings: []api.MappingStatus{{Workload: "route", Namespace: "hotrod", Port: 8083}}}
	two := api.SandboxStatus{Name: "alice", Mappings: []api.MappingStatus{
		{Workload: "route", Namespace: "hotrod", Port: 8083}, {Workload: "db", Namespace: "hotrod", Port: 5432}}}
	for _, tc := range []struct {
		name string
		st   api.SandboxStatus
		f    envFlags
		err  string
	}{
		{"--from bad", one, envFlags{from: "pod/x"}, `--from "pod/x": want KIND/NAME` + "\n  hint: e.g. --from deployment/driver"},
		{"several need --workload", two, envFlags{}, "several local workloads\n  hint: pick one with --workload: route, db"},
		{"--workload unknown", two, envFlags{workload: "nope"}, `no local workload "nope"` + "\n  hint: its workloads: route, db"},
		{"nothing by that name", api.SandboxStatus{Name: "alice", Mappings: []api.MappingStatus{{Workload: "ghost", Namespace: "hotrod"}}}, envFlags{}, "hint: name the baseline workload with --from KIND/NAME"},
		{"--from names nothing", one, envFlags{from: "deployment/nosuch"}, "baseline Deployment hotrod/nosuch not found\n  hint: check --from deployment/nosuch (`kubectl get deployments -n hotrod` lists them)"},
		{"local[].from names nothing", api.SandboxStatus{Name: "alice", Mappings: []api.MappingStatus{{Workload: "route", Namespace: "hotrod",
			From: &spec.Workload{Kind: spec.KindStatefulSet, Namespace: "hotrod", Name: "nosuch"}}}}, envFlags{}, "hint: check the sandbox spec's local[].from, or name the baseline with --from KIND/NAME"},
		{"--container names nothing", one, envFlags{container: "nope"}, `has no container "nope"; its containers are app` + "\n  hint: pick one with --container"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			from, err := parseFrom(tc.f.from)
			if err == nil {
				_, err = baselineEnv(context.Background(), runenv.BaselineOptions{Kube: kc, Workload: from, Container: tc.f.container}, tc.st, tc.f)
			}
			require.Error(t, err)
			require.Equal(t, 2, exitCode(err))
			require.Contains(t, formatError(err), tc.err)
		})
	}
}

func TestCLIRunEnvWithoutDaemon(t *testing.T) {
	cliEnv(t)
	for _, args := range [][]string{{"env", "alice"}, {"run", "alice", "--", "true"}} {
		code, _, errOut := runCLI(t, args...)
		require.Equal(t, 2, code, args)
		require.Contains(t, errOut, "not running", args)
		require.Contains(t, errOut, "hint:", args)
	}
}

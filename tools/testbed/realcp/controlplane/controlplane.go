// Package controlplane runs a real Kubernetes control plane for sbx's
// tests: etcd (Debian's etcd-server), and kube-apiserver and
// kube-controller-manager built from the k8s.io/kubernetes module (Build),
// on 127.0.0.1 with ports chosen at run time, certificates and tokens made
// at run time, an audit log, and two users: an admin and a developer with
// no rights until a test binds some (deploy/rbac.yaml's). Linux only.
//
// There is no scheduler and no kubelet: pods are created (by the
// controller-manager's Deployment and ReplicaSet controllers) but stay
// Pending until a node stand-in binds and runs them.
package controlplane

import (
	"context"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"
)

// The users of the control plane (--token-auth-file).
const (
	// AdminUser is in system:masters: every right.
	AdminUser = "sbx-admin"
	// DeveloperUser has no rights but what a test binds to it.
	DeveloperUser = "alice@example.com"
	// controllerManagerUser is the identity RBAC's bootstrap policy
	// grants the controller-manager's rights to.
	controllerManagerUser = "system:kube-controller-manager"
)

// ServiceClusterIPRange is the Services' cluster IP range.
const ServiceClusterIPRange = "10.96.0.0/16"

// Options configure Start.
type Options struct {
	// Dir holds everything of the run: etcd's data, certificates, tokens,
	// kubeconfigs, the audit log and each server's log (required; a test's
	// t.TempDir()).
	Dir string
	// BinDir holds kube-apiserver and kube-controller-manager (default
	// BinDir()).
	BinDir string
	// Etcd is the etcd binary (default: etcd on PATH).
	Etcd string
	// Logf reports progress (default: none).
	Logf func(format string, args ...any)
	// ReadyTimeout bounds each server's wait for readiness (default 3 min:
	// a cold kube-apiserver on a busy 2-core machine takes tens of seconds).
	ReadyTimeout time.Duration
}

// ControlPlane is a running etcd, kube-apiserver and
// kube-controller-manager.
type ControlPlane struct {
	// URL is the API server's, https://127.0.0.1:PORT.
	URL string
	// CA signs every certificate of the control plane.
	CA *CA
	// Admin and Developer are REST configs for AdminUser and DeveloperUser.
	Admin, Developer *rest.Config
	// AdminKubeconfig and DeveloperKubeconfig are the same as kubeconfig
	// files (for sbx's own kubeconfig loading, or kubectl).
	AdminKubeconfig, DeveloperKubeconfig string
	// AuditLog is the API server's audit log (JSON lines, level Metadata).
	AuditLog string
	// KubeletClientCert and KubeletClientKey are what the API server
	// presents to kubelets (port-forward, logs), signed by CA.
	KubeletClientCert, KubeletClientKey string

	dir   string
	logf  func(string, ...any)
	procs []*process
	logs  map[string]string
	once  sync.Once
}

// etcdName names etcd in logs and errors (the others are named by their
// binaries).
const etcdName = "etcd"

// StartForTest starts a control plane for t in t.TempDir() (unless o.Dir
// is set) that stops when t's cleanups run, logging progress to t. It fails
// t if the control plane does not come up.
func StartForTest(t testing.TB, o Options) *ControlPlane {
	t.Helper()
	if o.Dir == "" {
		o.Dir = t.TempDir()
	}
	if o.Logf == nil {
		o.Logf = t.Logf
	}
	c, err := Start(t.Context(), o)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)
	return c
}

// Start starts etcd, kube-apiserver and kube-controller-manager and
// returns once each answers its health check. On error nothing is left
// running. ctx bounds the start only; Close stops the servers.
func Start(ctx context.Context, o Options) (_ *ControlPlane, err error) {
	if o.Dir == "" {
		return nil, errors.New("controlplane.Start: Options.Dir is required")
	}
	if o.Logf == nil {
		o.Logf = func(string, ...any) {}
	}
	if o.ReadyTimeout <= 0 {
		o.ReadyTimeout = 3 * time.Minute
	}
	apiserverBin, kcmBin, err := Binaries(o.BinDir)
	if err != nil {
		return nil, err
	}
	if o.Etcd == "" {
		o.Etcd = "etcd"
	}
	etcdBin, err := exec.LookPath(o.Etcd)
	if err != nil {
		return nil, fmt.Errorf("etcd not found (%w): install Debian's etcd-server (apt-get install etcd-server), as .ci/run does", err)
	}

	c := &ControlPlane{dir: o.Dir, logf: o.Logf, logs: map[string]string{}}
	defer func() {
		if err != nil {
			c.Close()
		}
	}()
	pkiDir := filepath.Join(o.Dir, "pki")
	for _, d := range []string{pkiDir, filepath.Join(o.Dir, "logs"), filepath.Join(o.Dir, "etcd")} {
		if err := os.MkdirAll(d, 0o700); err != nil {
			return nil, err
		}
	}
	f, err := c.writeFiles(pkiDir)
	if err != nil {
		return nil, fmt.Errorf("write the control plane's certificates and tokens: %w", err)
	}
	start := time.Now()

	// etcd: client and peer URLs on loopback, data in the run's folder.
	var etcdURL string
	_, err = c.startServer(ctx, etcdName, 2, o.ReadyTimeout,
		func(ports []int) (*process, error) {
			etcdURL = "http://" + hostPort(ports[0])
			peer := "http://" + hostPort(ports[1])
			return startProcess(etcdName, etcdBin, []string{
				"--name=sbx-realcp",
				"--data-dir=" + filepath.Join(o.Dir, "etcd"),
				"--listen-client-urls=" + etcdURL,
				"--advertise-client-urls=" + etcdURL,
				"--listen-peer-urls=" + peer,
				"--initial-advertise-peer-urls=" + peer,
				"--initial-cluster=sbx-realcp=" + peer,
				"--initial-cluster-state=new",
				"--logger=zap",
				"--log-level=warn",
			}, c.logPath(etcdName))
		},
		func(ctx context.Context, _ []int) error {
			return probe(ctx, http.DefaultClient, etcdURL+"/health", "", `"health":"true"`)
		})
	if err != nil {
		return nil, err
	}

	// kube-apiserver.
	tlsClient := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: c.CA.Pool()}}}
	defer tlsClient.CloseIdleConnections()
	ports, err := c.startServer(ctx, APIServer, 1, o.ReadyTimeout,
		func(ports []int) (*process, error) {
			return startProcess(APIServer, apiserverBin, []string{
				"--etcd-servers=" + etcdURL,
				"--bind-address=127.0.0.1",
				"--secure-port=" + fmt.Sprint(ports[0]),
				"--advertise-address=127.0.0.1",
				"--endpoint-reconciler-type=none",
				"--authorization-mode=Node,RBAC",
				"--service-cluster-ip-range=" + ServiceClusterIPRange,
				"--token-auth-file=" + f.tokens,
				"--client-ca-file=" + f.ca,
				"--tls-cert-file=" + f.apiserverCert,
				"--tls-private-key-file=" + f.apiserverKey,
				"--cert-dir=" + pkiDir,
				"--service-account-issuer=https://kubernetes.default.svc.cluster.local",
				"--service-account-key-file=" + f.saPub,
				"--service-account-signing-key-file=" + f.saKey,
				"--kubelet-client-certificate=" + f.kubeletClientCert,
				"--kubelet-client-key=" + f.kubeletClientKey,
				"--kubelet-certificate-authority=" + f.ca,
				"--kubelet-preferred-address-types=InternalIP",
				"--enable-admission-plugins=NodeRestriction",
				// The front proxy's CA, which the controller-manager's
				// delegated authentication reads (kubeadm's values).
				"--requestheader-client-ca-file=" + f.ca,
				"--requestheader-allowed-names=front-proxy-client",
				"--requestheader-username-headers=X-Remote-User",
				"--requestheader-group-headers=X-Remote-Group",
				"--requestheader-extra-headers-prefix=X-Remote-Extra-",
				"--audit-log-path=" + f.auditLog,
				"--audit-policy-file=" + f.auditPolicy,
				"--profiling=false",
				"--v=1",
			}, c.logPath(APIServer))
		},
		func(ctx context.Context, ports []int) error {
			return probe(ctx, tlsClient, "https://"+hostPort(ports[0])+"/readyz", f.adminToken, "ok")
		})
	if err != nil {
		return nil, err
	}
	c.URL = "https://" + hostPort(ports[0])
	c.Admin = c.restConfig(f.adminToken)
	c.Developer = c.restConfig(f.developerToken)
	c.AdminKubeconfig = filepath.Join(o.Dir, "admin.kubeconfig")
	c.DeveloperKubeconfig = filepath.Join(o.Dir, "developer.kubeconfig")
	kcmKubeconfig := filepath.Join(pkiDir, "controller-manager.kubeconfig")
	for _, k := range []struct{ path, user, token string }{
		{c.AdminKubeconfig, AdminUser, f.adminToken},
		{c.DeveloperKubeconfig, DeveloperUser, f.developerToken},
		{kcmKubeconfig, controllerManagerUser, f.controllerManagerToken},
	} {
		if err := c.writeKubeconfig(k.path, k.user, k.token); err != nil {
			return nil, fmt.Errorf("write the kubeconfig of %s: %w", k.user, err)
		}
	}

	// kube-controller-manager: every default controller, each with its own
	// service account, as kubeadm runs it.
	_, err = c.startServer(ctx, ControllerManager, 1, o.ReadyTimeout,
		func(ports []int) (*process, error) {
			return startProcess(ControllerManager, kcmBin, []string{
				"--kubeconfig=" + kcmKubeconfig,
				"--authentication-kubeconfig=" + kcmKubeconfig,
				"--authorization-kubeconfig=" + kcmKubeconfig,
				"--bind-address=127.0.0.1",
				"--secure-port=" + fmt.Sprint(ports[0]),
				"--tls-cert-file=" + f.kcmCert,
				"--tls-private-key-file=" + f.kcmKey,
				"--cert-dir=" + pkiDir,
				"--use-service-account-credentials=true",
				"--service-account-private-key-file=" + f.saKey,
				"--root-ca-file=" + f.ca,
				"--cluster-signing-cert-file=" + f.ca,
				"--cluster-signing-key-file=" + f.caKey,
				"--client-ca-file=" + f.ca,
				"--leader-elect=false",
				"--profiling=false",
				"--v=1",
			}, c.logPath(ControllerManager))
		},
		func(ctx context.Context, ports []int) error {
			return probe(ctx, tlsClient, "https://"+hostPort(ports[0])+"/healthz", "", "ok")
		})
	if err != nil {
		return nil, err
	}
	c.logf("control plane %s up at %s in %s (etcd, %s, %s; logs in %s)", KubernetesVersion, c.URL,
		time.Since(start).Round(100*time.Millisecond), APIServer, ControllerManager, filepath.Join(o.Dir, "logs"))
	return c, nil
}

// Close stops the servers (controller-manager, API server, etcd) and waits
// for them to exit. The run's folder stays for its owner to remove.
func (c *ControlPlane) Close() {
	c.once.Do(func() {
		for i := len(c.procs) - 1; i >= 0; i-- {
			c.procs[i].stop(10 * time.Second)
		}
		if len(c.procs) > 0 {
			c.logf("control plane stopped")
		}
		c.procs = nil
	})
}

// Logs returns the log file of each server, by name (etcd, kube-apiserver,
// kube-controller-manager).
func (c *ControlPlane) Logs() map[string]string { return c.logs }

func (c *ControlPlane) logPath(name string) string {
	p := filepath.Join(c.dir, "logs", name+".log")
	c.logs[name] = p
	return p
}

// startServer starts one server on nPorts fresh ports and waits until
// ready answers. A server that lost a port to another process between
// freePorts and its bind is started again on new ports, a few times.
func (c *ControlPlane) startServer(ctx context.Context, name string, nPorts int, timeout time.Duration,
	start func(ports []int) (*process, error), ready func(ctx context.Context, ports []int) error) ([]int, error) {

	const attempts = 3
	for attempt := 1; ; attempt++ {
		ports, err := freePorts(nPorts)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", name, err)
		}
		c.logf("starting %s on 127.0.0.1 port(s) %v", name, ports)
		p, err := start(ports)
		if err != nil {
			return nil, err
		}
		err = c.waitReady(ctx, p, timeout, func(ctx context.Context) error { return ready(ctx, ports) })
		if err == nil {
			c.procs = append(c.procs, p)
			return ports, nil
		}
		p.stop(5 * time.Second)
		if attempt < attempts && ctx.Err() == nil && p.portInUse() {
			c.logf("%s: another process took one of ports %v; starting it again on other ports", name, ports)
			continue
		}
		return nil, err
	}
}

// waitReady polls ready until it succeeds, the process exits, ctx ends or
// timeout passes, reporting progress every few seconds.
func (c *ControlPlane) waitReady(ctx context.Context, p *process, timeout time.Duration, ready func(context.Context) error) error {
	start := time.Now()
	deadline := time.NewTimer(timeout)
	defer deadline.Stop()
	poll := time.NewTicker(200 * time.Millisecond)
	defer poll.Stop()
	lastReport := start
	var last error
	for {
		if gone, how := p.exited(); gone {
			return fmt.Errorf("%s exited while starting (%v); its log %s ends:\n%s", p.name, how, p.logPath, p.logTail(30))
		}
		pctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		last = ready(pctx)
		cancel()
		if last == nil {
			c.logf("%s ready after %s", p.name, time.Since(start).Round(100*time.Millisecond))
			return nil
		}
		if time.Since(lastReport) >= 5*time.Second {
			lastReport = time.Now()
			c.logf("still waiting for %s (%s): %v", p.name, time.Since(start).Round(time.Second), last)
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("waiting for %s: %w (last check: %v)", p.name, ctx.Err(), last)
		case <-deadline.C:
			return fmt.Errorf("%s not ready after %s (last check: %v); its log %s ends:\n%s",
				p.name, timeout, last, p.logPath, p.logTail(30))
		case <-poll.C:
		}
	}
}

// probe GETs url and wants a 200 whose body contains want.
func probe(ctx context.Context, client *http.Client, url, token, want string) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return err
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := client.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
	if resp.StatusCode != http.StatusOK || !strings.Contains(string(body), want) {
		return fmt.Errorf("GET %s: %s: %s", url, resp.Status, strings.TrimSpace(string(body)))
	}
	return nil
}

func (c *ControlPlane) restConfig(token string) *rest.Config {
	return &rest.Config{
		Host:            c.URL,
		BearerToken:     token,
		TLSClientConfig: rest.TLSClientConfig{CAData: c.CA.PEM},
		// Tests make bursts of calls; client-side throttling only slows
		// them (the API server has its own fairness).
		QPS:   100,
		Burst: 200,
	}
}

func (c *ControlPlane) writeKubeconfig(path, user, token string) error {
	cfg := clientcmdapi.NewConfig()
	cfg.Clusters["realcp"] = &clientcmdapi.Cluster{Server: c.URL, CertificateAuthorityData: c.CA.PEM}
	cfg.AuthInfos[user] = &clientcmdapi.AuthInfo{Token: token}
	cfg.Contexts["realcp"] = &clientcmdapi.Context{Cluster: "realcp", AuthInfo: user, Namespace: "default"}
	cfg.CurrentContext = "realcp"
	return clientcmd.WriteToFile(*cfg, path)
}

// files are the paths (and tokens) Start writes before any server runs.
type files struct {
	ca, caKey                           string
	apiserverCert, apiserverKey         string
	kcmCert, kcmKey                     string
	kubeletClientCert, kubeletClientKey string
	saPub, saKey                        string
	tokens, auditPolicy, auditLog       string

	adminToken, developerToken, controllerManagerToken string
}

func (c *ControlPlane) writeFiles(dir string) (*files, error) {
	ca, err := newCA()
	if err != nil {
		return nil, err
	}
	c.CA = ca
	f := &files{ca: filepath.Join(dir, "ca.crt"), caKey: filepath.Join(dir, "ca.key")}
	if err := os.WriteFile(f.ca, ca.PEM, 0o600); err != nil {
		return nil, err
	}
	if err := ca.writeKey(f.caKey); err != nil {
		return nil, err
	}
	loopback := []net.IP{net.IPv4(127, 0, 0, 1)}
	if f.apiserverCert, f.apiserverKey, err = ca.writeCertPair(dir, "apiserver", certRequest{
		commonName: "kube-apiserver",
		dnsNames:   []string{"localhost", "kubernetes", "kubernetes.default", "kubernetes.default.svc", "kubernetes.default.svc.cluster.local"},
		// 10.96.0.1: the kubernetes Service, first IP of the range.
		ips:   append(loopback, net.IPv4(10, 96, 0, 1)),
		usage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}); err != nil {
		return nil, err
	}
	if f.kcmCert, f.kcmKey, err = ca.writeCertPair(dir, "controller-manager", certRequest{
		commonName: "kube-controller-manager", dnsNames: []string{"localhost"}, ips: loopback,
		usage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}); err != nil {
		return nil, err
	}
	// What the API server shows kubelets: kubeadm's name and group.
	if f.kubeletClientCert, f.kubeletClientKey, err = ca.writeCertPair(dir, "apiserver-kubelet-client", certRequest{
		commonName: "kube-apiserver-kubelet-client", orgs: []string{"system:masters"},
		usage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	}); err != nil {
		return nil, err
	}
	c.KubeletClientCert, c.KubeletClientKey = f.kubeletClientCert, f.kubeletClientKey
	if f.saPub, f.saKey, err = writeServiceAccountKeys(dir); err != nil {
		return nil, err
	}

	// Static tokens: token,user,uid[,"groups"].
	for _, t := range []*string{&f.adminToken, &f.developerToken, &f.controllerManagerToken} {
		*t = newToken()
	}
	f.tokens = filepath.Join(dir, "tokens.csv")
	tokens := fmt.Sprintf("%s,%s,%s,\"system:masters\"\n%s,%s,%s\n%s,%s,%s\n",
		f.adminToken, AdminUser, "uid-admin",
		f.developerToken, DeveloperUser, "uid-developer",
		f.controllerManagerToken, controllerManagerUser, "uid-kcm")
	if err := os.WriteFile(f.tokens, []byte(tokens), 0o600); err != nil {
		return nil, err
	}

	// Every request at level Metadata: who did what, and the answer's code.
	f.auditPolicy = filepath.Join(dir, "audit-policy.yaml")
	f.auditLog = filepath.Join(c.dir, "logs", "audit.log")
	c.AuditLog = f.auditLog
	policy := "apiVersion: audit.k8s.io/v1\nkind: Policy\nomitStages: [RequestReceived]\nrules:\n  - level: Metadata\n"
	if err := os.WriteFile(f.auditPolicy, []byte(policy), 0o600); err != nil {
		return nil, err
	}
	return f, nil
}

func newToken() string {
	b := make([]byte, 24)
	_, _ = rand.Read(b) // never fails (crypto/rand)
	return hex.EncodeToString(b)
}

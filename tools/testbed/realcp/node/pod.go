package node

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/util/retry"
	"k8s.io/utils/ptr"
)

// podRunner runs one pod: its network namespace, its containers, and its
// status in the API.
type podRunner struct {
	n        *Node
	ns, name string
	uid      types.UID
	spec     corev1.PodSpec
	pod      *corev1.Pod // as first seen
	idx      int
	ip       netip.Addr

	ctx    context.Context // ends when the pod is to stop
	cancel context.CancelFunc
	wg     sync.WaitGroup // containers and the status writer

	mu       sync.Mutex
	pnet     *podNet
	grace    time.Duration
	statuses []corev1.ContainerStatus
	started  metav1.Time
	dirty    chan struct{}
}

func newPodRunner(n *Node, p *corev1.Pod, idx int, ip netip.Addr) *podRunner {
	r := &podRunner{n: n, ns: p.Namespace, name: p.Name, uid: p.UID, spec: *p.Spec.DeepCopy(), pod: p.DeepCopy(), idx: idx, ip: ip,
		dirty: make(chan struct{}, 1), started: metav1.Now(), grace: 30 * time.Second}
	r.ctx, r.cancel = context.WithCancel(n.ctx)
	for _, c := range p.Spec.Containers {
		r.statuses = append(r.statuses, corev1.ContainerStatus{
			Name: c.Name, Image: c.Image, ImageID: "",
			State: corev1.ContainerState{Waiting: &corev1.ContainerStateWaiting{Reason: "ContainerCreating"}},
		})
	}
	return r
}

func (r *podRunner) logf(format string, args ...any) {
	r.n.o.Logf("node stand-in: pod %s/%s: %s", r.ns, r.name, fmt.Sprintf(format, args...))
}

func (r *podRunner) net() *podNet {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.pnet
}

// stop ends the pod's containers: SIGTERM, then SIGKILL after grace.
func (r *podRunner) stop(grace time.Duration) {
	r.mu.Lock()
	if grace < r.grace {
		r.grace = grace
	}
	r.mu.Unlock()
	r.cancel()
}

func (r *podRunner) stopGrace() time.Duration {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.grace
}

// run sets the pod up, runs its containers until the pod is to stop, and
// then removes the pod (if it was being deleted) and its namespace.
func (r *podRunner) run() {
	r.logf("starting on %s", r.ip)
	r.wg.Add(1)
	go r.writeStatus()
	pn, err := setUpPodNet(r.ctx, r.idx, r.ip, r.n.gateway(), r.n.resolvConf(r.ns))
	if err != nil {
		r.logf("network: %v", err)
		if pn != nil {
			pn.tearDown()
		}
	} else {
		r.mu.Lock()
		r.pnet = pn
		r.mu.Unlock()
		r.changed()
		for i := range r.spec.Containers {
			r.wg.Add(1)
			go r.runContainer(i)
		}
	}
	<-r.ctx.Done()
	r.wg.Wait()
	if pn != nil {
		r.mu.Lock()
		r.pnet = nil
		r.mu.Unlock()
		pn.tearDown()
	}
	if r.n.ctx.Err() != nil {
		return // the node stops; the pod stays in the API
	}
	// The kubelet's last word: the pod is gone from the node.
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	err = r.n.client.CoreV1().Pods(r.ns).Delete(ctx, r.name, metav1.DeleteOptions{
		GracePeriodSeconds: ptr.To[int64](0), Preconditions: &metav1.Preconditions{UID: &r.uid},
	})
	if err != nil && !apierrors.IsNotFound(err) && !apierrors.IsConflict(err) {
		r.logf("delete: %v", err)
	}
	r.logf("stopped")
}

func (r *podRunner) changed() {
	select {
	case r.dirty <- struct{}{}:
	default:
	}
}

func (r *podRunner) setStatus(i int, f func(cs *corev1.ContainerStatus)) {
	r.mu.Lock()
	f(&r.statuses[i])
	r.mu.Unlock()
	r.changed()
}

// writeStatus writes the pod's status whenever it changed, until the pod
// stops.
func (r *podRunner) writeStatus() {
	defer r.wg.Done()
	for {
		select {
		case <-r.ctx.Done():
			return
		case <-r.dirty:
		}
		ctx, cancel := context.WithTimeout(r.ctx, 10*time.Second)
		err := retry.RetryOnConflict(retry.DefaultRetry, func() error {
			p, err := r.n.client.CoreV1().Pods(r.ns).Get(ctx, r.name, metav1.GetOptions{})
			if err != nil {
				return err
			}
			if p.UID != r.uid {
				return apierrors.NewNotFound(corev1.Resource("pods"), r.name)
			}
			qos := p.Status.QOSClass // set at creation, immutable
			p.Status = r.podStatus()
			p.Status.QOSClass = qos
			_, err = r.n.client.CoreV1().Pods(r.ns).UpdateStatus(ctx, p, metav1.UpdateOptions{})
			return err
		})
		cancel()
		if err != nil && r.ctx.Err() == nil && !apierrors.IsNotFound(err) {
			r.logf("status: %v", err)
			// Try again on the next change or in a second.
			time.AfterFunc(time.Second, r.changed)
		}
	}
}

func (r *podRunner) podStatus() corev1.PodStatus {
	r.mu.Lock()
	defer r.mu.Unlock()
	st := corev1.PodStatus{Phase: corev1.PodPending, HostIP: "127.0.0.1", HostIPs: []corev1.HostIP{{IP: "127.0.0.1"}},
		StartTime: &r.started}
	if r.pnet != nil {
		st.PodIP, st.PodIPs = r.ip.String(), []corev1.PodIP{{IP: r.ip.String()}}
	}
	st.ContainerStatuses = make([]corev1.ContainerStatus, len(r.statuses))
	ready, running := true, false
	for i, cs := range r.statuses {
		st.ContainerStatuses[i] = *cs.DeepCopy()
		ready = ready && cs.Ready
		running = running || cs.State.Running != nil
	}
	if running {
		st.Phase = corev1.PodRunning
	}
	cond := func(t corev1.PodConditionType, ok bool) corev1.PodCondition {
		s := corev1.ConditionFalse
		if ok {
			s = corev1.ConditionTrue
		}
		return corev1.PodCondition{Type: t, Status: s, LastTransitionTime: r.started}
	}
	st.Conditions = []corev1.PodCondition{
		cond(corev1.PodScheduled, true), cond(corev1.PodInitialized, true),
		cond(corev1.ContainersReady, ready), cond(corev1.PodReady, ready),
	}
	return st
}

// event records a kubelet event about the pod.
func (r *podRunner) event(typ, reason, msg string) {
	ctx, cancel := context.WithTimeout(r.n.ctx, 5*time.Second)
	defer cancel()
	now := metav1.Now()
	_, err := r.n.client.CoreV1().Events(r.ns).Create(ctx, &corev1.Event{
		ObjectMeta:     metav1.ObjectMeta{GenerateName: r.name + "."},
		InvolvedObject: corev1.ObjectReference{Kind: "Pod", APIVersion: "v1", Namespace: r.ns, Name: r.name, UID: r.uid},
		Reason:         reason, Message: msg, Type: typ,
		Source:         corev1.EventSource{Component: "kubelet", Host: r.n.o.Name},
		FirstTimestamp: now, LastTimestamp: now, Count: 1,
	}, metav1.CreateOptions{})
	if err != nil && r.n.ctx.Err() == nil {
		r.logf("event %s: %v", reason, err)
	}
}

// sleep waits d or until the pod stops; false if it stopped.
func (r *podRunner) sleep(d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-r.ctx.Done():
		return false
	case <-t.C:
		return true
	}
}

// imageRepo is image without its tag or digest.
func imageRepo(image string) string {
	if i := strings.Index(image, "@"); i >= 0 {
		image = image[:i]
	}
	if i := strings.LastIndex(image, ":"); i > strings.LastIndex(image, "/") {
		image = image[:i]
	}
	return image
}

const maxBackoff = 20 * time.Second

// runContainer runs container i until the pod stops, restarting it with a
// back-off when it exits.
func (r *podRunner) runContainer(i int) {
	defer r.wg.Done()
	c := r.spec.Containers[i]
	backoff := time.Second
	next := func() time.Duration {
		d := backoff
		backoff = min(2*backoff, maxBackoff)
		return d
	}
	if h, ok := r.n.app(r.pod, &c); ok {
		r.serveApp(i, c, h)
		return
	}
	if !r.n.pullable(c.Image) {
		// As a kubelet whose registry answers "not found".
		msg := fmt.Sprintf("Failed to pull image %q: rpc error: code = NotFound desc = failed to pull and unpack image %q: "+
			"failed to resolve reference %q: %s: not found", c.Image, c.Image, c.Image, c.Image)
		for {
			r.event(corev1.EventTypeNormal, "Pulling", fmt.Sprintf("Pulling image %q", c.Image))
			r.setStatus(i, func(cs *corev1.ContainerStatus) {
				cs.State = corev1.ContainerState{Waiting: &corev1.ContainerStateWaiting{Reason: "ErrImagePull", Message: msg}}
			})
			r.event(corev1.EventTypeWarning, "Failed", msg)
			r.event(corev1.EventTypeWarning, "Failed", "Error: ErrImagePull")
			if !r.sleep(time.Second) {
				return
			}
			d := next()
			r.setStatus(i, func(cs *corev1.ContainerStatus) {
				cs.State = corev1.ContainerState{Waiting: &corev1.ContainerStateWaiting{Reason: "ImagePullBackOff",
					Message: fmt.Sprintf("Back-off pulling image %q", c.Image)}}
			})
			r.event(corev1.EventTypeNormal, "BackOff", fmt.Sprintf("Back-off pulling image %q", c.Image))
			r.event(corev1.EventTypeWarning, "Failed", "Error: ImagePullBackOff")
			if !r.sleep(d) {
				return
			}
		}
	}
	for {
		exitCode, reason, started, err := r.runOnce(i, c)
		if r.ctx.Err() != nil {
			return
		}
		if err != nil {
			r.setStatus(i, func(cs *corev1.ContainerStatus) {
				cs.State = corev1.ContainerState{Waiting: &corev1.ContainerStateWaiting{Reason: "CreateContainerConfigError", Message: err.Error()}}
			})
			r.event(corev1.EventTypeWarning, "Failed", "Error: "+err.Error())
			if !r.sleep(next()) {
				return
			}
			continue
		}
		d := next()
		now := metav1.Now()
		r.setStatus(i, func(cs *corev1.ContainerStatus) {
			cs.RestartCount++
			cs.Ready = false
			cs.LastTerminationState = corev1.ContainerState{Terminated: &corev1.ContainerStateTerminated{
				ExitCode: int32(exitCode), Reason: reason, StartedAt: started, FinishedAt: now}}
			cs.State = corev1.ContainerState{Waiting: &corev1.ContainerStateWaiting{Reason: "CrashLoopBackOff",
				Message: fmt.Sprintf("back-off %s restarting failed container=%s pod=%s_%s(%s)", d, c.Name, r.name, r.ns, r.uid)}}
		})
		r.event(corev1.EventTypeWarning, "BackOff", "Back-off restarting failed container "+c.Name+" in pod "+r.name)
		if !r.sleep(d) {
			return
		}
	}
}

// runOnce starts the container's process, probes it until it exits or
// the pod stops, and stops it (SIGTERM, SIGKILL after the grace) then.
func (r *podRunner) runOnce(i int, c corev1.Container) (exitCode int, reason string, started metav1.Time, err error) {
	env, err := r.env(c)
	if err != nil {
		return 0, "", started, err
	}
	args := append(append([]string(nil), c.Command...), c.Args...)
	if len(args) == 0 || filepath.Base(args[0]) != "sbx" {
		return 0, "", started, fmt.Errorf("the node stand-in runs only the sbx binary of image %s (command %q)", RelayRepo, c.Command)
	}
	logPath := filepath.Join(r.n.o.Dir, "logs", fmt.Sprintf("%s_%s_%s.log", r.ns, r.name, c.Name))
	logFile, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return 0, "", started, err
	}
	defer logFile.Close()
	cmd := exec.Command("ip", append([]string{"netns", "exec", r.net().ns, r.n.o.Sbx}, args[1:]...)...)
	cmd.Env = append([]string{"PATH=/usr/sbin:/usr/bin:/sbin:/bin", "HOSTNAME=" + r.name}, env...)
	cmd.Stdout, cmd.Stderr = logFile, logFile
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		return 0, "", started, err
	}
	started = metav1.Now()
	r.event(corev1.EventTypeNormal, "Started", "Started container "+c.Name)
	r.setStatus(i, func(cs *corev1.ContainerStatus) {
		cs.State = corev1.ContainerState{Running: &corev1.ContainerStateRunning{StartedAt: started}}
		cs.Started = ptr.To(true)
		cs.ContainerID = fmt.Sprintf("sbxnode://%d", cmd.Process.Pid)
	})
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()

	probeCtx, stopProbe := context.WithCancel(r.ctx)
	var probeW sync.WaitGroup
	if c.ReadinessProbe != nil && c.ReadinessProbe.HTTPGet != nil {
		probeW.Add(1)
		go func() {
			defer probeW.Done()
			r.probe(probeCtx, i, c)
		}()
	} else {
		r.setStatus(i, func(cs *corev1.ContainerStatus) { cs.Ready = true })
	}
	var werr error
	select {
	case werr = <-exited:
	case <-r.ctx.Done():
		_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGTERM)
		t := time.NewTimer(r.stopGrace())
		select {
		case werr = <-exited:
		case <-t.C:
			_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
			werr = <-exited
		}
		t.Stop()
	}
	stopProbe()
	probeW.Wait()
	code := cmd.ProcessState.ExitCode()
	reason = "Completed"
	var ee *exec.ExitError
	if errors.As(werr, &ee) {
		reason = "Error"
		if ws, ok := ee.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
			code = 128 + int(ws.Signal())
		}
	}
	r.logf("container %s exited: %d (%s)", c.Name, code, reason)
	return code, reason, started, nil
}

// probe runs the readiness probe until ctx ends.
func (r *podRunner) probe(ctx context.Context, i int, c corev1.Container) {
	h := c.ReadinessProbe.HTTPGet
	port := h.Port.IntValue()
	if port == 0 {
		for _, p := range c.Ports {
			if p.Name == h.Port.StrVal {
				port = int(p.ContainerPort)
			}
		}
	}
	url := fmt.Sprintf("http://%s%s", netip.AddrPortFrom(r.ip, uint16(port)), h.Path)
	client := &http.Client{Timeout: 2 * time.Second}
	defer client.CloseIdleConnections()
	// Every half second: quicker than the pod's periodSeconds, which only
	// slows the tests down.
	t := time.NewTicker(500 * time.Millisecond)
	defer t.Stop()
	last, failures := false, 0
	for {
		ok, why := false, ""
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
		if r.n.readinessFails(c.Image) {
			why = fmt.Sprintf("Get %q: context deadline exceeded (Client.Timeout exceeded while awaiting headers)", url)
		} else if resp, err := client.Do(req); err == nil {
			ok = resp.StatusCode >= 200 && resp.StatusCode < 400
			why = "HTTP probe failed with statuscode: " + fmt.Sprint(resp.StatusCode)
			resp.Body.Close()
		} else {
			why = err.Error()
		}
		if ctx.Err() != nil {
			return
		}
		// As the kubelet: a Warning event for a failing probe (every few
		// failures, not every one).
		if !ok {
			if failures%4 == 0 {
				r.event(corev1.EventTypeWarning, "Unhealthy", "Readiness probe failed: "+why)
			}
			failures++
		} else {
			failures = 0
		}
		if ok != last {
			last = ok
			r.setStatus(i, func(cs *corev1.ContainerStatus) { cs.Ready = ok })
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// env resolves the container's environment, Secret- and ConfigMap-backed
// variables included (read as the node: the Node authorizer allows the
// ones its pods refer to).
func (r *podRunner) env(c corev1.Container) ([]string, error) {
	ctx, cancel := context.WithTimeout(r.ctx, 10*time.Second)
	defer cancel()
	var out []string
	for _, e := range c.Env {
		v := e.Value
		if f := e.ValueFrom; f != nil {
			switch {
			case f.SecretKeyRef != nil:
				s, err := r.n.client.CoreV1().Secrets(r.ns).Get(ctx, f.SecretKeyRef.Name, metav1.GetOptions{})
				if err != nil {
					if ptr.Deref(f.SecretKeyRef.Optional, false) {
						continue
					}
					return nil, fmt.Errorf("secret %q not found: %w", f.SecretKeyRef.Name, err)
				}
				b, ok := s.Data[f.SecretKeyRef.Key]
				if !ok && !ptr.Deref(f.SecretKeyRef.Optional, false) {
					return nil, fmt.Errorf("couldn't find key %s in Secret %s/%s", f.SecretKeyRef.Key, r.ns, f.SecretKeyRef.Name)
				}
				v = string(b)
			case f.ConfigMapKeyRef != nil:
				cm, err := r.n.client.CoreV1().ConfigMaps(r.ns).Get(ctx, f.ConfigMapKeyRef.Name, metav1.GetOptions{})
				if err != nil {
					if ptr.Deref(f.ConfigMapKeyRef.Optional, false) {
						continue
					}
					return nil, fmt.Errorf("configmap %q not found: %w", f.ConfigMapKeyRef.Name, err)
				}
				s, ok := cm.Data[f.ConfigMapKeyRef.Key]
				if !ok && !ptr.Deref(f.ConfigMapKeyRef.Optional, false) {
					return nil, fmt.Errorf("couldn't find key %s in ConfigMap %s/%s", f.ConfigMapKeyRef.Key, r.ns, f.ConfigMapKeyRef.Name)
				}
				v = s
			case f.FieldRef != nil:
				switch f.FieldRef.FieldPath {
				case "metadata.name":
					v = r.name
				case "metadata.namespace":
					v = r.ns
				case "status.podIP":
					v = r.ip.String()
				}
			}
		}
		out = append(out, e.Name+"="+v)
	}
	return out, nil
}

// serveApp serves h on each of the container's ports inside the pod's
// network namespace until the pod stops.
func (r *podRunner) serveApp(i int, c corev1.Container, h http.Handler) {
	var srvs []*http.Server
	var wg sync.WaitGroup
	defer func() {
		for _, s := range srvs {
			_ = s.Close()
		}
		wg.Wait()
	}()
	for _, p := range c.Ports {
		ln, err := listenIn(r.net().ns, fmt.Sprintf(":%d", p.ContainerPort))
		if err != nil {
			r.setStatus(i, func(cs *corev1.ContainerStatus) {
				cs.State = corev1.ContainerState{Waiting: &corev1.ContainerStateWaiting{Reason: "RunContainerError", Message: err.Error()}}
			})
			<-r.ctx.Done()
			return
		}
		srv := &http.Server{Handler: h, ReadHeaderTimeout: 10 * time.Second, Protocols: new(http.Protocols)}
		// HTTP/1 and h2c: a gRPC port (appProtocol grpc) gets HTTP/2 from
		// the mesh.
		srv.Protocols.SetHTTP1(true)
		srv.Protocols.SetUnencryptedHTTP2(true)
		srvs = append(srvs, srv)
		wg.Add(1)
		go func() {
			defer wg.Done()
			_ = srv.Serve(ln)
		}()
	}
	started := metav1.Now()
	r.setStatus(i, func(cs *corev1.ContainerStatus) {
		cs.State = corev1.ContainerState{Running: &corev1.ContainerStateRunning{StartedAt: started}}
		cs.Started, cs.Ready = ptr.To(true), true
		cs.ContainerID = "sbxnode://app/" + string(r.uid) + "/" + c.Name
	})
	<-r.ctx.Done()
}

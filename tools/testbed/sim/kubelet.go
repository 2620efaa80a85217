package sim

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"strconv"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/client-go/util/retry"
)

// relayPod is one relay pod and its simulated kubelet: it resolves the
// container's environment, runs the relay, probes its readiness, restarts
// it when it exits, and keeps the Pod object's status true to all that.
type relayPod struct {
	c      *controller
	ns     string
	deploy string
	name   string
	ip     netip.Addr
	hash   string
	// pullFailures counts failed image pulls (only the runner goroutine).
	pullFailures int
	spec         corev1.PodSpec
	ctx          context.Context // cancelled when the pod is deleted
	cancel       context.CancelFunc
	done         chan struct{}

	// statusMu orders readiness changes: the Pod object is written
	// before ready says so, as a Deployment controller learns readiness
	// only from the API.
	statusMu sync.Mutex

	mu       sync.Mutex
	outbound *connSet // connections the current run dialed
	ready    bool     // what the Pod object's Ready condition says
	restarts int32
	crashRun func() // crashes the current container run
	termRun  func() // stops the current container run gracefully
	sockets  map[*podListener]bool
	deleted  bool
}

func (p *relayPod) isReady() bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.ready
}

// Name is the pod's name.
func (p *relayPod) Name() string { return p.name }

// stop ends the pod: SIGTERM to the relay (it drains), a kill after the
// pod's termination grace period, then the Pod object is deleted if asked.
// A deleted pod is marked terminating in the API first, as the API server
// does before any kubelet sends SIGTERM: whoever lists pods while it
// drains sees it going.
func (p *relayPod) stop(deleteObject bool) {
	p.mu.Lock()
	p.deleted = deleteObject
	p.mu.Unlock()
	if deleteObject {
		p.markTerminating()
	}
	p.cancel()
	<-p.done
}

// markTerminating sets the Pod object's deletionTimestamp.
func (p *relayPod) markTerminating() {
	ctx := context.Background()
	err := retry.RetryOnConflict(retry.DefaultRetry, func() error {
		pod, err := p.c.clients.Kube.CoreV1().Pods(p.ns).Get(ctx, p.name, metav1.GetOptions{})
		if err != nil || pod.DeletionTimestamp != nil {
			return err
		}
		now := metav1.Now()
		pod.DeletionTimestamp = &now
		pod.DeletionGracePeriodSeconds = p.spec.TerminationGracePeriodSeconds
		_, err = p.c.clients.Kube.CoreV1().Pods(p.ns).Update(ctx, pod, metav1.UpdateOptions{})
		return err
	})
	if err != nil && !apierrors.IsNotFound(err) {
		p.c.log.Warn("cannot mark pod terminating", "pod", p.ns+"/"+p.name, "error", err)
	}
}

// crash kills the relay container as kill -9 would: every socket it holds
// closes at once. The kubelet restarts it.
func (p *relayPod) crash() bool {
	p.mu.Lock()
	f := p.crashRun
	p.mu.Unlock()
	if f == nil {
		return false
	}
	f()
	return true
}

// restart stops the relay container gracefully (SIGTERM: it drains and
// tells connected daemons why); the kubelet then starts it again.
func (p *relayPod) restart() bool {
	p.mu.Lock()
	f := p.termRun
	p.mu.Unlock()
	if f == nil {
		return false
	}
	f()
	return true
}

// kubelet runs the container until the pod is deleted.
func (p *relayPod) kubelet() {
	log := p.c.log.With("pod", p.ns+"/"+p.name)
	defer func() {
		p.c.net.RemovePod(p.ns, p.name)
		p.c.logs.forget(p.ns, p.name)
		p.mu.Lock()
		del := p.deleted
		p.mu.Unlock()
		if del {
			err := p.c.clients.Kube.CoreV1().Pods(p.ns).Delete(context.Background(), p.name, metav1.DeleteOptions{})
			if err != nil && !apierrors.IsNotFound(err) {
				log.Warn("cannot delete pod", "error", err)
			}
		}
	}()
	container := p.spec.Containers[0]
	for _, ct := range p.spec.Containers {
		if _, ok := relayCommand(ct); ok {
			container = ct
			break
		}
	}
	for {
		if p.ctx.Err() != nil {
			return
		}
		err := p.runOnce(container)
		if p.ctx.Err() != nil {
			return
		}
		log.Info("relay container exited; restarting", "error", err)
		select {
		case <-p.ctx.Done():
			return
		case <-time.After(p.c.restartBackoff):
		}
	}
}

// runOnce starts the container once and returns when it exits.
func (p *relayPod) runOnce(ct corev1.Container) error {
	if p.c.pullable != nil && !p.c.pullable(ct.Image) {
		// The first attempt is ErrImagePull, the next ones back off.
		reason, msg := "ErrImagePull", fmt.Sprintf("failed to pull and unpack image %q: not found", ct.Image)
		if p.pullFailures > 0 {
			reason, msg = "ImagePullBackOff", fmt.Sprintf("Back-off pulling image %q", ct.Image)
		}
		p.pullFailures++
		p.setWaiting(reason, msg)
		return fmt.Errorf("image %s: %s", ct.Image, reason)
	}
	args, _ := relayCommand(ct)
	env, err := p.resolveEnv(ct)
	if err != nil {
		p.setWaiting("CreateContainerConfigError", err.Error())
		return err
	}
	if p.c.run == nil {
		msg := "the simulator has no relay implementation to run"
		p.setWaiting("CrashLoopBackOff", msg)
		return errors.New(msg)
	}
	runCtx, stopRun := context.WithCancel(p.ctx)
	defer stopRun()
	crashed := make(chan struct{})
	var crashOnce sync.Once
	out := &connSet{}
	p.mu.Lock()
	p.sockets = map[*podListener]bool{}
	p.outbound = out
	p.crashRun = func() {
		crashOnce.Do(func() {
			close(crashed)
			p.closeSockets()
			stopRun()
		})
	}
	p.termRun = stopRun
	p.mu.Unlock()
	defer func() {
		p.mu.Lock()
		p.crashRun, p.termRun = nil, nil
		p.mu.Unlock()
		p.closeSockets()
	}()

	p.setRunning()
	proc := RelayProcess{
		Args:   args,
		Getenv: func(k string) string { return env[k] },
		Listen: p.listen,
		Resolver: &Resolver{net: p.c.net, ns: p.ns, src: Source{Namespace: p.ns, Labels: p.labels()},
			track: func(c net.Conn) net.Conn {
				tc, err := out.add(c)
				if err != nil {
					return c // the run is over; the relay will see it close soon
				}
				return tc
			}},
		PodIP:  p.ip,
		Logger: p.c.logs.logger(p.c.log.With("pod", p.ns+"/"+p.name, "component", "relay"), p.ns, p.name),
	}
	exited := make(chan error, 1)
	go func() { exited <- p.c.run(runCtx, proc) }()

	probeDone := make(chan struct{})
	go func() {
		defer close(probeDone)
		p.probe(runCtx, ct)
	}()
	defer func() {
		stopRun()
		<-probeDone
	}()

	select {
	case err := <-exited:
		p.setTerminated(err, false)
		return fmt.Errorf("relay exited: %v", err)
	case <-crashed:
		select {
		case <-exited:
		case <-time.After(2 * time.Second):
			p.c.log.Warn("crashed relay did not return after its sockets closed", "pod", p.name)
			<-exited
		}
		p.setTerminated(errors.New("killed"), true)
		return errors.New("relay container killed (fault injection)")
	case <-p.ctx.Done():
		// SIGTERM, then SIGKILL after the termination grace period.
		grace := 30 * time.Second
		if p.spec.TerminationGracePeriodSeconds != nil {
			grace = time.Duration(*p.spec.TerminationGracePeriodSeconds) * time.Second
		}
		p.setNotReady()
		select {
		case <-exited:
		case <-time.After(grace):
			p.closeSockets()
			<-exited
		}
		return errStopped
	}
}

func (p *relayPod) labels() map[string]string {
	pod, err := p.c.clients.Kube.CoreV1().Pods(p.ns).Get(context.Background(), p.name, metav1.GetOptions{})
	if err != nil {
		return nil
	}
	return pod.Labels
}

// probe runs the readiness probe until ctx ends, updating readiness.
func (p *relayPod) probe(ctx context.Context, ct corev1.Container) {
	client := &http.Client{Timeout: time.Second, Transport: &http.Transport{DisableKeepAlives: true}}
	defer client.CloseIdleConnections()
	t := time.NewTicker(p.c.probeEvery)
	defer t.Stop()
	for {
		ok := p.probeOnce(ctx, client, ct)
		p.setReady(ok)
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

func (p *relayPod) probeOnce(ctx context.Context, client *http.Client, ct corev1.Container) bool {
	pr := ct.ReadinessProbe
	if pr == nil {
		return true
	}
	switch {
	case pr.HTTPGet != nil:
		port, ok := containerPort(ct, pr.HTTPGet.Port)
		if !ok {
			return false
		}
		addr, err := p.c.net.PodPortAddr(p.ns, p.name, port)
		if err != nil {
			return false
		}
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+addr+pr.HTTPGet.Path, nil)
		if err != nil {
			return false
		}
		for _, h := range pr.HTTPGet.HTTPHeaders {
			req.Header.Set(h.Name, h.Value)
		}
		resp, err := client.Do(req)
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode >= 200 && resp.StatusCode < 400
	case pr.TCPSocket != nil:
		port, ok := containerPort(ct, pr.TCPSocket.Port)
		if !ok {
			return false
		}
		addr, err := p.c.net.PodPortAddr(p.ns, p.name, port)
		if err != nil {
			return false
		}
		conn, err := net.DialTimeout("tcp", addr, time.Second)
		if err != nil {
			return false
		}
		conn.Close()
		return true
	}
	return true
}

// containerPort resolves a probe port (number or container port name).
func containerPort(ct corev1.Container, port intstr.IntOrString) (int32, bool) {
	if port.Type == intstr.Int {
		return port.IntVal, port.IntVal > 0
	}
	for _, cp := range ct.Ports {
		if cp.Name == port.StrVal {
			return cp.ContainerPort, true
		}
	}
	if n, err := strconv.Atoi(port.StrVal); err == nil {
		return int32(n), true
	}
	return 0, false
}

// updateStatus applies f to the Pod object's status.
func (p *relayPod) updateStatus(f func(*corev1.PodStatus)) {
	ctx := context.Background()
	err := retry.RetryOnConflict(retry.DefaultRetry, func() error {
		pod, err := p.c.clients.Kube.CoreV1().Pods(p.ns).Get(ctx, p.name, metav1.GetOptions{})
		if err != nil {
			return err
		}
		f(&pod.Status)
		_, err = p.c.clients.Kube.CoreV1().Pods(p.ns).UpdateStatus(ctx, pod, metav1.UpdateOptions{})
		return err
	})
	if err != nil && !apierrors.IsNotFound(err) {
		p.c.log.Warn("cannot update pod status", "pod", p.ns+"/"+p.name, "error", err)
	}
}

func setCondition(st *corev1.PodStatus, t corev1.PodConditionType, ok bool) {
	v := corev1.ConditionFalse
	if ok {
		v = corev1.ConditionTrue
	}
	for i := range st.Conditions {
		if st.Conditions[i].Type == t {
			if st.Conditions[i].Status != v {
				st.Conditions[i].Status = v
				st.Conditions[i].LastTransitionTime = metav1.Now()
			}
			return
		}
	}
	st.Conditions = append(st.Conditions, corev1.PodCondition{Type: t, Status: v, LastTransitionTime: metav1.Now()})
}

func (p *relayPod) setWaiting(reason, msg string) {
	p.setNotReadyFlag()
	p.updateStatus(func(st *corev1.PodStatus) {
		setCondition(st, corev1.PodReady, false)
		setCondition(st, corev1.ContainersReady, false)
		for i := range st.ContainerStatuses {
			st.ContainerStatuses[i].Ready = false
			st.ContainerStatuses[i].State = corev1.ContainerState{Waiting: &corev1.ContainerStateWaiting{Reason: reason, Message: msg}}
		}
	})
	p.syncDeployment()
}

func (p *relayPod) setRunning() {
	now := metav1.Now()
	yes := true
	p.updateStatus(func(st *corev1.PodStatus) {
		st.Phase = corev1.PodRunning
		for i := range st.ContainerStatuses {
			st.ContainerStatuses[i].Started = &yes
			st.ContainerStatuses[i].State = corev1.ContainerState{Running: &corev1.ContainerStateRunning{StartedAt: now}}
		}
	})
}

func (p *relayPod) setTerminated(err error, killed bool) {
	p.setNotReadyFlag()
	p.mu.Lock()
	p.restarts++
	restarts := p.restarts
	p.mu.Unlock()
	reason, code := "Completed", int32(0)
	msg := ""
	if err != nil {
		reason, code, msg = "Error", 1, err.Error()
	}
	if killed {
		reason, code = "Error", 137
	}
	now := metav1.Now()
	p.updateStatus(func(st *corev1.PodStatus) {
		setCondition(st, corev1.PodReady, false)
		setCondition(st, corev1.ContainersReady, false)
		for i := range st.ContainerStatuses {
			cs := &st.ContainerStatuses[i]
			cs.Ready = false
			cs.RestartCount = restarts
			cs.LastTerminationState = corev1.ContainerState{Terminated: &corev1.ContainerStateTerminated{
				ExitCode: code, Reason: reason, Message: msg, FinishedAt: now}}
			cs.State = corev1.ContainerState{Waiting: &corev1.ContainerStateWaiting{Reason: "CrashLoopBackOff",
				Message: "back-off restarting failed container relay"}}
		}
	})
	p.syncDeployment()
}

// setNotReadyFlag marks the pod not ready ahead of the Pod object (a
// container that stopped or waits); going ready goes through setReady.
func (p *relayPod) setNotReadyFlag() {
	p.mu.Lock()
	p.ready = false
	p.mu.Unlock()
}

func (p *relayPod) setNotReady() {
	p.setReady(false)
}

// setReady records a probe result; the Pod object changes only on a
// transition, and isReady follows once the object says so.
func (p *relayPod) setReady(ok bool) {
	p.statusMu.Lock()
	defer p.statusMu.Unlock()
	if p.isReady() == ok {
		return
	}
	p.updateStatus(func(st *corev1.PodStatus) {
		setCondition(st, corev1.PodReady, ok)
		setCondition(st, corev1.ContainersReady, ok)
		for i := range st.ContainerStatuses {
			st.ContainerStatuses[i].Ready = ok
		}
	})
	p.mu.Lock()
	p.ready = ok
	p.mu.Unlock()
	p.syncDeployment()
}

func (p *relayPod) syncDeployment() {
	if p.ctx.Err() != nil {
		return
	}
	if err := setDeploymentStatus(context.Background(), p.c.clients, p.ns, p.deploy, 1, p.isReady()); err != nil {
		p.c.log.Warn("cannot update deployment status", "deployment", p.ns+"/"+p.deploy, "error", err)
	}
}

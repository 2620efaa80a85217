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
	spec   corev1.PodSpec
	ctx    context.Context // cancelled when the pod is deleted
	cancel context.CancelFunc
	done   chan struct{}

	mu       sync.Mutex
	outbound *connSet // connections the current run dialed
	ready    bool
	restarts int32
	crashRun func() // crashes the current container run
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
func (p *relayPod) stop(deleteObject bool) {
	p.mu.Lock()
	p.deleted = deleteObject
	p.mu.Unlock()
	p.cancel()
	<-p.done
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

// kubelet runs the container until the pod is deleted.
func (p *relayPod) kubelet() {
	log := p.c.log.With("pod", p.ns+"/"+p.name)
	defer func() {
		p.c.net.RemovePod(p.ns, p.name)
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
	p.mu.Unlock()
	defer func() {
		p.mu.Lock()
		p.crashRun = nil
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
		Logger: p.c.log.With("pod", p.ns+"/"+p.name, "component", "relay"),
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
		grace := 2 * time.Second
		select {
		case err := <-exited:
			_ = err
		case <-time.After(grace):
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

// resolveEnv builds the container environment as the kubelet does.
func (p *relayPod) resolveEnv(ct corev1.Container) (map[string]string, error) {
	ctx := context.Background()
	env := map[string]string{}
	core := p.c.clients.Kube.CoreV1()
	for _, from := range ct.EnvFrom {
		switch {
		case from.SecretRef != nil:
			s, err := core.Secrets(p.ns).Get(ctx, from.SecretRef.Name, metav1.GetOptions{})
			if err != nil {
				if optional(from.SecretRef.Optional) && apierrors.IsNotFound(err) {
					continue
				}
				return nil, fmt.Errorf("secret %q not found", from.SecretRef.Name)
			}
			for k, v := range secretData(s) {
				env[from.Prefix+k] = v
			}
		case from.ConfigMapRef != nil:
			cm, err := core.ConfigMaps(p.ns).Get(ctx, from.ConfigMapRef.Name, metav1.GetOptions{})
			if err != nil {
				if optional(from.ConfigMapRef.Optional) && apierrors.IsNotFound(err) {
					continue
				}
				return nil, fmt.Errorf("configmap %q not found", from.ConfigMapRef.Name)
			}
			for k, v := range cm.Data {
				env[from.Prefix+k] = v
			}
		}
	}
	for _, e := range ct.Env {
		if e.ValueFrom == nil {
			env[e.Name] = e.Value
			continue
		}
		vf := e.ValueFrom
		switch {
		case vf.SecretKeyRef != nil:
			ref := vf.SecretKeyRef
			s, err := core.Secrets(p.ns).Get(ctx, ref.Name, metav1.GetOptions{})
			if err != nil {
				if optional(ref.Optional) && apierrors.IsNotFound(err) {
					continue
				}
				return nil, fmt.Errorf("secret %q not found", ref.Name)
			}
			v, ok := secretData(s)[ref.Key]
			if !ok {
				if optional(ref.Optional) {
					continue
				}
				return nil, fmt.Errorf("couldn't find key %s in Secret %s/%s", ref.Key, p.ns, ref.Name)
			}
			env[e.Name] = v
		case vf.ConfigMapKeyRef != nil:
			ref := vf.ConfigMapKeyRef
			cm, err := core.ConfigMaps(p.ns).Get(ctx, ref.Name, metav1.GetOptions{})
			if err != nil {
				if optional(ref.Optional) && apierrors.IsNotFound(err) {
					continue
				}
				return nil, fmt.Errorf("configmap %q not found", ref.Name)
			}
			v, ok := cm.Data[ref.Key]
			if !ok && !optional(ref.Optional) {
				return nil, fmt.Errorf("couldn't find key %s in ConfigMap %s/%s", ref.Key, p.ns, ref.Name)
			}
			env[e.Name] = v
		case vf.FieldRef != nil:
			switch vf.FieldRef.FieldPath {
			case "metadata.name":
				env[e.Name] = p.name
			case "metadata.namespace":
				env[e.Name] = p.ns
			case "status.podIP":
				env[e.Name] = p.ip.String()
			case "spec.nodeName":
				env[e.Name] = "sim-node"
			default:
				return nil, fmt.Errorf("env %s: fieldRef %q is not simulated", e.Name, vf.FieldRef.FieldPath)
			}
		default:
			return nil, fmt.Errorf("env %s: valueFrom source is not simulated", e.Name)
		}
	}
	return env, nil
}

func optional(b *bool) bool { return b != nil && *b }

// secretData returns a Secret's decoded values; stringData is included for
// objects written straight into a fake without the API server's merge.
func secretData(s *corev1.Secret) map[string]string {
	out := map[string]string{}
	for k, v := range s.Data {
		out[k] = string(v)
	}
	for k, v := range s.StringData {
		out[k] = v
	}
	return out
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
	p.setReadyFlag(false)
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
	p.setReadyFlag(false)
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

func (p *relayPod) setNotReady() {
	p.setReady(false)
}

func (p *relayPod) setReadyFlag(v bool) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	changed := p.ready != v
	p.ready = v
	return changed
}

// setReady records a probe result; the Pod object changes only on a
// transition.
func (p *relayPod) setReady(ok bool) {
	if !p.setReadyFlag(ok) {
		return
	}
	p.updateStatus(func(st *corev1.PodStatus) {
		setCondition(st, corev1.PodReady, ok)
		setCondition(st, corev1.ContainersReady, ok)
		for i := range st.ContainerStatuses {
			st.ContainerStatuses[i].Ready = ok
		}
	})
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

// listen binds a free loopback port for a socket the relay asks for and
// records it as the pod's socket on the requested port.
func (p *relayPod) listen(network, addr string) (net.Listener, error) {
	host, portStr, err := net.SplitHostPort(addr)
	if err != nil {
		return nil, err
	}
	port, err := strconv.ParseUint(portStr, 10, 16)
	if err != nil || port == 0 {
		return nil, fmt.Errorf("listen %s: the simulator needs a fixed port", addr)
	}
	local := false
	switch host {
	case "", "0.0.0.0", "::":
	case p.ip.String():
	default:
		ip, err := netip.ParseAddr(host)
		if host == "localhost" || err == nil && ip.IsLoopback() {
			local = true
		} else {
			return nil, &net.OpError{Op: "listen", Net: network, Err: errors.New("cannot assign requested address")}
		}
	}
	if _, err := p.c.net.PodPortAddr(p.ns, p.name, int32(port)); err == nil {
		return nil, &net.OpError{Op: "listen", Net: network, Err: errors.New("address already in use")}
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	pl := &podListener{Listener: ln, pod: p, port: int32(port)}
	p.mu.Lock()
	if p.sockets == nil {
		p.mu.Unlock()
		ln.Close()
		return nil, errors.New("container is not running")
	}
	p.sockets[pl] = true
	p.mu.Unlock()
	if err := p.c.net.BindPodPort(p.ns, p.name, int32(port), ln.Addr().String(), local); err != nil {
		ln.Close()
		return nil, err
	}
	return pl, nil
}

// closeSockets closes every listener of the current run and every
// connection accepted on them.
func (p *relayPod) closeSockets() {
	p.mu.Lock()
	socks := p.sockets
	out := p.outbound
	p.sockets = nil
	p.outbound = nil
	p.mu.Unlock()
	for pl := range socks {
		pl.closeAll()
	}
	if out != nil {
		out.closeAll()
	}
}

// podListener is a relay socket: closing it unbinds the pod port; a crash
// closes the connections it accepted too.
type podListener struct {
	net.Listener
	pod   *relayPod
	port  int32
	conns connSet
	once  sync.Once
}

func (l *podListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	return l.conns.add(c)
}

func (l *podListener) Close() error {
	l.once.Do(func() { l.pod.c.net.UnbindPodPort(l.pod.ns, l.pod.name, l.port) })
	return l.Listener.Close()
}

func (l *podListener) closeAll() {
	_ = l.Close()
	l.conns.closeAll()
}

// connSet tracks open connections so that a crash can close them all.
type connSet struct {
	mu     sync.Mutex
	conns  map[net.Conn]bool
	closed bool
}

func (s *connSet) add(c net.Conn) (net.Conn, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		c.Close()
		return nil, net.ErrClosed
	}
	if s.conns == nil {
		s.conns = map[net.Conn]bool{}
	}
	tc := &trackedConn{Conn: c, set: s}
	s.conns[tc] = true
	return tc, nil
}

func (s *connSet) closeAll() {
	s.mu.Lock()
	s.closed = true
	conns := s.conns
	s.conns = nil
	s.mu.Unlock()
	for c := range conns {
		c.Close()
	}
}

// trackedConn removes itself from its set when closed.
type trackedConn struct {
	net.Conn
	set  *connSet
	once sync.Once
}

func (c *trackedConn) Close() error {
	c.once.Do(func() {
		c.set.mu.Lock()
		delete(c.set.conns, c)
		c.set.mu.Unlock()
	})
	return c.Conn.Close()
}

// CloseWrite half-closes the TCP connection.
func (c *trackedConn) CloseWrite() error {
	if cw, ok := c.Conn.(interface{ CloseWrite() error }); ok {
		return cw.CloseWrite()
	}
	return errors.New("half-close not supported")
}

package cluster

import (
	"errors"
	"fmt"
	"net/netip"
	"strconv"
	"strings"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/utils/ptr"
)

// Relay ports and timings. They are part of the relay command-line
// contract (see the relay package).
const (
	// TunnelPort is the relay's tunnel listener, bound to 127.0.0.1 so it is
	// reachable only through a port-forward.
	TunnelPort = 7000
	// HealthPort serves /healthz, /readyz and /metrics on all interfaces.
	HealthPort = 7001
	// FirstInboundPort is the relay container port of the first mapping;
	// each further mapping takes the next port.
	FirstInboundPort = 20001
	// RelayUID is the numeric non-root user the relay runs as (the
	// distroless "nonroot" user).
	RelayUID = 65532

	relayGrace        = 10 * time.Second
	relayDrainTimeout = 20 * time.Second
	relayContainer    = "relay"
)

// Stream cap of the relay (its --max-streams) as sbx configures it.
const (
	// DefaultRelayMaxStreams is the relay's own default cap
	// (relay.DefaultMaxStreams, checked by a test): sbx passes no
	// --max-streams for it, and the memory below is sized for it.
	DefaultRelayMaxStreams = 128
	// MaxRelayMaxStreams bounds what a user may configure. The relay's
	// memory grows by ~2.5 MiB a stream (relayMemory), so 4096 streams
	// already take a 10304Mi limit and a 1288Mi request: more would not
	// be scheduled on the nodes of a typical staging cluster, and a
	// developer's app that needs more than 4096 concurrent connections
	// through one laptop is better served by smaller connection pools.
	MaxRelayMaxStreams = 4096
)

// ValidateRelayMaxStreams checks a configured stream cap: 0 means the
// default, otherwise 1-MaxRelayMaxStreams.
func ValidateRelayMaxStreams(n int) error {
	if n < 0 || n > MaxRelayMaxStreams {
		return fmt.Errorf("relay stream cap %d is out of range; allowed 1-%d (0 or unset: the relay's default %d; each stream adds ~2.5 MiB to the relay pod's memory)",
			n, MaxRelayMaxStreams, DefaultRelayMaxStreams)
	}
	return nil
}

// MaxRelayDeny bounds the extra ranges the relay refuses (its --deny, one
// argument each in the relay Deployment): enough for a cluster's node,
// control-plane and service networks and a few hosts, while the pod spec
// stays readable.
const MaxRelayDeny = 64

// ParseRelayDeny reads one entry of the relay's deny list (outbound.deny
// in the sbx config, sbx render --relay-deny): an IP address or a CIDR
// prefix. Host bits are dropped (10.1.2.3/8 is 10.0.0.0/8) and an
// IPv4-mapped entry (::ffff:10.0.0.0/104) is its IPv4 range, as the relay
// reads its --deny; package config mirrors this.
func ParseRelayDeny(s string) (netip.Prefix, error) {
	bad := fmt.Errorf("%q is not an IP address or CIDR prefix; want an address or range the relay must never dial, e.g. 10.0.0.0/24 or 100.64.0.7", s)
	var p netip.Prefix
	if !strings.Contains(s, "/") {
		a, err := netip.ParseAddr(s)
		if err != nil || a.Zone() != "" {
			return netip.Prefix{}, bad
		}
		p = netip.PrefixFrom(a, a.BitLen())
	} else {
		var err error
		if p, err = netip.ParsePrefix(s); err != nil {
			return netip.Prefix{}, bad
		}
	}
	if p.Addr().Is4In6() && p.Bits() >= 96 {
		p = netip.PrefixFrom(p.Addr().Unmap(), p.Bits()-96)
	}
	return p.Masked(), nil
}

// ValidateRelayDeny checks a deny list as Options carries it: at most
// MaxRelayDeny entries, each as ParseRelayDeny returns it, none twice.
func ValidateRelayDeny(deny []netip.Prefix) error {
	if len(deny) > MaxRelayDeny {
		return fmt.Errorf("the relay deny list has %d entries; allowed at most %d (merge neighbouring ranges into wider CIDRs)", len(deny), MaxRelayDeny)
	}
	seen := map[netip.Prefix]bool{}
	var errs []error
	for i, p := range deny {
		switch {
		case !p.IsValid():
			errs = append(errs, fmt.Errorf("relay deny entry %d is not a CIDR prefix", i))
		case p != p.Masked() || (p.Addr().Is4In6() && p.Bits() >= 96):
			canon, _ := ParseRelayDeny(p.String())
			errs = append(errs, fmt.Errorf("relay deny entry %s is not in canonical form; write %s", p, canon))
		case seen[p]:
			errs = append(errs, fmt.Errorf("relay deny entry %s is listed twice", p))
		}
		seen[p] = true
	}
	return errors.Join(errs...)
}

// The relay's memory: a few MiB when idle, but every stream it serves may
// buffer about 2.5 MiB when its reader stalls (relay.DefaultMaxStreams
// explains the budget). The limit never goes below what the default cap
// has always had.
const (
	relayMemoryFloorMiB = 512
	// relayMemoryBaseMiB is the process without streams: runtime, code,
	// metrics, tunnel sessions.
	relayMemoryBaseMiB = 64
	// relayMemoryStepMiB rounds the limit up, so nearby caps share a size.
	relayMemoryStepMiB = 64
	// relayMemoryRatio is limit/request: the most some LimitRanges allow
	// (maxLimitRequestRatio), with the smallest request that keeps it.
	relayMemoryRatio = 8
)

// relayMemory sizes the relay container for a stream cap (0: the
// default): limit = max(512Mi, streams × 2.5 MiB + 64 MiB) rounded up to
// 64 MiB, request = limit/8, and GOMEMLIMIT at 90% of the limit, in the
// Go runtime's unit syntax (a Kubernetes "460Mi" would make the runtime
// throw at startup), so the runtime collects harder before the kernel
// kills the pod. The default cap gives 512Mi, 64Mi and 460MiB.
func relayMemory(maxStreams int) (limit, request, goMemLimit string) {
	if maxStreams <= 0 {
		maxStreams = DefaultRelayMaxStreams
	}
	// In half-MiB units: 2.5 MiB a stream is 5.
	half := 5*maxStreams + 2*relayMemoryBaseMiB
	limitMiB := (half + 2*relayMemoryStepMiB - 1) / (2 * relayMemoryStepMiB) * relayMemoryStepMiB
	limitMiB = max(limitMiB, relayMemoryFloorMiB)
	return fmt.Sprintf("%dMi", limitMiB), fmt.Sprintf("%dMi", limitMiB/relayMemoryRatio), fmt.Sprintf("%dMiB", limitMiB*9/10)
}

// relayPodLabels are the relay pod's labels. Every key is sbx's own
// (app.kubernetes.io/managed-by=sbx or sbx.dev/…), so no baseline Service
// selector can match them; Plan also checks that against the real Services.
func relayPodLabels(sandbox, key string) map[string]string {
	return map[string]string{
		LabelManagedBy:  ManagedByValue,
		LabelSandbox:    sandbox,
		LabelRoutingKey: key,
		LabelComponent:  "relay",
	}
}

// relaySelector selects the relay pods of a sandbox. It leaves out the
// routing key because a Deployment's selector is immutable and the key may
// change on a later apply.
func relaySelector(sandbox string) map[string]string {
	return map[string]string{LabelSandbox: sandbox, LabelComponent: "relay"}
}

// RelayArgs returns the `sbx relay` arguments for a sandbox, exactly as the
// relay command-line contract specifies. verifier is the token's verifier
// (see Options.TokenVerifier): a new token changes the args, and so rolls
// the relay pod. maxStreams is the stream cap; 0 or the default adds no
// flag, so existing relays keep their exact args. deny adds one --deny per
// range, in order, after the other flags (none when empty, again keeping
// existing relays' args).
func RelayArgs(sandbox, verifier string, workloads []ResolvedWorkload, maxStreams int, deny []netip.Prefix) []string {
	args := []string{"relay",
		"--sandbox", sandbox,
		tokenSHA256Flag, verifier,
		"--listen", fmt.Sprintf("127.0.0.1:%d", TunnelPort),
		"--health-listen", fmt.Sprintf(":%d", HealthPort),
	}
	for _, w := range workloads {
		for _, p := range w.Ports {
			args = append(args, "--inbound", fmt.Sprintf("%d=%s/%d/%s", p.RelayPort, w.Local.Name, p.Port, p.Protocol))
		}
	}
	args = append(args, "--grace", relayGrace.String(), "--drain-timeout", relayDrainTimeout.String())
	if maxStreams > 0 && maxStreams != DefaultRelayMaxStreams {
		args = append(args, "--max-streams", strconv.Itoa(maxStreams))
	}
	for _, p := range deny {
		args = append(args, "--deny", p.String())
	}
	return args
}

// tokenSHA256Flag is the relay flag carrying the token's verifier.
const tokenSHA256Flag = "--token-sha256"

// relayVerifier returns the token verifier a relay pod spec passes to the
// relay ("" when it passes none): what that relay checks Hellos against.
func relayVerifier(ps *corev1.PodSpec) string {
	for _, c := range ps.Containers {
		if c.Name != relayContainer {
			continue
		}
		for i, a := range c.Args {
			if v, ok := strings.CutPrefix(a, tokenSHA256Flag+"="); ok {
				return v
			}
			if a == tokenSHA256Flag && i+1 < len(c.Args) {
				return c.Args[i+1]
			}
		}
	}
	return ""
}

func relayDeployment(sandbox, namespace, key, verifier, image string, maxStreams int, deny []netip.Prefix, workloads []ResolvedWorkload) *appsv1.Deployment {
	memLimit, memRequest, goMemLimit := relayMemory(maxStreams)
	ports := []corev1.ContainerPort{
		{Name: "tunnel", ContainerPort: TunnelPort, Protocol: corev1.ProtocolTCP},
		{Name: "health", ContainerPort: HealthPort, Protocol: corev1.ProtocolTCP},
	}
	for _, w := range workloads {
		for _, p := range w.Ports {
			ports = append(ports, corev1.ContainerPort{Name: fmt.Sprintf("in-%d", p.RelayPort), ContainerPort: p.RelayPort, Protocol: corev1.ProtocolTCP})
		}
	}
	probe := func(path string, period int32) *corev1.Probe {
		return &corev1.Probe{
			ProbeHandler: corev1.ProbeHandler{HTTPGet: &corev1.HTTPGetAction{
				Path: path, Port: intstr.FromString("health"), Scheme: corev1.URISchemeHTTP,
			}},
			PeriodSeconds: period, TimeoutSeconds: 2, FailureThreshold: 3,
		}
	}
	podLabels := relayPodLabels(sandbox, key)
	return &appsv1.Deployment{
		TypeMeta:   metav1.TypeMeta{APIVersion: "apps/v1", Kind: "Deployment"},
		ObjectMeta: objectMeta(RelayName(sandbox), namespace, sandbox, key),
		Spec: appsv1.DeploymentSpec{
			Replicas:             ptr.To[int32](1),
			RevisionHistoryLimit: ptr.To[int32](2),
			Selector:             &metav1.LabelSelector{MatchLabels: relaySelector(sandbox)},
			// Keep the old relay until the new one is ready: the daemon moves
			// to the new pod instead of losing the tunnel for a restart.
			Strategy: appsv1.DeploymentStrategy{
				Type: appsv1.RollingUpdateDeploymentStrategyType,
				RollingUpdate: &appsv1.RollingUpdateDeployment{
					MaxUnavailable: ptr.To(intstr.FromInt32(0)),
					MaxSurge:       ptr.To(intstr.FromInt32(1)),
				},
			},
			Template: corev1.PodTemplateSpec{
				ObjectMeta: metav1.ObjectMeta{Labels: podLabels},
				Spec: corev1.PodSpec{
					AutomountServiceAccountToken:  ptr.To(false),
					EnableServiceLinks:            ptr.To(false),
					TerminationGracePeriodSeconds: ptr.To(int64((relayGrace + relayDrainTimeout + 5*time.Second) / time.Second)),
					SecurityContext: &corev1.PodSecurityContext{
						RunAsNonRoot:   ptr.To(true),
						RunAsUser:      ptr.To[int64](RelayUID),
						RunAsGroup:     ptr.To[int64](RelayUID),
						SeccompProfile: &corev1.SeccompProfile{Type: corev1.SeccompProfileTypeRuntimeDefault},
					},
					Containers: []corev1.Container{{
						Name:    relayContainer,
						Image:   image,
						Command: []string{"sbx"},
						Args:    RelayArgs(sandbox, verifier, workloads, maxStreams, deny),
						Env: []corev1.EnvVar{{
							// The Go runtime collects harder as the heap nears
							// this soft limit, short of the container's hard one.
							Name: "GOMEMLIMIT", Value: goMemLimit,
						}},
						Ports:          ports,
						ReadinessProbe: probe("/readyz", 2),
						LivenessProbe:  probe("/healthz", 10),
						Resources: corev1.ResourceRequirements{
							Requests: corev1.ResourceList{
								corev1.ResourceCPU:    resource.MustParse("20m"),
								corev1.ResourceMemory: resource.MustParse(memRequest),
							},
							Limits: corev1.ResourceList{
								corev1.ResourceCPU:    resource.MustParse("1"),
								corev1.ResourceMemory: resource.MustParse(memLimit),
							},
						},
						SecurityContext: &corev1.SecurityContext{
							AllowPrivilegeEscalation: ptr.To(false),
							ReadOnlyRootFilesystem:   ptr.To(true),
							RunAsNonRoot:             ptr.To(true),
							Capabilities:             &corev1.Capabilities{Drop: []corev1.Capability{"ALL"}},
						},
						TerminationMessagePolicy: corev1.TerminationMessageFallbackToLogsOnError,
					}},
				},
			},
		},
	}
}

// objectMeta is the metadata every per-sandbox object carries.
func objectMeta(name, namespace, sandbox, key string) metav1.ObjectMeta {
	return metav1.ObjectMeta{
		Name:      name,
		Namespace: namespace,
		Labels: map[string]string{
			LabelManagedBy:  ManagedByValue,
			LabelSandbox:    sandbox,
			LabelRoutingKey: key,
		},
	}
}

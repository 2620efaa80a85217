package cluster

import (
	"fmt"
	"net/netip"
	"strings"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/utils/ptr"

	"github.com/sbx-dev/sbx/relay/relayargs"
)

// Relay container settings of sbx's own; the relay's ports, flags and
// their defaults are its command-line contract, package relayargs.
const (
	// FirstInboundPort is the relay container port of the first mapping;
	// each further mapping takes the next port.
	FirstInboundPort = 20001
	// RelayUID is the numeric non-root user the relay runs as (the
	// distroless "nonroot" user).
	RelayUID = 65532

	relayContainer = "relay"
)

// The relay's memory: a few MiB when idle, but every stream it serves may
// buffer about 1 MiB when its reader stalls, and the tunnel windows that
// grow on slow links share 96 MiB more (relayargs.DefaultMaxStreams
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
// default): limit = max(512Mi, streams × 1 MiB + 2 × 96 MiB + 64 MiB)
// rounded up to 64 MiB (relayargs: what a stream and the shared window
// budget may hold), request = limit/8, and GOMEMLIMIT at 90% of the limit,
// in the Go runtime's unit syntax (a Kubernetes "460Mi" would make the
// runtime throw at startup), so the runtime collects harder before the
// kernel kills the pod. The default cap gives 512Mi, 64Mi and 460MiB.
func relayMemory(maxStreams int) (limit, request, goMemLimit string) {
	if maxStreams <= 0 {
		maxStreams = relayargs.DefaultMaxStreams
	}
	mib := maxStreams*relayargs.StreamMiB + 2*(relayargs.WindowBudget>>20) + relayMemoryBaseMiB
	limitMiB := (mib + relayMemoryStepMiB - 1) / relayMemoryStepMiB * relayMemoryStepMiB
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

// RelayArgs returns the `sbx relay` arguments for a sandbox
// (relayargs.Args.Encode). verifier is the token's verifier (see
// Options.TokenVerifier): a new token changes the args, and so rolls the
// relay pod. maxStreams is the stream cap (0: the relay's default); deny
// the extra ranges the relay refuses, in order.
func RelayArgs(sandbox, verifier string, workloads []ResolvedWorkload, maxStreams int, deny []netip.Prefix) []string {
	a := relayargs.Args{
		Sandbox:      sandbox,
		TokenSHA256:  verifier,
		Listen:       relayargs.DefaultListen(),
		HealthListen: relayargs.DefaultHealthListen(),
		Grace:        relayargs.DefaultGrace,
		DrainTimeout: relayargs.DefaultDrainTimeout,
		MaxStreams:   maxStreams,
		Deny:         deny,
	}
	for _, w := range workloads {
		for _, p := range w.Ports {
			a.Inbound = append(a.Inbound, relayargs.Inbound{
				ContainerPort: uint16(p.RelayPort), Workload: w.Local.Name, Port: uint16(p.Port), AppProtocol: p.Protocol,
			})
		}
	}
	return append([]string{"relay"}, a.Encode()...)
}

// relayVerifier returns the token verifier a relay pod spec passes to the
// relay ("" when it passes none): what that relay checks Hellos against.
func relayVerifier(ps *corev1.PodSpec) string {
	for _, c := range ps.Containers {
		if c.Name != relayContainer {
			continue
		}
		for i, a := range c.Args {
			if v, ok := strings.CutPrefix(a, "--"+relayargs.FlagTokenSHA256+"="); ok {
				return v
			}
			if a == "--"+relayargs.FlagTokenSHA256 && i+1 < len(c.Args) {
				return c.Args[i+1]
			}
		}
	}
	return ""
}

func relayDeployment(sandbox, namespace, key, verifier, image string, maxStreams int, deny []netip.Prefix, workloads []ResolvedWorkload) *appsv1.Deployment {
	memLimit, memRequest, goMemLimit := relayMemory(maxStreams)
	ports := []corev1.ContainerPort{
		{Name: "tunnel", ContainerPort: relayargs.TunnelPort, Protocol: corev1.ProtocolTCP},
		{Name: "health", ContainerPort: relayargs.HealthPort, Protocol: corev1.ProtocolTCP},
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
					TerminationGracePeriodSeconds: ptr.To(int64((relayargs.DefaultGrace + relayargs.DefaultDrainTimeout + 5*time.Second) / time.Second)),
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

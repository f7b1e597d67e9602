package kubernetes

import (
	"errors"
	"fmt"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/podrunner/podrunner/internal/gitlab"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime/schema"
)

// classifyPod is a job pod as BuildPod shapes it: build with a 32Mi limit,
// helper, one service.
func classifyPod() *corev1.Pod {
	limit := func(q string) corev1.ResourceRequirements {
		return corev1.ResourceRequirements{Limits: corev1.ResourceList{corev1.ResourceMemory: resource.MustParse(q)}}
	}
	return &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: "runner-x-project-1-concurrent-0-abcd1234", Namespace: "ci", UID: "u1"},
		Spec: corev1.PodSpec{
			Containers: []corev1.Container{
				{Name: ContainerBuild, Image: "busybox:1.37", Resources: limit("32Mi")},
				{Name: ContainerHelper, Image: "podrunner.local/podrunner-helper:dev"},
				{Name: "svc-0", Image: "redis:7", Resources: limit("256Mi")},
			},
		},
		Status: corev1.PodStatus{Phase: corev1.PodPending},
	}
}

func waiting(name, image, reason, msg string) corev1.ContainerStatus {
	return corev1.ContainerStatus{Name: name, Image: image, State: corev1.ContainerState{Waiting: &corev1.ContainerStateWaiting{Reason: reason, Message: msg}}}
}

func term(name string, code int32, reason string) corev1.ContainerStatus {
	return corev1.ContainerStatus{Name: name, State: corev1.ContainerState{Terminated: &corev1.ContainerStateTerminated{ExitCode: code, Reason: reason}}}
}

func running(name string) corev1.ContainerStatus {
	return corev1.ContainerStatus{Name: name, Ready: true, State: corev1.ContainerState{Running: &corev1.ContainerStateRunning{}}}
}

func podEvent(reason, fieldPath, msg string, at time.Time) corev1.Event {
	return corev1.Event{
		InvolvedObject: corev1.ObjectReference{Kind: "Pod", Name: "runner-x-project-1-concurrent-0-abcd1234", Namespace: "ci", UID: "u1", FieldPath: fieldPath},
		Reason:         reason, Message: msg, Type: corev1.EventTypeWarning, LastTimestamp: metav1.NewTime(at),
	}
}

func TestClassify(t *testing.T) {
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	cases := []struct {
		name      string
		edit      func(p *corev1.Pod)
		events    []corev1.Event
		reason    gitlab.FailureReason
		container string
		transient bool
		waits     bool
		exitCode  int
		progress  []string // substrings of the progress line
		msg       []string // substrings of the message
	}{
		{name: "pending is fine", edit: func(p *corev1.Pod) {}},
		{name: "running is fine", edit: func(p *corev1.Pod) {
			p.Status.Phase = corev1.PodRunning
			p.Status.ContainerStatuses = []corev1.ContainerStatus{running("build"), running("svc-0")}
		}},
		{name: "job ended normally", edit: func(p *corev1.Pod) {
			p.Status.Phase = corev1.PodSucceeded
			p.Status.ContainerStatuses = []corev1.ContainerStatus{term("build", 0, "Completed"), term("svc-0", 0, "Completed")}
		}},
		{name: "ErrImagePull", edit: func(p *corev1.Pod) {
			p.Status.ContainerStatuses = []corev1.ContainerStatus{waiting("build", "busybox:nope", "ErrImagePull", `rpc error: code = NotFound desc = failed to pull and unpack image "docker.io/library/busybox:nope": not found`), running("svc-0")}
		}, reason: gitlab.ImagePullFailure, container: "build",
			msg: []string{`image "busybox:nope" for container build (the job's image) does not exist: rpc error: code = NotFound`, "Check the image name and tag"}},
		{name: "ImagePullBackOff uses the kubelet's event", edit: func(p *corev1.Pod) {
			p.Status.ContainerStatuses = []corev1.ContainerStatus{waiting("build", "busybox:nope", "ImagePullBackOff", `Back-off pulling image "busybox:nope"`)}
		}, events: []corev1.Event{
			podEvent("Failed", "spec.containers{build}", "Failed to pull image \"busybox:nope\": old", t0),
			podEvent("Failed", "spec.containers{build}", "Failed to pull image \"busybox:nope\": manifest unknown", t0.Add(time.Second)),
			podEvent("Failed", "spec.containers{svc-0}", "other container", t0.Add(2*time.Second)),
		}, reason: gitlab.ImagePullFailure, container: "build", msg: []string{"does not exist: Failed to pull image \"busybox:nope\": manifest unknown"}},
		{name: "pull failure event before the status shows it", edit: func(p *corev1.Pod) {
			p.Status.ContainerStatuses = []corev1.ContainerStatus{waiting("build", "busybox:nope", "PodInitializing", "")}
		}, events: []corev1.Event{
			podEvent("Failed", "spec.containers{build}", "Failed to pull image \"busybox:nope\": manifest unknown", t0),
		}, reason: gitlab.ImagePullFailure, container: "build", msg: []string{`image "busybox:1.37" for container build (the job's image) does not exist`, "manifest unknown"}},
		{name: "registry unreachable waits", edit: func(p *corev1.Pod) {
			p.Status.ContainerStatuses = []corev1.ContainerStatus{waiting("build", "127.0.0.1:9/x:1", "ImagePullBackOff", `Back-off pulling image "127.0.0.1:9/x:1"`)}
		}, events: []corev1.Event{
			podEvent("Failed", "spec.containers{build}", `Failed to pull image "127.0.0.1:9/x:1": failed to do request: Head "https://127.0.0.1:9/v2/x/manifests/1": dial tcp 127.0.0.1:9: connect: connection refused`, t0),
		}, reason: gitlab.ImagePullFailure, container: "build", transient: true, waits: true,
			progress: []string{`cannot pull image "127.0.0.1:9/x:1" yet, the kubelet retries with back-off`, "connection refused"},
			msg:      []string{`the registry of image "127.0.0.1:9/x:1" for container build (the job's image) stayed unreachable`, "connection refused", "poll_timeout"}},
		{name: "registry unreachable waits through the kubelet's Error events", edit: func(p *corev1.Pod) {
			p.Status.ContainerStatuses = []corev1.ContainerStatus{waiting("build", "alpine:3.20", "ImagePullBackOff", `Back-off pulling image "alpine:3.20"`)}
		}, events: []corev1.Event{
			// The kubelet's own sequence: the pull error, then "Error: …" events.
			podEvent("Failed", "spec.containers{build}", `Failed to pull image "alpine:3.20": failed to pull and unpack image "docker.io/library/alpine:3.20": failed to resolve reference "docker.io/library/alpine:3.20": failed to do request: Head "https://10.0.0.1:5000/v2/library/alpine/manifests/3.20?ns=docker.io": dial tcp 10.0.0.1:5000: connect: connection refused`, t0),
			podEvent("Failed", "spec.containers{build}", "Error: ErrImagePull", t0),
			podEvent("Failed", "spec.containers{build}", "Error: ImagePullBackOff", t0.Add(time.Second)),
		}, reason: gitlab.ImagePullFailure, container: "build", transient: true, waits: true,
			progress: []string{`cannot pull image "alpine:3.20" yet`, "connection refused"},
			msg:      []string{"stayed unreachable", "connection refused"}},
		{name: "registry denies", edit: func(p *corev1.Pod) {
			p.Status.ContainerStatuses = []corev1.ContainerStatus{waiting("build", "registry.example.com/private/app:1", "ErrImagePull", `failed to pull and unpack image "registry.example.com/private/app:1": failed to resolve reference "registry.example.com/private/app:1": pull access denied, repository does not exist or may require authorization: server message: insufficient_scope: authorization failed`)}
		}, reason: gitlab.ImagePullFailure, container: "build", msg: []string{`the registry refused access to image "registry.example.com/private/app:1"`, "insufficient_scope", "image_pull_secrets"}},
		{name: "old pull failure of a container that runs now is history", edit: func(p *corev1.Pod) {
			p.Status.Phase = corev1.PodRunning
			p.Status.ContainerStatuses = []corev1.ContainerStatus{running("build"), running("svc-0")}
		}, events: []corev1.Event{
			podEvent("Failed", "spec.containers{build}", "Failed to pull image \"busybox:1.37\": i/o timeout", t0),
		}},
		{name: "InvalidImageName", edit: func(p *corev1.Pod) {
			p.Status.ContainerStatuses = []corev1.ContainerStatus{waiting("build", "", "InvalidImageName", `Failed to apply default image tag "BusyBox": couldn't parse image name`)}
			p.Spec.Containers[0].Image = "BusyBox"
		}, reason: gitlab.ImagePullFailure, container: "build", msg: []string{`cannot pull image "BusyBox"`, "InvalidImageName"}},
		{name: "ErrImageNeverPull", edit: func(p *corev1.Pod) {
			p.Status.ContainerStatuses = []corev1.ContainerStatus{waiting("build", "busybox:1.37", "ErrImageNeverPull", `Container image "busybox:1.37" is not present with pull policy of Never`)}
		}, reason: gitlab.ImagePullFailure, container: "build", msg: []string{"ErrImageNeverPull"}},
		{name: "service image", edit: func(p *corev1.Pod) {
			p.Status.ContainerStatuses = []corev1.ContainerStatus{running("build"), waiting("svc-0", "redis:99", "ErrImagePull", "not found")}
		}, reason: gitlab.ImagePullFailure, container: "svc-0", msg: []string{`"redis:99" for container svc-0 (the service image)`}},
		{name: "agent image", edit: func(p *corev1.Pod) {
			p.Status.ContainerStatuses = []corev1.ContainerStatus{waiting(ContainerHelper, "podrunner.local/podrunner-helper:dev", "ErrImagePull", "not found")}
		}, reason: gitlab.ImagePullFailure, container: ContainerHelper, msg: []string{"the podrunner helper image (helper_image)"}},
		{name: "helper image volume", edit: func(p *corev1.Pod) {
			withHelperVolume(p, "podrunner.local/nope:dev")
			p.Status.ContainerStatuses = []corev1.ContainerStatus{waiting("build", "busybox:1.37", "ErrImagePull", `failed to pull and unpack image "podrunner.local/nope:dev": failed to resolve reference "podrunner.local/nope:dev": not found`)}
		}, reason: gitlab.ImagePullFailure, container: "build", msg: []string{`image "podrunner.local/nope:dev" for container build (the podrunner helper image (helper_image)) does not exist`}},
		{name: "helper image volume in back-off: the event without a container", edit: func(p *corev1.Pod) {
			withHelperVolume(p, "podrunner.local/nope:dev")
			p.Status.ContainerStatuses = []corev1.ContainerStatus{waiting("build", "busybox:1.37", "ImagePullBackOff", `Back-off pulling image "podrunner.local/nope:dev"`)}
		}, events: []corev1.Event{
			podEvent("Failed", "", `Failed to pull image "podrunner.local/nope:dev": pull access denied`, t0),
		}, reason: gitlab.ImagePullFailure, container: "build", msg: []string{`the registry refused access to image "podrunner.local/nope:dev" for container build (the podrunner helper image (helper_image))`}},
		{name: "job image with a helper image volume is still the job's", edit: func(p *corev1.Pod) {
			withHelperVolume(p, "podrunner.local/podrunner-helper:dev")
			p.Status.ContainerStatuses = []corev1.ContainerStatus{waiting("build", "busybox:nope", "ErrImagePull", `failed to pull and unpack image "docker.io/library/busybox:nope": not found`)}
		}, reason: gitlab.ImagePullFailure, container: "build", msg: []string{`image "busybox:nope" for container build (the job's image) does not exist`}},
		{name: "agent from the helper image volume cannot start", edit: func(p *corev1.Pod) {
			withHelperVolume(p, "podrunner.local/podrunner-helper:dev")
			p.Status.ContainerStatuses = []corev1.ContainerStatus{waiting("build", "busybox:1.37", "RunContainerError", "exec: permission denied")}
		}, reason: gitlab.RunnerSystemFailure, container: "build", msg: []string{"permission denied", "set helper_image_volume = false"}},
		{name: "CreateContainerConfigError", edit: func(p *corev1.Pod) {
			p.Status.ContainerStatuses = []corev1.ContainerStatus{waiting("build", "busybox:1.37", "CreateContainerConfigError", `secret "regcred" not found`)}
		}, reason: gitlab.RunnerConfigurationError, container: "build", msg: []string{`container build cannot be configured: secret "regcred" not found`}},
		{name: "CreateContainerError", edit: func(p *corev1.Pod) {
			p.Status.ContainerStatuses = []corev1.ContainerStatus{waiting("build", "busybox:1.37", "CreateContainerError", "context deadline exceeded")}
		}, reason: gitlab.RunnerSystemFailure, container: "build", msg: []string{"container build (image busybox:1.37) cannot be started: CreateContainerError: context deadline exceeded"}},
		{name: "unschedulable", edit: func(p *corev1.Pod) {
			p.Status.Conditions = []corev1.PodCondition{{Type: corev1.PodScheduled, Status: corev1.ConditionFalse, Reason: corev1.PodReasonUnschedulable,
				Message: "0/3 nodes are available: 3 Insufficient memory."}}
		}, reason: gitlab.RunnerSystemFailure, transient: true, waits: true,
			progress: []string{"unschedulable: 0/3 nodes are available: 3 Insufficient memory"},
			msg:      []string{"cannot be scheduled: 0/3 nodes are available: 3 Insufficient memory. Check", "memory_request", "poll_timeout"}},
		{name: "unschedulable while the autoscaler adds a node", edit: func(p *corev1.Pod) {
			p.Status.Conditions = []corev1.PodCondition{{Type: corev1.PodScheduled, Status: corev1.ConditionFalse, Reason: corev1.PodReasonUnschedulable,
				Message: "0/3 nodes are available: 3 Insufficient cpu."}}
		}, events: []corev1.Event{
			podEvent("NotTriggerScaleUp", "", "pod didn't trigger scale-up: 1 max node group size reached", t0),
			podEvent("TriggeredScaleUp", "", "pod triggered scale-up: [{aks-ci-12345678-vmss 1->2 (max: 5)}]", t0.Add(time.Minute)),
		}, reason: gitlab.RunnerSystemFailure, transient: true, waits: true,
			progress: []string{"unschedulable: 0/3 nodes are available: 3 Insufficient cpu; cluster-autoscaler: pod triggered scale-up: [{aks-ci-12345678-vmss 1->2 (max: 5)}]"}},
		{name: "autoscaler will not add a node", edit: func(p *corev1.Pod) {
			p.Status.Conditions = []corev1.PodCondition{{Type: corev1.PodScheduled, Status: corev1.ConditionFalse, Reason: corev1.PodReasonUnschedulable,
				Message: "0/3 nodes are available: 3 Insufficient cpu."}}
		}, events: []corev1.Event{
			podEvent("TriggeredScaleUp", "", "pod triggered scale-up: [{aks-ci-12345678-vmss 1->2 (max: 5)}]", t0),
			podEvent("NotTriggerScaleUp", "", "pod didn't trigger scale-up: 2 Insufficient cpu", t0.Add(time.Minute)),
		}, reason: gitlab.RunnerSystemFailure,
			msg: []string{"cannot be scheduled (0/3 nodes are available: 3 Insufficient cpu) and cluster-autoscaler will not add a node for it: pod didn't trigger scale-up: 2 Insufficient cpu", "cpu_request"}},
		{name: "autoscaler events of a scheduled pod are history", edit: func(p *corev1.Pod) {
			p.Status.Conditions = []corev1.PodCondition{{Type: corev1.PodScheduled, Status: corev1.ConditionTrue}}
		}, events: []corev1.Event{podEvent("NotTriggerScaleUp", "", "pod didn't trigger scale-up:", t0)}},
		{name: "unschedulable message from event", edit: func(p *corev1.Pod) {
			p.Status.Conditions = []corev1.PodCondition{{Type: corev1.PodScheduled, Status: corev1.ConditionFalse, Reason: corev1.PodReasonUnschedulable}}
		}, events: []corev1.Event{podEvent("FailedScheduling", "", "0/1 nodes are available: 1 node(s) had untolerated taint {ci: true}.", t0)},
			reason: gitlab.RunnerSystemFailure, transient: true, waits: true, msg: []string{"untolerated taint"}},
		{name: "evicted", edit: func(p *corev1.Pod) {
			p.Status.Phase = corev1.PodFailed
			p.Status.Reason = "Evicted"
			p.Status.Message = "The node was low on resource: memory."
			p.Status.ContainerStatuses = []corev1.ContainerStatus{term("build", 137, "Error")}
		}, reason: gitlab.RunnerSystemFailure, msg: []string{"was evicted by Kubernetes: The node was low on resource: memory."}},
		{name: "evicted over its ephemeral storage limit", edit: func(p *corev1.Pod) {
			p.Status.Phase = corev1.PodFailed
			p.Status.Reason = "Evicted"
			p.Status.Message = "Pod ephemeral local storage usage exceeds the total limit of containers 16Mi. "
		}, reason: gitlab.RunnerSystemFailure, msg: []string{"exceeds the total limit of containers 16Mi", "raise ephemeral_storage_limit"}},
		{name: "drained", edit: func(p *corev1.Pod) {
			p.Status.Conditions = []corev1.PodCondition{{Type: corev1.DisruptionTarget, Status: corev1.ConditionTrue, Reason: "EvictionByEvictionAPI", Message: "Eviction API: evicting"}}
		}, reason: gitlab.RunnerSystemFailure, msg: []string{"stopped by Kubernetes (EvictionByEvictionAPI)"}},
		{name: "deadline", edit: func(p *corev1.Pod) {
			p.Status.Phase = corev1.PodFailed
			p.Status.Reason = "DeadlineExceeded"
			p.Status.ContainerStatuses = []corev1.ContainerStatus{term("build", 137, "Error")}
		}, reason: gitlab.JobExecutionTimeout, msg: []string{"activeDeadlineSeconds"}},
		{name: "OOMKilled build", edit: func(p *corev1.Pod) {
			p.Status.Phase = corev1.PodRunning
			p.Status.ContainerStatuses = []corev1.ContainerStatus{term("build", 137, "OOMKilled"), running("svc-0")}
		}, reason: gitlab.ScriptFailure, container: "build", exitCode: 137,
			msg: []string{"container build was OOMKilled (exit code 137): memory limit 32Mi; raise memory_limit / KUBERNETES_MEMORY_LIMIT"}},
		{name: "OOMKilled service in last state", edit: func(p *corev1.Pod) {
			p.Status.Phase = corev1.PodRunning
			svc := running("svc-0")
			svc.LastTerminationState.Terminated = &corev1.ContainerStateTerminated{ExitCode: 137, Reason: "OOMKilled"}
			p.Status.ContainerStatuses = []corev1.ContainerStatus{running("build"), svc}
		}, reason: gitlab.ScriptFailure, container: "svc-0", // the script did not exit: no exit code
			msg: []string{"container svc-0 was OOMKilled", "memory limit 256Mi; raise service_memory_limit / KUBERNETES_SERVICE_MEMORY_LIMIT"}},
		{name: "OOM wins over deadline-free failure", edit: func(p *corev1.Pod) {
			p.Status.Phase = corev1.PodFailed
			p.Status.ContainerStatuses = []corev1.ContainerStatus{term("svc-0", 1, "Error"), term("build", 137, "OOMKilled")}
		}, reason: gitlab.ScriptFailure, container: "build", exitCode: 137},
		{name: "OOMKilled build without a recorded code", edit: func(p *corev1.Pod) {
			p.Status.ContainerStatuses = []corev1.ContainerStatus{term("build", 0, "OOMKilled")}
		}, reason: gitlab.ScriptFailure, container: "build", exitCode: 137, msg: []string{"exit code 137"}},
		{name: "helper failed", edit: func(p *corev1.Pod) {
			s := term(ContainerHelper, 127, "Error")
			s.Image = "busybox:1.37"
			s.State.Terminated.Message = "exec: podrunner-helper: not found"
			p.Status.ContainerStatuses = []corev1.ContainerStatus{running("build"), s}
		}, reason: gitlab.RunnerSystemFailure, container: ContainerHelper,
			msg: []string{"container helper (image busybox:1.37) failed with exit code 127 (Error: exec: podrunner-helper: not found)", "helper_image"}},
		{name: "helper done is fine", edit: func(p *corev1.Pod) {
			p.Status.Phase = corev1.PodRunning
			p.Status.ContainerStatuses = []corev1.ContainerStatus{running("build"), term(ContainerHelper, 0, "Completed"), running("svc-0")}
		}},
		{name: "service crashed", edit: func(p *corev1.Pod) {
			p.Status.Phase = corev1.PodRunning
			p.Status.ContainerStatuses = []corev1.ContainerStatus{running("build"), term("svc-0", 2, "Error")}
		}, reason: gitlab.ScriptFailure, container: "svc-0", msg: []string{"service container svc-0 (image redis:7) exited with code 2 (Error)"}},
		{name: "service exited 0 is fine", edit: func(p *corev1.Pod) {
			p.Status.Phase = corev1.PodRunning
			p.Status.ContainerStatuses = []corev1.ContainerStatus{running("build"), term("svc-0", 0, "Completed")}
		}},
		{name: "agent died", edit: func(p *corev1.Pod) {
			p.Status.Phase = corev1.PodRunning
			b := term("build", 1, "Error")
			b.Image = "busybox:1.37"
			p.Status.ContainerStatuses = []corev1.ContainerStatus{b, running("svc-0")}
		}, reason: gitlab.RunnerSystemFailure, container: "build", msg: []string{"container build (image busybox:1.37) exited with code 1 (Error) before the job ended"}},
		{name: "pod failed otherwise", edit: func(p *corev1.Pod) {
			p.Status.Phase = corev1.PodFailed
			p.Status.Reason = "NodeLost"
			p.Status.Message = "node went away"
		}, reason: gitlab.RunnerSystemFailure, msg: []string{"failed (NodeLost: node went away)"}},
		{name: "volume not mounted", edit: func(p *corev1.Pod) {},
			events: []corev1.Event{podEvent("FailedMount", "", `MountVolume.SetUp failed for volume "ca" : configmap "ca" not found`, t0)},
			reason: gitlab.RunnerSystemFailure, transient: true, msg: []string{`cannot start (FailedMount): MountVolume.SetUp failed for volume "ca"`}},
		{name: "mount failure retried with success: a container ran", edit: func(p *corev1.Pod) {
			p.Status.ContainerStatuses = []corev1.ContainerStatus{running(ContainerHelper)}
		}, events: []corev1.Event{podEvent("FailedMount", "", `MountVolume.SetUp failed for volume "podrunner-spec" : failed to sync secret cache: timed out waiting for the condition`, t0)}},
		{name: "sandbox failure retried with success: sandbox ready", edit: func(p *corev1.Pod) {
			p.Status.Conditions = []corev1.PodCondition{{Type: corev1.PodReadyToStartContainers, Status: corev1.ConditionTrue}}
		}, events: []corev1.Event{podEvent("FailedCreatePodSandBox", "", "failed to setup network", t0)}},
		{name: "mount failure while the sandbox is not ready", edit: func(p *corev1.Pod) {
			p.Status.Conditions = []corev1.PodCondition{{Type: corev1.PodReadyToStartContainers, Status: corev1.ConditionFalse}}
			p.Status.ContainerStatuses = []corev1.ContainerStatus{waiting(ContainerHelper, "podrunner.local/podrunner-helper:dev", "ContainerCreating", "")}
		}, events: []corev1.Event{podEvent("FailedMount", "", `MountVolume.SetUp failed for volume "ca" : configmap "ca" not found`, t0)},
			reason: gitlab.RunnerSystemFailure, transient: true, msg: []string{`cannot start (FailedMount)`}},
		{name: "kubelet secret cache not synced yet: kubelet retries", edit: func(p *corev1.Pod) {},
			events: []corev1.Event{podEvent("FailedMount", "", `MountVolume.SetUp failed for volume "podrunner-spec" : failed to sync secret cache: timed out waiting for the condition`, t0)},
			reason: gitlab.RunnerSystemFailure, transient: true, waits: true, msg: []string{`cannot start (FailedMount)`, "failed to sync secret cache"}},
		{name: "events of another pod ignored", edit: func(p *corev1.Pod) {},
			events: []corev1.Event{func() corev1.Event {
				e := podEvent("FailedMount", "", "x", t0)
				e.InvolvedObject.UID = "other"
				return e
			}()}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			p := classifyPod()
			c.edit(p)
			f := Classify(p, c.events)
			// The informer keeps events trimmed: they must classify alike.
			trimmed := make([]corev1.Event, len(c.events))
			for i, e := range c.events {
				e.ManagedFields = []metav1.ManagedFieldsEntry{{Manager: "kubelet", Operation: metav1.ManagedFieldsOperationUpdate}}
				e.Source = corev1.EventSource{Component: "kubelet", Host: "node-1"}
				o, err := trimEvent(&e)
				if err != nil {
					t.Fatal(err)
				}
				trimmed[i] = *o.(*corev1.Event)
				if trimmed[i].ManagedFields != nil || trimmed[i].Source.Component != "" {
					t.Errorf("trimmed event keeps managed fields or source: %+v", trimmed[i])
				}
			}
			if g := Classify(p, trimmed); !reflect.DeepEqual(g, f) {
				t.Errorf("trimmed events classify as %+v, full ones as %+v", g, f)
			}
			if c.reason == "" {
				if f != nil {
					t.Fatalf("unexpected failure %+v", f)
				}
				return
			}
			if f == nil {
				t.Fatal("no failure")
			}
			if f.Reason != c.reason || f.Container != c.container || f.Transient != c.transient || f.Waits != c.waits || f.ExitCode != c.exitCode {
				t.Errorf("got reason %q container %q transient %v waits %v exit %d; want %q %q %v %v %d\n%s", f.Reason, f.Container, f.Transient, f.Waits, f.ExitCode,
					c.reason, c.container, c.transient, c.waits, c.exitCode, f.Message)
			}
			if f.Waits && f.Progress == "" {
				t.Errorf("a failure the job waits for has no progress line: %+v", f)
			}
			for _, m := range c.progress {
				if !strings.Contains(f.Progress, m) {
					t.Errorf("progress %q\nlacks %q", f.Progress, m)
				}
			}
			for _, m := range c.msg {
				if !strings.Contains(f.Message, m) {
					t.Errorf("message %q\nlacks %q", f.Message, m)
				}
			}
		})
	}
	if Classify(nil, nil) != nil {
		t.Error("nil pod")
	}
}

// Kubelet pull errors as containerd (and CRI-O) word them: the registry's
// answers fail the job at once, transport errors and 5xx wait.
func TestPullProblemOf(t *testing.T) {
	const ref = `failed to pull and unpack image "registry.example.com/app:1": failed to resolve reference "registry.example.com/app:1": `
	cases := []struct {
		name string
		msg  string
		want pullProblem
	}{
		{"containerd not found", `rpc error: code = NotFound desc = failed to pull and unpack image "docker.io/library/busybox:nope": failed to resolve reference "docker.io/library/busybox:nope": docker.io/library/busybox:nope: not found`, pullNotFound},
		{"manifest unknown", `Failed to pull image "registry.example.com/app:1": rpc error: code = Unknown desc = ` + ref + `unexpected status from HEAD request to https://registry.example.com/v2/app/manifests/1: 404 Not Found`, pullNotFound},
		{"cri-o manifest unknown", `reading manifest 1 in registry.example.com/app: manifest unknown`, pullNotFound},
		{"pull access denied", `rpc error: code = Unknown desc = ` + ref + `pull access denied, repository does not exist or may require authorization: server message: insufficient_scope: authorization failed`, pullDenied},
		{"401 from the token server", `rpc error: code = Unknown desc = ` + ref + `failed to authorize: failed to fetch anonymous token: unexpected status from GET request to https://registry.example.com/token?scope=repository%3Aapp%3Apull: 401 Unauthorized`, pullDenied},
		{"403", `rpc error: code = Unknown desc = ` + ref + `unexpected status from HEAD request to https://registry.example.com/v2/app/manifests/1: 403 Forbidden`, pullDenied},
		{"cri-o authentication required", `reading manifest 1 in registry.example.com/app: authentication required`, pullDenied},
		{"connection refused", `rpc error: code = Unknown desc = ` + ref + `failed to do request: Head "https://registry.example.com/v2/app/manifests/1": dial tcp 10.0.0.5:443: connect: connection refused`, pullUnreachable},
		{"i/o timeout", `rpc error: code = DeadlineExceeded desc = ` + ref + `failed to do request: Head "https://registry.example.com/v2/app/manifests/1": dial tcp 10.0.0.5:443: i/o timeout`, pullUnreachable},
		{"no route", `rpc error: code = Unknown desc = ` + ref + `failed to do request: Head "https://registry.example.com/v2/app/manifests/1": dial tcp 10.0.0.5:443: connect: no route to host`, pullUnreachable},
		{"503", `rpc error: code = Unknown desc = ` + ref + `unexpected status from HEAD request to https://registry.example.com/v2/app/manifests/1: 503 Service Unavailable`, pullUnreachable},
		{"502", `rpc error: code = Unknown desc = ` + ref + `unexpected status from HEAD request to https://registry.example.com/v2/app/manifests/1: 502 Bad Gateway`, pullUnreachable},
		{"dns typo is not waited for", `rpc error: code = Unknown desc = ` + ref + `failed to do request: Head "https://registry.exmaple.com/v2/app/manifests/1": dial tcp: lookup registry.exmaple.com on 10.96.0.10:53: no such host`, pullOther},
		{"bad tag", `Failed to apply default image tag "BusyBox": couldn't parse image name "BusyBox": invalid reference format: repository name must be lowercase`, pullOther},
		{"port 5401 is not a 401", `dial tcp 10.0.0.5:5401: connect: connection refused`, pullUnreachable},
	}
	for _, c := range cases {
		if got := pullProblemOf(c.msg); got != c.want {
			t.Errorf("%s: pullProblemOf = %d, want %d\n%s", c.name, got, c.want, c.msg)
		}
	}
}

func TestDeletedFailure(t *testing.T) {
	f := DeletedFailure("ci/runner-x")
	if f.Reason != gitlab.RunnerSystemFailure || !strings.Contains(f.Message, "pod ci/runner-x was deleted by someone else") {
		t.Errorf("%+v", f)
	}
}

func TestQuotaExceeded(t *testing.T) {
	gr := schema.GroupResource{Resource: "pods"}
	quotaMsg := "exceeded quota: compute, requested: limits.memory=2Gi, used: limits.memory=3Gi, limited: limits.memory=4Gi"
	cases := []struct {
		name string
		err  error
		ok   bool
		msg  string
	}{
		{"quota", apierrors.NewForbidden(gr, "runner-x", errors.New(quotaMsg)), true, `pods "runner-x" is forbidden: ` + quotaMsg},
		{"wrapped", fmt.Errorf("create pod: %w", apierrors.NewForbidden(gr, "runner-x", errors.New(quotaMsg))), true, `pods "runner-x" is forbidden: ` + quotaMsg},
		{"quota needs limits", apierrors.NewForbidden(gr, "runner-x", errors.New("failed quota: compute: must specify limits.memory for: build")), false, ""},
		{"rbac", apierrors.NewForbidden(gr, "runner-x", errors.New(`User "x" cannot create resource "pods"`)), false, ""},
		{"not forbidden", errors.New("exceeded quota"), false, ""},
		{"nil", nil, false, ""},
	}
	for _, c := range cases {
		ok, msg := QuotaExceeded(c.err)
		if ok != c.ok || msg != c.msg {
			t.Errorf("%s: got %v %q; want %v %q", c.name, ok, msg, c.ok, c.msg)
		}
	}
}

// withHelperVolume gives the pod the helper image as an image volume, as
// BuildPod does with helper_image_volume.
func withHelperVolume(p *corev1.Pod, image string) {
	p.Spec.Volumes = append(p.Spec.Volumes, corev1.Volume{Name: volumeHelper, VolumeSource: corev1.VolumeSource{
		Image: &corev1.ImageVolumeSource{Reference: image, PullPolicy: corev1.PullIfNotPresent}}})
}

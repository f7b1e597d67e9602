package kubernetes

import (
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
)

// GitLab failure reasons used by Classify.
const (
	ReasonScriptFailure       = "script_failure"
	ReasonRunnerSystemFailure = "runner_system_failure"
	ReasonJobExecutionTimeout = "job_execution_timeout"
	ReasonImagePullFailure    = "image_pull_failure"
	ReasonConfigurationError  = FailureReasonConfig
)

// Failure is why a job's pod cannot run or stopped running.
type Failure struct {
	// Reason is GitLab's failure reason.
	Reason string
	// Message is for the job log: what happened and what to do.
	Message string
	// Container is the container concerned ("" for the pod as a whole).
	Container string
	// Transient means Kubernetes may still get over it (unschedulable
	// while a node is being added, a volume not mounted yet): the caller
	// may give it a grace period (e.g. poll_timeout) before failing the job.
	Transient bool
	// KubeletRetries marks a transient failure of the kubelet's own
	// machinery (its Secret cache not synced yet on a busy node) that
	// it retries by itself: it fails the job only at poll_timeout.
	KubeletRetries bool
}

func (f *Failure) Error() string { return f.Message }

// Waiting reasons of a container that will not start.
var imagePullReasons = []string{"ErrImagePull", "ImagePullBackOff", "InvalidImageName", "ErrImageNeverPull", "RegistryUnavailable", "SignatureValidationFailed"}

// Classify looks at a job's pod and its events and says whether (and why)
// the job has failed or cannot start. nil means nothing is wrong (yet). It
// does not judge the build container's normal end (the agent exits 0 once
// the job is done and acknowledged); the caller cross-checks a missing
// agent result with Classify.
//
// The first matching rule wins: eviction or disruption, deadline, an
// OOM-killed container, the agent's init container, image pulls,
// container creation, a crashed service, the build container dying, the
// pod failing, then the transient ones (unschedulable, volume mounts).
func Classify(pod *corev1.Pod, events []corev1.Event) *Failure {
	if pod == nil {
		return nil
	}
	events = podEventsOf(pod, events)
	name := pod.Namespace + "/" + pod.Name
	st := pod.Status

	if st.Reason == "Evicted" {
		return &Failure{Reason: ReasonRunnerSystemFailure, Message: fmt.Sprintf("pod %s was evicted by Kubernetes: %s. Give the job enough memory_request / ephemeral_storage_request (or KUBERNETES_MEMORY_REQUEST, KUBERNETES_EPHEMERAL_STORAGE_REQUEST) so the node does not run short", name, orDefault(st.Message, "no message"))}
	}
	if c := condition(pod, corev1.DisruptionTarget); c != nil && c.Status == corev1.ConditionTrue {
		return &Failure{Reason: ReasonRunnerSystemFailure, Message: fmt.Sprintf("pod %s was stopped by Kubernetes (%s): %s. This happens on node drains, preemption or taints; retry the job, or protect job pods (pod_disruption_budget, priority_class_name)", name, c.Reason, orDefault(c.Message, "no message"))}
	}
	if st.Reason == "DeadlineExceeded" {
		return &Failure{Reason: ReasonJobExecutionTimeout, Message: fmt.Sprintf("pod %s exceeded its activeDeadlineSeconds (job timeout + after_script timeout + 60 s) and was stopped by Kubernetes: raise the job's timeout if it needs more time", name)}
	}

	// OOM first: it explains any other symptom of the same container.
	for _, cs := range allStatuses(pod) {
		t := terminated(cs)
		if t == nil || t.Reason != "OOMKilled" {
			continue
		}
		limit, key := memoryLimit(pod, cs.Name)
		return &Failure{Reason: ReasonScriptFailure, Container: cs.Name,
			Message: fmt.Sprintf("container %s was OOMKilled (exit code %d): memory limit %s; raise %s", cs.Name, t.ExitCode, limit, key)}
	}

	for _, cs := range pod.Status.InitContainerStatuses {
		if f := waitingFailure(pod, cs, events); f != nil {
			return f
		}
		if t := terminated(cs); t != nil && t.ExitCode != 0 {
			return &Failure{Reason: ReasonRunnerSystemFailure, Container: cs.Name,
				Message: fmt.Sprintf("init container %s (image %s) failed with exit code %d%s: the podrunner agent could not be installed; check helper_image in [runners.kubernetes] points at a podrunner image of this version", cs.Name, cs.Image, t.ExitCode, detail(t.Reason, t.Message))}
		}
	}
	for _, cs := range pod.Status.ContainerStatuses {
		if f := waitingFailure(pod, cs, events); f != nil {
			return f
		}
	}
	// The kubelet reports a failed pull as an event at once, while the
	// container status shows it only from the pod's next sync — seconds
	// later, and about 15 s later when an init container ran first.
	if f := pullFailedEvent(pod, events); f != nil {
		return f
	}
	for _, cs := range pod.Status.ContainerStatuses {
		t := terminated(cs)
		if t == nil || t.ExitCode == 0 {
			continue
		}
		if strings.HasPrefix(cs.Name, ServiceContainerPrefix) {
			return &Failure{Reason: ReasonScriptFailure, Container: cs.Name,
				Message: fmt.Sprintf("service container %s (image %s) exited with code %d%s: the job's service crashed; check the service's command, variables and resources (service_memory_limit / KUBERNETES_SERVICE_MEMORY_LIMIT)", cs.Name, serviceImage(pod, cs), t.ExitCode, detail(t.Reason, t.Message))}
		}
		if cs.Name == ContainerBuild {
			return &Failure{Reason: ReasonRunnerSystemFailure, Container: cs.Name,
				Message: fmt.Sprintf("container build (image %s) exited with code %d%s before the job ended: the podrunner agent failed; the end of the agent's log has details", cs.Image, t.ExitCode, detail(t.Reason, t.Message))}
		}
	}
	if st.Phase == corev1.PodFailed {
		return &Failure{Reason: ReasonRunnerSystemFailure, Message: fmt.Sprintf("pod %s failed%s", name, detail(st.Reason, st.Message))}
	}

	if c := condition(pod, corev1.PodScheduled); c != nil && c.Status == corev1.ConditionFalse && c.Reason == corev1.PodReasonUnschedulable {
		msg := c.Message
		if e := lastEvent(events, "FailedScheduling", ""); msg == "" && e != nil {
			msg = e.Message
		}
		return &Failure{Reason: ReasonRunnerSystemFailure, Transient: true,
			Message: fmt.Sprintf("pod %s cannot be scheduled: %s. Check the job's requests (cpu_request, memory_request or their KUBERNETES_* overwrites), node_selector, node_tolerations and affinity, or wait for the cluster to add capacity", name, orDefault(msg, "no message from the scheduler"))}
	}
	// Once the sandbox is up or a container ran, the volumes are mounted
	// and the sandbox exists: such events are from attempts the kubelet
	// has since retried with success (a busy node's kubelet often fails
	// its first mount of the job's Secret with "failed to sync secret
	// cache"), and events are never withdrawn.
	if st.Phase == corev1.PodPending && !podStarted(pod) {
		for _, reason := range []string{"FailedMount", "FailedAttachVolume", "FailedCreatePodSandBox"} {
			if e := lastEvent(events, reason, ""); e != nil {
				return &Failure{Reason: ReasonRunnerSystemFailure, Transient: true, KubeletRetries: kubeletRetries(e.Message),
					Message: fmt.Sprintf("pod %s cannot start (%s): %s. Check the volumes in [runners.kubernetes.volumes] and that the Secrets, ConfigMaps and claims they name exist", name, reason, e.Message)}
			}
		}
	}
	return nil
}

// kubeletRetries recognises mount failures caused by the kubelet's own
// caches timing out rather than by a missing object: the kubelet retries
// them with backoff and they clear up once the node is less busy.
func kubeletRetries(msg string) bool {
	return strings.Contains(msg, "failed to sync") || strings.Contains(msg, "timed out waiting for the condition")
}

// DeletedFailure is the failure of a job whose pod disappeared while the
// runner was not deleting it.
func DeletedFailure(podName string) *Failure {
	return &Failure{Reason: ReasonRunnerSystemFailure,
		Message: fmt.Sprintf("pod %s was deleted by someone else (kubectl, a cleanup job, a namespace deletion or the node controller) while the job ran: the job cannot continue; exclude podrunner.io/managed=true pods from cleanups and retry the job", podName)}
}

// QuotaExceeded recognises a create refused by a ResourceQuota (403
// "exceeded quota"), worth retrying with backoff since running jobs free
// the quota; it returns the API server's message. A quota that requires
// limits ("must specify limits.memory") is a configuration problem and
// is not reported here.
func QuotaExceeded(err error) (bool, string) {
	if err == nil || !apierrors.IsForbidden(err) {
		return false, ""
	}
	msg := err.Error()
	var status apierrors.APIStatus
	if errors.As(err, &status) {
		msg = status.Status().Message
	}
	if !strings.Contains(msg, "exceeded quota") {
		return false, ""
	}
	return true, msg
}

func pullFailure(container, image, reason, msg string) *Failure {
	what := "the job's image"
	switch {
	case container == ContainerInit:
		what = "the podrunner image (helper_image)"
	case strings.HasPrefix(container, ServiceContainerPrefix):
		what = "the service image"
	}
	return &Failure{Reason: ReasonImagePullFailure, Container: container,
		Message: fmt.Sprintf("cannot pull image %q for container %s (%s): %s: %s. Check the image name and tag, that the registry is reachable and, for a private registry, image_pull_secrets", image, container, what, reason, orDefault(msg, "no message from the kubelet"))}
}

// pullFailedEvent finds a kubelet "Failed to pull image" event about a
// container that has not started.
func pullFailedEvent(pod *corev1.Pod, events []corev1.Event) *Failure {
	started := map[string]bool{}
	for _, cs := range allStatuses(pod) {
		if cs.State.Running != nil || cs.State.Terminated != nil || cs.LastTerminationState.Terminated != nil {
			started[cs.Name] = true
		}
	}
	containers := append(append([]corev1.Container(nil), pod.Spec.InitContainers...), pod.Spec.Containers...)
	for _, c := range containers {
		if started[c.Name] {
			continue
		}
		if e := lastEvent(events, "Failed", c.Name); e != nil && e.InvolvedObject.FieldPath != "" && strings.HasPrefix(e.Message, "Failed to pull image") {
			return pullFailure(c.Name, c.Image, "ErrImagePull", e.Message)
		}
	}
	return nil
}

func waitingFailure(pod *corev1.Pod, cs corev1.ContainerStatus, events []corev1.Event) *Failure {
	w := cs.State.Waiting
	if w == nil {
		return nil
	}
	image := cs.Image
	if image == "" {
		image = specImage(pod, cs.Name)
	}
	switch {
	case slices.Contains(imagePullReasons, w.Reason):
		msg := w.Message
		// ImagePullBackOff only says "Back-off pulling image"; the kubelet's
		// reason is in the last Failed event of the container.
		if e := lastEvent(events, "Failed", cs.Name); e != nil && (msg == "" || w.Reason == "ImagePullBackOff") {
			msg = e.Message
		}
		return pullFailure(cs.Name, image, w.Reason, msg)
	case w.Reason == "CreateContainerConfigError":
		return &Failure{Reason: ReasonConfigurationError, Container: cs.Name,
			Message: fmt.Sprintf("container %s cannot be configured: %s. A Secret or ConfigMap it refers to is missing or lacks a key, or the image's user cannot be used with run_as_non_root; fix the runner's config", cs.Name, orDefault(w.Message, w.Reason))}
	case w.Reason == "CreateContainerError", w.Reason == "RunContainerError", w.Reason == "CrashLoopBackOff", w.Reason == "PreStartHookError", w.Reason == "PostStartHookError":
		return &Failure{Reason: ReasonRunnerSystemFailure, Container: cs.Name,
			Message: fmt.Sprintf("container %s (image %s) cannot be started: %s: %s", cs.Name, image, w.Reason, orDefault(w.Message, "no message from the kubelet"))}
	}
	return nil
}

// memoryLimit is the container's memory limit as text, and the keys that
// set it.
func memoryLimit(pod *corev1.Pod, container string) (string, string) {
	key := "memory_limit / KUBERNETES_MEMORY_LIMIT"
	switch {
	case container == ContainerInit:
		key = "helper_memory_limit / KUBERNETES_HELPER_MEMORY_LIMIT"
	case strings.HasPrefix(container, ServiceContainerPrefix):
		key = "service_memory_limit / KUBERNETES_SERVICE_MEMORY_LIMIT"
	}
	for _, c := range append(slices.Clone(pod.Spec.InitContainers), pod.Spec.Containers...) {
		if c.Name != container {
			continue
		}
		if q, ok := c.Resources.Limits[corev1.ResourceMemory]; ok {
			return q.String(), key
		}
	}
	if r := pod.Spec.Resources; r != nil {
		if q, ok := r.Limits[corev1.ResourceMemory]; ok {
			return q.String() + " (pod)", "pod_memory_limit / KUBERNETES_POD_MEMORY_LIMIT"
		}
	}
	return "none set (the node's or namespace's limit applied)", key
}

func allStatuses(pod *corev1.Pod) []corev1.ContainerStatus {
	return append(slices.Clone(pod.Status.InitContainerStatuses), pod.Status.ContainerStatuses...)
}

// terminated is the container's current termination, else its last one.
func terminated(cs corev1.ContainerStatus) *corev1.ContainerStateTerminated {
	if cs.State.Terminated != nil {
		return cs.State.Terminated
	}
	return cs.LastTerminationState.Terminated
}

// podStarted reports whether the kubelet got past mounting the volumes
// and creating the sandbox: the sandbox is ready or a container started.
func podStarted(pod *corev1.Pod) bool {
	if c := condition(pod, corev1.PodReadyToStartContainers); c != nil && c.Status == corev1.ConditionTrue {
		return true
	}
	for _, cs := range allStatuses(pod) {
		if cs.State.Running != nil || cs.State.Terminated != nil || cs.LastTerminationState.Terminated != nil {
			return true
		}
	}
	return false
}

func condition(pod *corev1.Pod, t corev1.PodConditionType) *corev1.PodCondition {
	for i := range pod.Status.Conditions {
		if pod.Status.Conditions[i].Type == t {
			return &pod.Status.Conditions[i]
		}
	}
	return nil
}

// podEventsOf keeps the events about pod (by UID when both have one).
func podEventsOf(pod *corev1.Pod, events []corev1.Event) []corev1.Event {
	var out []corev1.Event
	for _, e := range events {
		o := e.InvolvedObject
		if o.Kind != "" && o.Kind != "Pod" {
			continue
		}
		if o.Name != pod.Name || (o.Namespace != "" && pod.Namespace != "" && o.Namespace != pod.Namespace) {
			continue
		}
		if o.UID != "" && pod.UID != "" && o.UID != pod.UID {
			continue
		}
		out = append(out, e)
	}
	return out
}

// lastEvent is the latest event with reason (about container, when given).
func lastEvent(events []corev1.Event, reason, container string) *corev1.Event {
	var best *corev1.Event
	for i := range events {
		e := &events[i]
		if e.Reason != reason {
			continue
		}
		if container != "" && e.InvolvedObject.FieldPath != "" &&
			e.InvolvedObject.FieldPath != "spec.containers{"+container+"}" &&
			e.InvolvedObject.FieldPath != "spec.initContainers{"+container+"}" {
			continue
		}
		if best == nil || !eventAt(*e).Before(eventAt(*best)) {
			best = e
		}
	}
	return best
}

// eventAt is when an event last happened (events.k8s.io writers only set
// EventTime, core writers LastTimestamp).
func eventAt(e corev1.Event) time.Time {
	switch {
	case !e.LastTimestamp.IsZero():
		return e.LastTimestamp.Time
	case !e.EventTime.IsZero():
		return e.EventTime.Time
	case !e.FirstTimestamp.IsZero():
		return e.FirstTimestamp.Time
	}
	return e.CreationTimestamp.Time
}

func serviceImage(pod *corev1.Pod, cs corev1.ContainerStatus) string {
	if img := specImage(pod, cs.Name); img != "" {
		return img
	}
	return cs.Image
}

func specImage(pod *corev1.Pod, container string) string {
	for _, c := range append(slices.Clone(pod.Spec.InitContainers), pod.Spec.Containers...) {
		if c.Name == container {
			return c.Image
		}
	}
	return ""
}

func detail(reason, message string) string {
	switch {
	case reason != "" && message != "":
		return " (" + reason + ": " + strings.TrimSpace(message) + ")"
	case reason != "":
		return " (" + reason + ")"
	case message != "":
		return " (" + strings.TrimSpace(message) + ")"
	}
	return ""
}

func orDefault(s, def string) string {
	if s = strings.TrimSpace(s); s != "" {
		return s
	}
	return def
}

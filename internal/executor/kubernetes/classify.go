package kubernetes

import (
	"errors"
	"fmt"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/podrunner/podrunner/internal/gitlab"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
)

// Failure is why a job's pod cannot run or stopped running.
type Failure struct {
	// Reason is GitLab's failure reason.
	Reason gitlab.FailureReason
	// Message is for the job log: what happened and what to do.
	Message string
	// Container is the container concerned ("" for the pod as a whole).
	Container string
	// Transient means Kubernetes may still get over it (a volume not
	// mounted yet): the caller gives it a short grace period before
	// failing the job.
	Transient bool
	// Waits marks a state that clears by itself given time (no node
	// fits until the cluster adds one, a registry briefly unreachable,
	// the kubelet's Secret cache not synced on a busy node): the job
	// waits for it up to poll_timeout and fails with Message only then.
	// Waits implies Transient.
	Waits bool
	// Progress says, while the job waits, what the cluster is doing
	// (one trace line; it changes when the state does).
	Progress string
	// ExitCode is the exit code to report for the job (an OOM-killed
	// build container: 137), 0 when there is none.
	ExitCode int
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
		return evictedFailure(name, st.Message)
	}
	if c := condition(pod, corev1.DisruptionTarget); c != nil && c.Status == corev1.ConditionTrue {
		return &Failure{Reason: gitlab.RunnerSystemFailure, Message: fmt.Sprintf("pod %s was stopped by Kubernetes (%s): %s. This happens on node drains, preemption or taints; retry the job, or protect job pods (pod_disruption_budget, priority_class_name)", name, c.Reason, orDefault(c.Message, "no message"))}
	}
	if st.Reason == "DeadlineExceeded" {
		return &Failure{Reason: gitlab.JobExecutionTimeout, Message: fmt.Sprintf("pod %s exceeded its activeDeadlineSeconds (job timeout + after_script timeout + 60 s) and was stopped by Kubernetes: raise the job's timeout if it needs more time", name)}
	}

	// OOM first: it explains any other symptom of the same container.
	for _, cs := range allStatuses(pod) {
		t := terminated(cs)
		if t == nil || t.Reason != "OOMKilled" {
			continue
		}
		limit, key := memoryLimit(pod, cs.Name)
		code := int(t.ExitCode)
		if code == 0 {
			code = oomExitCode // the kill's signal, whatever the runtime recorded
		}
		f := &Failure{Reason: gitlab.ScriptFailure, Container: cs.Name,
			Message: fmt.Sprintf("container %s was OOMKilled (exit code %d): memory limit %s; raise %s", cs.Name, code, limit, key)}
		if cs.Name == ContainerBuild {
			f.ExitCode = code // the script's exit code, as GitLab shows it
		}
		return f
	}

	for _, cs := range pod.Status.ContainerStatuses {
		if f := waitingFailure(pod, cs, events); f != nil {
			return f
		}
		if t := terminated(cs); cs.Name == ContainerHelper && t != nil && t.ExitCode != 0 {
			return &Failure{Reason: gitlab.RunnerSystemFailure, Container: cs.Name,
				Message: fmt.Sprintf("container %s (image %s) failed with exit code %d%s: the podrunner agent could not be installed; check helper_image in [runners.kubernetes] points at a podrunner helper image of this version", cs.Name, cs.Image, t.ExitCode, detail(t.Reason, t.Message))}
		}
	}
	// The kubelet reports a failed pull as an event at once, while the
	// container status shows it only from the pod's next sync, seconds
	// later.
	if f := pullFailedEvent(pod, events); f != nil {
		return f
	}
	for _, cs := range pod.Status.ContainerStatuses {
		t := terminated(cs)
		if t == nil || t.ExitCode == 0 {
			continue
		}
		if strings.HasPrefix(cs.Name, ServiceContainerPrefix) {
			return &Failure{Reason: gitlab.ScriptFailure, Container: cs.Name,
				Message: fmt.Sprintf("service container %s (image %s) exited with code %d%s: the job's service crashed; check the service's command, variables and resources (service_memory_limit / KUBERNETES_SERVICE_MEMORY_LIMIT)", cs.Name, serviceImage(pod, cs), t.ExitCode, detail(t.Reason, t.Message))}
		}
		if cs.Name == ContainerBuild {
			return &Failure{Reason: gitlab.RunnerSystemFailure, Container: cs.Name,
				Message: fmt.Sprintf("container build (image %s) exited with code %d%s before the job ended: the podrunner agent failed; the end of the agent's log has details%s", cs.Image, t.ExitCode, detail(t.Reason, t.Message), helperVolumeHint(pod, cs.Name))}
		}
	}
	if st.Phase == corev1.PodFailed {
		return &Failure{Reason: gitlab.RunnerSystemFailure, Message: fmt.Sprintf("pod %s failed%s", name, detail(st.Reason, st.Message))}
	}

	if c := unschedulable(pod); c != nil {
		msg := c.Message
		if e := lastEvent(events, "FailedScheduling", ""); msg == "" && e != nil {
			msg = e.Message
		}
		// The scheduler ends its message with a period; ours follow it.
		msg = strings.TrimSuffix(orDefault(msg, "no message from the scheduler"), ".")
		const advice = "Check the job's requests (cpu_request, memory_request or their KUBERNETES_* overwrites), node_selector, node_tolerations and affinity"
		progress := "unschedulable: " + msg
		if e := lastAutoscalerEvent(events); e != nil {
			if e.Reason == "NotTriggerScaleUp" {
				// Waiting cannot help: no node group would fit the pod.
				return &Failure{Reason: gitlab.RunnerSystemFailure,
					Message: fmt.Sprintf("pod %s cannot be scheduled (%s) and cluster-autoscaler will not add a node for it: %s. %s, or the autoscaler's node groups", name, msg, orDefault(e.Message, "no message"), advice)}
			}
			progress += "; cluster-autoscaler: " + orDefault(e.Message, e.Reason)
		}
		return &Failure{Reason: gitlab.RunnerSystemFailure, Transient: true, Waits: true, Progress: progress,
			Message: fmt.Sprintf("pod %s cannot be scheduled: %s. %s, or raise poll_timeout if the cluster adds nodes slowly", name, msg, advice)}
	}
	// Once the sandbox is up or a container ran, the volumes are mounted
	// and the sandbox exists: such events are from attempts the kubelet
	// has since retried with success (a busy node's kubelet often fails
	// its first mount of the job's Secret with "failed to sync secret
	// cache"), and events are never withdrawn.
	if st.Phase == corev1.PodPending && !podStarted(pod) {
		for _, reason := range []string{"FailedMount", "FailedAttachVolume", "FailedCreatePodSandBox"} {
			if e := lastEvent(events, reason, ""); e != nil {
				waits := kubeletRetries(e.Message)
				return &Failure{Reason: gitlab.RunnerSystemFailure, Transient: true, Waits: waits,
					Progress: fmt.Sprintf("%s (the kubelet retries): %s", reason, e.Message),
					Message:  fmt.Sprintf("pod %s cannot start (%s): %s. Check the volumes in [runners.kubernetes.volumes] and that the Secrets, ConfigMaps and claims they name exist", name, reason, e.Message)}
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
	return &Failure{Reason: gitlab.RunnerSystemFailure,
		Message: fmt.Sprintf("pod %s was deleted by someone else (kubectl, a cleanup job, a namespace deletion or the node controller) while the job ran: the job cannot continue; exclude podrunner.io/managed=true pods from cleanups and retry the job", podName)}
}

// evictedFailure is the kubelet's eviction of the pod, with its message
// (pod status or Evicted event).
func evictedFailure(name, msg string) *Failure {
	advice := "Give the job enough memory_request / ephemeral_storage_request (or KUBERNETES_MEMORY_REQUEST, KUBERNETES_EPHEMERAL_STORAGE_REQUEST) so the node does not run short"
	if strings.Contains(msg, "exceeds the total limit") || strings.Contains(msg, "exceeds the limit") {
		// The job's own ephemeral storage limit, not the node.
		advice = "The job wrote more to its container file systems and emptyDir volumes than its limit allows: raise ephemeral_storage_limit (KUBERNETES_EPHEMERAL_STORAGE_LIMIT, or the job's override) or write less"
	}
	return &Failure{Reason: gitlab.RunnerSystemFailure, Message: fmt.Sprintf("pod %s was evicted by Kubernetes: %s. %s", name, orDefault(strings.TrimSpace(msg), "no message"), advice)}
}

// StoppedFailure is the build container (where the agent runs the
// script) stopped from outside before the agent reported the result:
// crictl/docker stop, a container runtime restart, the node.
func StoppedFailure(podName string, t *corev1.ContainerStateTerminated) *Failure {
	return &Failure{Reason: gitlab.RunnerSystemFailure, Container: ContainerBuild,
		Message: fmt.Sprintf("the build container of pod %s stopped (%s, exit code %d) before the job's script ended: it was stopped from outside the job (crictl or docker stop, a container runtime restart, the node); retry the job",
			podName, orDefault(t.Reason, "no reason"), t.ExitCode)}
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

func pullFailure(pod *corev1.Pod, container, image, reason, msg string) *Failure {
	what := "the job's image"
	switch {
	case container == ContainerHelper, image != "" && image == helperVolumeImage(pod):
		what = "the podrunner helper image (helper_image)"
	case strings.HasPrefix(container, ServiceContainerPrefix):
		what = "the service image"
	}
	msg = orDefault(msg, "no message from the kubelet")
	f := &Failure{Reason: gitlab.ImagePullFailure, Container: container}
	switch pullProblemOf(msg) {
	case pullNotFound:
		f.Message = fmt.Sprintf("image %q for container %s (%s) does not exist: %s. Check the image name and tag", image, container, what, msg)
	case pullDenied:
		f.Message = fmt.Sprintf("the registry refused access to image %q for container %s (%s): %s. For a private registry, give the job credentials (image_pull_secrets, or DOCKER_AUTH_CONFIG); else check the image name", image, container, what, msg)
	case pullUnreachable:
		f.Transient, f.Waits = true, true
		f.Progress = fmt.Sprintf("cannot pull image %q yet, the kubelet retries with back-off: %s", image, msg)
		f.Message = fmt.Sprintf("the registry of image %q for container %s (%s) stayed unreachable: %s. Check that the registry is up and reachable from the nodes, or raise poll_timeout", image, container, what, msg)
	default:
		f.Message = fmt.Sprintf("cannot pull image %q for container %s (%s): %s: %s. Check the image name and tag, that the registry is reachable and, for a private registry, image_pull_secrets", image, container, what, reason, msg)
	}
	return f
}

// What a kubelet pull error says went wrong.
type pullProblem int

const (
	pullOther       pullProblem = iota
	pullNotFound                // the image or tag does not exist
	pullDenied                  // the registry wants (other) credentials
	pullUnreachable             // the registry cannot be reached right now
)

// registry5xx is an HTTP 5xx status in containerd's "unexpected status"
// errors ("... : 503 Service Unavailable").
var registry5xx = regexp.MustCompile(`\b5\d\d [A-Z][a-z]`)

// pullProblemOf reads the kubelet's pull error (containerd's or CRI-O's
// words). Answers from the registry win over transport errors: a "denied"
// or "not found" is the registry speaking, so it was reachable.
func pullProblemOf(msg string) pullProblem {
	m := strings.ToLower(msg)
	has := func(subs ...string) bool {
		for _, s := range subs {
			if strings.Contains(m, s) {
				return true
			}
		}
		return false
	}
	switch {
	case has("unauthorized", "authentication required", "denied", "401 ", "403 "):
		return pullDenied
	case has("manifest unknown", "not found", "name unknown"):
		return pullNotFound
	case has("connection refused", "i/o timeout", "no route to host", "network is unreachable", "connection reset by peer", "tls handshake timeout"),
		registry5xx.MatchString(msg):
		return pullUnreachable
	}
	return pullOther
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
		if e := lastPullFailed(events, c.Name); e != nil && e.InvolvedObject.FieldPath != "" {
			return pullFailure(pod, c.Name, c.Image, "ErrImagePull", e.Message)
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
		// reason is in the last "Failed to pull image" event of the
		// container (its "Error: ImagePullBackOff" events say nothing).
		if e := lastPullFailed(events, cs.Name); e != nil && (msg == "" || w.Reason == "ImagePullBackOff") {
			msg = e.Message
		}
		// The helper image volume is pulled for the build container, whose
		// status then names the volume's image, not the container's.
		if ref := helperVolumeImage(pod); ref != "" && strings.Contains(msg, strconv.Quote(ref)) {
			image = ref
		}
		return pullFailure(pod, cs.Name, image, w.Reason, msg)
	case w.Reason == "CreateContainerConfigError":
		return &Failure{Reason: gitlab.RunnerConfigurationError, Container: cs.Name,
			Message: fmt.Sprintf("container %s cannot be configured: %s. A Secret or ConfigMap it refers to is missing or lacks a key, or the image's user cannot be used with run_as_non_root; fix the runner's config", cs.Name, orDefault(w.Message, w.Reason))}
	case w.Reason == "CreateContainerError", w.Reason == "RunContainerError", w.Reason == "CrashLoopBackOff", w.Reason == "PreStartHookError", w.Reason == "PostStartHookError":
		return &Failure{Reason: gitlab.RunnerSystemFailure, Container: cs.Name,
			Message: fmt.Sprintf("container %s (image %s) cannot be started: %s: %s%s", cs.Name, image, w.Reason, orDefault(w.Message, "no message from the kubelet"), helperVolumeHint(pod, cs.Name))}
	}
	return nil
}

// memoryLimit is the container's memory limit as text, and the keys that
// set it.
func memoryLimit(pod *corev1.Pod, container string) (string, string) {
	key := "memory_limit / KUBERNETES_MEMORY_LIMIT"
	switch {
	case container == ContainerHelper:
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

// unschedulable is the pod's PodScheduled condition while the scheduler
// finds no node for it, else nil.
func unschedulable(pod *corev1.Pod) *corev1.PodCondition {
	if c := condition(pod, corev1.PodScheduled); c != nil && c.Status == corev1.ConditionFalse && c.Reason == corev1.PodReasonUnschedulable {
		return c
	}
	return nil
}

// lastAutoscalerEvent is cluster-autoscaler's latest word on the pod:
// TriggeredScaleUp (a node is coming) or NotTriggerScaleUp (no node group
// fits), nil when there is none (no autoscaler, or it has not looked yet).
func lastAutoscalerEvent(events []corev1.Event) *corev1.Event {
	up, not := lastEvent(events, "TriggeredScaleUp", ""), lastEvent(events, "NotTriggerScaleUp", "")
	switch {
	case up == nil:
		return not
	case not == nil:
		return up
	case eventAt(*up).After(eventAt(*not)):
		return up
	}
	return not
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
	return lastEventWhere(events, reason, container, func(*corev1.Event) bool { return true })
}

// helperVolumeImage is the helper image when the pod mounts it as an
// image volume (helper_image_volume), else "".
func helperVolumeImage(pod *corev1.Pod) string {
	for _, v := range pod.Spec.Volumes {
		if v.Name == volumeHelper && v.Image != nil {
			return v.Image.Reference
		}
	}
	return ""
}

// helperVolumeHint points at helper_image_volume when the build container
// runs the agent from the helper image volume and could not start or run
// it: a runtime that mounts image volumes noexec (older CRI-O) or does not
// know them fails there.
func helperVolumeHint(pod *corev1.Pod, container string) string {
	if container != ContainerBuild || helperVolumeImage(pod) == "" {
		return ""
	}
	return "; the agent runs from the helper image volume (helper_image_volume): if the node's container runtime cannot mount image volumes or mounts them noexec, set helper_image_volume = false"
}

// lastPullFailed is the container's last kubelet event saying why a pull
// failed ("Failed to pull image …").
func lastPullFailed(events []corev1.Event, container string) *corev1.Event {
	return lastEventWhere(events, "Failed", container, func(e *corev1.Event) bool {
		return strings.HasPrefix(e.Message, "Failed to pull image")
	})
}

func lastEventWhere(events []corev1.Event, reason, container string, keep func(*corev1.Event) bool) *corev1.Event {
	var best *corev1.Event
	for i := range events {
		e := &events[i]
		if e.Reason != reason || !keep(e) {
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

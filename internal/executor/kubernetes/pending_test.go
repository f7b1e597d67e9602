package kubernetes

import (
	"context"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	k8stesting "k8s.io/client-go/testing"

	"github.com/podrunner/podrunner/internal/agent"
	"github.com/podrunner/podrunner/internal/executor"
	"github.com/podrunner/podrunner/internal/gitlab"
)

func TestWaitNotesOneLinePerChange(t *testing.T) {
	var b strings.Builder
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	now := t0
	n := waitNotes{w: &b, pod: "ci/p", started: t0, now: func() time.Time { return now }}
	for _, step := range []struct {
		after time.Duration
		state string
	}{
		{2 * time.Second, "unschedulable: 0/1 nodes"},
		{3 * time.Second, "unschedulable: 0/1 nodes"},
		{9 * time.Second, "unschedulable: 0/1 nodes"},
		{40 * time.Second, "unschedulable: 0/1 nodes; cluster-autoscaler: pod triggered scale-up"},
		{50 * time.Second, ""},
		{61 * time.Second, "cannot pull image yet"},
		{62 * time.Second, "cannot pull image yet"},
	} {
		now = t0.Add(step.after)
		n.say(step.state)
	}
	want := "Waiting for pod ci/p (2s): unschedulable: 0/1 nodes\n" +
		"Waiting for pod ci/p (40s): unschedulable: 0/1 nodes; cluster-autoscaler: pod triggered scale-up\n" +
		"Waiting for pod ci/p (1m1s): cannot pull image yet\n"
	if b.String() != want {
		t.Errorf("trace:\n%s\nwant:\n%s", b.String(), want)
	}
}

func TestPodRequests(t *testing.T) {
	q := resource.MustParse
	always := corev1.ContainerRestartPolicyAlways
	req := func(cpu, mem string) corev1.ResourceRequirements {
		return corev1.ResourceRequirements{Requests: corev1.ResourceList{corev1.ResourceCPU: q(cpu), corev1.ResourceMemory: q(mem)}}
	}
	pod := &corev1.Pod{Spec: corev1.PodSpec{
		InitContainers: []corev1.Container{
			{Name: "init-big", Resources: req("3", "64Mi")},
			{Name: "sidecar", RestartPolicy: &always, Resources: req("100m", "16Mi")},
		},
		Containers: []corev1.Container{{Name: "build", Resources: req("1", "128Mi")}, {Name: "svc-0", Resources: req("500m", "64Mi")}},
		Overhead:   corev1.ResourceList{corev1.ResourceCPU: q("10m")},
	}}
	got := podRequests(pod)
	cpu, mem := got[corev1.ResourceCPU], got[corev1.ResourceMemory]
	// cpu: the init container's 3 beats 1 + 0.5 + 0.1; plus the overhead.
	if cpu.Cmp(q("3010m")) != 0 || mem.Cmp(q("208Mi")) != 0 {
		t.Errorf("requests cpu %s memory %s, want 3010m and 208Mi", cpu.String(), mem.String())
	}
}

// unschedulableStatus is a pending pod the scheduler finds no node for.
func unschedulableStatus(*corev1.Pod) corev1.PodStatus {
	return corev1.PodStatus{Phase: corev1.PodPending, Conditions: []corev1.PodCondition{{
		Type: corev1.PodScheduled, Status: corev1.ConditionFalse, Reason: corev1.PodReasonUnschedulable,
		Message: "0/1 nodes are available: 1 node(s) were unschedulable.",
	}}}
}

func (h *harness) autoscalerEvent(pod *corev1.Pod, reason, msg string) {
	h.t.Helper()
	ev := &corev1.Event{
		ObjectMeta:     metav1.ObjectMeta{Name: pod.Name + "." + strings.ToLower(reason), Namespace: testNS},
		InvolvedObject: corev1.ObjectReference{Kind: "Pod", Name: pod.Name, Namespace: testNS, UID: pod.UID},
		Reason:         reason, Message: msg, Type: corev1.EventTypeNormal,
		Source:        corev1.EventSource{Component: "cluster-autoscaler"},
		LastTimestamp: metav1.Now(),
	}
	if _, err := h.cs.CoreV1().Events(testNS).Create(context.Background(), ev, metav1.CreateOptions{}); err != nil {
		h.t.Fatal(err)
	}
}

func TestRunUnschedulableWaitsForCapacity(t *testing.T) {
	h := newHarness(t)
	h.status = unschedulableStatus
	tr := &syncBuffer{}
	ch := h.start(context.Background(), &executor.Job{Payload: testPayload(), Trace: tr})
	h.waitAction("create", "pods")
	waitFor(t, func() bool { return strings.Contains(tr.String(), "unschedulable: 0/1 nodes") })
	// Longer than the transient grace: the job still waits.
	pod := h.onlyPod()
	for range 3 {
		h.setPodStatus(func(s *corev1.PodStatus) { s.Conditions[0].LastProbeTime = metav1.Now() })
	}
	h.autoscalerEvent(pod, "TriggeredScaleUp", "pod triggered scale-up: [{ci-pool 1->2 (max: 3)}]")
	waitFor(t, func() bool { return strings.Contains(tr.String(), "cluster-autoscaler: pod triggered scale-up") })
	time.Sleep(3 * h.ex.grace) // would have failed the job before
	h.setPodStatus(func(s *corev1.PodStatus) { *s = runningStatus() })
	h.agent.finish(agent.Result{Success: true})
	o := wait(t, ch)
	if o.err != nil || !o.res.Success {
		t.Fatalf("result %+v, err %v\n%s", o.res, o.err, tr.String())
	}
	if n := strings.Count(tr.String(), "Waiting for pod ci/"+pod.Name+" ("); n != 2 {
		t.Errorf("%d wait lines, want 2 (one per change):\n%s", n, tr.String())
	}
}

func TestRunNotTriggerScaleUpFailsAtOnce(t *testing.T) {
	h := newHarness(t)
	h.status = unschedulableStatus
	tr := &syncBuffer{}
	ch := h.start(context.Background(), &executor.Job{Payload: testPayload(), Trace: tr})
	h.waitAction("create", "pods")
	waitFor(t, func() bool { return strings.Contains(tr.String(), "unschedulable") })
	h.autoscalerEvent(h.onlyPod(), "NotTriggerScaleUp", "pod didn't trigger scale-up: 1 Insufficient cpu")
	o := wait(t, ch)
	if o.err != nil || o.res.Success || o.res.FailureReason != gitlab.RunnerSystemFailure {
		t.Fatalf("result %+v, err %v", o.res, o.err)
	}
	if !strings.Contains(tr.String(), "cluster-autoscaler will not add a node for it: pod didn't trigger scale-up: 1 Insufficient cpu") ||
		strings.Contains(tr.String(), "timed out") {
		t.Errorf("trace:\n%s", tr.String())
	}
}

func TestRunUnschedulableTimeoutNamesCapacity(t *testing.T) {
	for _, c := range []struct {
		name      string
		forbidden bool
		want      []string
	}{
		{"nodes listed", false, []string{"The pod requests cpu 64", "the largest allocatable of the 2 node(s): cpu 4 (node big)"}},
		{"no permission", true, []string{"The pod requests cpu 64", "allocatable unknown: no permission to list nodes"}},
	} {
		t.Run(c.name, func(t *testing.T) {
			h := newHarness(t)
			h.status = unschedulableStatus
			h.ex.pollLimit = 2 * time.Second
			h.ex.cfg.CPURequest = "64"
			for name, cpu := range map[string]string{"small": "2", "big": "4"} {
				node := &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: name},
					Status: corev1.NodeStatus{Allocatable: corev1.ResourceList{corev1.ResourceCPU: resource.MustParse(cpu)}}}
				if _, err := h.cs.CoreV1().Nodes().Create(context.Background(), node, metav1.CreateOptions{}); err != nil {
					t.Fatal(err)
				}
			}
			if c.forbidden {
				h.cs.PrependReactor("list", "nodes", func(k8stesting.Action) (bool, runtime.Object, error) {
					return true, nil, apierrors.NewForbidden(schema.GroupResource{Resource: "nodes"}, "", nil)
				})
			}
			tr := &syncBuffer{}
			o := wait(t, h.start(context.Background(), &executor.Job{Payload: testPayload(), Trace: tr}))
			if o.err != nil || o.res.Success || o.res.FailureReason != gitlab.RunnerSystemFailure {
				t.Fatalf("result %+v, err %v", o.res, o.err)
			}
			for _, w := range append(c.want, "timed out after 2s", "cannot be scheduled: 0/1 nodes are available") {
				if !strings.Contains(tr.String(), w) {
					t.Errorf("trace lacks %q:\n%s", w, tr.String())
				}
			}
		})
	}
}

func TestRunOOMKilledMidJobReportsExitCode(t *testing.T) {
	h := newHarness(t)
	tr := &syncBuffer{}
	ch := h.start(context.Background(), &executor.Job{Payload: testPayload(), Trace: tr})
	h.waitAction("create", "pods")
	h.agent.write("$ dd if=/dev/zero of=/dev/null bs=128M count=1\n")
	waitFor(t, func() bool { return h.agentCalls() > 0 })
	// The whole container is killed (memory.oom.group): the agent never
	// reports a result; only the container state tells.
	h.setPodStatus(func(s *corev1.PodStatus) {
		s.ContainerStatuses[0].State = corev1.ContainerState{Terminated: &corev1.ContainerStateTerminated{Reason: "OOMKilled", ExitCode: 137}}
	})
	o := wait(t, ch)
	if o.err != nil || o.res.Success || o.res.FailureReason != gitlab.ScriptFailure || o.res.ExitCode != 137 {
		t.Fatalf("result %+v, err %v, want script_failure exit 137\n%s", o.res, o.err, tr.String())
	}
}

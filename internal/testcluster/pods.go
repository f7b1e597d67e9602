package testcluster

import (
	"context"
	"fmt"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/tools/cache"
	watchtools "k8s.io/client-go/tools/watch"
)

// PodCondition reports whether a pod reached the state a test waits for; an
// error stops the wait (e.g. the pod failed when success was expected).
type PodCondition func(*corev1.Pod) (bool, error)

// WaitForPod watches the pod ns/name (list + watch, resumed on disconnect)
// until cond holds, and returns the pod as it was then. It fails the test
// after DefaultTimeout, printing the pod's last status.
func (c *Cluster) WaitForPod(t testing.TB, ns, name string, cond PodCondition) *corev1.Pod {
	t.Helper()
	pod, err := c.waitForPod(Context(t), ns, name, cond)
	if err != nil {
		t.Fatalf("wait for pod %s/%s: %v", ns, name, err)
	}
	return pod
}

func (c *Cluster) waitForPod(ctx context.Context, ns, name string, cond PodCondition) (*corev1.Pod, error) {
	ctx, cancel := context.WithTimeout(ctx, DefaultTimeout)
	defer cancel()
	pods := c.Clientset.CoreV1().Pods(ns)
	selector := fields.OneTermEqualSelector("metadata.name", name).String()
	lw := &cache.ListWatch{
		ListWithContextFunc: func(ctx context.Context, o metav1.ListOptions) (runtime.Object, error) {
			o.FieldSelector = selector
			return pods.List(ctx, o)
		},
		WatchFuncWithContext: func(ctx context.Context, o metav1.ListOptions) (watch.Interface, error) {
			o.FieldSelector = selector
			return pods.Watch(ctx, o)
		},
	}
	var last *corev1.Pod
	ev, err := watchtools.UntilWithSync(ctx, lw, &corev1.Pod{}, nil, func(e watch.Event) (bool, error) {
		if e.Type == watch.Deleted {
			return false, fmt.Errorf("pod was deleted")
		}
		pod, ok := e.Object.(*corev1.Pod)
		if !ok {
			return false, nil
		}
		last = pod
		return cond(pod)
	})
	if err != nil {
		return nil, fmt.Errorf("%w (last status: %s)", err, DescribePod(last))
	}
	return ev.Object.(*corev1.Pod), nil
}

// PodPhaseIs is a PodCondition for a phase. It stops the wait early when the
// pod reaches the other terminal phase instead.
func PodPhaseIs(phase corev1.PodPhase) PodCondition {
	return func(p *corev1.Pod) (bool, error) {
		if p.Status.Phase == phase {
			return true, nil
		}
		if phase != corev1.PodFailed && p.Status.Phase == corev1.PodFailed {
			return false, fmt.Errorf("pod failed")
		}
		if phase != corev1.PodSucceeded && p.Status.Phase == corev1.PodSucceeded {
			return false, fmt.Errorf("pod succeeded")
		}
		return false, nil
	}
}

// PodTerminated holds when every container of the pod has terminated
// (phase Succeeded or Failed).
func PodTerminated(p *corev1.Pod) (bool, error) {
	return p.Status.Phase == corev1.PodSucceeded || p.Status.Phase == corev1.PodFailed, nil
}

// ContainerWaitingReason holds when the named container waits for one of
// the given reasons (e.g. "ErrImagePull", "ImagePullBackOff").
func ContainerWaitingReason(container string, reasons ...string) PodCondition {
	return func(p *corev1.Pod) (bool, error) {
		for _, s := range p.Status.ContainerStatuses {
			if s.Name != container || s.State.Waiting == nil {
				continue
			}
			for _, r := range reasons {
				if s.State.Waiting.Reason == r {
					return true, nil
				}
			}
		}
		return false, nil
	}
}

// ContainerStatus returns the status of the named container, failing the
// test when the pod has none for it.
func ContainerStatus(t testing.TB, p *corev1.Pod, container string) corev1.ContainerStatus {
	t.Helper()
	for _, s := range p.Status.ContainerStatuses {
		if s.Name == container {
			return s
		}
	}
	t.Fatalf("pod %s/%s has no status for container %q: %s", p.Namespace, p.Name, container, DescribePod(p))
	return corev1.ContainerStatus{}
}

// PodLogs returns the full log of a container.
func (c *Cluster) PodLogs(t testing.TB, ns, pod, container string) string {
	t.Helper()
	b, err := c.Clientset.CoreV1().Pods(ns).GetLogs(pod, &corev1.PodLogOptions{Container: container}).DoRaw(Context(t))
	if err != nil {
		t.Fatalf("logs of %s/%s container %s: %v", ns, pod, container, err)
	}
	return string(b)
}

// DescribePod summarises a pod's status for failure messages.
func DescribePod(p *corev1.Pod) string {
	if p == nil {
		return "no pod seen"
	}
	var b strings.Builder
	fmt.Fprintf(&b, "phase=%s", p.Status.Phase)
	if p.Status.Reason != "" {
		fmt.Fprintf(&b, " reason=%s", p.Status.Reason)
	}
	for _, s := range append(append([]corev1.ContainerStatus{}, p.Status.InitContainerStatuses...), p.Status.ContainerStatuses...) {
		fmt.Fprintf(&b, " [%s:", s.Name)
		switch {
		case s.State.Waiting != nil:
			fmt.Fprintf(&b, " waiting %s %s", s.State.Waiting.Reason, s.State.Waiting.Message)
		case s.State.Running != nil:
			b.WriteString(" running")
		case s.State.Terminated != nil:
			fmt.Fprintf(&b, " terminated exit=%d reason=%s", s.State.Terminated.ExitCode, s.State.Terminated.Reason)
		}
		b.WriteString("]")
	}
	return b.String()
}

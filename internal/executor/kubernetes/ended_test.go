package kubernetes

import (
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes/fake"
)

// finishedPod is a job pod whose agent has just reported: build still
// running, the containers named in others running too.
func finishedPod(others ...string) *corev1.Pod {
	p := ownedPod("p", "s_aaaaaaaaaaaa", 0)
	for _, name := range append([]string{ContainerBuild}, others...) {
		p.Spec.Containers = append(p.Spec.Containers, corev1.Container{Name: name})
		p.Status.ContainerStatuses = append(p.Status.ContainerStatuses, corev1.ContainerStatus{Name: name,
			State: corev1.ContainerState{Running: &corev1.ContainerStateRunning{}}})
	}
	p.Status.Phase = corev1.PodRunning
	return p
}

// watching starts ex's informers and waits until they hold pod p at
// resourceVersion rv ("" for any).
func watching(t *testing.T, ex *Executor, rv string) *podWatch {
	t.Helper()
	w, err := ex.podWatch(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for p := w.pod("p"); p == nil || rv != "" && p.ResourceVersion != rv; p = w.pod("p") {
		if time.Now().After(deadline) {
			t.Fatalf("the informer never saw pod p at %q", rv)
		}
		time.Sleep(5 * time.Millisecond)
	}
	return w
}

func podExists(t *testing.T, cs *fake.Clientset) bool {
	t.Helper()
	_, err := cs.CoreV1().Pods(testNS).Get(t.Context(), "p", metav1.GetOptions{})
	if err != nil && !apierrors.IsNotFound(err) {
		t.Fatal(err)
	}
	return err == nil
}

func waitGone(t *testing.T, cs *fake.Clientset) {
	t.Helper()
	deadline := time.Now().Add(endWait / 2)
	for podExists(t, cs) {
		if time.Now().After(deadline) {
			t.Fatal("the pod was not deleted once it ended")
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// updatePod writes pod p through the API with edit applied and returns its
// new resourceVersion.
func updatePod(t *testing.T, cs *fake.Clientset, edit func(*corev1.Pod)) string {
	t.Helper()
	pod, err := cs.CoreV1().Pods(testNS).Get(t.Context(), "p", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	edit(pod)
	pod, err = cs.CoreV1().Pods(testNS).Update(t.Context(), pod, metav1.UpdateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	return pod.ResourceVersion
}

// A finished job's pod is deleted once it has ended by itself, not while
// it still runs; one with a service running, or any pod when the
// executor closes, is deleted at once.
func TestDeleteWhenEnded(t *testing.T) {
	t.Run("ends by itself", func(t *testing.T) {
		cs := fake.NewClientset(finishedPod())
		optimisticPods(cs)
		ex := managerOn(t, cs, "s_aaaaaaaaaaaa")
		w := watching(t, ex, "")
		if !ex.deleteWhenEnded(w, "p", "") {
			t.Fatal("a pod with only the agent running is not left to end")
		}
		// A change that does not end the pod: seen, and the pod stays.
		rv := updatePod(t, cs, func(p *corev1.Pod) { p.Labels["unrelated"] = "x" })
		watching(t, ex, rv)
		if !podExists(t, cs) {
			t.Fatal("the pod was deleted while it still ran")
		}
		updatePod(t, cs, func(p *corev1.Pod) {
			p.Status.Phase = corev1.PodSucceeded
			p.Status.ContainerStatuses[0].State = corev1.ContainerState{Terminated: &corev1.ContainerStateTerminated{}}
		})
		waitGone(t, cs)
	})
	t.Run("a service still runs", func(t *testing.T) {
		cs := fake.NewClientset(finishedPod("svc-0"))
		ex := managerOn(t, cs, "s_aaaaaaaaaaaa")
		if ex.deleteWhenEnded(watching(t, ex, ""), "p", "") {
			t.Fatal("a pod whose service runs is left to end by itself")
		}
	})
	t.Run("the helper has ended", func(t *testing.T) {
		p := finishedPod(ContainerHelper)
		p.Status.ContainerStatuses[1].State = corev1.ContainerState{Terminated: &corev1.ContainerStateTerminated{}}
		cs := fake.NewClientset(p)
		ex := managerOn(t, cs, "s_aaaaaaaaaaaa")
		if !ex.deleteWhenEnded(watching(t, ex, ""), "p", "") {
			t.Fatal("a pod whose helper container has ended is not left to end")
		}
		ex.Close()
		if podExists(t, cs) {
			t.Fatal("Close left the pod")
		}
	})
	t.Run("close", func(t *testing.T) {
		cs := fake.NewClientset(finishedPod())
		ex := managerOn(t, cs, "s_aaaaaaaaaaaa")
		if !ex.deleteWhenEnded(watching(t, ex, ""), "p", "p-registry") {
			t.Fatal("not left to end")
		}
		ex.Close() // deletes at once, well before endWait
		if podExists(t, cs) {
			t.Fatal("Close left the pod")
		}
		deletes := 0
		for _, a := range cs.Actions() {
			if r := a.GetResource().Resource; a.GetVerb() == "delete" && (r == "pods" || r == "secrets") {
				deletes++
			}
		}
		if deletes != 2 {
			t.Errorf("%d deletes, want the pod's and the registry Secret's", deletes)
		}
	})
}

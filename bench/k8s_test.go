package main

import (
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// Pods are matched to jobs by the job id in a label (podrunner) or an
// annotation (GitLab Runner); after forget, a reused id names the new
// runner's pod, never the previous runner's.
func TestPodWatchMatchesJobs(t *testing.T) {
	pw := &podWatch{pods: map[string]*podTimes{}, jobOf: map[string]string{}, wake: make(chan struct{}, 1)}
	t0 := time.Now()
	pod := func(name string, labels, annotations map[string]string, container string, running bool) *corev1.Pod {
		p := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: name, Labels: labels, Annotations: annotations},
			Spec: corev1.PodSpec{Containers: []corev1.Container{{Name: container}}}}
		if running {
			p.Status.ContainerStatuses = []corev1.ContainerStatus{{Name: container, State: corev1.ContainerState{Running: &corev1.ContainerStateRunning{}}}}
		}
		return p
	}
	pw.observe(t0, pod("podrunner-7", map[string]string{labelJobID: "7"}, nil, buildContainer, false))
	pw.observe(t0.Add(time.Second), pod("podrunner-7", map[string]string{labelJobID: "7"}, nil, buildContainer, true))
	if got := pw.podOfJob(7); got != "podrunner-7" {
		t.Fatalf("job 7 → %q", got)
	}
	if pt := pw.get("podrunner-7"); pt.running.Sub(pt.added) != time.Second {
		t.Errorf("running %v after added", pt.running.Sub(pt.added))
	}
	pw.forget()
	if got := pw.podOfJob(7); got != "" {
		t.Fatalf("after forget, job 7 → %q", got)
	}
	// GitLab Runner: the id is an annotation, the main container is "build".
	pw.observe(t0.Add(time.Minute), pod("other-7", nil, map[string]string{labelJobID: "7"}, buildContainer, true))
	if got := pw.podOfJob(7); got != "other-7" {
		t.Fatalf("job 7 of the second runner → %q, want other-7", got)
	}
}

package main

import (
	"strings"
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
	pw.observe(t0, pod("podrunner-7", map[string]string{labelJobID: "7"}, nil, buildContainer, false), false)
	pw.observe(t0.Add(time.Second), pod("podrunner-7", map[string]string{labelJobID: "7"}, nil, buildContainer, true), false)
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
	pw.observe(t0.Add(time.Minute), pod("other-7", nil, map[string]string{labelJobID: "7"}, buildContainer, true), false)
	if got := pw.podOfJob(7); got != "other-7" {
		t.Fatalf("job 7 of the second runner → %q, want other-7", got)
	}
}

// Request counts are scraped once every job pod is deleted, bare pods
// (no job id) aside.
func TestWaitJobPodsGone(t *testing.T) {
	pw := &podWatch{pods: map[string]*podTimes{}, jobOf: map[string]string{}, wake: make(chan struct{}, 1)}
	job := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "runner-1", Labels: map[string]string{labelJobID: "1"}}}
	bare := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "bare-1"}}
	pw.observe(time.Now(), job, false)
	pw.observe(time.Now(), bare, false)
	if err := pw.waitJobPodsGone(t.Context(), 50*time.Millisecond, 0); err == nil || !strings.Contains(err.Error(), "runner-1") {
		t.Fatalf("a job pod left: %v", err)
	}
	pw.observe(time.Now(), job, true)
	if err := pw.waitJobPodsGone(t.Context(), time.Second, 0); err != nil {
		t.Fatalf("all job pods deleted: %v", err)
	}
}

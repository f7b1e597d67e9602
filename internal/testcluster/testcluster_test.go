package testcluster

import (
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
)

func TestGetSkipsWithoutE2E(t *testing.T) {
	t.Setenv(EnvE2E, "")
	var skipped bool
	t.Run("inner", func(t *testing.T) {
		defer func() { skipped = t.Skipped() }()
		Get(t)
		t.Error("Get returned without PODRUNNER_E2E=1")
	})
	if !skipped {
		t.Fatal("Get did not skip the test without PODRUNNER_E2E=1")
	}
}

func TestConnectExplainsMissingEnvironment(t *testing.T) {
	tests := []struct {
		name, kubeconfig, nodeIP, want string
	}{
		{"no kubeconfig", "", "10.0.0.1", "KUBECONFIG is empty"},
		{"no node ip", "/nonexistent/kubeconfig", "", "PODRUNNER_NODE_IP is empty"},
		{"bad kubeconfig", "/nonexistent/kubeconfig", "10.0.0.1", "load kubeconfig /nonexistent/kubeconfig"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Setenv(EnvKubeconfig, tc.kubeconfig)
			t.Setenv(EnvNodeIP, tc.nodeIP)
			_, err := connect()
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("connect() error = %v, want it to contain %q", err, tc.want)
			}
		})
	}
}

func TestPodConditions(t *testing.T) {
	waiting := func(reason string) *corev1.Pod {
		return &corev1.Pod{Status: corev1.PodStatus{Phase: corev1.PodPending, ContainerStatuses: []corev1.ContainerStatus{{
			Name: "c", State: corev1.ContainerState{Waiting: &corev1.ContainerStateWaiting{Reason: reason}},
		}}}}
	}
	phase := func(p corev1.PodPhase) *corev1.Pod { return &corev1.Pod{Status: corev1.PodStatus{Phase: p}} }
	tests := []struct {
		name    string
		cond    PodCondition
		pod     *corev1.Pod
		done    bool
		wantErr bool
	}{
		{"succeeded reached", PodPhaseIs(corev1.PodSucceeded), phase(corev1.PodSucceeded), true, false},
		{"succeeded but failed", PodPhaseIs(corev1.PodSucceeded), phase(corev1.PodFailed), false, true},
		{"failed but succeeded", PodPhaseIs(corev1.PodFailed), phase(corev1.PodSucceeded), false, true},
		{"running still waiting", PodPhaseIs(corev1.PodSucceeded), phase(corev1.PodRunning), false, false},
		{"terminated failed", PodTerminated, phase(corev1.PodFailed), true, false},
		{"terminated pending", PodTerminated, phase(corev1.PodPending), false, false},
		{"waiting reason match", ContainerWaitingReason("c", "ErrImagePull", "ImagePullBackOff"), waiting("ImagePullBackOff"), true, false},
		{"waiting reason other", ContainerWaitingReason("c", "ErrImagePull"), waiting("ContainerCreating"), false, false},
		{"waiting other container", ContainerWaitingReason("d", "ErrImagePull"), waiting("ErrImagePull"), false, false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			done, err := tc.cond(tc.pod)
			if done != tc.done || (err != nil) != tc.wantErr {
				t.Fatalf("cond = (%v, %v), want (%v, error %v)", done, err, tc.done, tc.wantErr)
			}
		})
	}
}

func TestDescribePod(t *testing.T) {
	if got := DescribePod(nil); got != "no pod seen" {
		t.Fatalf("DescribePod(nil) = %q", got)
	}
	p := &corev1.Pod{Status: corev1.PodStatus{Phase: corev1.PodFailed, ContainerStatuses: []corev1.ContainerStatus{{
		Name: "c", State: corev1.ContainerState{Terminated: &corev1.ContainerStateTerminated{ExitCode: 3, Reason: "Error"}},
	}}}}
	if got, want := DescribePod(p), "phase=Failed [c: terminated exit=3 reason=Error]"; got != want {
		t.Fatalf("DescribePod = %q, want %q", got, want)
	}
}

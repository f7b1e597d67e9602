package e2e

import (
	"bufio"
	"fmt"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/podrunner/podrunner/internal/testcluster"
)

// smokeContainer is a busybox container running a shell script.
func smokeContainer(name, script string) corev1.Container {
	return corev1.Container{
		Name:            name,
		Image:           testcluster.BusyboxImage,
		ImagePullPolicy: corev1.PullNever,
		Command:         []string{"sh", "-c", script},
	}
}

// createSmokePod creates a run-once pod in ns and returns its name.
func createSmokePod(t *testing.T, c *testcluster.Cluster, ns string, spec corev1.PodSpec) string {
	t.Helper()
	spec.RestartPolicy = corev1.RestartPolicyNever
	automount := false
	spec.AutomountServiceAccountToken = &automount
	grace := int64(0)
	spec.TerminationGracePeriodSeconds = &grace
	pod, err := c.Clientset.CoreV1().Pods(ns).Create(testcluster.Context(t), &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{GenerateName: "smoke-"},
		Spec:       spec,
	}, metav1.CreateOptions{})
	if err != nil {
		t.Fatalf("create pod in %s: %v", ns, err)
	}
	return pod.Name
}

func TestClusterSmokeEchoLogs(t *testing.T) {
	t.Parallel()
	c := testcluster.Get(t)
	ns := c.Namespace(t)
	name := createSmokePod(t, c, ns, corev1.PodSpec{Containers: []corev1.Container{
		smokeContainer("echo", "echo hello from podrunner e2e; echo second line"),
	}})
	c.WaitForPod(t, ns, name, testcluster.PodPhaseIs(corev1.PodSucceeded))
	if got, want := c.PodLogs(t, ns, name, "echo"), "hello from podrunner e2e\nsecond line\n"; got != want {
		t.Fatalf("log = %q, want %q", got, want)
	}
}

func TestClusterSmokeSharedEmptyDir(t *testing.T) {
	t.Parallel()
	c := testcluster.Get(t)
	ns := c.Namespace(t)
	writer := smokeContainer("writer", "echo shared-$((6*7)) > /shared/msg.tmp && mv /shared/msg.tmp /shared/msg")
	reader := smokeContainer("reader", "i=0; while [ ! -f /shared/msg ]; do i=$((i+1)); [ $i -gt 600 ] && exit 9; sleep 0.1; done; cat /shared/msg")
	for _, ctr := range []*corev1.Container{&writer, &reader} {
		ctr.VolumeMounts = []corev1.VolumeMount{{Name: "shared", MountPath: "/shared"}}
	}
	name := createSmokePod(t, c, ns, corev1.PodSpec{
		Containers: []corev1.Container{writer, reader},
		Volumes: []corev1.Volume{{Name: "shared", VolumeSource: corev1.VolumeSource{
			EmptyDir: &corev1.EmptyDirVolumeSource{},
		}}},
	})
	c.WaitForPod(t, ns, name, testcluster.PodPhaseIs(corev1.PodSucceeded))
	if got := c.PodLogs(t, ns, name, "reader"); got != "shared-42\n" {
		t.Fatalf("reader saw %q, want %q", got, "shared-42\n")
	}
}

func TestClusterSmokeExitCode(t *testing.T) {
	t.Parallel()
	c := testcluster.Get(t)
	ns := c.Namespace(t)
	name := createSmokePod(t, c, ns, corev1.PodSpec{Containers: []corev1.Container{
		smokeContainer("fail", "echo failing; exit 3"),
	}})
	pod := c.WaitForPod(t, ns, name, testcluster.PodPhaseIs(corev1.PodFailed))
	st := testcluster.ContainerStatus(t, pod, "fail")
	if st.State.Terminated == nil || st.State.Terminated.ExitCode != 3 {
		t.Fatalf("container state = %+v, want terminated with exit code 3", st.State)
	}
}

func TestClusterSmokeOOMKilled(t *testing.T) {
	t.Parallel()
	c := testcluster.Get(t)
	ns := c.Namespace(t)
	hog := smokeContainer("hog", "echo start; dd if=/dev/zero of=/dev/null bs=128M count=1; echo survived")
	limit := resource.MustParse("16Mi")
	hog.Resources = corev1.ResourceRequirements{
		Limits:   corev1.ResourceList{corev1.ResourceMemory: limit},
		Requests: corev1.ResourceList{corev1.ResourceMemory: limit},
	}
	name := createSmokePod(t, c, ns, corev1.PodSpec{Containers: []corev1.Container{hog}})
	pod := c.WaitForPod(t, ns, name, testcluster.PodTerminated)
	st := testcluster.ContainerStatus(t, pod, "hog")
	if st.State.Terminated == nil || st.State.Terminated.Reason != "OOMKilled" {
		t.Fatalf("container state = %+v, want terminated with reason OOMKilled (%s)", st.State, testcluster.DescribePod(pod))
	}
}

func TestClusterSmokeMissingImage(t *testing.T) {
	t.Parallel()
	c := testcluster.Get(t)
	ns := c.Namespace(t)
	// An IP-literal registry on loopback: the pull fails at once, without a
	// DNS lookup or any traffic off the machine.
	missing := corev1.Container{
		Name:            "missing",
		Image:           "127.0.0.1:9/podrunner-e2e/does-not-exist:1",
		ImagePullPolicy: corev1.PullIfNotPresent,
	}
	name := createSmokePod(t, c, ns, corev1.PodSpec{Containers: []corev1.Container{missing}})
	pod := c.WaitForPod(t, ns, name, testcluster.ContainerWaitingReason("missing", "ErrImagePull", "ImagePullBackOff"))
	if pod.Status.Phase != corev1.PodPending {
		t.Fatalf("phase = %s, want Pending while the image cannot be pulled", pod.Status.Phase)
	}
}

func TestClusterSmokePodReachesHost(t *testing.T) {
	t.Parallel()
	c := testcluster.Get(t)
	ln, err := net.Listen("tcp", net.JoinHostPort(c.NodeIP, "0"))
	if err != nil {
		t.Fatalf("listen on node address %s: %v", c.NodeIP, err)
	}
	port := ln.Addr().(*net.TCPAddr).Port
	got := make(chan string, 1)
	var wg sync.WaitGroup
	wg.Add(1)
	go func() { // serves one connection: reads a line, answers pong
		defer wg.Done()
		conn, err := ln.Accept()
		if err != nil {
			return // listener closed at cleanup
		}
		defer conn.Close()
		_ = conn.SetDeadline(time.Now().Add(30 * time.Second))
		line, _ := bufio.NewReader(conn).ReadString('\n')
		got <- strings.TrimSpace(line)
		_, _ = fmt.Fprintf(conn, "pong-from-host\n")
	}()
	t.Cleanup(func() { ln.Close(); wg.Wait() })

	ns := c.Namespace(t)
	name := createSmokePod(t, c, ns, corev1.PodSpec{Containers: []corev1.Container{
		smokeContainer("client", fmt.Sprintf("echo ping-from-pod | nc %s %d", c.NodeIP, port)),
	}})
	c.WaitForPod(t, ns, name, testcluster.PodPhaseIs(corev1.PodSucceeded))
	select {
	case line := <-got:
		if line != "ping-from-pod" {
			t.Fatalf("host server read %q, want %q", line, "ping-from-pod")
		}
	case <-time.After(10 * time.Second):
		t.Fatal("host server got no connection from the pod")
	}
	if logs := c.PodLogs(t, ns, name, "client"); logs != "pong-from-host\n" {
		t.Fatalf("pod log = %q, want the host's answer %q", logs, "pong-from-host\n")
	}
}

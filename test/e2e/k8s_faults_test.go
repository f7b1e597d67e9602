package e2e

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/podrunner/podrunner/internal/config"
	"github.com/podrunner/podrunner/internal/executor/kubernetes"
	"github.com/podrunner/podrunner/internal/gitlabtest"
)

// Faults a running job's pod meets on a cluster in trouble (issue 12). The
// outcome of each is stated before the test: what GitLab shows, within
// how long, and that nothing is left behind.

const longJob = `
victim:
  script:
    - echo started
    - sleep 120
    - echo never
`

// startLongJob queues longJob and waits until its script runs; it returns
// the pipeline, the job id and the job's pod.
func (e *k8sEnv) startLongJob() (int64, int64, *corev1.Pod) {
	e.t.Helper()
	pl, err := e.coord.CreatePipelineWith(e.project, gitlabtest.PipelineOptions{})
	if err != nil {
		e.t.Fatal(err)
	}
	id := pl.Jobs["victim"]
	e.waitTrace(id, "\nstarted")
	pods, err := e.c.Clientset.CoreV1().Pods(e.ns).List(context.Background(), metav1.ListOptions{
		LabelSelector: fmt.Sprintf("%s=%d", kubernetes.LabelJobID, id),
	})
	if err != nil || len(pods.Items) != 1 {
		e.t.Fatalf("pods of job %d: %v (%d found)", id, err, len(pods.Items))
	}
	return pl.ID, id, &pods.Items[0]
}

// checkFailedOnce: the job failed with reason, its trace holds want and
// never the line after the sleep, and the runner sent nothing after its
// final update.
func (e *k8sEnv) checkFailedOnce(v gitlabtest.PipelineView, id int64, since time.Time, reason string, want ...string) {
	e.t.Helper()
	j := v.Jobs[0]
	tr := string(e.coord.Trace(id))
	e.t.Logf("job ended %v after the fault: %s (%s), exit code %d", j.FinishedAt.Sub(since).Round(100*time.Millisecond), j.Status, j.FailureReason, j.ExitCode)
	if j.Status != gitlabtest.StatusFailed || j.FailureReason != reason || strings.Contains(tr, "\nnever") {
		e.t.Fatalf("job %s (%s), want failed with %s:\n%s", j.Status, j.FailureReason, reason, tr)
	}
	for _, w := range want {
		if !strings.Contains(tr, w) {
			e.t.Errorf("trace lacks %q:\n%s", w, tr)
		}
	}
	if r := rejected(e.coord, id); len(r) != 0 {
		e.t.Errorf("%d requests after the final update, e.g. %s", len(r), r[0])
	}
	if j.Checksum != j.TraceChecksum {
		e.t.Errorf("checksum sent %s, GitLab holds %s", j.Checksum, j.TraceChecksum)
	}
}

// The job pod deleted by someone else (kubectl delete pod) mid-job: the
// job fails with runner_system_failure naming the deletion, within the
// pod's termination grace; no pod or Secret is left.
func TestKubernetesJobPodDeletedMidJob(t *testing.T) {
	t.Parallel()
	e := newK8sEnv(t, longJob, k8sOptions{})
	pl, id, pod := e.startLongJob()
	at := time.Now()
	kubectl(t, "delete", "pod", "-n", e.ns, pod.Name, "--wait=false")
	v := e.waitPipeline(pl, 2*time.Minute)
	e.checkFailedOnce(v, id, at, "runner_system_failure", "was deleted by someone else")
	e.waitNoPods()
	e.waitNoSecrets()
}

// The build container stopped under the job (crictl stop: SIGTERM, then
// SIGKILL). The agent that runs the script lives in that container, so
// the script's own result is lost with it: the job fails with
// runner_system_failure naming the stopped container (not the agent call
// that failed), within the agent's 10 s of retries; nothing is left.
func TestKubernetesBuildContainerStopped(t *testing.T) {
	t.Parallel()
	e := newK8sEnv(t, longJob, k8sOptions{})
	pl, id, pod := e.startLongJob()
	var cid string
	for _, cs := range pod.Status.ContainerStatuses {
		if cs.Name == kubernetes.ContainerBuild {
			_, cid, _ = strings.Cut(cs.ContainerID, "://")
		}
	}
	if cid == "" {
		t.Fatalf("pod %s has no build container id: %+v", pod.Name, pod.Status.ContainerStatuses)
	}
	at := time.Now()
	out, err := exec.Command("crictl", "--runtime-endpoint", "unix://"+os.Getenv("CONTAINERD_ADDRESS"), "stop", "--timeout", "1", cid).CombinedOutput()
	if err != nil {
		t.Fatalf("crictl stop: %v\n%s", err, out)
	}
	v := e.waitPipeline(pl, 2*time.Minute)
	e.checkFailedOnce(v, id, at, "runner_system_failure", "the build container of pod "+pod.Name+" stopped (", "stopped from outside the job")
	e.waitNoPods()
	e.waitNoSecrets()
}

// A job writing past its ephemeral storage limit: the kubelet evicts the
// pod; the job fails with runner_system_failure naming the eviction, the
// limit and the key to raise, within the kubelet's housekeeping period
// (10 s) or two; nothing is left.
func TestKubernetesEvictedOverEphemeralStorageLimit(t *testing.T) {
	t.Parallel()
	e := newK8sEnv(t, `
victim:
  script:
    - echo started
    - dd if=/dev/zero of=/tmp/big bs=1M count=64 2>/dev/null
    - sleep 120
    - echo never
`, k8sOptions{kube: func(k *config.Kubernetes) { k.EphemeralStorageLimit = "16Mi" }})
	pl, id, _ := e.startLongJob()
	at := time.Now()
	v := e.waitPipeline(pl, 2*time.Minute)
	e.checkFailedOnce(v, id, at, "runner_system_failure", "was evicted by Kubernetes", "16Mi", "ephemeral_storage_limit")
	e.waitNoPods()
	e.waitNoSecrets()
}

// waitNoSecrets waits until the namespace holds no Secret of the runner.
func (e *k8sEnv) waitNoSecrets() {
	e.t.Helper()
	waitFor(e.t, "the job Secrets to be deleted", time.Minute, func() bool {
		s, err := e.c.Clientset.CoreV1().Secrets(e.ns).List(context.Background(), metav1.ListOptions{LabelSelector: "podrunner.io/managed=true"})
		return err == nil && len(s.Items) == 0
	})
}

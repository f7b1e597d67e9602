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
	"github.com/podrunner/podrunner/internal/coordinator"
	"github.com/podrunner/podrunner/internal/executor/kubernetes"
	"github.com/podrunner/podrunner/internal/gitlab"
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
	pl, err := e.coord.CreatePipelineWith(e.project, coordinator.PipelineOptions{})
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
func (e *k8sEnv) checkFailedOnce(v coordinator.PipelineView, id int64, since time.Time, reason gitlab.FailureReason, want ...string) {
	e.t.Helper()
	j := v.Jobs[0]
	tr := string(e.coord.Trace(id))
	e.t.Logf("job ended %v after the fault: %s (%s), exit code %d", j.FinishedAt.Sub(since).Round(100*time.Millisecond), j.Status, j.FailureReason, j.ExitCode)
	if j.Status != coordinator.StatusFailed || j.FailureReason != reason || strings.Contains(tr, "\nnever") {
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

// A job of 40 lines, one a second.
const fortyLines = `
steady:
  script:
    - for i in $(seq 1 40); do echo "steady $i"; sleep 1; done
`

// runThroughFault runs fortyLines, applies fault once the job printed a
// few lines, and checks what every such fault must leave intact: the job
// succeeds, every line is in GitLab's trace exactly once, the checksum of
// the final update is GitLab's, and nothing is left.
func runThroughFault(t *testing.T, fault func(e *k8sEnv, pod *corev1.Pod)) {
	e := newK8sEnv(t, fortyLines, k8sOptions{})
	pl, err := e.coord.CreatePipelineWith(e.project, coordinator.PipelineOptions{})
	if err != nil {
		t.Fatal(err)
	}
	id := pl.Jobs["steady"]
	e.waitTrace(id, "\nsteady 3\n")
	pods, err := e.c.Clientset.CoreV1().Pods(e.ns).List(context.Background(), metav1.ListOptions{
		LabelSelector: fmt.Sprintf("%s=%d", kubernetes.LabelJobID, id),
	})
	if err != nil || len(pods.Items) != 1 {
		t.Fatalf("pods of job %d: %v (%d found)", id, err, len(pods.Items))
	}
	at := time.Now()
	fault(e, &pods.Items[0])
	v := e.waitPipeline(pl.ID, 4*time.Minute)
	j := v.Jobs[0]
	tr := string(e.coord.Trace(id))
	t.Logf("job ended %v after the fault began: %s (%s)", j.FinishedAt.Sub(at).Round(100*time.Millisecond), j.Status, j.FailureReason)
	checkJobReportedOnce(t, e.coord, coordinator.PipelineView{Jobs: v.Jobs}, "steady", id)
	for i := 31; i <= 40; i++ {
		if n := strings.Count(tr, fmt.Sprintf("\nsteady %d\n", i)); n != 1 {
			t.Fatalf("line %d is in the trace %d times:\n%s", i, n, tr)
		}
	}
	e.waitNoPods()
	e.waitNoSecrets()
}

// restartDaemon runs hack/cluster/restart DAEMON SECONDS and waits for it.
func restartDaemon(t *testing.T, daemon string, down int) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("restarting a cluster daemon needs root (run under hack/cluster/with-cluster)")
	}
	out, err := exec.Command("../../hack/cluster/restart", daemon, fmt.Sprint(down)).CombinedOutput()
	t.Logf("restart %s %d:\n%s", daemon, down, out)
	if err != nil {
		t.Fatalf("restart %s: %v", daemon, err)
	}
}

// etcd stopped for 20 s mid-job: the API server fails every request
// meanwhile; the job, streamed from the agent, runs on and succeeds, its
// trace complete. Not parallel: the whole cluster is affected.
func TestKubernetesEtcdStoppedMidJob(t *testing.T) {
	runThroughFault(t, func(e *k8sEnv, _ *corev1.Pod) { restartDaemon(t, "etcd", 20) })
}

// The manager cut off from the API server for 30 s (kube-apiserver down):
// informers and lease renewals fail meanwhile; the job, streamed from the
// agent, runs on and succeeds, its trace complete. Not parallel.
func TestKubernetesAPIServerDown30s(t *testing.T) {
	runThroughFault(t, func(e *k8sEnv, _ *corev1.Pod) { restartDaemon(t, "kube-apiserver", 30) })
}

// The node's kubelet restarted mid-job: containers run on; the job
// succeeds, its trace complete. Not parallel.
func TestKubernetesKubeletRestartedMidJob(t *testing.T) {
	runThroughFault(t, func(e *k8sEnv, _ *corev1.Pod) { restartDaemon(t, "kubelet", 0) })
}

// The manager cut off from the pod for 30 s (packets from the host to the
// pod IP dropped): the log stream stalls and resumes; the job succeeds,
// its trace complete. Not parallel (an iptables rule on the host).
func TestKubernetesAgentUnreachable30s(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("dropping packets needs root (run under hack/cluster/with-cluster)")
	}
	runThroughFault(t, func(e *k8sEnv, pod *corev1.Pod) {
		rule := []string{"OUTPUT", "-d", pod.Status.PodIP, "-m", "comment", "--comment", "podrunner-e2e-cut", "-j", "DROP"}
		if out, err := exec.Command("iptables", append([]string{"-I"}, rule...)...).CombinedOutput(); err != nil {
			t.Fatalf("iptables -I: %v\n%s", err, out)
		}
		removed := false
		remove := func() {
			if !removed {
				removed = true
				if out, err := exec.Command("iptables", append([]string{"-D"}, rule...)...).CombinedOutput(); err != nil {
					t.Errorf("iptables -D: %v\n%s", err, out)
				}
			}
		}
		t.Cleanup(remove)
		time.Sleep(30 * time.Second)
		remove()
	})
}

// A job pod stopped by Kubernetes at its activeDeadlineSeconds (job
// timeout + after_script timeout + 60 s) while no manager watched it: the
// runner is killed while the job runs and started again only after the
// deadline. The agent had ended the script at the job timeout, but its
// result went with the pod; the job fails with job_execution_timeout.
// (The line naming the deadline does not reach GitLab yet: GitLab holds
// more of the log than the runner can replay from a dead pod, so it is
// written below GitLab's offset; see docs/reliability.md.)
func TestKubernetesPodPastActiveDeadline(t *testing.T) {
	t.Parallel()
	e := newK8sEnv(t, `
slow:
  timeout: 10s
  variables: {RUNNER_AFTER_SCRIPT_TIMEOUT: 1s}
  script:
    - echo started
    - sleep 300
`, k8sOptions{external: true})
	bin, cfg := e.runnerProcessConfig("e2e-deadline", 1, 0)
	first, _ := e.startRunnerProcess(bin, cfg)
	pl, err := e.coord.CreatePipelineWith(e.project, coordinator.PipelineOptions{})
	if err != nil {
		t.Fatal(err)
	}
	id := pl.Jobs["slow"]
	e.waitTrace(id, "\nstarted")
	first.Process.Kill()
	first.Wait()
	waitFor(t, "the pod to pass its activeDeadlineSeconds", 3*time.Minute, func() bool {
		pods, err := e.c.Clientset.CoreV1().Pods(e.ns).List(context.Background(), metav1.ListOptions{})
		return err == nil && len(pods.Items) == 1 && pods.Items[0].Status.Reason == "DeadlineExceeded"
	})
	e.startRunnerProcess(bin, cfg)
	v := e.waitPipeline(pl.ID, 2*time.Minute)
	j := v.Jobs[0]
	tr := string(e.coord.Trace(id))
	if j.Status != coordinator.StatusFailed || j.FailureReason != "job_execution_timeout" || !strings.Contains(tr, "\nstarted") {
		t.Fatalf("job %s (%s), want failed with job_execution_timeout, the log kept:\n%s", j.Status, j.FailureReason, tr)
	}
	e.waitNoPods()
}

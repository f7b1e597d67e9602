package e2e

import (
	"context"
	"fmt"
	"os"
	"regexp"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/podrunner/podrunner/internal/config"
	"github.com/podrunner/podrunner/internal/coordinator"
	"github.com/podrunner/podrunner/internal/executor/kubernetes"
	"github.com/podrunner/podrunner/internal/testcluster"
)

// Warm pods (issue 14) on the local cluster.

var warmNameRE = regexp.MustCompile(`^runner-[a-z0-9]+-warm-[a-z0-9]{8}$`)

// warmPods lists the namespace's idle warm pods (not being deleted).
func (e *k8sEnv) warmPods() []corev1.Pod {
	e.t.Helper()
	list, err := e.c.Clientset.CoreV1().Pods(e.ns).List(context.Background(), metav1.ListOptions{LabelSelector: kubernetes.LabelWarm + "=true"})
	if err != nil {
		e.t.Fatal(err)
	}
	var out []corev1.Pod
	for _, p := range list.Items {
		if p.DeletionTimestamp == nil {
			out = append(out, p)
		}
	}
	return out
}

// waitWarm waits until n idle warm pods run (ready: build container running).
func (e *k8sEnv) waitWarm(n int, timeout time.Duration) []corev1.Pod {
	e.t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		pods := e.warmPods()
		running := 0
		for _, p := range pods {
			for _, s := range p.Status.ContainerStatuses {
				if s.Name == kubernetes.ContainerBuild && s.State.Running != nil {
					running++
				}
			}
		}
		if len(pods) == n && running == n {
			return pods
		}
		if time.Now().After(deadline) {
			e.t.Fatalf("%d warm pods (%d running), want %d running", len(pods), running, n)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

func sequentialJobs(n int) string {
	var b strings.Builder
	b.WriteString("stages:\n")
	for i := 1; i <= n; i++ {
		fmt.Fprintf(&b, "  - s%02d\n", i)
	}
	for i := 1; i <= n; i++ {
		// A pod that ran a job before would have the markers.
		fmt.Fprintf(&b, "j%02d:\n  stage: s%02d\n  script:\n    - test ! -e /tmp/podrunner-marker\n    - test ! -e \"$CI_BUILDS_DIR/podrunner-marker\"\n    - touch /tmp/podrunner-marker \"$CI_BUILDS_DIR/podrunner-marker\"\n    - hostname\n", i, i)
	}
	b.WriteString("other-image:\n  stage: s20\n  image: " + testcluster.PodrunnerImage + "\n  script:\n    - hostname\n")
	return b.String()
}

// 20 jobs in sequence with a pool of 2: each runs in a warm pod of its
// own (the markers of a previous job are never there), pods are deleted
// after their one job, a job of another image takes the cold path; a warm
// pod killed while idle is replaced; closing the executor leaves no pod.
func TestKubernetesWarmPods(t *testing.T) {
	e := newK8sEnv(t, sequentialJobs(20), k8sOptions{kube: func(k *config.Kubernetes) {
		k.WarmPods = 2
		k.WarmPodsRefillPerMinute = 120
	}})
	// The pool starts with the executor's pod watch (the manager's first
	// adoption pass).
	first := e.waitWarm(2, 2*time.Minute)
	for _, p := range first {
		if !warmNameRE.MatchString(p.Name) {
			t.Errorf("warm pod name %s, want %s", p.Name, warmNameRE)
		}
	}
	v := e.pipeline(coordinator.PipelineOptions{}, 8*time.Minute)
	if v.Status != coordinator.StatusSuccess {
		for _, j := range v.Jobs {
			if j.Status != coordinator.StatusSuccess {
				t.Fatalf("job %s %s:\n%s", j.Name, j.Status, e.coord.Trace(j.ID))
			}
		}
	}
	hosts := map[string]string{}
	warm := 0
	for _, j := range v.Jobs {
		tr := string(e.coord.Trace(j.ID))
		m := regexp.MustCompile(`(?m)^(runner-[a-z0-9-]+)\r?$`).FindStringSubmatch(tr)
		if m == nil {
			t.Fatalf("job %s: no hostname line:\n%s", j.Name, tr)
		}
		if other, ok := hosts[m[1]]; ok {
			t.Fatalf("jobs %s and %s ran in the same pod %s", other, j.Name, m[1])
		}
		hosts[m[1]] = j.Name
		isWarm := strings.Contains(tr, "Using warm pod ")
		switch {
		case j.Name == "other-image":
			if isWarm || !podNameRE.MatchString(m[1]) {
				t.Errorf("job of another image ran in %s (warm %v), want a pod of its own", m[1], isWarm)
			}
		case isWarm:
			warm++
			if !warmNameRE.MatchString(m[1]) {
				t.Errorf("job %s said warm but ran in %s", j.Name, m[1])
			}
		}
	}
	st := e.ex.WarmStats()
	t.Logf("%d of 20 jobs warm; pool stats %+v (mean refill %.2fs)", warm, st, st.RefillSeconds/max(float64(st.Refills), 1))
	// Every job: a job that finds its warm pod still starting waits for it.
	if warm != 20 || st.Misses["lost"] != 0 {
		t.Errorf("%d of 20 jobs ran in warm pods (misses %v), want all", warm, st.Misses)
	}
	// Pods of jobs are gone; the pool is back to 2.
	deadline := time.Now().Add(time.Minute)
	for {
		list, err := e.c.Clientset.CoreV1().Pods(e.ns).List(context.Background(), metav1.ListOptions{})
		if err != nil {
			t.Fatal(err)
		}
		left := 0
		for _, p := range list.Items {
			if p.Labels[kubernetes.LabelWarm] != "true" {
				left++
			}
		}
		if left == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d job pods left after the pipeline", left)
		}
		time.Sleep(200 * time.Millisecond)
	}
	idle := e.waitWarm(2, time.Minute)

	// A warm pod killed while idle is replaced.
	if err := e.c.Clientset.CoreV1().Pods(e.ns).Delete(context.Background(), idle[0].Name, metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	again := e.waitWarm(2, time.Minute)
	for _, p := range again {
		if p.Name == idle[0].Name {
			t.Errorf("killed warm pod %s still counted", p.Name)
		}
	}

	// Closing the executor (the runner stops) deletes its idle pods.
	e.ex.Close()
	deadline = time.Now().Add(time.Minute)
	for len(e.warmPods()) > 0 {
		if time.Now().After(deadline) {
			t.Fatalf("warm pods left after the executor closed: %d", len(e.warmPods()))
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// The runner killed with idle warm pods: the next start (with the pool
// lowered to 1) deletes them and keeps one; a reload to warm_pods = 0
// deletes that one; jobs run throughout.
func TestKubernetesWarmPodsRestartAndReload(t *testing.T) {
	e := newK8sEnv(t, "echo:\n  script:\n    - hostname\n", k8sOptions{external: true})
	bin, cfg := e.runnerProcessConfig("warm", 1, 4096)
	base, err := os.ReadFile(cfg)
	if err != nil {
		t.Fatal(err)
	}
	write := func(n int) {
		t.Helper()
		if err := os.WriteFile(cfg, append(append([]byte{}, base...), fmt.Sprintf("    warm_pods = %d\n", n)...), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	write(2)
	cmd, _ := e.startRunnerProcess(bin, cfg)
	old := e.waitWarm(2, 2*time.Minute)
	if err := cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	_ = cmd.Wait()

	write(1)
	e.startRunnerProcess(bin, cfg)
	// The killed runner's pods go (the new start's cleanup); one new one runs.
	deadline := time.Now().Add(2 * time.Minute)
	for {
		now := e.waitWarm(1, 2*time.Minute)
		if !slices.ContainsFunc(old, func(o corev1.Pod) bool { return o.Name == now[0].Name }) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("warm pod %s of the killed runner kept", now[0].Name)
		}
		time.Sleep(200 * time.Millisecond)
	}
	v := e.pipeline(coordinator.PipelineOptions{}, 3*time.Minute)
	if v.Status != coordinator.StatusSuccess {
		t.Fatalf("pipeline %s:\n%s", v.Status, e.coord.Trace(v.Jobs[0].ID))
	}
	if tr := string(e.coord.Trace(v.Jobs[0].ID)); !strings.Contains(tr, "Using warm pod") {
		t.Errorf("job after the restart not warm:\n%s", tr)
	}

	e.waitWarm(1, time.Minute) // refilled after the job
	write(0)                   // a reload: the replaced executor's pool goes
	deadline = time.Now().Add(time.Minute)
	for len(e.warmPods()) > 0 {
		if time.Now().After(deadline) {
			t.Fatalf("%d warm pods left after the reload to warm_pods = 0", len(e.warmPods()))
		}
		time.Sleep(200 * time.Millisecond)
	}
	v = e.pipeline(coordinator.PipelineOptions{}, 3*time.Minute)
	if v.Status != coordinator.StatusSuccess {
		t.Fatalf("pipeline after the reload %s:\n%s", v.Status, e.coord.Trace(v.Jobs[0].ID))
	}
	if tr := string(e.coord.Trace(v.Jobs[0].ID)); strings.Contains(tr, "Using warm pod") {
		t.Errorf("job after warm_pods = 0 ran warm:\n%s", tr)
	}
	e.waitNoPods()
}

// Failures and cancel on handed-over pods are what they are on pods made
// for the job: OOM (script_failure, 137), an exit code, a graceful cancel
// that runs after_script, the job's timeout (job_execution_timeout).
func TestKubernetesWarmPodFailures(t *testing.T) {
	e := newK8sEnv(t, `
stages: [a, b, c, d]
hog:
  stage: a
  script:
    - echo start
    - dd if=/dev/zero of=/dev/null bs=128M count=1
    - echo survived
exit3:
  stage: b
  when: always
  script:
    - exit 3
long:
  stage: c
  when: always
  script:
    - echo started
    - sleep 300
  after_script:
    - echo after-script-ran
slow:
  stage: d
  when: always
  timeout: 10s
  script:
    - echo slow-started
    - sleep 300
`, k8sOptions{kube: func(k *config.Kubernetes) {
		k.MemoryLimit = "32Mi"
		k.WarmPods = 1
		k.WarmPodsRefillPerMinute = 120
	}})
	e.waitWarm(1, 2*time.Minute)
	pl, err := e.coord.CreatePipelineWith(e.project, coordinator.PipelineOptions{})
	if err != nil {
		t.Fatal(err)
	}
	id := pl.Jobs["long"]
	deadline := time.Now().Add(3 * time.Minute)
	for !strings.Contains(string(e.coord.Trace(id)), "\nstarted") {
		if time.Now().After(deadline) {
			t.Fatalf("long never started:\n%s", e.coord.Trace(id))
		}
		time.Sleep(100 * time.Millisecond)
	}
	if err := e.coord.Cancel(id, true); err != nil {
		t.Fatal(err)
	}
	v := e.waitPipeline(pl.ID, 2*time.Minute)
	for _, j := range v.Jobs {
		tr := string(e.coord.Trace(j.ID))
		if !strings.Contains(tr, "Using warm pod ") {
			t.Errorf("job %s did not run in a warm pod:\n%s", j.Name, tr)
		}
		switch j.Name {
		case "hog":
			if j.FailureReason != "script_failure" || j.ExitCode != 137 || !strings.Contains(tr, "OOMKilled") || strings.Contains(tr, "survived") {
				t.Errorf("hog: %s %s exit %d, want script_failure 137 OOMKilled:\n%s", j.Status, j.FailureReason, j.ExitCode, tr)
			}
		case "exit3":
			if j.FailureReason != "script_failure" || j.ExitCode != 3 {
				t.Errorf("exit3: %s %s exit %d, want script_failure 3", j.Status, j.FailureReason, j.ExitCode)
			}
		case "long":
			if j.Status != coordinator.StatusCanceled || !strings.Contains(tr, "after-script-ran") {
				t.Errorf("long: %s, want canceled with after_script output:\n%s", j.Status, tr)
			}
		case "slow":
			if j.Status != coordinator.StatusFailed || j.FailureReason != "job_execution_timeout" || !strings.Contains(tr, "\nslow-started") {
				t.Errorf("slow: %s %s, want failed with job_execution_timeout:\n%s", j.Status, j.FailureReason, tr)
			}
		}
	}
}

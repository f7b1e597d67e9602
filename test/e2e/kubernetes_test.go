package e2e

import (
	"context"
	"os"
	"regexp"
	"strings"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/podrunner/podrunner/internal/config"
	"github.com/podrunner/podrunner/internal/coordinator"
)

// Acceptance of the Kubernetes executor (issue 4) on the local cluster,
// through the real runner manager, with the executor bound to the
// documented Role.

var podNameRE = regexp.MustCompile(`^runner-[a-z0-9]+-project-\d+-concurrent-\d+-[a-z0-9]+$`)

// readSeed reads one of the seed's pipelines (copied into examples/seed).
func readSeed(t *testing.T, name string) string {
	t.Helper()
	b, err := os.ReadFile("../../examples/seed/" + name)
	if err != nil {
		t.Fatalf("seed pipeline: %v", err)
	}
	return string(b)
}

func TestKubernetesSeedPodCreation(t *testing.T) {
	t.Parallel()
	e := newK8sEnv(t, readSeed(t, "pod-creation.gitlab-ci.yml"), k8sOptions{})
	start := time.Now()
	v := e.pipeline(coordinator.PipelineOptions{}, 3*time.Minute)
	t.Logf("pipeline took %v", time.Since(start))
	if v.Status != coordinator.StatusSuccess {
		t.Fatalf("pipeline %s:\n%s", v.Status, e.coord.Trace(v.Jobs[0].ID))
	}
	names := e.podNames()
	if len(names) != 1 || !podNameRE.MatchString(names[0]) {
		t.Fatalf("pods %v, want one matching %s", names, podNameRE)
	}
	tr := string(e.coord.Trace(v.Jobs[0].ID))
	if !regexp.MustCompile(`(?m)^` + regexp.QuoteMeta(names[0]) + `\r?$`).MatchString(tr) {
		t.Errorf("trace has no hostname line %q:\n%s", names[0], tr)
	}
	if !strings.Contains(tr, "Running inside a temporary pod!") {
		t.Errorf("trace lacks the echo:\n%s", tr)
	}
	e.waitNoPods()
}

func TestKubernetesSeedRunnerTestUTF8(t *testing.T) {
	t.Parallel()
	e := newK8sEnv(t, readSeed(t, "runner-test.gitlab-ci.yml"), k8sOptions{})
	v := e.pipeline(coordinator.PipelineOptions{}, 2*time.Minute)
	tr := string(e.coord.Trace(v.Jobs[0].ID))
	if v.Status != coordinator.StatusSuccess {
		t.Fatalf("pipeline %s:\n%s", v.Status, tr)
	}
	if !strings.Contains(tr, "\n✅ Runner 동작 확인 완료!") {
		t.Errorf("UTF-8 line not intact:\n%q", tr)
	}
	if j := v.Jobs[0]; j.TraceChecksum != j.Checksum {
		t.Errorf("trace checksum %s, runner sent %s", j.TraceChecksum, j.Checksum)
	}
	e.waitNoPods()
}

func TestKubernetesExitCodeAndMaskedSecret(t *testing.T) {
	t.Parallel()
	const secret = "s3cr3t-Value-42xyz"
	e := newK8sEnv(t, `
fail:
  script:
    - echo "the secret is $MY_SECRET"
    - exit 3
`, k8sOptions{})
	if err := e.coord.SetProjectVariable(e.project, coordinator.ProjectVariable{Key: "MY_SECRET", Value: secret, Masked: true}); err != nil {
		t.Fatal(err)
	}
	v := e.pipeline(coordinator.PipelineOptions{}, 2*time.Minute)
	j := v.Jobs[0]
	tr := string(e.coord.Trace(j.ID))
	if j.Status != coordinator.StatusFailed || j.FailureReason != "script_failure" || j.ExitCode != 3 {
		t.Fatalf("job %s %s exit %d, want failed script_failure exit 3:\n%s", j.Status, j.FailureReason, j.ExitCode, tr)
	}
	if strings.Contains(tr, secret) || !strings.Contains(tr, "the secret is [MASKED]") {
		t.Errorf("secret not masked in the trace:\n%s", tr)
	}
	names := e.podNames()
	if len(names) != 1 {
		t.Fatalf("pods %v", names)
	}
	if js := e.podJSON(names[0]); js == "" || strings.Contains(js, secret) {
		t.Errorf("the pod object holds the masked secret (or was never seen)")
	}
	e.waitNoPods()
	if s, _ := e.c.Clientset.CoreV1().Secrets(e.ns).List(context.Background(), metav1.ListOptions{LabelSelector: "podrunner.io/managed=true"}); s != nil && len(s.Items) > 0 {
		// The garbage collector removes owned Secrets shortly after the pod.
		t.Logf("%d secrets still present right after the pod went (owned, collected by the GC)", len(s.Items))
	}
}

func TestKubernetesServiceAlias(t *testing.T) {
	t.Parallel()
	e := newK8sEnv(t, `
svc:
  services:
    - name: podrunner.local/busybox:1
      alias: echo-svc
      entrypoint: ["sh", "-c"]
      command: ["while true; do echo hello-from-service | nc -l -p 8080; done"]
  script:
    - for i in $(seq 1 100); do out=$(nc echo-svc 8080 </dev/null 2>/dev/null || true); [ -n "$out" ] && break; sleep 0.2; done
    - echo "got $out"
`, k8sOptions{})
	v := e.pipeline(coordinator.PipelineOptions{}, 2*time.Minute)
	tr := string(e.coord.Trace(v.Jobs[0].ID))
	if v.Status != coordinator.StatusSuccess || !strings.Contains(tr, "got hello-from-service") {
		t.Fatalf("pipeline %s, service not reached by its alias:\n%s", v.Status, tr)
	}
	e.waitNoPods()
}

// A registry that refuses connections is "briefly unreachable" for the
// kubelet: the job waits (saying so) and fails at poll_timeout naming the
// image. An IP-literal registry on loopback: no DNS, no traffic off the
// machine.
func TestKubernetesUnreachableRegistryWaitsUntilPollTimeout(t *testing.T) {
	t.Parallel()
	const image = "127.0.0.1:9/podrunner-e2e/does-not-exist:1"
	e := newK8sEnv(t, `
missing:
  image: `+image+`
  script: [echo never]
`, k8sOptions{kube: func(k *config.Kubernetes) { k.PollTimeout = 20 }})
	v := e.pipeline(coordinator.PipelineOptions{}, 2*time.Minute)
	j := v.Jobs[0]
	tr := string(e.coord.Trace(j.ID))
	t.Logf("unreachable registry: failed after %v with %s", j.FinishedAt.Sub(j.StartedAt), j.FailureReason)
	for _, want := range []string{
		`cannot pull image "` + image + `" yet, the kubelet retries with back-off`,
		"timed out after 20s", `the registry of image "` + image + `"`, "stayed unreachable", "connection refused",
	} {
		if !strings.Contains(tr, want) {
			t.Errorf("trace lacks %q", want)
		}
	}
	if j.Status != coordinator.StatusFailed || j.FailureReason != "image_pull_failure" || t.Failed() {
		t.Fatalf("job %s (%s), want failed with image_pull_failure:\n%s", j.Status, j.FailureReason, tr)
	}
	e.waitNoPods()
}

func TestKubernetesOOMKilled(t *testing.T) {
	t.Parallel()
	e := newK8sEnv(t, `
hog:
  script:
    - echo start
    - dd if=/dev/zero of=/dev/null bs=128M count=1
    - echo survived
`, k8sOptions{kube: func(k *config.Kubernetes) { k.MemoryLimit = "32Mi" }})
	v := e.pipeline(coordinator.PipelineOptions{}, 2*time.Minute)
	j := v.Jobs[0]
	tr := string(e.coord.Trace(j.ID))
	if j.Status != coordinator.StatusFailed || !strings.Contains(tr, "OOMKilled") || strings.Contains(tr, "survived") {
		t.Fatalf("job %s (%s), want failed with OOMKilled in the trace:\n%s", j.Status, j.FailureReason, tr)
	}
	// Issue 13: the exit code of a SIGKILLed script reaches GitLab.
	if j.FailureReason != "script_failure" || j.ExitCode != 137 {
		t.Fatalf("job %s exit code %d, want script_failure with exit code 137:\n%s", j.FailureReason, j.ExitCode, tr)
	}
	e.waitNoPods()
}

func TestKubernetesGracefulCancelRunsAfterScript(t *testing.T) {
	t.Parallel()
	e := newK8sEnv(t, `
long:
  script:
    - echo started
    - sleep 300
  after_script:
    - echo after-script-ran
`, k8sOptions{})
	pl, err := e.coord.CreatePipelineWith(e.project, coordinator.PipelineOptions{})
	if err != nil {
		t.Fatal(err)
	}
	id := pl.Jobs["long"]
	// Cancel once the user script runs (the trace is sent every 500 ms).
	deadline := time.Now().Add(2 * time.Minute)
	for !strings.Contains(string(e.coord.Trace(id)), "\nstarted") {
		if time.Now().After(deadline) {
			t.Fatalf("the script never started:\n%s", e.coord.Trace(id))
		}
		time.Sleep(100 * time.Millisecond)
	}
	if err := e.coord.Cancel(id, true); err != nil {
		t.Fatal(err)
	}
	v := e.waitPipeline(pl.ID, 2*time.Minute)
	j := v.Jobs[0]
	tr := string(e.coord.Trace(j.ID))
	if j.Status != coordinator.StatusCanceled || !strings.Contains(tr, "after-script-ran") {
		t.Fatalf("job %s, want canceled with after_script output:\n%s", j.Status, tr)
	}
	e.waitNoPods()
}

func TestKubernetesTenConcurrentJobs(t *testing.T) {
	t.Parallel()
	var ci strings.Builder
	for i := range 10 {
		ci.WriteString("job" + string(rune('a'+i)) + ":\n  script:\n    - sleep 5\n    - echo slot $CI_CONCURRENT_ID\n")
	}
	e := newK8sEnv(t, ci.String(), k8sOptions{concurrent: 10})
	start := time.Now()
	v := e.pipeline(coordinator.PipelineOptions{}, 4*time.Minute)
	t.Logf("10 jobs took %v", time.Since(start))
	if v.Status != coordinator.StatusSuccess {
		t.Fatalf("pipeline %s", v.Status)
	}
	names := e.podNames()
	slots := map[string]bool{}
	for _, n := range names {
		m := regexp.MustCompile(`-concurrent-(\d+)-`).FindStringSubmatch(n)
		if m == nil {
			t.Fatalf("pod name %s", n)
		}
		slots[m[1]] = true
	}
	if len(names) != 10 || len(slots) != 10 {
		t.Fatalf("%d pods with %d distinct slots, want 10 and 10: %v", len(names), len(slots), names)
	}
	e.waitNoPods()
}

func TestKubernetesMemoryLimitOverCapRefused(t *testing.T) {
	t.Parallel()
	e := newK8sEnv(t, `
big:
  variables:
    KUBERNETES_MEMORY_LIMIT: 1Gi
  script: [echo never]
`, k8sOptions{kube: func(k *config.Kubernetes) { k.MemoryLimitOverwriteMaxAllowed = "64Mi" }})
	v := e.pipeline(coordinator.PipelineOptions{}, time.Minute)
	j := v.Jobs[0]
	tr := string(e.coord.Trace(j.ID))
	if j.Status != coordinator.StatusFailed || !strings.Contains(tr, "KUBERNETES_MEMORY_LIMIT") || !strings.Contains(tr, "64Mi") {
		t.Fatalf("job %s (%s), want failed naming the variable and the cap:\n%s", j.Status, j.FailureReason, tr)
	}
	if strings.Contains(tr, "never\n") {
		t.Error("the job ran")
	}
	if n := len(e.podNames()); n != 0 {
		t.Errorf("%d pods created for a refused job", n)
	}
}

// TestKubernetesExitCodes: in a pod as on the shell executor, GitLab gets
// the failing command's exit code (the pipeline passes only when each
// job's allow_failure:exit_codes matches it).
func TestKubernetesExitCodes(t *testing.T) {
	t.Parallel()
	e := newK8sEnv(t, `
external-exit:
  script: ["sh -c 'exit 7'", "echo never"]
  allow_failure: {exit_codes: [7]}
not-found:
  script: ["no-such-command-podrunner", "echo never"]
  allow_failure: {exit_codes: [127]}
signal-killed:
  script: ["sh -c 'kill -9 $$'", "echo never"]
  allow_failure: {exit_codes: [137]}
`, k8sOptions{})
	v := e.pipeline(coordinator.PipelineOptions{}, 3*time.Minute)
	want := map[string]int{"external-exit": 7, "not-found": 127, "signal-killed": 137}
	for _, j := range v.Jobs {
		tr := string(e.coord.Trace(j.ID))
		if j.Status != coordinator.StatusFailed || j.FailureReason != "script_failure" || j.ExitCode != want[j.Name] || !j.AllowFailure {
			t.Errorf("%s: %s %s exit %d allowed %v, want failed script_failure exit %d allowed:\n%s",
				j.Name, j.Status, j.FailureReason, j.ExitCode, j.AllowFailure, want[j.Name], tr)
		}
		if strings.Contains(tr, "\nnever") {
			t.Errorf("%s: a command after the failing one ran", j.Name)
		}
	}
	if v.Status != coordinator.StatusSuccess {
		t.Errorf("pipeline %s, want success", v.Status)
	}
	e.waitNoPods()
}

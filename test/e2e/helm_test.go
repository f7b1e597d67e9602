package e2e

import (
	"regexp"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/podrunner/podrunner/internal/coordinator"
	"github.com/podrunner/podrunner/internal/testcluster"
)

// The seed's walk-through (shared/examples/seed-pipeline/helm-values.md)
// with podrunner's chart as a user installs it on their cluster (issues 6
// and 11): GitLab on HTTPS with a private CA, the chart and the image from
// a registry that needs a login, the seed's helm flags plus only the image
// location, its pull secret and the CA secret. Job images are not
// overridden: alpine:latest comes through the registry's docker.io mirror.
func TestHelmSeedWalkthrough(t *testing.T) {
	e := newHelmEnv(t, helmOptions{tls: true})
	t.Logf("namespace %s, release %s, coordinator %s", e.ns, e.release, e.coord.URL())
	rel := releaseToRegistry(t)
	e.registryLogin()
	e.createSecret(&corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{Name: "gitlab-ca"},
		Data:       map[string][]byte{e.coordHost() + ".crt": e.coord.CACertPEM()},
	})
	e.createSecret(&corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{Name: "regcred"},
		Type:       corev1.SecretTypeDockerConfigJson,
		Data:       map[string][]byte{corev1.DockerConfigJsonKey: dockerConfigJSON(rel.Registry, e.c.RegistryUser, e.c.RegistryPassword)},
	})
	chart := []string{rel.ChartRef, "--version", rel.ChartVersion, "--ca-file", e.c.RegistryCA}
	managerImage := rel.Registry + "/" + rel.ImageRepo + ":" + rel.ImageTag
	regToken := e.coord.RegistrationToken()

	// The seed's command; only the namespace name is unique per run (the
	// seed's "gitlab-runner" would clash between runs and other tests).
	seed := []string{
		"--namespace", e.ns,
		"--set", "gitlabUrl=" + e.coord.URL(),
		"--set", "runnerRegistrationToken=" + regToken,
		"--set", "rbac.create=true",
		"--set", "runners.tags=aks",
		"--set", "runners.executor=kubernetes",
		"--set", "runners.namespace=" + e.ns,
	}
	// Where the user's registry has podrunner, and GitLab's CA.
	local := []string{
		"--set", "image.registry=" + rel.Registry,
		"--set", "image.image=" + rel.ImageRepo,
		"--set", "image.tag=" + rel.ImageTag,
		"--set", "imagePullSecrets[0].name=regcred",
		"--set", "certsSecretName=gitlab-ca",
	}
	start := time.Now()
	e.mustHelm(append(append(append([]string{"install", e.release}, chart...), seed...), local...)...)

	// kubectl get po: one manager pod, 1/1 Running.
	managers := e.waitManagersReady(1, 3*time.Minute)
	t.Logf("FIGURE helm install → manager Ready: %v", time.Since(start).Round(100*time.Millisecond))
	first := managers[0].Name
	if img := managers[0].Spec.Containers[0].Image; img != managerImage {
		t.Errorf("manager image %s, want %s from the registry", img, managerImage)
	}
	getPo := kubectl(t, "get", "po", "-n", e.ns)
	if !regexp.MustCompile(`(?m)^` + regexp.QuoteMeta(first) + `\s+1/1\s+Running\s`).MatchString(getPo) {
		t.Errorf("kubectl get po:\n%s\nwant %s 1/1 Running", getPo, first)
	}

	// Registered in the coordinator with the seed's tag, contacting it.
	runners := e.coord.Runners()
	if len(runners) != 1 {
		t.Fatalf("%d runners registered, want 1: %+v", len(runners), runners)
	}
	r := runners[0]
	if strings.Join(r.Tags, ",") != "aks" || r.RunUntagged || r.Description != first {
		t.Errorf("runner %+v: want tags [aks], not untagged, named after the pod %s", r, first)
	}
	waitFor(t, "the runner to contact the coordinator", time.Minute, func() bool {
		for _, rv := range e.coord.Runners() {
			for _, m := range rv.Managers {
				if !m.Contacted.IsZero() {
					return true
				}
			}
		}
		return false
	})
	firstToken := r.Token

	// runner-test.gitlab-ci.yml: the exact UTF-8 line.
	v := e.pipeline(readSeed(t, "runner-test.gitlab-ci.yml"), 3*time.Minute)
	tr := string(e.coord.Trace(v.Jobs[0].ID))
	t.Logf("trace of runner-test (job %d, %s):\n%s", v.Jobs[0].ID, v.Status, tr)
	if v.Status != coordinator.StatusSuccess {
		t.Fatalf("runner-test pipeline %s:\n%s", v.Status, tr)
	}
	if !strings.Contains(tr, "\n✅ Runner 동작 확인 완료!") {
		t.Errorf("UTF-8 line not intact:\n%q", tr)
	}
	if v.Jobs[0].RunnerID != r.ID {
		t.Errorf("job ran on runner %d, want the chart's %d", v.Jobs[0].RunnerID, r.ID)
	}

	// pod-creation.gitlab-ci.yml: a job pod appears, its hostname is in
	// the trace, it is deleted after the job.
	v = e.pipeline(readSeed(t, "pod-creation.gitlab-ci.yml"), 3*time.Minute)
	job := v.Jobs[0]
	tr = string(e.coord.Trace(job.ID))
	t.Logf("trace of pod-creation (job %d, %s):\n%s", job.ID, v.Status, tr)
	t.Logf("the pods of the namespace as kubectl get pods -w shows them:\n%s", e.podWatch())
	if v.Status != coordinator.StatusSuccess {
		t.Fatalf("pod-creation pipeline %s:\n%s", v.Status, tr)
	}
	jobPods := e.podsSeen(func(p *corev1.Pod) bool { return !isManager(p) })
	if len(jobPods) != 2 {
		t.Fatalf("job pods seen %v, want 2 (one per pipeline)", jobPods)
	}
	jobPod := jobPods[1]
	for _, ev := range e.events {
		if ev.name == jobPod {
			for _, c := range ev.pod.Spec.Containers {
				if c.Name == "build" && c.Image != "alpine:latest" {
					t.Errorf("job pod's build image %s, want the runner's default alpine:latest", c.Image)
				}
			}
		}
	}
	if !podNameRE.MatchString(jobPod) || !strings.Contains(jobPod, "-project-") {
		t.Errorf("job pod %q does not match %s", jobPod, podNameRE)
	}
	if !regexp.MustCompile(`(?m)^` + regexp.QuoteMeta(jobPod) + `\r?$`).MatchString(tr) {
		t.Errorf("trace has no hostname line %q:\n%s", jobPod, tr)
	}
	waitFor(t, "the job pods to be deleted", time.Minute, func() bool { return e.deleted(jobPods[0]) && e.deleted(jobPod) })

	// The manager's log tells the job's story (kubectl logs).
	logs := kubectl(t, "logs", "-n", e.ns, first)
	if miss := missingFrom(logs,
		"Runner registered successfully",
		"Checking for jobs... received",
		"Appending trace to coordinator... ok",
		"sent-log=0-",
		"status=202",
		"Job succeeded",
		"Submitting job to coordinator... ok",
		"job-status=success",
		"Removed job from processing list",
	); len(miss) > 0 {
		t.Errorf("manager log lacks %q:\n%s", miss, logs)
	}
	var story []string
	for _, l := range strings.Split(logs, "\n") {
		if regexp.MustCompile(`registered|received|Appending trace|Job succeeded|Submitting job|Removed job`).MatchString(l) {
			story = append(story, l)
		}
	}
	t.Logf("the manager's story of the jobs (kubectl logs %s):\n%s", first, strings.Join(story, "\n"))
	for _, secret := range []string{regToken, firstToken} {
		if strings.Contains(logs, secret) {
			t.Errorf("the manager log shows a token")
		}
	}

	// helm upgrade with a new config value while a job runs: the old pod
	// finishes the job (SIGTERM → SIGQUIT), the new one registers.
	pl, err := e.coord.CreatePipelineWith(e.project, coordinator.PipelineOptions{CIConfig: []byte(`
long:
  tags: [aks]
  script:
    - echo started
    - sleep 25
    - echo "still here after the upgrade"
`)})
	if err != nil {
		t.Fatal(err)
	}
	ctx := testcluster.Context(t)
	if _, err := e.coord.WaitJob(ctx, pl.Jobs["long"], coordinator.StatusRunning); err != nil {
		t.Fatalf("long job not running: %v", err)
	}
	waitFor(t, "the long job's log to start", time.Minute, func() bool {
		return strings.Contains(string(e.coord.Trace(pl.Jobs["long"])), "started")
	})
	upStart := time.Now()
	e.mustHelm(append(append(append(append([]string{"upgrade", e.release}, chart...), "--set", "concurrent=4", "--set", "logLevel=debug"), seed...), local...)...)
	lv := e.waitPipeline(pl.ID, 3*time.Minute)
	ltr := string(e.coord.Trace(lv.Jobs[0].ID))
	if lv.Status != coordinator.StatusSuccess || !strings.Contains(ltr, "still here after the upgrade") {
		t.Fatalf("job during the upgrade: %s\n%s", lv.Status, ltr)
	}
	if lv.Jobs[0].RunnerID != r.ID {
		t.Errorf("long job ran on runner %d, want the first pod's %d", lv.Jobs[0].RunnerID, r.ID)
	}
	managers = e.waitManagersReady(1, 3*time.Minute)
	second := managers[0].Name
	if second == first {
		t.Fatalf("manager pod %s not replaced by the upgrade", first)
	}
	t.Logf("FIGURE helm upgrade → new manager Ready, job done: %v", time.Since(upStart).Round(100*time.Millisecond))
	waitFor(t, "the first manager pod to be gone", 2*time.Minute, func() bool { return e.deleted(first) })
	oldLog := e.managerLog(first)
	if miss := missingFrom(oldLog, "SIGQUIT: finishing running jobs", "Unregistering runner from GitLab succeeded"); len(miss) > 0 {
		t.Errorf("first manager's log lacks %q:\n%s", miss, oldLog)
	}
	if !strings.Contains(e.managerLog(second), `concurrent=4`) {
		t.Errorf("new manager does not run with concurrent=4:\n%s", e.managerLog(second))
	}
	runners = e.coord.Runners()
	if len(runners) != 1 || runners[0].ID == r.ID || runners[0].Description != second {
		t.Errorf("runners after the upgrade %+v: want only the new pod's", runners)
	}

	// helm uninstall: the runner is unregistered, nothing of podrunner is left.
	unStart := time.Now()
	e.mustHelm("uninstall", e.release, "--namespace", e.ns, "--wait", "--timeout", "3m")
	// The user's own secrets go the way they came.
	kubectl(t, "delete", "secret", "-n", e.ns, "gitlab-ca", "regcred")
	waitFor(t, "the namespace to be empty", 2*time.Minute, func() bool { return len(e.leftovers()) == 0 })
	t.Logf("FIGURE helm uninstall → nothing left: %v", time.Since(unStart).Round(100*time.Millisecond))
	if n := len(e.coord.Runners()); n != 0 {
		t.Errorf("%d runners still registered after helm uninstall: %+v", n, e.coord.Runners())
	}
	if miss := missingFrom(e.managerLog(second), "Unregistering runner from GitLab succeeded"); len(miss) > 0 {
		t.Errorf("second manager's log lacks %q:\n%s", miss, e.managerLog(second))
	}
}

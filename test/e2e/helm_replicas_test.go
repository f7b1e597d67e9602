package e2e

import (
	"slices"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"

	"github.com/podrunner/podrunner/internal/coordinator"
	"github.com/podrunner/podrunner/internal/helmchart"
	"github.com/podrunner/podrunner/internal/testcluster"
)

// Two slow jobs for the runner's tag, one a second for 30 s.
const twoSlowTaggedJobs = `
one:
  tags: [aks]
  script:
    - for i in $(seq 1 30); do echo "one $i"; sleep 1; done
two:
  tags: [aks]
  script:
    - for i in $(seq 1 30); do echo "two $i"; sleep 1; done
`

// The chart as production runs it (issue 17, point 4): one glrt- token,
// replicas 2, concurrent 1 each, so two jobs run on two managers. Then
// (1) `helm upgrade` while both run, (2) `kubectl delete pod` of one
// manager, (3) a manager pod force-deleted, its process killed without a
// chance to finish (a lost node). Every job ends reported once, its trace
// complete; no job pod is left behind.
func TestHelmReplicasUpgradeDeleteAndKill(t *testing.T) {
	e := newHelmEnv(t)
	runnerID, token := e.coord.CreateRunner(coordinator.RunnerOptions{Description: "replicas", Tags: []string{"aks"}})
	values := []string{
		"--namespace", e.ns,
		"--set", "gitlabUrl=" + e.coord.URL(),
		"--set", "runnerToken=" + token,
		"--set", "rbac.create=true",
		"--set", "runners.executor=kubernetes",
		"--set", "runners.namespace=" + e.ns,
		"--set", "replicas=2",
		"--set", "concurrent=1",
		"--set", "checkInterval=1",
		// No registry for these yet: the images are imported into containerd.
		"--set", "image=" + testcluster.PodrunnerImage,
		"--set", "imagePullPolicy=Never",
		"--set", "runners.image=" + testcluster.BusyboxImage,
		"--set", "runners.imagePullPolicy=if-not-present",
	}
	e.mustHelm(append([]string{"install", e.release, helmchart.ChartPath}, values...)...)
	managers := podNames(e.waitManagersReady(2, 3*time.Minute))
	e.waitManagersContacted(runnerID, 2)

	// runTwo queues the two jobs and waits until each runs on its own
	// manager pod and has printed a few lines; it returns the pipeline and
	// the job ids by name.
	runTwo := func() (int64, map[string]int64) {
		t.Helper()
		pl, err := e.coord.CreatePipelineWith(e.project, coordinator.PipelineOptions{CIConfig: []byte(twoSlowTaggedJobs)})
		if err != nil {
			t.Fatal(err)
		}
		ctx := testcluster.Context(t)
		for _, name := range []string{"one", "two"} {
			if _, err := e.coord.WaitJob(ctx, pl.Jobs[name], coordinator.StatusRunning); err != nil {
				t.Fatalf("job %s not running: %v", name, err)
			}
			waitFor(t, "job "+name+" to print", 2*time.Minute, func() bool {
				return strings.Contains(string(e.coord.Trace(pl.Jobs[name])), "\n"+name+" 3\n")
			})
		}
		one, _ := e.coord.Job(pl.Jobs["one"])
		two, _ := e.coord.Job(pl.Jobs["two"])
		if one.RunnerManager == "" || one.RunnerManager == two.RunnerManager {
			t.Fatalf("jobs picked up by managers %q and %q, want two different ones", one.RunnerManager, two.RunnerManager)
		}
		return pl.ID, pl.Jobs
	}
	checkTwo := func(phase string, pipeline int64, jobs map[string]int64) coordinator.PipelineView {
		t.Helper()
		v := e.waitPipeline(pipeline, 4*time.Minute)
		for name, id := range jobs {
			checkJobReportedOnce(t, e.coord, v, name, id)
		}
		waitFor(t, phase+": the job pods to be deleted", 2*time.Minute, func() bool {
			for _, p := range e.podsSeen(func(p *corev1.Pod) bool { return !isManager(p) }) {
				if !e.deleted(p) {
					return false
				}
			}
			return true
		})
		return v
	}

	// (1) helm upgrade while both managers run a job: the old pods get
	// SIGTERM (→ SIGQUIT) and finish their jobs; the new pods start next
	// to them and must not touch those jobs.
	pl, jobs := runTwo()
	upStart := time.Now()
	e.mustHelm(append([]string{"upgrade", e.release, helmchart.ChartPath, "--set", "logLevel=debug"}, values...)...)
	checkTwo("upgrade", pl, jobs)
	for _, old := range managers {
		waitFor(t, "old manager pod "+old+" to be gone", 3*time.Minute, func() bool { return e.deleted(old) })
		if miss := missingFrom(e.managerLog(old), "SIGQUIT: finishing running jobs"); len(miss) > 0 {
			t.Errorf("old manager %s's log lacks %q:\n%s", old, miss, e.managerLog(old))
		}
	}
	upgraded := podNames(e.waitManagersReady(2, 3*time.Minute))
	for _, n := range upgraded {
		if slices.Contains(managers, n) {
			t.Fatalf("manager pod %s not replaced by the upgrade", n)
		}
	}
	t.Logf("FIGURE helm upgrade with 2 replicas → jobs done, 2 new managers Ready: %v", time.Since(upStart).Round(100*time.Millisecond))
	// The old managers unregistered themselves, not the runner.
	e.waitManagersContacted(runnerID, 2)

	// (2) kubectl delete pod of the manager running "one": it finishes the
	// job, the Deployment starts a replacement.
	pl, jobs = runTwo()
	victim := e.managerPodOf(upgraded, jobs["one"])
	kubectl(t, "delete", "pod", "-n", e.ns, victim, "--wait=false")
	checkTwo("delete pod", pl, jobs)
	waitFor(t, "deleted manager pod "+victim+" to be gone", 3*time.Minute, func() bool { return e.deleted(victim) })
	if miss := missingFrom(e.managerLog(victim), "SIGQUIT: finishing running jobs"); len(miss) > 0 {
		t.Errorf("deleted manager %s's log lacks %q:\n%s", victim, miss, e.managerLog(victim))
	}
	current := podNames(e.waitManagersReady(2, 3*time.Minute))
	e.waitManagersContacted(runnerID, 2)

	// (3) A manager lost with its jobs running: the pod force-deleted, so
	// the kubelet kills the process after its minimum grace (2 s), far too
	// soon to finish a 30 s job; the Deployment's replacement is a new
	// manager. The job is taken over once its owner's lease expires.
	pl, jobs = runTwo()
	victim = e.managerPodOf(current, jobs["one"])
	killed := time.Now()
	kubectl(t, "delete", "pod", "-n", e.ns, victim, "--grace-period=0", "--force", "--wait=false")
	v := checkTwo("force delete", pl, jobs)
	for _, j := range v.Jobs {
		if j.ID == jobs["one"] {
			t.Logf("FIGURE manager force-deleted → its job's final update: %v", j.FinishedAt.Sub(killed).Round(100*time.Millisecond))
		}
	}
	taker := ""
	for _, p := range e.podsSeen(isManager) {
		if p != victim && strings.Contains(e.managerLog(p), "Taking over the running job of a manager whose lease expired") {
			taker = p
		}
	}
	if taker == "" {
		t.Errorf("no manager logged taking over job one of force-deleted %s", victim)
	}
	e.waitManagersReady(2, 3*time.Minute)

	e.mustHelm("uninstall", e.release, "--namespace", e.ns, "--wait", "--timeout", "3m")
	waitFor(t, "the namespace to be empty", 2*time.Minute, func() bool { return len(e.leftovers()) == 0 })
}

func podNames(pods []corev1.Pod) []string {
	var out []string
	for _, p := range pods {
		out = append(out, p.Name)
	}
	return out
}

// waitManagersContacted waits until the runner has exactly n managers
// (system ids) in GitLab, each having contacted it.
func (e *helmEnv) waitManagersContacted(runnerID int64, n int) {
	e.t.Helper()
	waitFor(e.t, "the runner's managers to contact GitLab", 2*time.Minute, func() bool {
		for _, r := range e.coord.Runners() {
			if r.ID != runnerID {
				continue
			}
			contacted := 0
			for _, m := range r.Managers {
				if !m.Contacted.IsZero() {
					contacted++
				}
			}
			return contacted == n && len(r.Managers) == n
		}
		return false
	})
}

// managerPodOf is the manager pod (of pods) that picked the job up: the
// job pod carries its manager's system id, the manager's log names it.
func (e *helmEnv) managerPodOf(pods []string, jobID int64) string {
	e.t.Helper()
	j, _ := e.coord.Job(jobID)
	for _, p := range pods {
		if strings.Contains(e.managerLog(p), j.RunnerManager) {
			return p
		}
	}
	e.t.Fatalf("no manager pod of %v logged system id %q", pods, j.RunnerManager)
	return ""
}

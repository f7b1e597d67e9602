package e2e

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/podrunner/podrunner/internal/config"
	"github.com/podrunner/podrunner/internal/coordinator"
)

// Two jobs of 30 lines, one a second.
const twoSlowJobs = `
one:
  script:
    - for i in $(seq 1 30); do echo "one $i"; sleep 1; done
two:
  script:
    - for i in $(seq 1 30); do echo "two $i"; sleep 1; done
`

// managerConfig copies cfg into a directory of its own with the given
// system id next to it: another manager (host) of the same runner token.
func (e *k8sEnv) managerConfig(cfg, name, systemID string) string {
	e.t.Helper()
	dir := filepath.Join(e.dir, name)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		e.t.Fatal(err)
	}
	data, err := os.ReadFile(cfg)
	if err != nil {
		e.t.Fatal(err)
	}
	out := filepath.Join(dir, "config.toml")
	if err := os.WriteFile(out, data, 0o600); err != nil {
		e.t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, config.SystemIDFile), []byte(systemID), 0o600); err != nil {
		e.t.Fatal(err)
	}
	return out
}

// waitTrace waits until the job's trace holds s.
func (e *k8sEnv) waitTrace(id int64, s string) {
	e.t.Helper()
	deadline := time.Now().Add(2 * time.Minute)
	for !strings.Contains(string(e.coord.Trace(id)), s) {
		if time.Now().After(deadline) {
			e.t.Fatalf("job %d never printed %q:\n%s", id, s, e.coord.Trace(id))
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// checkJobReportedOnce checks a job's end as GitLab saw it: success, every
// line of its loop exactly once, the checksum of the final update right,
// and exactly one final update (nothing after it).
func (e *k8sEnv) checkJobReportedOnce(v coordinator.PipelineView, name string, id int64) {
	e.t.Helper()
	checkJobReportedOnce(e.t, e.coord, v, name, id)
}

func checkJobReportedOnce(t *testing.T, coord *coordinator.Server, v coordinator.PipelineView, name string, id int64) {
	t.Helper()
	tr := string(coord.Trace(id))
	for _, j := range v.Jobs {
		if j.ID != id {
			continue
		}
		if j.Status != coordinator.StatusSuccess {
			t.Fatalf("job %s: %s (%s)\n%s", name, j.Status, j.FailureReason, tr)
		}
		if j.Checksum == "" || j.Checksum != j.TraceChecksum {
			t.Fatalf("job %s: checksum sent %s, GitLab holds %s", name, j.Checksum, j.TraceChecksum)
		}
	}
	for i := 1; i <= 30; i++ {
		if n := strings.Count(tr, fmt.Sprintf("\n%s %d\n", name, i)); n != 1 {
			t.Fatalf("job %s: line %d is in the trace %d times:\n%s", name, i, n, tr)
		}
	}
	// Success means one final update was accepted; nothing was sent after it.
	if r := rejected(coord, id); len(r) != 0 {
		t.Fatalf("job %s: %d requests after its final update, e.g. %s", name, len(r), r[0])
	}
}

// rejected are the job's updates and trace PATCHes GitLab refused with
// 403: once a final update is accepted the job is no longer running, so
// any second final update (or write after it) would be one of them.
func rejected(coord *coordinator.Server, id int64) []coordinator.Request {
	var out []coordinator.Request
	for _, r := range coord.Requests() {
		if (r.Path == fmt.Sprintf("/api/v4/jobs/%d", id) || r.Path == fmt.Sprintf("/api/v4/jobs/%d/trace", id)) && r.Status == 403 {
			out = append(out, r)
		}
	}
	return out
}

// tracePatches are the trace PATCHes of a job, with status code status
// (0: all).
func (e *k8sEnv) tracePatches(id int64, status int) []coordinator.Request {
	var out []coordinator.Request
	for _, r := range e.coord.RequestsTo(coordinator.EndpointPatchTrace) {
		if r.Path == fmt.Sprintf("/api/v4/jobs/%d/trace", id) && (status == 0 || r.Status == status) {
			out = append(out, r)
		}
	}
	return out
}

// Two managers on one token: B starts while A runs two jobs. A alone
// streams and reports them; B neither adopts nor deletes anything of A's.
func TestKubernetesTwoManagersOneToken(t *testing.T) {
	t.Parallel()
	e := newK8sEnv(t, twoSlowJobs, k8sOptions{external: true})
	bin, cfg := e.runnerProcessConfig("e2e-managers", 2, 0)
	cfgA := e.managerConfig(cfg, "a", "s_managera0001")
	cfgB := e.managerConfig(cfg, "b", "s_managerb0001")

	e.startRunnerProcess(bin, cfgA)
	pl, err := e.coord.CreatePipelineWith(e.project, coordinator.PipelineOptions{})
	if err != nil {
		t.Fatal(err)
	}
	one, two := pl.Jobs["one"], pl.Jobs["two"]
	e.waitTrace(one, "\none 3\n")
	e.waitTrace(two, "\ntwo 3\n")
	_, outB := e.startRunnerProcess(bin, cfgB)

	v := e.waitPipeline(pl.ID, 3*time.Minute)
	e.checkJobReportedOnce(v, "one", one)
	e.checkJobReportedOnce(v, "two", two)
	for _, id := range []int64{one, two} {
		if n := len(e.tracePatches(id, 416)); n != 0 {
			t.Fatalf("job %d: GitLab answered %d trace PATCHes with 416 (two writers)", id, n)
		}
	}
	for _, s := range []string{"Adopting the running job", "Taking over the running job", "deleting pod", "resuming job"} {
		if strings.Contains(outB.String(), s) {
			t.Fatalf("manager B logged %q about A's jobs:\n%s", s, tail([]byte(outB.String()), 8000))
		}
	}
	e.waitNoPods()
}

// A manager killed with SIGKILL and never restarted: the other manager
// of the token takes its running jobs over once its Lease expired
// (15 s lease + 2 × 5 s check ≈ 25 s at most), continues their traces and
// reports each once.
func TestKubernetesManagerKilledJobsTakenOver(t *testing.T) {
	t.Parallel()
	e := newK8sEnv(t, twoSlowJobs, k8sOptions{external: true})
	bin, cfg := e.runnerProcessConfig("e2e-takeover", 2, 0)
	cfgA := e.managerConfig(cfg, "a", "s_managera0002")
	cfgB := e.managerConfig(cfg, "b", "s_managerb0002")

	a, _ := e.startRunnerProcess(bin, cfgA)
	pl, err := e.coord.CreatePipelineWith(e.project, coordinator.PipelineOptions{})
	if err != nil {
		t.Fatal(err)
	}
	one, two := pl.Jobs["one"], pl.Jobs["two"]
	e.waitTrace(one, "\none 2\n")
	e.waitTrace(two, "\ntwo 2\n")
	_, outB := e.startRunnerProcess(bin, cfgB)
	deadline := time.Now().Add(time.Minute)
	for !strings.Contains(outB.String(), "Runner started") {
		if time.Now().After(deadline) {
			t.Fatalf("manager B did not start:\n%s", outB.String())
		}
		time.Sleep(100 * time.Millisecond)
	}
	_ = a.Process.Signal(syscall.SIGKILL)
	_ = a.Wait()
	killed := time.Now()

	v := e.waitPipeline(pl.ID, 4*time.Minute)
	e.checkJobReportedOnce(v, "one", one)
	e.checkJobReportedOnce(v, "two", two)
	if !strings.Contains(outB.String(), "Taking over the running job") {
		t.Fatalf("manager B did not say it took the jobs over:\n%s", tail([]byte(outB.String()), 8000))
	}
	// How long the jobs were without a manager (a figure, not asserted):
	// from the kill to B's first trace PATCH of each job.
	for _, id := range []int64{one, two} {
		for _, r := range e.tracePatches(id, 0) {
			if r.Time.After(killed) {
				t.Logf("job %d taken over %.1f s after the kill", id, r.Time.Sub(killed).Seconds())
				break
			}
		}
	}
	e.waitNoPods()
}

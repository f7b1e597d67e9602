package e2e

import (
	"fmt"
	"os"
	"os/exec"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/podrunner/podrunner/internal/coordinator"
)

// lockedBuffer collects a process's output.
type lockedBuffer struct {
	mu sync.Mutex
	b  strings.Builder
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// The runner is killed with SIGKILL while a job runs in its pod; a new
// runner process adopts the pod and the job ends with its whole log.
func TestKubernetesRunnerKilledJobSurvives(t *testing.T) {
	t.Parallel()
	runnerKilledJobSurvives(t, "e2e-adopt", "")
}

// The same with a job handed to a warm pod: the pod carries the job's
// labels and adoption record from the hand-over on, so the next start
// adopts it like any job pod (and replaces the idle pool).
func TestKubernetesRunnerKilledWarmJobSurvives(t *testing.T) {
	t.Parallel()
	tr := runnerKilledJobSurvives(t, "e2e-adopt-warm", "    warm_pods = 1\n    warm_pods_refill_per_minute = 120\n")
	if !strings.Contains(tr, "Using warm pod ") {
		t.Errorf("the job did not run in a warm pod:\n%s", tr)
	}
}

// runnerKilledJobSurvives SIGKILLs the runner while a job runs, starts it
// again and checks the job's log and result; kube is appended to
// [runners.kubernetes]. It returns the job's trace.
func runnerKilledJobSurvives(t *testing.T, name, kube string) string {
	e := newK8sEnv(t, `
survivor:
  script:
    - for i in $(seq 1 40); do echo "line $i"; sleep 0.25; done
    - echo all-done
`, k8sOptions{external: true})

	bin, cfg := e.runnerProcessConfig(name, 2, 0)
	if kube != "" {
		b, err := os.ReadFile(cfg)
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(cfg, append(b, kube...), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	start := func() (*exec.Cmd, *lockedBuffer) { return e.startRunnerProcess(bin, cfg) }

	first, _ := start()
	if kube != "" {
		e.waitWarm(1, 2*time.Minute)
	}
	pl, err := e.coord.CreatePipelineWith(e.project, coordinator.PipelineOptions{})
	if err != nil {
		t.Fatal(err)
	}
	id := pl.Jobs["survivor"]
	deadline := time.Now().Add(2 * time.Minute)
	for !strings.Contains(string(e.coord.Trace(id)), "line 5\n") {
		if time.Now().After(deadline) {
			t.Fatalf("the job never got going:\n%s", e.coord.Trace(id))
		}
		time.Sleep(100 * time.Millisecond)
	}
	first.Process.Signal(syscall.SIGKILL)
	first.Wait()
	if len(e.podNames()) == 0 {
		t.Fatal("the job's pod went away with the runner")
	}

	second, _ := start()
	v := e.waitPipeline(pl.ID, 3*time.Minute)
	j := v.Jobs[0]
	tr := string(e.coord.Trace(id))
	if j.Status != coordinator.StatusSuccess {
		t.Fatalf("job %s (%s) after the runner restart:\n%s", j.Status, j.FailureReason, tr)
	}
	var want strings.Builder
	for i := 1; i <= 40; i++ {
		fmt.Fprintf(&want, "line %d\n", i)
	}
	if !strings.Contains(tr, want.String()) || !strings.Contains(tr, "\nall-done\n") || strings.Count(tr, "line 1\n") != 1 {
		t.Fatalf("the log is not complete and in order exactly once:\n%s", tr)
	}
	if j.Checksum == "" || j.Checksum != j.TraceChecksum {
		t.Fatalf("checksum sent %s, GitLab holds %s", j.Checksum, j.TraceChecksum)
	}
	if kube != "" {
		// A runner that stops deletes its idle warm pods.
		second.Process.Signal(syscall.SIGTERM)
		second.Wait()
	}
	e.waitNoPods()
	return tr
}

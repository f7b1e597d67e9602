package e2e

import (
	"fmt"
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
	e := newK8sEnv(t, `
survivor:
  script:
    - for i in $(seq 1 40); do echo "line $i"; sleep 0.25; done
    - echo all-done
`, k8sOptions{external: true})

	bin, cfg := e.runnerProcessConfig("e2e-adopt", 2, 0)
	start := func() (*exec.Cmd, *lockedBuffer) { return e.startRunnerProcess(bin, cfg) }

	first, _ := start()
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

	start()
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
	e.waitNoPods()
}

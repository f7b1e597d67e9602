package acceptance

import (
	"bytes"
	"encoding/json"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/podrunner/podrunner/internal/coordinator"
	"github.com/podrunner/podrunner/internal/jobrecord"
	procs "github.com/podrunner/podrunner/internal/proc"
)

var childRE = regexp.MustCompile(`CHILD=(\d+) PGID=(\d+)`)

// After kill -9 of the runner the job stays running and its processes
// live; the next runner process of the same config kills them, removes
// the job's scripts, temp files and log buffer, and reports the job
// failed (runner_system_failure) with the log GitLab had plus a line
// saying why. A record of a live runner process is left alone; a
// corrupt record is moved aside with a log line.
func TestCrashedRunnerJobsAreFinished(t *testing.T) {
	ci := `
sleeper:
  script:
    - sleep 1000 >/dev/null 2>&1 &
    - echo "CHILD=$! PGID=$(cut -d' ' -f5 /proc/$$/stat)"
    - sleep 300
`
	e := newEnv(t, ci, coordinator.Options{})
	tmp := filepath.Join(e.dir, "tmp")
	if err := os.Mkdir(tmp, 0o700); err != nil {
		t.Fatal(err)
	}
	e.extraEnv = []string{"TMPDIR=" + tmp}
	first := e.runConfig(e.config(1, ""))
	pl, err := e.coord.CreatePipeline(projectPath, "main")
	if err != nil {
		t.Fatal(err)
	}
	id := pl.Jobs["sleeper"]
	m := childRE.FindStringSubmatch(waitTrace(t, e, id, "PGID="))
	if m == nil {
		t.Fatal("the job did not print its child and group")
	}
	child, _ := strconv.Atoi(m[1])
	pgid, _ := strconv.Atoi(m[2])
	t.Cleanup(func() { syscall.Kill(-pgid, syscall.SIGKILL) })

	first.cmd.Process.Kill() // SIGKILL
	<-first.done
	if j, _ := e.coord.Job(id); j.Status != "running" {
		t.Fatalf("job %s right after kill -9 of the runner; want running", j.Status)
	}
	if !alive(child) {
		t.Fatal("the job's silent child died with the runner; the test proves nothing")
	}
	records := filepath.Join(e.dir, "job-records")
	recPath := filepath.Join(records, "job-"+strconv.FormatInt(id, 10)+".json")
	fi, err := os.Stat(recPath)
	if err != nil {
		t.Fatalf("no record of the running job: %v", err)
	}
	if fi.Mode().Perm() != 0o600 {
		t.Fatalf("record mode %v; want 0600 (it holds the job token)", fi.Mode().Perm())
	}

	// A record of a live runner process (this test's) for the same
	// runner, and a corrupt one.
	var rec jobrecord.Record
	b, _ := os.ReadFile(recPath)
	if err := json.Unmarshal(b, &rec); err != nil {
		t.Fatal(err)
	}
	start, err := procs.StartTime(os.Getpid())
	if err != nil {
		t.Fatal(err)
	}
	live := jobrecord.Record{Runner: rec.Runner, SystemID: rec.SystemID, PID: os.Getpid(), PIDStart: start,
		JobID: 999001, JobToken: "live-token", SystemFailure: "runner_system_failure"}
	liveBytes, _ := json.Marshal(live)
	livePath := filepath.Join(records, "job-999001.json")
	corruptPath := filepath.Join(records, "job-999002.json")
	if err := os.WriteFile(livePath, liveBytes, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(corruptPath, []byte("{not json"), 0o600); err != nil {
		t.Fatal(err)
	}

	// The next runner process finishes the job at start, before asking
	// for new jobs: bound 30 s (its first final update goes out at once).
	second := e.start("run", "-c", filepath.Join(e.dir, "config.toml"))
	j := e.waitJobStatus(id, 30*time.Second, "failed", "success", "canceled")
	if j.Status != "failed" || j.FailureReason != "runner_system_failure" {
		t.Fatalf("job %s (%s); want failed (runner_system_failure)", j.Status, j.FailureReason)
	}
	contains(t, e.coord.Trace(id), "CHILD=", "ERROR: Job failed (system failure): the runner process died while this job was running")
	checkTrace(t, j)
	if alive(child) || groupAlive(pgid) {
		t.Fatalf("the job's processes (group %d, child %d) still live after it was reported", pgid, child)
	}
	waitLog(t, second, "Submitting job to coordinator... ok")
	if _, err := os.Stat(recPath); !os.IsNotExist(err) {
		t.Fatalf("the job's record is still there: %v", err)
	}
	// Nothing of the job's is left: no script, log buffer or temp dir,
	// and no file holding its token. (The project's .git/config keeps the
	// clone URL with the token, as after every job, like GitLab Runner;
	// GitLab revokes the token when the job ends.)
	for _, dir := range []string{tmp, filepath.Join(e.dir, "builds"), records} {
		filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
			if err != nil || path == livePath {
				return nil
			}
			if strings.HasPrefix(d.Name(), "podrunner-") || strings.HasSuffix(d.Name(), ".tmp") {
				t.Errorf("left behind: %s", path)
			}
			if !d.IsDir() && !strings.HasSuffix(path, "/.git/config") {
				if b, err := os.ReadFile(path); err == nil && bytes.Contains(b, []byte(j.Token)) {
					t.Errorf("%s holds the job token", path)
				}
			}
			return nil
		})
	}

	waitLog(t, second, "A job record cannot be read; moved aside")
	if _, err := os.Stat(corruptPath + ".corrupt"); err != nil {
		t.Fatalf("corrupt record not moved aside: %v", err)
	}
	if !strings.Contains(second.Log(), "Leaving the record of a job alone") {
		t.Fatal("no log line for the live process's record")
	}
	if b, err := os.ReadFile(livePath); err != nil || !bytes.Equal(b, liveBytes) {
		t.Fatalf("the live process's record was touched: %v", err)
	}
	if second.cmd.ProcessState != nil {
		t.Fatal("the runner exited")
	}
}

// alive: pid is a process that is not a zombie.
func alive(pid int) bool {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return false
	}
	s := string(b)
	f := strings.Fields(s[strings.LastIndexByte(s, ')')+1:])
	return len(f) > 0 && f[0] != "Z"
}

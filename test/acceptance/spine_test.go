package acceptance

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/podrunner/podrunner/internal/coordinator"
)

func seed(t *testing.T, name string) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("..", "..", "examples", "seed", name))
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// The reference setup's two pipelines, on the shell executor.
func TestSeedPipelines(t *testing.T) {
	host, err := os.Hostname()
	if err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		file, job string
		want      []string
	}{
		{"runner-test.gitlab-ci.yml", "job-runner-test", []string{"✅ Runner 동작 확인 완료!\n"}},
		{"pod-creation.gitlab-ci.yml", "test-pod-creation", []string{"Running inside a temporary pod!", "\n" + host + "\n"}},
	}
	for _, c := range cases {
		t.Run(c.job, func(t *testing.T) {
			t.Parallel()
			e := newEnv(t, seed(t, c.file), coordinator.Options{})
			p := e.runConfig(e.config(1, ""))
			v := e.pipeline(2 * time.Minute)
			j := jobByName(t, v, c.job)
			if v.Status != "success" || j.Status != "success" {
				t.Fatalf("pipeline %s, job %s (%s)", v.Status, j.Status, j.FailureReason)
			}
			checkTrace(t, j)
			contains(t, e.coord.Trace(j.ID), c.want...)
			// The manager's log tells the job's story.
			story := []string{"Checking for jobs... received", "sent-log=0-", "Job succeeded", "Submitting job to coordinator... ok", "Removed job from processing list"}
			deadline := time.Now().Add(5 * time.Second)
			for _, s := range story {
				for !strings.Contains(p.Log(), s) && time.Now().Before(deadline) {
					time.Sleep(20 * time.Millisecond)
				}
				if !strings.Contains(p.Log(), s) {
					t.Fatalf("runner log lacks %q:\n%s", s, p.Log())
				}
			}
			if strings.Contains(p.Log(), e.token) || strings.Contains(p.Log(), j.Token) {
				t.Fatal("runner log contains a token")
			}
		})
	}
}

func TestExitCodeAndAfterScript(t *testing.T) {
	e := newEnv(t, `
fail:
  script:
    - echo before
    - exit 3
    - echo never
  after_script:
    - echo after-script-ran
`, coordinator.Options{})
	e.runConfig(e.config(1, ""))
	v := e.pipeline(time.Minute)
	j := jobByName(t, v, "fail")
	if j.Status != "failed" || j.FailureReason != "script_failure" || j.ExitCode != 3 {
		t.Fatalf("job: status %s, reason %s, exit code %d; want failed, script_failure, 3", j.Status, j.FailureReason, j.ExitCode)
	}
	tr := e.coord.Trace(j.ID)
	contains(t, tr, "after-script-ran")
	if strings.Contains(string(tr), "\nnever") {
		t.Fatal("a command after the failing one ran")
	}
	checkTrace(t, j)
}

func TestMaskedSecretNeverInTrace(t *testing.T) {
	const secret = "s3cr3t-Value-42xyz"
	e := newEnv(t, `
mask:
  script:
    - 'echo "whole: $MY_SECRET"'

    - |
      printf 'split: %s' "${MY_SECRET%???????}"; sleep 0.5; printf '%s\n' "${MY_SECRET#${MY_SECRET%???????}}"
    - 'echo "token: $CI_JOB_TOKEN"'
`, coordinator.Options{})
	if err := e.coord.SetProjectVariable(projectPath, coordinator.ProjectVariable{Key: "MY_SECRET", Value: secret, Masked: true}); err != nil {
		t.Fatal(err)
	}
	p := e.runConfig(e.config(1, ""))
	v := e.pipeline(time.Minute)
	j := jobByName(t, v, "mask")
	if j.Status != "success" {
		t.Fatalf("job %s (%s)", j.Status, j.FailureReason)
	}
	tr := string(e.coord.Trace(j.ID))
	for _, leak := range []string{secret, j.Token} {
		if strings.Contains(tr, leak) {
			t.Fatalf("trace contains a secret:\n%s", tr)
		}
		if strings.Contains(p.Log(), leak) {
			t.Fatal("runner log contains a secret")
		}
	}
	contains(t, []byte(tr), "whole: [MASKED]", "split: [MASKED]\n", "token: [MASKED]")
	checkTrace(t, j)
}

var pgidRE = regexp.MustCompile(`PGID=(\d+)`)

func TestCancel(t *testing.T) {
	ci := `
sleeper:
  script:
    - echo "PGID=$(cut -d' ' -f5 /proc/$$/stat)"
    - for i in $(seq 1 600); do echo tick $i; sleep 0.2; done
  after_script:
    - echo after-script-ran
`
	t.Run("graceful", func(t *testing.T) {
		t.Parallel()
		e := newEnv(t, ci, coordinator.Options{})
		e.runConfig(e.config(1, ""))
		pl, err := e.coord.CreatePipeline(projectPath, "main")
		if err != nil {
			t.Fatal(err)
		}
		id := pl.Jobs["sleeper"]
		e.waitJobStatus(id, time.Minute, "running")
		waitTrace(t, e, id, "PGID=")
		if err := e.coord.Cancel(id, true); err != nil {
			t.Fatal(err)
		}
		j := e.waitJobStatus(id, time.Minute, "canceled", "failed", "success")
		if j.Status != "canceled" {
			t.Fatalf("job status %s; want canceled", j.Status)
		}
		contains(t, e.coord.Trace(id), "after-script-ran")
	})
	t.Run("hard", func(t *testing.T) {
		t.Parallel()
		e := newEnv(t, ci, coordinator.Options{})
		e.runConfig(e.config(1, ""))
		pl, err := e.coord.CreatePipeline(projectPath, "main")
		if err != nil {
			t.Fatal(err)
		}
		id := pl.Jobs["sleeper"]
		e.waitJobStatus(id, time.Minute, "running")
		waitTrace(t, e, id, "PGID=")
		var m []string
		for deadline := time.Now().Add(time.Minute); m == nil; time.Sleep(50 * time.Millisecond) {
			m = pgidRE.FindStringSubmatch(string(e.coord.Trace(id)))
			if m == nil && time.Now().After(deadline) {
				t.Fatal("the job never printed its process group")
			}
		}
		pgid, _ := strconv.Atoi(m[1])
		if err := e.coord.Cancel(id, false); err != nil {
			t.Fatal(err)
		}
		// The runner learns of the cancel with its next trace update (the
		// coordinator asks for one every second); from then on the group
		// must be gone within 2 s.
		deadline := time.Now().Add(time.Second + 2*time.Second + 500*time.Millisecond)
		for groupAlive(pgid) {
			if time.Now().After(deadline) {
				t.Fatalf("process group %d still alive after the hard cancel", pgid)
			}
			time.Sleep(20 * time.Millisecond)
		}
		if strings.Contains(string(e.coord.Trace(id)), "after-script-ran") {
			t.Fatal("after_script ran on a hard cancel")
		}
	})
}

// groupAlive reports whether any non-zombie process is in group pgid.
func groupAlive(pgid int) bool {
	if err := syscall.Kill(-pgid, 0); err != nil {
		return false
	}
	entries, _ := os.ReadDir("/proc")
	for _, ent := range entries {
		pid, err := strconv.Atoi(ent.Name())
		if err != nil {
			continue
		}
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
		if err != nil {
			continue
		}
		s := string(b)
		rest := s[strings.LastIndexByte(s, ')')+2:]
		f := strings.Fields(rest)
		if len(f) > 2 && f[0] != "Z" && f[2] == strconv.Itoa(pgid) {
			return true
		}
	}
	return false
}

func waitTrace(t *testing.T, e *env, id int64, want string) string {
	t.Helper()
	deadline := time.Now().Add(time.Minute)
	for {
		tr := string(e.coord.Trace(id))
		if strings.Contains(tr, want) {
			return tr
		}
		if time.Now().After(deadline) {
			t.Fatalf("trace of job %d never showed %q:\n%s", id, want, tr)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// 30% of all requests fail with 5xx, one trace patch is answered 416 and
// one final update 412: every job still completes with its exact log.
func TestFaultsLoseNothing(t *testing.T) {
	var b strings.Builder
	for i := 1; i <= 4; i++ {
		fmt.Fprintf(&b, "job%d:\n  script:\n    - seq 1 %d | sed 's/^/line-%d-/'\n    - sleep 1\n    - seq 1 2000 | sed 's/^/tail-%d-/'\n", i, 3000*i, i, i)
	}
	e := newEnv(t, b.String(), coordinator.Options{})
	// Every endpoint of the runner API; git fetches are not the runner's
	// protocol (a failed fetch fails the job's get_sources, as in GitLab).
	rate := map[string]float64{}
	for _, ep := range []string{coordinator.EndpointRequestJob, coordinator.EndpointUpdateJob, coordinator.EndpointPatchTrace,
		coordinator.EndpointVerify, coordinator.EndpointRegister, coordinator.EndpointUploadArtifacts, coordinator.EndpointDownloadArtifacts} {
		rate[ep] = 0.3
	}
	e.coord.SetFaults(coordinator.Faults{Seed: 7, ErrorRate: rate})
	e.coord.ForceTrace416(1)
	e.coord.ForceUpdate412(1)
	e.runConfig(e.config(2, ""))
	v := e.pipeline(3 * time.Minute)
	if v.Status != "success" {
		for _, j := range v.Jobs {
			t.Logf("job %s: %s (%s)\n%s", j.Name, j.Status, j.FailureReason, e.coord.Trace(j.ID))
		}
		t.Fatalf("pipeline %s", v.Status)
	}
	for i := 1; i <= 4; i++ {
		j := jobByName(t, v, fmt.Sprintf("job%d", i))
		checkTrace(t, j)
		tr := string(e.coord.Trace(j.ID))
		for _, series := range []struct {
			prefix string
			n      int
		}{{fmt.Sprintf("line-%d-", i), 3000 * i}, {fmt.Sprintf("tail-%d-", i), 2000}} {
			var want strings.Builder
			for k := 1; k <= series.n; k++ {
				fmt.Fprintf(&want, "%s%d\n", series.prefix, k)
			}
			if !strings.Contains(tr, want.String()) {
				t.Fatalf("job%d: the %s series is not in the trace exactly once and in order", i, series.prefix)
			}
			if c := strings.Count(tr, series.prefix+"1\n"); c != 1 {
				t.Fatalf("job%d: %s1 appears %d times", i, series.prefix, c)
			}
		}
	}
	faulted := 0
	for _, ep := range []string{"request_job", "update_job", "patch_trace"} {
		faulted += e.coord.FaultCount(ep)
	}
	if faulted == 0 {
		t.Fatal("no request was faulted; the test proves nothing")
	}
}

func TestJobTimeout(t *testing.T) {
	e := newEnv(t, `
slow:
  timeout: 3s
  script:
    - sleep 60
  after_script:
    - echo after-timeout
`, coordinator.Options{})
	e.runConfig(e.config(1, ""))
	v := e.pipeline(time.Minute)
	j := jobByName(t, v, "slow")
	if j.Status != "failed" || j.FailureReason != "job_execution_timeout" {
		t.Fatalf("job %s (%s); want failed job_execution_timeout", j.Status, j.FailureReason)
	}
	contains(t, e.coord.Trace(j.ID), "after-timeout")
}

func TestSignals(t *testing.T) {
	ci := `
work:
  script:
    - echo started
    - sleep 4
    - echo finished
`
	t.Run("SIGQUIT finishes the job, then exits", func(t *testing.T) {
		t.Parallel()
		e := newEnv(t, ci, coordinator.Options{})
		p := e.runConfig(e.config(1, ""))
		pl, err := e.coord.CreatePipeline(projectPath, "main")
		if err != nil {
			t.Fatal(err)
		}
		id := pl.Jobs["work"]
		waitTrace(t, e, id, "started")
		p.cmd.Process.Signal(syscall.SIGQUIT)
		if err := p.wait(t, time.Minute); err != nil {
			t.Fatalf("podrunner exited with %v after SIGQUIT", err)
		}
		j, _ := e.coord.Job(id)
		if j.Status != "success" {
			t.Fatalf("job %s (%s) after SIGQUIT; want success", j.Status, j.FailureReason)
		}
		contains(t, e.coord.Trace(id), "finished")
	})
	t.Run("SIGTERM reports the job failed before exiting", func(t *testing.T) {
		t.Parallel()
		e := newEnv(t, strings.Replace(ci, "sleep 4", "sleep 60", 1), coordinator.Options{})
		p := e.runConfig(e.config(1, ""))
		pl, err := e.coord.CreatePipeline(projectPath, "main")
		if err != nil {
			t.Fatal(err)
		}
		id := pl.Jobs["work"]
		waitTrace(t, e, id, "started")
		p.cmd.Process.Signal(syscall.SIGTERM)
		p.wait(t, time.Minute)
		j, _ := e.coord.Job(id)
		if j.Status != "failed" || j.FailureReason != "runner_system_failure" {
			t.Fatalf("job %s (%s) after SIGTERM; want failed runner_system_failure", j.Status, j.FailureReason)
		}
		// One final line, naming the real cause (not "canceled" too).
		tr := string(e.coord.Trace(id))
		if n := strings.Count(tr, "ERROR: Job failed"); n != 1 || !strings.Contains(tr, "the runner was shut down") {
			t.Errorf("%d 'ERROR: Job failed' lines, want one saying the runner was shut down:\n%s", n, tr)
		}
	})
	// Supervisors escalate SIGQUIT to SIGTERM: the job must still end
	// reported, not be left running in GitLab.
	t.Run("SIGTERM after SIGQUIT reports the job failed before exiting", func(t *testing.T) {
		t.Parallel()
		e := newEnv(t, strings.Replace(ci, "sleep 4", "sleep 60", 1), coordinator.Options{})
		p := e.runConfig(e.config(1, ""))
		pl, err := e.coord.CreatePipeline(projectPath, "main")
		if err != nil {
			t.Fatal(err)
		}
		id := pl.Jobs["work"]
		waitTrace(t, e, id, "started")
		p.cmd.Process.Signal(syscall.SIGQUIT)
		waitLog(t, p, "SIGQUIT: finishing running jobs")
		p.cmd.Process.Signal(syscall.SIGTERM)
		p.wait(t, time.Minute)
		j, _ := e.coord.Job(id)
		if j.Status != "failed" || j.FailureReason != "runner_system_failure" {
			t.Fatalf("job %s (%s) after SIGQUIT then SIGTERM; want failed runner_system_failure\n%s", j.Status, j.FailureReason, p.Log())
		}
	})
}

func TestBadConfig(t *testing.T) {
	e := newEnv(t, "x:\n  script: [true]\n", coordinator.Options{})
	cases := []struct {
		name, toml, want string
	}{
		{"wrong type", "concurrent = \"many\"\n", "config.toml:1"},
		{"bad url", "concurrent = 1\n[[runners]]\n  name = \"r\"\n  url = \"ftp://example.invalid\"\n  token = \"glrt-x\"\n  executor = \"shell\"\n", "config.toml:4"},
		{"unknown executor", "concurrent = 1\n[[runners]]\n  name = \"r\"\n  url = \"http://127.0.0.1:1\"\n  token = \"glrt-x\"\n  executor = \"dockr\"\n", "config.toml:6"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			p := e.runConfig(c.toml)
			err := p.wait(t, 30*time.Second)
			if err == nil {
				t.Fatal("podrunner run accepted a bad config")
			}
			if !strings.Contains(p.Log(), c.want) {
				t.Fatalf("error does not name %s:\n%s", c.want, p.Log())
			}
		})
	}
}

// The Helm chart's flow: register with a legacy registration token, then
// run; and with a glrt- authentication token.
func TestRegisterThenRun(t *testing.T) {
	e := newEnv(t, seed(t, "runner-test.gitlab-ci.yml"), coordinator.Options{})
	cfg := filepath.Join(e.dir, "registered.toml")
	reg := exec.Command(binary, "register", "--non-interactive", "-c", cfg)
	reg.Env = append(os.Environ(),
		"CI_SERVER_URL="+e.coord.URL(),
		"REGISTRATION_TOKEN="+e.coord.RegistrationToken(),
		"RUNNER_EXECUTOR=shell",
		"RUNNER_TAG_LIST=aks",
		"RUNNER_NAME=helm-like",
		"RUNNER_BUILDS_DIR="+filepath.Join(e.dir, "builds"),
	)
	if out, err := reg.CombinedOutput(); err != nil {
		t.Fatalf("register: %v\n%s", err, out)
	}
	if fi, err := os.Stat(cfg); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("config.toml: %v, mode %v; want 0600", err, fi.Mode())
	}
	e.start("run", "-c", cfg)
	v := e.pipeline(time.Minute)
	j := jobByName(t, v, "job-runner-test")
	if j.Status != "success" {
		t.Fatalf("job %s (%s)", j.Status, j.FailureReason)
	}
	contains(t, e.coord.Trace(j.ID), "✅ Runner 동작 확인 완료!")
}

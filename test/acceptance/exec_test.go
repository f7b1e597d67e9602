package acceptance

import (
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"
)

// execPipeline is a 3-stage pipeline using what `podrunner exec` must get
// right: artifacts from build reach test and a `needs` job; a failure that
// is allowed; a flaky job passing on retry (its marker lives outside the
// project, in $SYNC); a `needs` job that starts before its stage — the
// slow test job waits for the file it writes, so the pipeline only
// succeeds if it did; a cache kept between runs; a manual job not run.
const execPipeline = `stages: [build, test, deploy]

build:
  stage: build
  cache:
    key: deps
    paths: [deps/]
  script:
    - if [ -f deps/stamp ]; then echo "cache-hit $(cat deps/stamp)"; else mkdir -p deps; echo from-run-1 > deps/stamp; echo cache-miss; fi
    - mkdir -p dist
    - echo "artifact-from-build" > dist/app.txt
  artifacts:
    paths: [dist/]

slow-test:
  stage: test
  script:
    - echo "got $(cat dist/app.txt)"
    - i=0; while [ ! -f "$SYNC/early-deploy-ran" ] && [ $i -lt 1200 ]; do sleep 0.1; i=$((i+1)); done
    - test -f "$SYNC/early-deploy-ran"
    - echo slow-test-done

lint:
  stage: test
  allow_failure: true
  script:
    - echo lint-complains
    - exit 7

flaky:
  stage: test
  retry:
    max: 2
    when: script_failure
  script:
    - if [ ! -f "$SYNC/flaky-marker" ]; then touch "$SYNC/flaky-marker"; echo flaky-first-try; exit 1; fi
    - echo flaky-passed

early-deploy:
  stage: deploy
  needs: [build]
  script:
    - echo "early got $(cat dist/app.txt)"
    - touch "$SYNC/early-deploy-ran"

deploy:
  stage: deploy
  script:
    - echo deploying

release:
  stage: deploy
  when: manual
  script:
    - echo releasing
`

// execProject writes a project directory (no git repository: exec takes
// the files as they are) and a sync directory outside it.
func execProject(t testing.TB, ci string) (project, sync string) {
	t.Helper()
	root := t.TempDir()
	project, sync = filepath.Join(root, "project"), filepath.Join(root, "sync")
	for _, d := range []string{project, sync} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.WriteFile(filepath.Join(project, ".gitlab-ci.yml"), []byte(ci), 0o644); err != nil {
		t.Fatal(err)
	}
	return project, sync
}

// runExec runs `podrunner exec args…` in dir (stdout not a terminal: the
// plain output) and returns its exit code and output.
func runExec(t testing.TB, dir string, args ...string) (int, string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, binary, append([]string{"exec"}, args...)...)
	cmd.Dir = dir
	out, err := cmd.CombinedOutput()
	var exit *exec.ExitError
	switch {
	case err == nil:
		return 0, string(out)
	case errors.As(err, &exit):
		return exit.ExitCode(), string(out)
	default:
		t.Fatalf("podrunner exec: %v\n%s", err, out)
		return -1, ""
	}
}

// lineIndex is the line number of the first line containing s, -1 if none.
func lineIndex(out, s string) int {
	for i, l := range strings.Split(out, "\n") {
		if strings.Contains(l, s) {
			return i
		}
	}
	return -1
}

func TestExecPipeline(t *testing.T) {
	project, sync := execProject(t, execPipeline)
	code, out := runExec(t, project, "--concurrency", "4", "--var", "SYNC="+sync)
	t.Logf("podrunner exec output:\n%s", out)
	if code != 0 {
		t.Fatalf("exit code %d, want 0", code)
	}
	for _, want := range []string{
		"job build: success",
		"[build] cache-miss",
		// Artifacts: build's dist/ reaches test and the needs job.
		"[slow-test] got artifact-from-build",
		"[early-deploy] early got artifact-from-build",
		"job slow-test: success",
		// allow_failure: the failure shows, the pipeline still passes.
		"job lint: failed (script_failure, exit code 7) [allowed to fail]",
		// retry: the first attempt fails, the retry passes.
		"[flaky] flaky-first-try",
		"job flaky: failed (script_failure, exit code 1) [retried]",
		"[flaky (attempt 2)] flaky-passed",
		"job flaky (attempt 2): success",
		"job deploy: success",
		"job release: manual (not run: name it with --job release)",
		"pipeline: success",
		"Pipeline success",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("output lacks %q", want)
		}
	}
	// needs: early-deploy starts (and ends) while its stage's predecessor
	// slow-test still runs; deploy waits for the whole test stage.
	early, slowDone, deploy := lineIndex(out, "job early-deploy: running"), lineIndex(out, "job slow-test: success"), lineIndex(out, "job deploy: running")
	if early < 0 || slowDone < 0 || early > slowDone {
		t.Errorf("early-deploy started at line %d, slow-test ended at line %d: want the needs job first", early, slowDone)
	}
	if deploy < slowDone {
		t.Errorf("deploy started at line %d before the test stage ended (line %d)", deploy, slowDone)
	}
	if strings.Contains(out, "[release]") {
		t.Error("the manual job ran without --job")
	}
	// The summary table has every attempt with its notes.
	for _, re := range []string{
		`(?m)^  test\s+lint\s+failed \(script_failure, exit code 7\)\s+\d+\.\ds\s+allowed to fail$`,
		`(?m)^  test\s+flaky\s+failed \(script_failure, exit code 1\)\s+\d+\.\ds\s+retried$`,
		`(?m)^  test\s+flaky\s+success\s+\d+\.\ds\s+attempt 2$`,
		`(?m)^  deploy\s+release\s+manual\s+-`,
	} {
		if !regexp.MustCompile(re).MatchString(out) {
			t.Errorf("summary lacks a row matching %s", re)
		}
	}
	// Logs are saved per run, plain and with colours.
	logs := filepath.Join(project, ".podrunner", "logs", "1")
	if b, err := os.ReadFile(filepath.Join(logs, "lint.log")); err != nil || !strings.Contains(string(b), "lint-complains") || strings.Contains(string(b), "\x1b[") {
		t.Errorf("lint.log: %q, %v; want the plain log", b, err)
	}
	if b, err := os.ReadFile(filepath.Join(logs, "lint.ansi.log")); err != nil || !strings.Contains(string(b), "\x1b[") {
		t.Errorf("lint.ansi.log: %v; want the log with colours", err)
	}
	if b, err := os.ReadFile(filepath.Join(logs, "flaky.attempt2.log")); err != nil || !strings.Contains(string(b), "flaky-passed") {
		t.Errorf("flaky.attempt2.log: %q, %v", b, err)
	}

	// A second run finds the cache of the first; only build and what it
	// needs run (--job), and the manual job runs when named.
	code, out = runExec(t, project, "--job", "early-deploy", "--job", "release", "--var", "SYNC="+sync)
	t.Logf("second run:\n%s", out)
	if code != 0 {
		t.Fatalf("second run: exit code %d, want 0", code)
	}
	for _, want := range []string{"[build] cache-hit from-run-1", "job early-deploy: success", "[release] releasing", "job release: success"} {
		if !strings.Contains(out, want) {
			t.Errorf("second run: output lacks %q", want)
		}
	}
	for _, absent := range []string{"job slow-test", "job lint", "job flaky"} {
		if strings.Contains(out, absent) {
			t.Errorf("second run: %q ran, but --job named only early-deploy and release", absent)
		}
	}
	if _, err := os.Stat(filepath.Join(project, ".podrunner", "logs", "2", "build.log")); err != nil {
		t.Errorf("second run's logs: %v", err)
	}
}

func TestExecFailingPipeline(t *testing.T) {
	project, _ := execProject(t, `stages: [build, test, deploy]
build:
  stage: build
  script: [echo building]
test:
  stage: test
  script:
    - echo "tests are red"
    - exit 3
deploy:
  stage: deploy
  script: [echo never]
`)
	code, out := runExec(t, project)
	if code == 0 {
		t.Fatalf("exit code 0 for a failing pipeline:\n%s", out)
	}
	for _, want := range []string{
		"job test: failed (script_failure, exit code 3)",
		"job deploy: skipped",
		"pipeline: failed",
		"Pipeline failed",
		"ERROR: pipeline failed",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("output lacks %q:\n%s", want, out)
		}
	}
	if strings.Contains(out, "[deploy] never") {
		t.Errorf("deploy ran after a failed stage:\n%s", out)
	}
	if strings.Contains(out, "glcbt-") {
		t.Errorf("exec output shows a job token:\n%s", out)
	}
}

func TestExecConfigErrors(t *testing.T) {
	tests := []struct {
		name, ci string
		args     []string
		want     []string
	}{
		{"unknown key", "build:\n  script: [x]\n  scirpt: [y]\n", nil, []string{".gitlab-ci.yml:", "scirpt"}},
		{"bad yaml", "build:\n  script: [x\n", nil, []string{".gitlab-ci.yml:"}},
		{"unknown need", "a:\n  script: [x]\n  needs: [nosuch]\n", nil, []string{".gitlab-ci.yml:", "nosuch"}},
		{"unknown --job", "a:\n  script: [x]\n", []string{"--job", "b"}, []string{`--job "b"`, "jobs: a"}},
		{"filtered", "workflow:\n  rules:\n    - if: $RUN == \"yes\"\na:\n  script: [x]\n", nil, []string{"filtered out by workflow:rules"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			project, _ := execProject(t, tt.ci)
			code, out := runExec(t, project, tt.args...)
			if code == 0 {
				t.Fatalf("exit code 0:\n%s", out)
			}
			for _, w := range tt.want {
				if !strings.Contains(out, w) {
					t.Errorf("output lacks %q:\n%s", w, out)
				}
			}
			if regexp.MustCompile(`panic|goroutine \d+`).MatchString(out) {
				t.Errorf("exec crashed:\n%s", out)
			}
		})
	}
}

// Ctrl-C aborts the running job, which the runner still reports (the
// coordinator keeps listening), and exec ends with its summary.
func TestExecInterrupt(t *testing.T) {
	project, _ := execProject(t, "build:\n  stage: build\n  script:\n    - echo job-started\n    - sleep 120\n")
	p := &proc{done: make(chan struct{})}
	p.cmd = exec.Command(binary, "exec")
	p.cmd.Dir = project
	p.cmd.Stdout, p.cmd.Stderr = p, p
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { p.err = p.cmd.Wait(); close(p.done) }()
	t.Cleanup(func() {
		p.cmd.Process.Kill()
		<-p.done
	})
	waitLog(t, p, "[build] job-started")
	if err := p.cmd.Process.Signal(os.Interrupt); err != nil {
		t.Fatal(err)
	}
	err := p.wait(t, time.Minute)
	out := p.Log()
	if err == nil {
		t.Fatalf("exit code 0 after Ctrl-C:\n%s", out)
	}
	for _, want := range []string{"Interrupted: aborting the running jobs", "job build: failed", "Pipeline failed", "interrupted"} {
		if !strings.Contains(out, want) {
			t.Errorf("output lacks %q:\n%s", want, out)
		}
	}
	if _, err := os.Stat(filepath.Join(project, ".podrunner", "logs", "1", "build.log")); err != nil {
		t.Errorf("the aborted job's log was not saved: %v", err)
	}
}

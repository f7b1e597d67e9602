package main

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/podrunner/podrunner/internal/ciyaml"
	"github.com/podrunner/podrunner/internal/coordinator"
	"github.com/podrunner/podrunner/internal/execview"
)

// runExecCmd runs `podrunner exec args…` in dir.
func runExecCmd(t *testing.T, dir string, args ...string) (int, string) {
	t.Helper()
	old, err := os.Getwd()
	if err != nil {
		t.Fatal(err)
	}
	if err := os.Chdir(dir); err != nil {
		t.Fatal(err)
	}
	defer os.Chdir(old)
	var out, errb bytes.Buffer
	code := execute(append([]string{"exec"}, args...), &out, &errb)
	return code, out.String() + errb.String()
}

func TestExecFlagErrors(t *testing.T) {
	dir := t.TempDir()
	ci := "build:\n  script: [echo hi]\n"
	if err := os.WriteFile(filepath.Join(dir, ".gitlab-ci.yml"), []byte(ci), 0o644); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		args []string
		want string
	}{
		{[]string{"--executor", "docker"}, `--executor "docker": use "shell" or "kubernetes"`},
		{[]string{"--concurrency", "0"}, "--concurrency 0: must be at least 1"},
		{[]string{"--var", "NOEQUALS"}, `--var "NOEQUALS": use KEY=VALUE`},
		{[]string{"--var", "=x"}, `--var "=x": use KEY=VALUE`},
		{[]string{"--namespace", "ci"}, "--namespace is for --executor kubernetes"},
		{[]string{"--image", "alpine"}, "--image is for --executor kubernetes"},
		{[]string{"--kubeconfig", "/x"}, "--kubeconfig is for --executor kubernetes"},
		{[]string{"--listen-address", "10.0.0.1"}, "--listen-address is for --executor kubernetes"},
		{[]string{"--helper-image-volume"}, "--helper-image-volume is for --executor kubernetes"},
		{[]string{"--executor", "kubernetes", "--builds-dir", "/tmp/b"}, "--builds-dir is for --executor shell"},
		{[]string{"--executor", "kubernetes", "--pull-policy", "sometimes"}, `--pull-policy "sometimes": use always, if-not-present or never`},
		{[]string{"--executor", "kubernetes", "--listen-address", ":8080"}, "not only a port"},
		{[]string{"--executor", "kubernetes", "--listen-address", "10.0.0.0/8"}, "use an address"},
		{[]string{"--output", "fancy"}, `--output "fancy": use auto, live, plain or quiet`},
		{[]string{"--job", " "}, "--job needs a job name"},
		{[]string{"--cache-dir", ""}, "--cache-dir must not be empty"},
		{[]string{"--job", "nosuch"}, `--job "nosuch": .gitlab-ci.yml has no such job (jobs: build)`},
		{[]string{"--file", "missing.yml"}, "read CI file: open missing.yml: no such file or directory (run exec in the project directory, or name the file with --file)"},
		{[]string{"extra"}, `unknown command "extra"`},
	}
	for _, tt := range tests {
		t.Run(strings.Join(tt.args, " "), func(t *testing.T) {
			code, out := runExecCmd(t, dir, tt.args...)
			if code == 0 {
				t.Fatalf("exit code 0, want an error; output:\n%s", out)
			}
			if !strings.Contains(out, tt.want) {
				t.Errorf("output lacks %q:\n%s", tt.want, out)
			}
		})
	}
}

func TestExecYAMLErrorNamesFileAndPosition(t *testing.T) {
	dir := t.TempDir()
	ci := "build:\n  script: [echo hi]\n  scirpt: [oops]\n"
	if err := os.WriteFile(filepath.Join(dir, "ci.yml"), []byte(ci), 0o644); err != nil {
		t.Fatal(err)
	}
	code, out := runExecCmd(t, dir, "--file", "ci.yml")
	if code == 0 {
		t.Fatalf("exit code 0 for a bad CI file:\n%s", out)
	}
	if !strings.Contains(out, "ci.yml:") || !strings.Contains(out, "scirpt") {
		t.Errorf("error does not name the file, position and key:\n%s", out)
	}
	if !strings.Contains(out, "ci.yml:3:") && !strings.Contains(out, "ci.yml:1:") {
		t.Errorf("error has no line number:\n%s", out)
	}
}

func TestListenHostPort(t *testing.T) {
	for in, want := range map[string]string{
		"10.0.0.5":      "10.0.0.5:0",
		"10.0.0.5:8080": "10.0.0.5:8080",
		"::1":           "[::1]:0",
		"[fd00::1]:99":  "[fd00::1]:99",
		"node.local":    "node.local:0",
	} {
		got, err := listenHostPort(in)
		if err != nil || got != want {
			t.Errorf("listenHostPort(%q) = %q, %v; want %q", in, got, err, want)
		}
	}
}

func TestRouteToRefusesLoopbackAndBadURLs(t *testing.T) {
	if _, err := routeTo("https://127.0.0.1:6443"); err == nil || !strings.Contains(err.Error(), "--listen-address") {
		t.Errorf("loopback API server: err = %v, want one asking for --listen-address", err)
	}
	if _, err := routeTo("not a url"); err == nil || !strings.Contains(err.Error(), "--listen-address") {
		t.Errorf("bad URL: err = %v, want one asking for --listen-address", err)
	}
}

func TestLogFileName(t *testing.T) {
	for _, tt := range []struct {
		job  execview.Job
		want string
	}{
		{execview.Job{Name: "build", Attempt: 1}, "build"},
		{execview.Job{Name: "test 1/3", Attempt: 1}, "test_1_3"},
		{execview.Job{Name: "test: [linux, 1.26]", Attempt: 1}, "test___linux__1.26_"},
		{execview.Job{Name: "flaky", Attempt: 2}, "flaky.attempt2"},
		{execview.Job{Name: "..", Attempt: 1}, "job"},
		{execview.Job{Name: "../../etc/passwd", Attempt: 1}, "_.._etc_passwd"},
	} {
		if got := logFileName(tt.job); got != tt.want {
			t.Errorf("logFileName(%q, attempt %d) = %q, want %q", tt.job.Name, tt.job.Attempt, got, tt.want)
		}
	}
}

// TestLogFileNameOfLongMatrixJob: a name beyond what a file system holds
// (255 bytes) is cut and keeps a hash, so the log is saved and two long
// names differing only at the end keep different files.
func TestLogFileNameOfLongMatrixJob(t *testing.T) {
	long := "test: [" + strings.Repeat("linux-amd64-with-a-long-toolchain-name, ", 10)
	a, b := logFileName(execview.Job{Name: long + "a]", Attempt: 3}), logFileName(execview.Job{Name: long + "b]", Attempt: 1})
	if len(a)+len("-1234567890.ansi.log") > 255 || len(b) > 255 {
		t.Errorf("names too long: %d and %d bytes", len(a), len(b))
	}
	if a == b || !strings.HasSuffix(a, ".attempt3") {
		t.Errorf("names %q and %q: want different names, the first ending in .attempt3", a, b)
	}
	dir := t.TempDir()
	st := &logStore{dir: dir, saved: map[int64]bool{}, names: map[string]int64{}}
	if err := st.save(execview.Job{ID: 1, Name: long + "a]", Attempt: 1}, []byte("log\n")); err != nil {
		t.Errorf("save: %v", err)
	}
}

func TestLogStoreNumbersRunsAndSavesBothForms(t *testing.T) {
	base := filepath.Join(t.TempDir(), "logs")
	s1, err := newLogStore(base)
	if err != nil {
		t.Fatal(err)
	}
	s2, err := newLogStore(base)
	if err != nil {
		t.Fatal(err)
	}
	if filepath.Base(s1.dir) != "1" || filepath.Base(s2.dir) != "2" {
		t.Fatalf("run directories %s, %s; want 1 and 2", s1.dir, s2.dir)
	}
	if target, err := os.Readlink(filepath.Join(base, "latest")); err != nil || target != "2" {
		t.Errorf("latest -> %q (%v), want 2", target, err)
	}
	j := execview.Job{ID: 5, Name: "build", Attempt: 1}
	raw := []byte("\x1b[32;1m$ make\x1b[0;m\nok\n")
	if err := s2.save(j, raw); err != nil {
		t.Fatal(err)
	}
	if err := s2.save(j, []byte("again")); err != nil { // saved once
		t.Fatal(err)
	}
	// Another job whose name maps to the same file name.
	if err := s2.save(execview.Job{ID: 6, Name: "build", Attempt: 1}, []byte("other\n")); err != nil {
		t.Fatal(err)
	}
	read := func(name string) string {
		b, err := os.ReadFile(filepath.Join(s2.dir, name))
		if err != nil {
			t.Fatal(err)
		}
		return string(b)
	}
	if got := read("build.log"); got != "$ make\nok\n" {
		t.Errorf("build.log = %q", got)
	}
	if got := read("build.ansi.log"); got != string(raw) {
		t.Errorf("build.ansi.log = %q", got)
	}
	if got := read("build-6.log"); got != "other\n" {
		t.Errorf("build-6.log = %q", got)
	}
}

func TestSnapshotLeavesOutStateDirAndIgnoredFiles(t *testing.T) {
	dir := t.TempDir()
	mustGitT(t, dir, "init", "-q", "-b", "feature")
	write := func(name, data string) {
		p := filepath.Join(dir, name)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(data), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	write(".gitignore", "*.tmp\n")
	write("committed.txt", "c")
	mustGitT(t, dir, "add", "-A")
	mustGitT(t, dir, "-c", "user.name=t", "-c", "user.email=t@example.com", "commit", "-q", "-m", "x")
	write("untracked.txt", "u")
	write("ignored.tmp", "i")
	write(".podrunner/cache/default/cache.zip", "z")
	write(".podrunner/logs/1/build.log", "l")

	repo := filepath.Join(t.TempDir(), "snap")
	branch, err := snapshot(dir, repo)
	if err != nil {
		t.Fatal(err)
	}
	if branch != "feature" {
		t.Errorf("branch %q, want feature (the work tree's)", branch)
	}
	files, err := gitOut(repo, "ls-files")
	if err != nil {
		t.Fatal(err)
	}
	got := strings.Fields(files)
	want := []string{".gitignore", "committed.txt", "untracked.txt"}
	if !slices.Equal(got, want) {
		t.Errorf("snapshot holds %v, want %v", got, want)
	}
}

func mustGitT(t *testing.T, dir string, args ...string) {
	t.Helper()
	if _, err := gitOut(dir, args...); err != nil {
		t.Fatal(err)
	}
}

// fakeCoord replays pipeline snapshots, one per call.
type fakeCoord struct {
	views  []coordinator.PipelineView
	traces map[int64][]byte
	played []int64
	calls  int
}

func (f *fakeCoord) Pipeline(int64) (coordinator.PipelineView, bool) {
	v := f.views[min(f.calls, len(f.views)-1)]
	f.calls++
	return v, true
}

func (f *fakeCoord) Trace(id int64) []byte { return f.traces[id] }

func (f *fakeCoord) Play(id int64) error {
	f.played = append(f.played, id)
	return nil
}

func TestFollowerSnapshotRetriesAndAllowFailure(t *testing.T) {
	cfg, err := ciyaml.Parse(".gitlab-ci.yml", []byte(`
stages: [build, test]
build:
  stage: build
  script: [make]
flaky:
  stage: test
  script: [./flaky]
lint:
  stage: test
  allow_failure:
    exit_codes: [3]
  script: [lint]
vet:
  stage: test
  allow_failure:
    exit_codes: [3]
  script: [vet]
`))
	if err != nil {
		t.Fatal(err)
	}
	at := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	v := coordinator.PipelineView{ID: 1, Status: "success", Jobs: []coordinator.JobView{
		{ID: 1, Name: "build", Stage: "build", Status: "success", StartedAt: at, FinishedAt: at.Add(time.Second)},
		{ID: 2, Name: "flaky", Stage: "test", Status: "failed", ExitCode: 1, FailureReason: "script_failure", Retried: true},
		{ID: 3, Name: "lint", Stage: "test", Status: "failed", ExitCode: 3, AllowFailure: true},
		{ID: 4, Name: "vet", Stage: "test", Status: "failed", ExitCode: 4},
		{ID: 5, Name: "flaky", Stage: "test", Status: "success"},
	}}
	f := &follower{cfg: cfg}
	p := f.snapshot(v)
	var got []string
	for _, j := range p.Jobs {
		got = append(got, strings.Join([]string{j.Name, j.Status, itoa(j.Attempt), boolStr(j.Retried, "retried"), boolStr(j.AllowFailure, "allowed")}, " "))
	}
	want := []string{
		"build success 1 - -",
		"flaky failed 1 retried -",
		"flaky success 2 - -",
		"lint failed 1 - allowed",
		"vet failed 1 - -",
	}
	if !slices.Equal(got, want) {
		t.Errorf("jobs:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
	if !slices.Equal(p.Stages, cfg.Stages) {
		t.Errorf("stages %v, want the file's %v", p.Stages, cfg.Stages)
	}
}

func itoa(n int) string { return string(rune('0' + n)) }

func boolStr(b bool, s string) string {
	if b {
		return s
	}
	return "-"
}

func TestFollowerPlaysNamedManualJobsAndSavesLogs(t *testing.T) {
	cfg, err := ciyaml.Parse(".gitlab-ci.yml", []byte(`
build:
  stage: build
  script: [make]
deploy:
  stage: deploy
  when: manual
  script: [ship]
other:
  stage: deploy
  when: manual
  script: [nope]
`))
	if err != nil {
		t.Fatal(err)
	}
	at := time.Now()
	build := coordinator.JobView{ID: 1, Name: "build", Stage: "build", Status: "success", StartedAt: at, FinishedAt: at}
	coord := &fakeCoord{
		traces: map[int64][]byte{1: []byte("built\n"), 2: []byte("shipped\n")},
		views: []coordinator.PipelineView{
			{ID: 1, Status: "success", Jobs: []coordinator.JobView{build,
				{ID: 2, Name: "deploy", Stage: "deploy", Status: "manual"},
				{ID: 3, Name: "other", Stage: "deploy", Status: "manual"}}},
			{ID: 1, Status: "success", Jobs: []coordinator.JobView{build,
				{ID: 2, Name: "deploy", Stage: "deploy", Status: "success", StartedAt: at, FinishedAt: at},
				{ID: 3, Name: "other", Stage: "deploy", Status: "manual"}}},
		},
	}
	logs, err := newLogStore(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	var out bytes.Buffer
	f := &follower{coord: coord, id: 1, cfg: cfg, view: execview.NewPlain(&out), logs: logs, play: []string{"deploy"}, errOut: &out}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	final, err := f.run(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(coord.played, []int64{2}) {
		t.Errorf("played %v, want only the named manual job 2", coord.played)
	}
	if final.Status != "success" {
		t.Errorf("final status %q", final.Status)
	}
	if !strings.Contains(out.String(), "[deploy] shipped") || strings.Contains(out.String(), "job deploy: manual") {
		t.Errorf("output:\n%s", out.String())
	}
	if b, err := os.ReadFile(filepath.Join(logs.dir, "deploy.log")); err != nil || string(b) != "shipped\n" {
		t.Errorf("deploy.log = %q, %v", b, err)
	}
}

// TestDefaultBranch: exec takes the project's default branch from the
// repository, as GitLab has it from the first push and the remote's HEAD
// names it; the checked-out branch is the default only when nothing else
// says so.
func TestDefaultBranch(t *testing.T) {
	t.Setenv("GIT_CONFIG_GLOBAL", "/dev/null") // no init.defaultBranch of this machine
	commit := func(dir string) {
		mustGitT(t, dir, "-c", "user.name=t", "-c", "user.email=t@example.com", "commit", "-q", "--allow-empty", "-m", "x")
	}
	tests := []struct {
		name  string
		setup func(t *testing.T, dir string)
		want  string
	}{
		{"no repository", func(t *testing.T, dir string) {}, "feature/x"},
		{"origin/HEAD wins", func(t *testing.T, dir string) {
			mustGitT(t, dir, "init", "-q", "-b", "main")
			commit(dir)
			mustGitT(t, dir, "update-ref", "refs/remotes/origin/trunk", "HEAD")
			mustGitT(t, dir, "symbolic-ref", "refs/remotes/origin/HEAD", "refs/remotes/origin/trunk")
			mustGitT(t, dir, "checkout", "-q", "-b", "feature/x")
		}, "trunk"},
		{"existing main while on a feature branch", func(t *testing.T, dir string) {
			mustGitT(t, dir, "init", "-q", "-b", "main")
			commit(dir)
			mustGitT(t, dir, "checkout", "-q", "-b", "feature/x")
		}, "main"},
		{"existing master", func(t *testing.T, dir string) {
			mustGitT(t, dir, "init", "-q", "-b", "master")
			commit(dir)
			mustGitT(t, dir, "checkout", "-q", "-b", "feature/x")
		}, "master"},
		{"init.defaultBranch that exists", func(t *testing.T, dir string) {
			mustGitT(t, dir, "init", "-q", "-b", "develop")
			mustGitT(t, dir, "config", "init.defaultBranch", "develop")
			commit(dir)
			mustGitT(t, dir, "branch", "main")
			mustGitT(t, dir, "checkout", "-q", "-b", "feature/x")
		}, "develop"},
		{"the only branch", func(t *testing.T, dir string) {
			mustGitT(t, dir, "init", "-q", "-b", "feature/x")
			commit(dir)
		}, "feature/x"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			tt.setup(t, dir)
			if got := defaultBranch(dir, "feature/x"); got != tt.want {
				t.Errorf("defaultBranch = %q, want %q", got, tt.want)
			}
		})
	}
}

// TestExecIncludeLocalStaysInProject: `include: local` naming a symlink
// to a file outside the project, or a path through `..`, is refused as
// GitLab refuses a file the repository does not hold.
func TestExecIncludeLocalStaysInProject(t *testing.T) {
	outside := t.TempDir()
	secret := "leaked:\n  script: [echo outside]\n"
	if err := os.WriteFile(filepath.Join(outside, "secret.yml"), []byte(secret), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct{ name, include string }{
		{"symlink to a file outside", "link.yml"},
		{"symlinked directory outside", "linkdir/secret.yml"},
		{"dot-dot", "../" + filepath.Base(outside) + "/secret.yml"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			parent := filepath.Dir(outside)
			dir, err := os.MkdirTemp(parent, "project-")
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { os.RemoveAll(dir) })
			ci := "include:\n  - local: " + tc.include + "\nbuild:\n  script: [echo hi]\n"
			if err := os.WriteFile(filepath.Join(dir, ".gitlab-ci.yml"), []byte(ci), 0o644); err != nil {
				t.Fatal(err)
			}
			if err := os.Symlink(filepath.Join(outside, "secret.yml"), filepath.Join(dir, "link.yml")); err != nil {
				t.Fatal(err)
			}
			if err := os.Symlink(outside, filepath.Join(dir, "linkdir")); err != nil {
				t.Fatal(err)
			}
			code, out := runExecCmd(t, dir, "--job", "leaked")
			if code == 0 || !strings.Contains(out, "` does not exist!") || strings.Contains(out, "outside") {
				t.Fatalf("exit code %d; want the include refused:\n%s", code, out)
			}
		})
	}
}

// TestSnapshotKeepsHeadMessage: CI_COMMIT_MESSAGE/_TITLE are HEAD's, so
// rules on the commit message can be tried locally.
func TestSnapshotKeepsHeadMessage(t *testing.T) {
	dir := t.TempDir()
	mustGitT(t, dir, "init", "-q", "-b", "main")
	mustGitT(t, dir, "-c", "user.name=Ann", "-c", "user.email=ann@example.com", "commit", "-q", "--allow-empty", "-m", "fix: thing [skip deploy]", "-m", "body")
	repo := filepath.Join(t.TempDir(), "snap")
	if _, err := snapshot(dir, repo); err != nil {
		t.Fatal(err)
	}
	got, err := gitOut(repo, "log", "-1", "--format=%an <%ae>|%B")
	if err != nil {
		t.Fatal(err)
	}
	if want := "Ann <ann@example.com>|fix: thing [skip deploy]\n\nbody"; got != want {
		t.Errorf("snapshot commit = %q, want %q", got, want)
	}
}

// TestExecHelpNamesImageFlag: pflag takes a back-quoted word of a usage
// as the flag's value name; --image must read "--image string".
func TestExecHelpNamesImageFlag(t *testing.T) {
	code, out := runExecCmd(t, t.TempDir(), "--help")
	if code != 0 || !strings.Contains(out, "--image string") || strings.Contains(out, "--image image:") {
		t.Errorf("exit %d; help does not show --image string:\n%s", code, out)
	}
}

// TestExecTriggerOnlyPipelineSaysWhy: a pipeline of trigger: jobs only has
// no jobs exec can run (GitLab: "No stages / jobs for this pipeline"); the
// warning that trigger jobs are skipped must still be shown.
func TestExecTriggerOnlyPipelineSaysWhy(t *testing.T) {
	dir := t.TempDir()
	ci := "child:\n  trigger:\n    include: child.yml\n"
	if err := os.WriteFile(filepath.Join(dir, ".gitlab-ci.yml"), []byte(ci), 0o644); err != nil {
		t.Fatal(err)
	}
	code, out := runExecCmd(t, dir, "--output", "plain")
	if code == 0 || !strings.Contains(out, "trigger: and run: jobs are not supported by podrunner and are skipped") ||
		!strings.Contains(out, "No stages / jobs for this pipeline") {
		t.Errorf("exit %d, output lacks the trigger warning or the reason:\n%s", code, out)
	}
}

// TestShellIgnoresImageAndServices: the shell executor runs scripts on
// this machine; image: and services: (GitLab Runner's shell executor
// ignores them too) are named once per job of the pipeline.
func TestShellIgnoresImageAndServices(t *testing.T) {
	cfg, err := ciyaml.Parse("ci.yml", []byte(`default:
  image: alpine:3.20
build:
  services: [redis:7]
  script: [x]
plain:
  image: ""
  script: [x]
skipped:
  script: [x]
`))
	if err != nil {
		t.Fatal(err)
	}
	got := shellIgnores(cfg, map[string]int64{"build": 1, "plain": 2})
	want := []string{"job build: image alpine:3.20, service redis:7 not used by the shell executor (--executor kubernetes runs them)"}
	if !slices.Equal(got, want) {
		t.Errorf("shellIgnores = %q, want %q", got, want)
	}
}

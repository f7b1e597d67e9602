//go:build unix

package shell

import (
	"bytes"
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/podrunner/podrunner/internal/executor"
	"github.com/podrunner/podrunner/internal/job"
	"github.com/podrunner/podrunner/internal/proc"
)

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// repo is a bare git repository with commits, served by path.
type repo struct {
	url  string
	shas []string
}

func git(t *testing.T, dir string, args ...string) string {
	t.Helper()
	cmd := exec.Command("git", append([]string{"-c", "user.name=t", "-c", "user.email=t@example.com", "-c", "init.defaultBranch=main"}, args...)...)
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), "GIT_CONFIG_NOSYSTEM=1", "HOME="+dir)
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("git %v: %v\n%s", args, err, out)
	}
	return strings.TrimSpace(string(out))
}

func newRepo(t *testing.T, commits int) *repo {
	t.Helper()
	if _, err := exec.LookPath("git"); err != nil {
		t.Skip("git not installed")
	}
	base := t.TempDir()
	work := filepath.Join(base, "work")
	bare := filepath.Join(base, "repo.git")
	git(t, base, "init", "-q", work)
	r := &repo{url: "file://" + bare}
	for i := 0; i < commits; i++ {
		if err := os.WriteFile(filepath.Join(work, "file.txt"), []byte("version "+strconv.Itoa(i)+"\n"), 0o644); err != nil {
			t.Fatal(err)
		}
		git(t, work, "add", "file.txt")
		git(t, work, "commit", "-q", "-m", "c"+strconv.Itoa(i))
		r.shas = append(r.shas, git(t, work, "rev-parse", "HEAD"))
	}
	git(t, base, "clone", "-q", "--bare", work, bare)
	return r
}

func payload(r *repo, script []string, after []string) *job.Payload {
	p := &job.Payload{
		ID: 42, Token: "glcbt-jobtoken", AllowGitFetch: true,
		JobInfo:    job.JobInfo{Name: "test", ProjectID: 7, ProjectFullPath: "group/demo"},
		RunnerInfo: job.RunnerInfo{Timeout: 60},
		Steps:      []job.Step{{Name: job.StepScript, Script: script, When: job.WhenOnSuccess}},
	}
	if r != nil {
		p.GitInfo = job.GitInfo{RepoURL: r.url, Ref: "main", Sha: r.shas[len(r.shas)-1], RefType: "branch",
			Refspecs: []string{"+refs/heads/main:refs/remotes/origin/main"}}
	} else {
		p.Variables = job.Variables{{Key: "GIT_STRATEGY", Value: "none"}}
	}
	if after != nil {
		p.Steps = append(p.Steps, job.Step{Name: job.StepAfterScript, Script: after, When: job.WhenAlways, AllowFailure: true})
	}
	return p
}

func newExec(t *testing.T) (*Executor, string) {
	t.Helper()
	dir := t.TempDir()
	return New(Options{BuildsDir: dir, RunnerToken: "glrt-t1_abcdefghijkl", TermGrace: 2 * time.Second}), dir
}

func run(t *testing.T, e *Executor, p *job.Payload) (executor.Result, string) {
	t.Helper()
	var trace syncBuffer
	res, err := e.Run(context.Background(), &executor.Job{Payload: p, Trace: &trace})
	if err != nil {
		t.Fatalf("Run: %v\n%s", err, trace.String())
	}
	return res, trace.String()
}

func TestCloneAndFetch(t *testing.T) {
	r := newRepo(t, 3)
	e, builds := newExec(t)
	p := payload(r, []string{`cat file.txt`, `git rev-parse HEAD`, `pwd`, `echo "dir=$CI_PROJECT_DIR"`}, nil)
	p.Variables = job.Variables{{Key: "GIT_STRATEGY", Value: "clone"}}
	res, trace := run(t, e, p)
	if !res.Success {
		t.Fatalf("clone job failed: %+v\n%s", res, trace)
	}
	wantDir := filepath.Join(builds, "abcdefghi", "0", "group", "demo")
	for _, s := range []string{"version 2\n", r.shas[2], "dir=" + wantDir, "Created fresh repository.", "Job succeeded"} {
		if !strings.Contains(trace, s) {
			t.Errorf("trace lacks %q:\n%s", s, trace)
		}
	}
	// An untracked file is removed by git clean on the next (fetch) job.
	if err := os.WriteFile(filepath.Join(wantDir, "junk"), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	p = payload(r, []string{`ls`}, nil)
	p.GitInfo.Sha = r.shas[1]
	res, trace = run(t, e, p)
	if !res.Success || !strings.Contains(trace, "Reusing existing Git repository") {
		t.Fatalf("fetch job: %+v\n%s", res, trace)
	}
	if _, err := os.Stat(filepath.Join(wantDir, "junk")); !os.IsNotExist(err) {
		t.Errorf("git clean did not run (%v):\n%s", err, trace)
	}
	if b, _ := os.ReadFile(filepath.Join(wantDir, "file.txt")); string(b) != "version 1\n" {
		t.Errorf("checked out %q, want version 1", b)
	}
}

func TestDepth(t *testing.T) {
	r := newRepo(t, 3)
	e, _ := newExec(t)
	p := payload(r, []string{`git rev-list --count HEAD`}, nil)
	p.GitInfo.Depth = 1
	res, trace := run(t, e, p)
	if !res.Success || !strings.Contains(trace, "\n1\n") || !strings.Contains(trace, "with git depth set to 1") {
		t.Fatalf("depth 1: %+v\n%s", res, trace)
	}
	p.Variables = job.Variables{{Key: "GIT_DEPTH", Value: "0"}, {Key: "GIT_STRATEGY", Value: "clone"}}
	res, trace = run(t, e, p)
	if !res.Success || !strings.Contains(trace, "\n3\n") {
		t.Fatalf("GIT_DEPTH=0 (full): %+v\n%s", res, trace)
	}
}

func TestCredentialsNotPrinted(t *testing.T) {
	r := newRepo(t, 1)
	e, _ := newExec(t)
	p := payload(r, []string{"true"}, nil)
	// file URLs cannot carry userinfo; check the display with a failing
	// http URL on a closed loopback port instead.
	p.GitInfo.RepoURL = "http://gitlab-ci-token:SECRETTOKEN@127.0.0.1:1/group/demo.git"
	p.Variables = job.Variables{{Key: "GIT_FETCH_EXTRA_FLAGS", Value: "--quiet"}}
	res, trace := run(t, e, p)
	if res.Success || res.FailureReason != "script_failure" {
		t.Fatalf("result %+v", res)
	}
	if !strings.Contains(trace, "Fetching changes from http://127.0.0.1:1/group/demo.git") {
		t.Errorf("trace lacks the redacted URL:\n%s", trace)
	}
	if strings.Contains(trace, "SECRETTOKEN") {
		t.Logf("note: git itself printed the credentials; the trace masker must hide them:\n%s", trace)
	}
}

func TestGitStrategyNone(t *testing.T) {
	e, builds := newExec(t)
	res, trace := run(t, e, payload(nil, []string{"pwd", "ls -A | wc -l"}, nil))
	if !res.Success || !strings.Contains(trace, "Skipping Git repository setup") {
		t.Fatalf("%+v\n%s", res, trace)
	}
	if !strings.Contains(trace, filepath.Join(builds, "abcdefghi", "0", "group", "demo")+"\n") {
		t.Errorf("not run in the project dir:\n%s", trace)
	}
}

// TestImageNotUsedSaidInTheLog: the shell executor runs scripts on this
// machine; a job's image and services are named once in its log as not
// used, so nobody takes a pass here for a pass in the image.
func TestImageNotUsedSaidInTheLog(t *testing.T) {
	e, _ := newExec(t)
	p := payload(nil, []string{"true"}, nil)
	p.Image = job.Image{Name: "alpine:3.20"}
	p.Services = []job.Image{{Name: "redis:7"}}
	res, trace := run(t, e, p)
	want := "WARNING: image alpine:3.20, service redis:7 not used by the shell executor"
	if !res.Success || strings.Count(trace, want) != 1 {
		t.Fatalf("want one %q line: %+v\n%s", want, res, trace)
	}
	_, trace = run(t, e, payload(nil, []string{"true"}, nil))
	if strings.Contains(trace, "not used by the shell executor") {
		t.Errorf("warning without an image:\n%s", trace)
	}
}

func TestExitCodeWithAfterScript(t *testing.T) {
	e, _ := newExec(t)
	res, trace := run(t, e, payload(nil, []string{"echo before", "exit 3", "echo never"}, []string{`echo "after ran status=$CI_JOB_STATUS"`}))
	if res.Success || res.FailureReason != "script_failure" || res.ExitCode != 3 {
		t.Errorf("result %+v", res)
	}
	for _, s := range []string{"after ran status=failed", "ERROR: Job failed: exit code 3"} {
		if !strings.Contains(trace, s) {
			t.Errorf("trace lacks %q:\n%s", s, trace)
		}
	}
	if strings.Contains(trace, "\nnever") {
		t.Errorf("ran past exit 3:\n%s", trace)
	}
}

func TestFileVariablesAndQuoting(t *testing.T) {
	e, _ := newExec(t)
	value := "line1\n'quoted' \"dq\" $HOME `id` \\ ✅ 동작\n"
	p := payload(nil, []string{`printf '%s' "$PLAIN" > plain.out`, `cp "$KUBE" file.out`, `echo "path=$KUBE"`}, nil)
	p.Variables = append(p.Variables,
		job.Variable{Key: "PLAIN", Value: value, Raw: true},
		job.Variable{Key: "KUBE", Value: value, File: true, Raw: true})
	var trace syncBuffer
	res, err := e.Run(context.Background(), &executor.Job{Payload: p, Trace: &trace})
	if err != nil || !res.Success {
		t.Fatalf("%+v %v\n%s", res, err, trace.String())
	}
	dir := filepath.Join(e.opts.BuildsDir, "abcdefghi", "0", "group", "demo")
	for _, f := range []string{"plain.out", "file.out"} {
		if b, _ := os.ReadFile(filepath.Join(dir, f)); string(b) != value {
			t.Errorf("%s = %q, want %q", f, b, value)
		}
	}
	if !strings.Contains(trace.String(), "path="+dir+".tmp/KUBE") {
		t.Errorf("file variable path:\n%s", trace.String())
	}
	if _, err := os.Stat(dir + ".tmp"); !os.IsNotExist(err) {
		t.Errorf("job temp dir not removed: %v", err)
	}
}

func TestBackgroundProcessDoesNotHoldJob(t *testing.T) {
	e, _ := newExec(t)
	start := time.Now()
	res, trace := run(t, e, payload(nil, []string{"sleep 1000 &", "echo done"}, nil))
	if !res.Success {
		t.Fatalf("%+v\n%s", res, trace)
	}
	if d := time.Since(start); d > 20*time.Second {
		t.Fatalf("job took %v", d)
	}
}

// pgidFile makes the script record its process group (the shell's pid).
func pgidScript(file string) string { return "echo $$ > " + file }

func readPGID(t *testing.T, file string) int {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		if b, err := os.ReadFile(file); err == nil && strings.HasSuffix(string(b), "\n") {
			n, err := strconv.Atoi(strings.TrimSpace(string(b)))
			if err == nil {
				return n
			}
		}
		time.Sleep(10 * time.Millisecond)
	}
	t.Fatal("script did not start")
	return 0
}

func TestGracefulCancel(t *testing.T) {
	e, _ := newExec(t)
	pidFile := filepath.Join(t.TempDir(), "pgid")
	p := payload(nil, []string{pgidScript(pidFile), "sleep 1000"}, []string{"echo after-script-ran status=$CI_JOB_STATUS"})
	cancel := make(chan struct{})
	var trace syncBuffer
	done := make(chan executor.Result)
	go func() {
		res, err := e.Run(context.Background(), &executor.Job{Payload: p, Trace: &trace, GracefulCancel: cancel})
		if err != nil {
			t.Error(err)
		}
		done <- res
	}()
	pgid := readPGID(t, pidFile)
	close(cancel)
	var res executor.Result
	select {
	case res = <-done:
	case <-time.After(15 * time.Second):
		t.Fatal("graceful cancel did not finish the job")
	}
	if res.Success || res.FailureReason != "job_canceled" {
		t.Errorf("result %+v", res)
	}
	for _, s := range []string{"after-script-ran status=canceled", "ERROR: Job failed: canceled"} {
		if !strings.Contains(trace.String(), s) {
			t.Errorf("trace lacks %q:\n%s", s, trace.String())
		}
	}
	if proc.GroupAlive(pgid) {
		t.Error("script process group still alive")
	}
}

func TestHardCancel(t *testing.T) {
	e, _ := newExec(t)
	e.opts.TermGrace = time.Hour // abort must not wait for the grace
	pidFile := filepath.Join(t.TempDir(), "pgid")
	p := payload(nil, []string{"trap '' TERM", pgidScript(pidFile), "sleep 1000 & sleep 1000"}, []string{"echo after-script-ran"})
	ctx, cancel := context.WithCancel(context.Background())
	var trace syncBuffer
	done := make(chan executor.Result)
	go func() {
		res, _ := e.Run(ctx, &executor.Job{Payload: p, Trace: &trace})
		done <- res
	}()
	pgid := readPGID(t, pidFile)
	cancel()
	start := time.Now()
	var res executor.Result
	select {
	case res = <-done:
	case <-time.After(2 * time.Second):
		t.Fatal("Run did not return within 2s of the abort")
	}
	for proc.GroupAlive(pgid) {
		if time.Since(start) > 2*time.Second {
			t.Fatalf("process group %d alive 2s after the abort", pgid)
		}
		time.Sleep(10 * time.Millisecond)
	}
	if res.Success || strings.Contains(trace.String(), "after-script-ran") {
		t.Errorf("abort: %+v\n%s", res, trace.String())
	}
}

func TestJobTimeout(t *testing.T) {
	e, _ := newExec(t)
	p := payload(nil, []string{"sleep 1000"}, []string{"echo after-script-ran"})
	p.RunnerInfo.Timeout = 1
	res, trace := run(t, e, p)
	if res.Success || res.FailureReason != "job_execution_timeout" {
		t.Errorf("result %+v", res)
	}
	if !strings.Contains(trace, "after-script-ran") || !strings.Contains(trace, "execution took longer than 1s seconds") {
		t.Errorf("trace:\n%s", trace)
	}
}

func TestConfigErrorFailsJob(t *testing.T) {
	e, _ := newExec(t)
	p := payload(nil, []string{"true"}, nil)
	p.Variables = job.Variables{{Key: "GIT_STRATEGY", Value: "copy"}}
	res, trace := run(t, e, p)
	if res.Success || !strings.Contains(trace, "GIT_STRATEGY") {
		t.Errorf("%+v\n%s", res, trace)
	}
}

func TestProjectDir(t *testing.T) {
	p := &job.Payload{JobInfo: job.JobInfo{ProjectFullPath: "../etc"}}
	if _, err := ProjectDir("/b", "tok", 0, p); err == nil {
		t.Error("path escaping the builds dir accepted")
	}
	p.JobInfo.ProjectFullPath = "g/sub/p"
	d, err := ProjectDir("/b", "glrt-abcdefghijk", 2, p)
	if err != nil || d != "/b/abcdefghi/2/g/sub/p" {
		t.Errorf("%q %v", d, err)
	}
}

func TestSubmodules(t *testing.T) {
	sub := newRepo(t, 1)
	base := t.TempDir()
	work := filepath.Join(base, "work")
	bare := filepath.Join(base, "main.git")
	git(t, base, "init", "-q", work)
	git(t, work, "-c", "protocol.file.allow=always", "submodule", "add", "-q", sub.url, "sub")
	git(t, work, "commit", "-q", "-m", "with submodule")
	sha := git(t, work, "rev-parse", "HEAD")
	git(t, base, "clone", "-q", "--bare", work, bare)
	// git refuses file:// submodules by default since 2.38.1.
	t.Setenv("GIT_CONFIG_COUNT", "1")
	t.Setenv("GIT_CONFIG_KEY_0", "protocol.file.allow")
	t.Setenv("GIT_CONFIG_VALUE_0", "always")

	e, _ := newExec(t)
	p := payload(&repo{url: "file://" + bare, shas: []string{sha}}, []string{"cat sub/file.txt 2>/dev/null || echo empty-submodule"}, nil)
	res, trace := run(t, e, p)
	if !res.Success || !strings.Contains(trace, "Skipping Git submodules setup") || !strings.Contains(trace, "empty-submodule") {
		t.Fatalf("without GIT_SUBMODULE_STRATEGY the submodule must stay empty: %+v\n%s", res, trace)
	}
	p.Variables = job.Variables{{Key: "GIT_SUBMODULE_STRATEGY", Value: "recursive"}}
	res, trace = run(t, e, p)
	if !res.Success || !strings.Contains(trace, "version 0\n") || !strings.Contains(trace, "Updating/initializing submodules recursively...") {
		t.Fatalf("recursive submodules: %+v\n%s", res, trace)
	}
}

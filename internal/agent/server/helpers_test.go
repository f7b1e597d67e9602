//go:build unix

package server

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"net/http/cgi"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/go-git/go-git/v5/plumbing"

	"github.com/podrunner/podrunner/internal/agent"
	"github.com/podrunner/podrunner/internal/job"
)

const (
	testJobToken = "glcbt-64_s3cr3tJ0bT0ken"
	testAPIToken = "agent-api-token"
)

// gitRepo is a bare repository served over smart HTTP with GitLab's job
// token basic auth.
type gitRepo struct {
	t       *testing.T
	work    string // working clone used to make commits
	bare    string
	srv     *httptest.Server
	url     string // with credentials
	commits []string
	hits    atomic.Int64
}

func runGit(t *testing.T, dir string, args ...string) string {
	t.Helper()
	cmd := exec.Command("git", args...)
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), "GIT_CONFIG_NOSYSTEM=1", "HOME="+dir, "GIT_AUTHOR_NAME=t", "GIT_AUTHOR_EMAIL=t@example.com",
		"GIT_COMMITTER_NAME=t", "GIT_COMMITTER_EMAIL=t@example.com")
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("git %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return strings.TrimSpace(string(out))
}

func newGitRepo(t *testing.T, commits int) *gitRepo {
	t.Helper()
	if _, err := exec.LookPath("git"); err != nil {
		t.Skip("git is needed to build the test repository")
	}
	root := t.TempDir()
	r := &gitRepo{t: t, work: filepath.Join(root, "work"), bare: filepath.Join(root, "srv", "group", "project.git")}
	if err := os.MkdirAll(r.work, 0o755); err != nil {
		t.Fatal(err)
	}
	runGit(t, r.work, "init", "-q", "-b", "main")
	for i := 1; i <= commits; i++ {
		r.commit(fmt.Sprint(i))
	}
	runGit(t, root, "clone", "-q", "--bare", r.work, r.bare)
	runGit(t, r.work, "remote", "add", "origin", r.bare)

	backend := filepath.Join(strings.TrimSpace(runGit(t, root, "--exec-path")), "git-http-backend")
	h := &cgi.Handler{Path: backend, Env: []string{"GIT_PROJECT_ROOT=" + filepath.Join(root, "srv"), "GIT_HTTP_EXPORT_ALL=1"}}
	r.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		r.hits.Add(1)
		u, p, ok := req.BasicAuth()
		if !ok || u != "gitlab-ci-token" || p != testJobToken {
			w.Header().Set("WWW-Authenticate", `Basic realm="GitLab"`)
			http.Error(w, "HTTP Basic: Access denied", http.StatusUnauthorized)
			return
		}
		h.ServeHTTP(w, req)
	}))
	t.Cleanup(r.srv.Close)
	r.url = strings.Replace(r.srv.URL, "http://", "http://gitlab-ci-token:"+testJobToken+"@", 1) + "/group/project.git"
	return r
}

// commit adds a commit to the working clone (version.txt = n) and pushes
// main when the bare repository exists.
func (r *gitRepo) commit(n string) string {
	r.t.Helper()
	if err := os.WriteFile(filepath.Join(r.work, "version.txt"), []byte(n+"\n"), 0o644); err != nil {
		r.t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(r.work, ".gitignore"), []byte("*.log\n"), 0o644); err != nil {
		r.t.Fatal(err)
	}
	runGit(r.t, r.work, "add", "-A")
	runGit(r.t, r.work, "commit", "-q", "-m", "commit "+n)
	sha := runGit(r.t, r.work, "rev-parse", "HEAD")
	r.commits = append(r.commits, sha)
	if _, err := os.Stat(r.bare); err == nil {
		runGit(r.t, r.work, "push", "-q", "origin", "main")
	}
	return sha
}

// pipelineRef creates refs/pipelines/<id> at sha in the served repository.
func (r *gitRepo) pipelineRef(id int, sha string) {
	r.t.Helper()
	runGit(r.t, r.bare, "update-ref", fmt.Sprintf("refs/pipelines/%d", id), sha)
}

// testJob builds a spec the way the runner does, from a payload.
type testJob struct {
	steps     []job.Step
	vars      job.Variables
	hooks     []job.Hook
	repo      *gitRepo
	sha       string
	depth     int
	strategy  string
	pipeline  int
	buildsDir string
}

func (tj testJob) spec(t *testing.T) *agent.Spec {
	t.Helper()
	if tj.buildsDir == "" {
		tj.buildsDir = t.TempDir()
	}
	p := &job.Payload{
		ID: 42, Token: testJobToken, RunnerInfo: job.RunnerInfo{Timeout: 120},
		JobInfo:   job.JobInfo{Name: "test", ProjectFullPath: "group/project"},
		Steps:     tj.steps,
		Variables: tj.vars,
		Hooks:     tj.hooks,
	}
	if tj.repo != nil {
		p.GitInfo = job.GitInfo{RepoURL: tj.repo.url, Ref: "main", Sha: tj.sha, Depth: tj.depth, RefType: "branch",
			Refspecs: []string{fmt.Sprintf("+refs/pipelines/%d:refs/pipelines/%d", tj.pipeline, tj.pipeline), "+refs/heads/main:refs/remotes/origin/main"}}
	}
	strategy := tj.strategy
	if strategy == "" {
		strategy = job.GitClone
	}
	p.Variables = append(p.Variables, job.Variable{Key: "GIT_STRATEGY", Value: strategy, Public: true})
	projectDir := filepath.Join(tj.buildsDir, "group", "project")
	vars, err := job.BuildVariables(p, job.RunnerEnv{BuildsDir: tj.buildsDir, ProjectDir: projectDir})
	if err != nil {
		t.Fatal(err)
	}
	plan, err := job.NewPlan(t.Context(), p, vars, job.ScriptOptions{Shell: "bash"})
	if err != nil {
		t.Fatal(err)
	}
	m := job.MaskFor(p, vars)
	s := &agent.Spec{Token: testAPIToken, Plan: plan, Mask: agent.Mask{Values: m.Values, Prefixes: m.Prefixes}}
	git, err := job.ResolveGitSettings(p, vars, job.ScriptOptions{Shell: "bash"})
	if err != nil {
		t.Fatal(err)
	}
	s.Sources = agent.SourcesFrom(git, projectDir)
	if s.Sources.Dir != projectDir || s.Sources.Strategy != strategy || !s.Sources.Checkout || s.Sources.NoClean {
		t.Fatalf("SourcesFor: %+v", s.Sources)
	}
	// The runner sends the spec as JSON: make sure it survives that.
	b, err := json.Marshal(s)
	if err != nil {
		t.Fatal(err)
	}
	s2, err := agent.ParseSpec(b)
	if err != nil {
		t.Fatal(err)
	}
	return s2
}

// runningAgent is an agent started in-process.
type runningAgent struct {
	client   *agent.Client
	exited   chan struct{} // closed when Run returned, with err
	err      error
	stateDir string
	cancel   context.CancelFunc
	url      string
}

func startAgent(t *testing.T, spec *agent.Spec, opts Options) *runningAgent {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	if opts.StateDir == "" {
		opts.StateDir = t.TempDir()
	}
	if opts.Linger == 0 {
		opts.Linger = time.Minute
	}
	if opts.TermGrace == 0 {
		opts.TermGrace = 2 * time.Second
	}
	if opts.StopLinger == 0 {
		opts.StopLinger = time.Millisecond // the tests' cleanups stop agents
	}
	opts.Listener = ln
	ctx, cancel := context.WithCancel(context.Background())
	a := &runningAgent{exited: make(chan struct{}), stateDir: opts.StateDir, cancel: cancel, url: "http://" + ln.Addr().String()}
	a.client = agent.NewClient(a.url, testAPIToken, &http.Client{Timeout: time.Minute})
	go func() { defer close(a.exited); a.err = Run(ctx, spec, opts) }()
	t.Cleanup(func() {
		cancel()
		select {
		case <-a.exited:
		case <-time.After(30 * time.Second):
			t.Error("agent did not stop")
		}
	})
	return a
}

// waitDone pulls the whole log and waits for the end of the job.
func (a *runningAgent) waitDone(t *testing.T) (string, *agent.Status) {
	t.Helper()
	log := a.pull(t, 0)
	st, err := a.client.Status(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if st.State != agent.StateDone || st.Result == nil {
		t.Fatalf("status after the log ended: %+v", st)
	}
	return log, st
}

// pull reads the log from off until the job is done.
func (a *runningAgent) pull(t *testing.T, off int64) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	var b strings.Builder
	for {
		data, size, state, err := a.client.Log(ctx, off)
		if err != nil {
			t.Fatalf("log at %d: %v", off, err)
		}
		b.Write(data)
		off += int64(len(data))
		if state == agent.StateDone && off == size {
			return b.String()
		}
	}
}

// waitLog waits until the log contains s.
func (a *runningAgent) waitLog(t *testing.T, s string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var b strings.Builder
	var off int64
	for !strings.Contains(b.String(), s) {
		data, _, state, err := a.client.Log(ctx, off)
		if err != nil {
			t.Fatalf("waiting for %q in the log: %v\nlog so far:\n%s", s, err, b.String())
		}
		b.Write(data)
		off += int64(len(data))
		if state == agent.StateDone && len(data) == 0 {
			t.Fatalf("job ended without %q in the log:\n%s", s, b.String())
		}
	}
}

func (a *runningAgent) ack(t *testing.T) {
	t.Helper()
	if err := a.client.Ack(context.Background()); err != nil {
		t.Fatal(err)
	}
	if !a.wait(10 * time.Second) {
		t.Fatal("agent did not exit after ack")
	}
}

// wait reports whether Run returned within d.
func (a *runningAgent) wait(d time.Duration) bool {
	select {
	case <-a.exited:
		return true
	case <-time.After(d):
		return false
	}
}

func script(lines ...string) job.Step {
	return job.Step{Name: job.StepScript, Script: lines, When: job.WhenOnSuccess}
}

func afterScript(lines ...string) job.Step {
	return job.Step{Name: job.StepAfterScript, Script: lines, When: job.WhenAlways}
}

func plumbingHash(s string) plumbing.Hash { return plumbing.NewHash(s) }

// addSubmoduleRepo creates group/<name>.git next to the project (one
// commit with <name>.txt), optionally with a submodule of its own, and
// returns its working clone.
func (r *gitRepo) addSubmoduleRepo(name, sub string) string {
	r.t.Helper()
	srv := filepath.Dir(r.bare)
	work := filepath.Join(filepath.Dir(srv), "work-"+name)
	bare := filepath.Join(srv, name+".git")
	runGit(r.t, filepath.Dir(work), "init", "-q", "-b", "main", work)
	if err := os.WriteFile(filepath.Join(work, name+".txt"), []byte(name+"\n"), 0o644); err != nil {
		r.t.Fatal(err)
	}
	runGit(r.t, work, "add", "-A")
	runGit(r.t, work, "commit", "-q", "-m", name)
	runGit(r.t, srv, "init", "-q", "--bare", "-b", "main", bare)
	runGit(r.t, work, "remote", "add", "origin", bare)
	if sub != "" {
		runGit(r.t, work, "-c", "protocol.file.allow=always", "submodule", "add", "-q", "../"+sub+".git", sub)
		runGit(r.t, work, "commit", "-q", "-m", "add "+sub)
	}
	runGit(r.t, work, "push", "-q", "origin", "main")
	return work
}

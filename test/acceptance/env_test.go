// Package acceptance drives the podrunner binary against the
// GitLab-compatible test coordinator with the shell executor: the whole way
// from GitLab's job queue through the runner and back, over real HTTP.
package acceptance

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/podrunner/podrunner/internal/coordinator"
)

var binary string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "podrunner-acceptance-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	binary = filepath.Join(dir, "podrunner")
	build := exec.Command("go", "build", "-race", "-o", binary, "../../cmd/podrunner")
	build.Stdout, build.Stderr = os.Stdout, os.Stderr
	if err := build.Run(); err != nil {
		fmt.Fprintln(os.Stderr, "build podrunner:", err)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// env is a coordinator with one project and one runner token.
type env struct {
	t       *testing.T
	dir     string
	coord   *coordinator.Server
	project string
	token   string
	// extraEnv is added to the environment of the podrunner processes
	// (and so of the shell executor's jobs).
	extraEnv []string
}

const projectPath = "group/demo"

// newEnv creates a repository holding ciYAML as .gitlab-ci.yml and a
// coordinator serving it, with a runner tagged "aks".
func newEnv(t *testing.T, ciYAML string, opts coordinator.Options) *env {
	t.Helper()
	dir := t.TempDir()
	repo := filepath.Join(dir, "repo")
	mustGit(t, "", "init", "-q", "-b", "main", repo)
	if err := os.WriteFile(filepath.Join(repo, ".gitlab-ci.yml"), []byte(ciYAML), 0o644); err != nil {
		t.Fatal(err)
	}
	mustGit(t, repo, "add", "-A")
	mustGit(t, repo, "-c", "user.name=t", "-c", "user.email=t@example.com", "commit", "-q", "-m", "ci")
	if opts.TraceUpdateInterval == 0 {
		// GitLab asks for 3 s while someone watches the job log; tests
		// watch, and a shorter interval keeps them quick.
		opts.TraceUpdateInterval = time.Second
	}
	if opts.DataDir == "" {
		opts.DataDir = filepath.Join(dir, "coordinator")
	}
	coord, err := coordinator.New(opts)
	if err != nil {
		t.Fatal(err)
	}
	if err := coord.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { coord.Close() })
	if _, err := coord.AddProject(projectPath, repo); err != nil {
		t.Fatal(err)
	}
	_, token := coord.CreateRunner(coordinator.RunnerOptions{Description: "acceptance", Tags: []string{"aks"}, RunUntagged: true})
	return &env{t: t, dir: dir, coord: coord, project: projectPath, token: token}
}

func mustGit(t *testing.T, dir string, args ...string) {
	t.Helper()
	c := exec.Command("git", args...)
	c.Dir = dir
	if out, err := c.CombinedOutput(); err != nil {
		t.Fatalf("git %v: %v\n%s", args, err, out)
	}
}

// config returns a config.toml for the env's runner; extra is appended to
// the [[runners]] table.
func (e *env) config(concurrent int, extra string) string {
	return fmt.Sprintf(`concurrent = %d
check_interval = 1
shutdown_timeout = 10

[[runners]]
  name = "acceptance"
  url = %q
  token = %q
  executor = "shell"
  builds_dir = %q
%s
`, concurrent, e.coord.URL(), e.token, filepath.Join(e.dir, "builds"), extra)
}

// proc is a running podrunner process.
type proc struct {
	cmd    *exec.Cmd
	mu     sync.Mutex
	stderr bytes.Buffer
	done   chan struct{}
	err    error
}

func (p *proc) Write(b []byte) (int, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.stderr.Write(b)
}

// Log is what the process printed so far.
func (p *proc) Log() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.stderr.String()
}

// start runs podrunner with args; the process is killed at cleanup.
func (e *env) start(args ...string) *proc {
	e.t.Helper()
	p := &proc{done: make(chan struct{})}
	p.cmd = exec.Command(binary, args...)
	p.cmd.Dir = e.dir
	if len(e.extraEnv) > 0 {
		p.cmd.Env = append(os.Environ(), e.extraEnv...)
	}
	p.cmd.Stdout = p
	p.cmd.Stderr = p
	if err := p.cmd.Start(); err != nil {
		e.t.Fatal(err)
	}
	go func() { p.err = p.cmd.Wait(); close(p.done) }()
	e.t.Cleanup(func() {
		p.cmd.Process.Kill()
		<-p.done
		if e.t.Failed() {
			e.t.Logf("podrunner log:\n%s", p.Log())
		}
	})
	return p
}

// runConfig writes config.toml and starts `podrunner run` with it.
func (e *env) runConfig(toml string) *proc {
	e.t.Helper()
	path := filepath.Join(e.dir, "config.toml")
	if err := os.WriteFile(path, []byte(toml), 0o600); err != nil {
		e.t.Fatal(err)
	}
	return e.start("run", "-c", path)
}

// wait waits for the process to exit.
func (p *proc) wait(t *testing.T, d time.Duration) error {
	t.Helper()
	select {
	case <-p.done:
		return p.err
	case <-time.After(d):
		t.Fatalf("podrunner did not exit within %v", d)
		return nil
	}
}

// pipeline creates a pipeline on main and waits for it to end.
func (e *env) pipeline(timeout time.Duration) coordinator.PipelineView {
	e.t.Helper()
	pl, err := e.coord.CreatePipeline(e.project, "main")
	if err != nil {
		e.t.Fatal(err)
	}
	return e.waitPipeline(pl.ID, timeout)
}

func (e *env) waitPipeline(id int64, timeout time.Duration) coordinator.PipelineView {
	e.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	v, err := e.coord.WaitPipeline(ctx, id)
	if err != nil {
		e.t.Fatalf("pipeline %d: %v (status %q)", id, err, v.Status)
	}
	return v
}

// waitJobStatus waits until the job reaches one of the statuses.
func (e *env) waitJobStatus(id int64, timeout time.Duration, statuses ...string) coordinator.JobView {
	e.t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		j, _ := e.coord.Job(id)
		for _, s := range statuses {
			if j.Status == s {
				return j
			}
		}
		if time.Now().After(deadline) {
			e.t.Fatalf("job %d: status %q, want one of %v within %v", id, j.Status, statuses, timeout)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// checkTrace asserts the trace GitLab holds is the one the runner
// checksummed.
func checkTrace(t *testing.T, j coordinator.JobView) {
	t.Helper()
	if j.Checksum == "" || j.Checksum != j.TraceChecksum || j.Bytesize != j.TraceSize {
		t.Fatalf("job %d (%s): runner sent %s/%d bytes, GitLab holds %s/%d bytes",
			j.ID, j.Name, j.Checksum, j.Bytesize, j.TraceChecksum, j.TraceSize)
	}
}

func jobByName(t *testing.T, v coordinator.PipelineView, name string) coordinator.JobView {
	t.Helper()
	for _, j := range v.Jobs {
		if j.Name == name {
			return j
		}
	}
	t.Fatalf("no job %q in pipeline %d", name, v.ID)
	return coordinator.JobView{}
}

func contains(t *testing.T, trace []byte, want ...string) {
	t.Helper()
	for _, w := range want {
		if !strings.Contains(string(trace), w) {
			t.Fatalf("trace lacks %q:\n%s", w, trace)
		}
	}
}

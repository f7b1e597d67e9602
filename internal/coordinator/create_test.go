package coordinator

import (
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/podrunner/podrunner/internal/ciyaml"
)

// gitIn runs git in dir with a fixed identity and returns its output.
func gitIn(t *testing.T, dir string, args ...string) string {
	t.Helper()
	cmd := exec.Command("git", args...)
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), "GIT_AUTHOR_NAME=A", "GIT_AUTHOR_EMAIL=a@x", "GIT_COMMITTER_NAME=A", "GIT_COMMITTER_EMAIL=a@x", "GIT_CONFIG_GLOBAL=/dev/null")
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("git %v: %v %s", args, err, out)
	}
	return strings.TrimSpace(string(out))
}

func writeFile(t *testing.T, dir, name, content string) {
	t.Helper()
	p := filepath.Join(dir, filepath.FromSlash(name))
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
}

func jobNames(pl *Pipeline) []string {
	var out []string
	for n := range pl.Jobs {
		out = append(out, n)
	}
	slices.Sort(out)
	return out
}

// TestCreatePipelineFromRepository: includes come from the commit (or
// the working copy with CIConfig), rules:changes from the push's diff,
// workflow:rules filter the pipeline.
func TestCreatePipelineFromRepository(t *testing.T) {
	t.Parallel()
	ci := `include:
  - local: ci/extra.yml
base:
  script: x
docs:
  script: x
  rules:
    - changes: ["docs/**/*"]
src:
  script: x
  rules:
    - changes: ["src/**/*.go"]
`
	repo := makeRepo(t, ci)
	writeFile(t, repo, "ci/extra.yml", "extra:\n  script: x\n")
	gitIn(t, repo, "add", ".")
	gitIn(t, repo, "commit", "-q", "-m", "extra")
	before := gitIn(t, repo, "rev-parse", "HEAD")
	writeFile(t, repo, "src/pkg/a.go", "package pkg\n")
	gitIn(t, repo, "add", ".")
	gitIn(t, repo, "commit", "-q", "-m", "src")

	cfg, err := ciyaml.ParseWith(".gitlab-ci.yml", []byte(ci), ciyaml.ParseOptions{ReadFile: workingCopyReader(repo)})
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Job("extra") == nil {
		t.Fatal("include: local not resolved: no job extra")
	}
	s := newServer(t, Options{})
	if _, err := s.AddProject("group/demo", repo); err != nil {
		t.Fatal(err)
	}

	pl, err := s.CreatePipelineWith("group/demo", PipelineOptions{BeforeSha: before})
	if err != nil {
		t.Fatal(err)
	}
	if got := strings.Join(jobNames(pl), ","); got != "base,extra,src" {
		t.Errorf("with a push diff: jobs %s, want base,extra,src", got)
	}
	// No before sha (a new branch): every rules:changes is true.
	pl, err = s.CreatePipelineWith("group/demo", PipelineOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if got := strings.Join(jobNames(pl), ","); got != "base,docs,extra,src" {
		t.Errorf("without before sha: jobs %s", got)
	}

	// CIConfig reads includes from the working copy, uncommitted.
	writeFile(t, repo, "ci/local.yml", "uncommitted:\n  script: x\n")
	pl, err = s.CreatePipelineWith("group/demo", PipelineOptions{CIConfig: []byte("include: ci/local.yml\nmine:\n  script: x\n")})
	if err != nil {
		t.Fatal(err)
	}
	if got := strings.Join(jobNames(pl), ","); got != "mine,uncommitted" {
		t.Errorf("CIConfig with a working-copy include: jobs %s", got)
	}
	// From the commit, the uncommitted file does not exist.
	writeFile(t, repo, ".gitlab-ci.yml", "include: ci/local.yml\n")
	gitIn(t, repo, "add", ".gitlab-ci.yml")
	gitIn(t, repo, "commit", "-q", "-m", "include an uncommitted file")
	if _, err := s.CreatePipelineWith("group/demo", PipelineOptions{}); err == nil {
		t.Error("an include missing from the commit was read")
	}

	// workflow:rules filter the pipeline out.
	_, err = s.CreatePipelineWith("group/demo", PipelineOptions{CIConfig: []byte(
		"workflow:\n  rules:\n    - if: $CI_COMMIT_BRANCH == \"release\"\nt:\n  script: x\n")})
	if !errors.Is(err, ciyaml.ErrFiltered) {
		t.Errorf("filtered pipeline: %v", err)
	}
}

// TestNeedsParallelJob: needing a parallel job waits for all its nodes,
// each node gets CI_NODE_INDEX/CI_NODE_TOTAL.
func TestNeedsParallelJob(t *testing.T) {
	t.Parallel()
	ci := "stages: [build, test]\nbuild:\n  stage: build\n  parallel: 2\n  script: x\nunit:\n  stage: test\n  needs: [build]\n  script: x\n"
	cfg, err := ciyaml.Parse(".gitlab-ci.yml", []byte(ci))
	if err != nil {
		t.Fatal(err)
	}
	if len(cfg.Jobs) != 3 {
		t.Fatalf("parallel: 2 not expanded: %d jobs", len(cfg.Jobs))
	}
	s, c, tok := setup(t, Options{}, ci)
	pl, err := s.CreatePipeline("group/demo", "main")
	if err != nil {
		t.Fatal(err)
	}
	p := c.payload(c.requestJob(tok, "", nil))
	if lastValue(p.Variables, "CI_NODE_INDEX") != "1" || lastValue(p.Variables, "CI_NODE_TOTAL") != "2" {
		t.Errorf("node variables of %s: %s/%s", p.JobInfo.Name, lastValue(p.Variables, "CI_NODE_INDEX"), lastValue(p.Variables, "CI_NODE_TOTAL"))
	}
	c.update(p.ID, p.Token, "success", finalOK(""))
	if got := statuses(s, pl.ID); got != "build 1/2=success build 2/2=pending unit=created" {
		t.Fatalf("after one node: %s", got)
	}
	runJob(t, s, pl.ID, "build 2/2", StatusSuccess, "", 0)
	if got := latest(t, s, pl.ID, "unit"); got.Status != StatusPending || strings.Join(got.Needs, ",") != "build 1/2,build 2/2" {
		t.Errorf("unit = %s needs %v", got.Status, got.Needs)
	}
}

// TestWorkingCopyReaderStaysInRepository: a symlink in the working copy
// does not lead an include outside it (GitLab reads the committed link,
// never its target).
func TestWorkingCopyReaderStaysInRepository(t *testing.T) {
	outside := t.TempDir()
	writeFile(t, outside, "secret.yml", "leaked:\n  script: x\n")
	repo := t.TempDir()
	writeFile(t, repo, "inside.yml", "ok:\n  script: x\n")
	if err := os.Symlink(filepath.Join(outside, "secret.yml"), filepath.Join(repo, "link.yml")); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(outside, filepath.Join(repo, "dir")); err != nil {
		t.Fatal(err)
	}
	read := workingCopyReader(repo)
	if _, err := read("inside.yml"); err != nil {
		t.Fatalf("file inside: %v", err)
	}
	for _, name := range []string{"link.yml", "dir/secret.yml", "../" + filepath.Base(outside) + "/secret.yml"} {
		if data, err := read(name); err == nil {
			t.Errorf("read(%q) = %q, want an error", name, data)
		}
	}
}

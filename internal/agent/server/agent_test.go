//go:build unix

package server

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	git "github.com/go-git/go-git/v5"

	"github.com/podrunner/podrunner/internal/agent"
	"github.com/podrunner/podrunner/internal/gitlab"
	"github.com/podrunner/podrunner/internal/job"
)

func TestCloneAtShaWithDepth(t *testing.T) {
	repo := newGitRepo(t, 5)
	sha := repo.commits[3] // commit "4", below the branch tip
	repo.pipelineRef(7, sha)
	spec := testJob{repo: repo, sha: sha, depth: 2, pipeline: 7,
		steps: []job.Step{script(`cat version.txt`, `echo "token:`+testJobToken+`"`)}}.spec(t)
	a := startAgent(t, spec, Options{})
	log, st := a.waitDone(t)
	if !st.Result.Success {
		t.Fatalf("job failed: %+v\n%s", st.Result, log)
	}
	display := strings.TrimSuffix(repo.srv.URL, "/") + "/group/project.git"
	for _, want := range []string{
		"Fetching changes from " + display + " with git depth set to 2...",
		"Created fresh repository.",
		fmt.Sprintf("Checking out %s as detached HEAD (ref is main)...", sha[:8]),
		"Skipping Git submodules setup",
		"$ cat version.txt\x1b[0;m\n4\n",
		"token:[MASKED]",
		"Job succeeded",
		"Job resources: peak memory ",
	} {
		if !strings.Contains(log, want) {
			t.Errorf("log lacks %q:\n%s", want, log)
		}
	}
	if strings.Contains(log, testJobToken) || strings.Contains(log, "s3cr3t") {
		t.Errorf("the job token leaked into the log:\n%s", log)
	}
	r, err := git.PlainOpen(spec.Plan.ProjectDir)
	if err != nil {
		t.Fatal(err)
	}
	head, err := r.Head()
	if err != nil {
		t.Fatal(err)
	}
	if head.Hash().String() != sha || head.Name() != "HEAD" {
		t.Errorf("HEAD is %s %s, want detached at %s", head.Name(), head.Hash(), sha)
	}
	// depth 2 from the tips (commit 5 on main, commit 4 for the pipeline):
	// commits 1 and 2 were not fetched.
	if _, err := r.CommitObject(head.Hash()); err != nil {
		t.Fatal(err)
	}
	if _, err := r.CommitObject(plumbingHash(repo.commits[0])); err == nil {
		t.Error("commit 1 was fetched despite depth 2")
	}
	if _, err := os.Stat(filepath.Join(spec.Plan.ProjectDir, ".git", "shallow")); err != nil {
		t.Errorf("no shallow file: %v", err)
	}
	a.ack(t)
	if a.err != nil {
		t.Errorf("Run: %v", a.err)
	}
	// The log on disk is what was served.
	disk, err := os.ReadFile(filepath.Join(a.stateDir, LogFile))
	if err != nil {
		t.Fatal(err)
	}
	if string(disk) != log {
		t.Error("the served log differs from the log file")
	}
}

func TestFetchReusesRepositoryAndCleans(t *testing.T) {
	repo := newGitRepo(t, 2)
	builds := t.TempDir()
	repo.pipelineRef(1, repo.commits[1])
	tj := testJob{repo: repo, sha: repo.commits[1], pipeline: 1, strategy: job.GitFetch, buildsDir: builds, depth: 1,
		steps: []job.Step{script(`cat version.txt`)}}
	a := startAgent(t, tj.spec(t), Options{})
	log, st := a.waitDone(t)
	if !st.Result.Success || !strings.Contains(log, "Created fresh repository.") {
		t.Fatalf("first job: %+v\n%s", st.Result, log)
	}
	a.ack(t)

	dir := filepath.Join(builds, "group", "project")
	for _, f := range []string{"untracked.txt", "ignored.log", "sub/deep.txt"} {
		if err := os.MkdirAll(filepath.Dir(filepath.Join(dir, f)), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, f), []byte("x"), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.WriteFile(filepath.Join(dir, "version.txt"), []byte("modified"), 0o644); err != nil {
		t.Fatal(err)
	}
	sha := repo.commit("3")
	repo.pipelineRef(2, sha)
	tj.sha, tj.pipeline = sha, 2
	a = startAgent(t, tj.spec(t), Options{})
	log, st = a.waitDone(t)
	if !st.Result.Success {
		t.Fatalf("second job: %+v\n%s", st.Result, log)
	}
	if !strings.Contains(log, "Reusing existing Git repository in "+dir) || strings.Contains(log, "Created fresh repository.") {
		t.Errorf("the repository was not reused:\n%s", log)
	}
	if !strings.Contains(log, "\n3\n") {
		t.Errorf("the new commit was not checked out:\n%s", log)
	}
	for _, f := range []string{"untracked.txt", "ignored.log", "sub"} {
		if _, err := os.Stat(filepath.Join(dir, f)); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("%s survived the clean: %v", f, err)
		}
	}
}

func TestStrategyNoneAndHooks(t *testing.T) {
	repo := newGitRepo(t, 1)
	hooks := []job.Hook{{Name: "pre_get_sources_script", Script: []string{"echo pre-hook"}},
		{Name: "post_get_sources_script", Script: []string{"echo post-hook in $(basename $PWD)", "cat version.txt"}}}

	// none: no fetch at all, no hooks (as GitLab Runner).
	spec := testJob{repo: repo, sha: repo.commits[0], strategy: job.GitNone, hooks: hooks,
		steps: []job.Step{script(`ls -A | wc -l`)}}.spec(t)
	a := startAgent(t, spec, Options{})
	log, st := a.waitDone(t)
	if !st.Result.Success || !strings.Contains(log, "Skipping Git repository setup") || !strings.Contains(log, "\n0\n") {
		t.Errorf("strategy none: %+v\n%s", st.Result, log)
	}
	if strings.Contains(log, "pre-hook") || repo.hits.Load() != 0 {
		t.Errorf("strategy none ran hooks or fetched (%d requests):\n%s", repo.hits.Load(), log)
	}

	// clone: the hooks run around the Go fetch, post in the project dir.
	repo.pipelineRef(1, repo.commits[0])
	spec = testJob{repo: repo, sha: repo.commits[0], pipeline: 1, hooks: hooks, steps: []job.Step{script(`true`)}}.spec(t)
	a = startAgent(t, spec, Options{})
	log, st = a.waitDone(t)
	pre, fetch, post := strings.Index(log, "\npre-hook\n"), strings.Index(log, "Created fresh repository."), strings.Index(log, "post-hook in project\n")
	if !st.Result.Success || pre < 0 || fetch < pre || post < fetch {
		t.Errorf("hooks around the fetch (pre %d, fetch %d, post %d): %+v\n%s", pre, fetch, post, st.Result, log)
	}
}

func TestFetchFailureIsScriptFailure(t *testing.T) {
	repo := newGitRepo(t, 1)
	spec := testJob{repo: repo, sha: strings.Repeat("ab", 20), pipeline: 1,
		steps: []job.Step{script(`echo never`)}, vars: job.Variables{{Key: "GIT_DEPTH", Value: "1"}}}.spec(t)
	spec.Sources.Refspecs = []string{"+refs/heads/main:refs/remotes/origin/main"}
	spec.Sources.RepoURL = strings.Replace(spec.Sources.RepoURL, testJobToken, "wrong-token", 1)
	spec.Mask.Values = append(spec.Mask.Values, "wrong-token")
	a := startAgent(t, spec, Options{})
	log, st := a.waitDone(t)
	if st.Result.Success || st.Result.FailureReason != gitlab.ScriptFailure || st.Result.ExitCode != gitFailure {
		t.Errorf("result %+v", st.Result)
	}
	if strings.Contains(log, "wrong-token") || !strings.Contains(log, "ERROR: fetch from http://127.0.0.1") || strings.Contains(log, "never") {
		t.Errorf("log:\n%s", log)
	}
}

func TestMaskedSecretNeverInLog(t *testing.T) {
	secret := "hunter2-very-secret"
	spec := testJob{strategy: job.GitNone, vars: job.Variables{{Key: "SECRET", Value: secret, Masked: true}},
		// Printed byte by byte too: masking works across writes.
		steps: []job.Step{script(`echo "1 $SECRET"`, `printf '%s' "$SECRET" | while IFS= read -r -n1 c; do printf '%s' "$c"; sleep 0.01; done; echo`,
			`echo "$SECRET" >&2`)}}.spec(t)
	a := startAgent(t, spec, Options{})
	log, st := a.waitDone(t)
	if !st.Result.Success {
		t.Fatalf("%+v\n%s", st.Result, log)
	}
	if strings.Contains(log, "hunter2") || strings.Count(log, "[MASKED]") < 3 {
		t.Errorf("secret not masked:\n%s", log)
	}
}

func TestExitCodeAndAfterScript(t *testing.T) {
	spec := testJob{strategy: job.GitNone, steps: []job.Step{script(`echo before`, `exit 3`, `echo not-reached`), afterScript(`echo "after: $CI_JOB_STATUS"`)}}.spec(t)
	a := startAgent(t, spec, Options{})
	log, st := a.waitDone(t)
	want := agent.Result{FailureReason: gitlab.ScriptFailure, ExitCode: 3}
	if *st.Result != want {
		t.Errorf("result %+v, want %+v", *st.Result, want)
	}
	if !strings.Contains(log, "after: failed") || strings.Contains(log, "not-reached") || !strings.Contains(log, "ERROR: Job failed: exit code 3") {
		t.Errorf("log:\n%s", log)
	}
	a.ack(t)
	if a.err != nil {
		t.Errorf("Run must succeed when the job failed: %v", a.err)
	}
}

func TestGracefulCancelRunsAfterScript(t *testing.T) {
	spec := testJob{strategy: job.GitNone, steps: []job.Step{script(`echo started`, `sleep 30`), afterScript(`echo "after: $CI_JOB_STATUS"`)}}.spec(t)
	a := startAgent(t, spec, Options{})
	a.waitLog(t, "\nstarted\n")
	if err := a.client.Cancel(context.Background()); err != nil {
		t.Fatal(err)
	}
	log, st := a.waitDone(t)
	if st.Result.FailureReason != gitlab.JobCanceled || !strings.Contains(log, "after: canceled") {
		t.Errorf("result %+v\n%s", st.Result, log)
	}
}

func TestAbortStopsAtOnce(t *testing.T) {
	spec := testJob{strategy: job.GitNone, steps: []job.Step{script(`trap '' TERM; echo started; sleep 30`), afterScript(`echo after-ran`)}}.spec(t)
	a := startAgent(t, spec, Options{TermGrace: time.Minute})
	a.waitLog(t, "\nstarted\n")
	if err := a.client.Abort(context.Background()); err != nil {
		t.Fatal(err)
	}
	// Ack before the end: the agent exits as soon as the job stopped.
	if err := a.client.Ack(context.Background()); err != nil {
		t.Fatal(err)
	}
	if !a.wait(20 * time.Second) {
		t.Fatal("the agent did not stop after abort and ack (the TERM grace is a minute)")
	}
	if a.err != nil {
		t.Errorf("Run: %v", a.err)
	}
	disk, err := os.ReadFile(filepath.Join(a.stateDir, LogFile))
	if err != nil {
		t.Fatal(err)
	}
	if bytes.Contains(disk, []byte("after-ran")) || !bytes.Contains(disk, []byte("ERROR: Job failed: canceled")) {
		t.Errorf("log:\n%s", disk)
	}
}

func TestLogPulledByteExactWithConcurrentLongPolls(t *testing.T) {
	// ~1.5 MB with pauses: several 1 MiB chunks and long polls in between.
	spec := testJob{strategy: job.GitNone, steps: []job.Step{script(
		`for i in 1 2 3; do seq 1 70000; sleep 0.2; done`, `printf 'no newline at the end'`)}}.spec(t)
	a := startAgent(t, spec, Options{})
	const readers = 4
	logs := make([]string, readers)
	var wg sync.WaitGroup
	for i := range readers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			defer cancel()
			c := agent.NewClient(a.url, testAPIToken, nil)
			c.Wait = time.Duration(i+1) * 100 * time.Millisecond
			var b bytes.Buffer
			var off int64
			for {
				data, size, state, err := c.Log(ctx, off)
				if err != nil {
					t.Errorf("reader %d: %v", i, err)
					return
				}
				if len(data) > agent.MaxLogChunk {
					t.Errorf("reader %d: %d bytes in one answer", i, len(data))
				}
				b.Write(data)
				off += int64(len(data))
				if state == agent.StateDone && off == size {
					logs[i] = b.String()
					return
				}
			}
		}()
	}
	wg.Wait()
	disk, err := os.ReadFile(filepath.Join(a.stateDir, LogFile))
	if err != nil {
		t.Fatal(err)
	}
	if len(disk) < 1<<20 {
		t.Fatalf("log is only %d bytes", len(disk))
	}
	for i, l := range logs {
		if l != string(disk) {
			t.Errorf("reader %d got %d bytes, the log has %d", i, len(l), len(disk))
		}
	}
	st, err := a.client.Status(context.Background())
	if err != nil || st.LogSize != int64(len(disk)) || !st.Result.Success {
		t.Errorf("status %+v, %v", st, err)
	}
}

func TestLogAPIErrors(t *testing.T) {
	spec := testJob{strategy: job.GitNone, steps: []job.Step{script(`echo hi`)}}.spec(t)
	a := startAgent(t, spec, Options{})
	log, _ := a.waitDone(t)
	ctx := context.Background()

	_, _, _, err := a.client.Log(ctx, int64(len(log))+1)
	var re *agent.RangeError
	if !errors.As(err, &re) || re.Size != int64(len(log)) {
		t.Errorf("offset past the end: %v", err)
	}
	data, size, state, err := a.client.Log(ctx, int64(len(log)))
	if err != nil || len(data) != 0 || size != int64(len(log)) || state != agent.StateDone {
		t.Errorf("offset at the end: %q %d %s %v", data, size, state, err)
	}

	for _, auth := range []string{"", "Bearer wrong", "Bearer " + testAPIToken + "x", "Basic " + testAPIToken, testAPIToken} {
		for _, ep := range []string{"GET /v1/log", "GET /v1/status", "POST /v1/cancel", "POST /v1/abort", "POST /v1/ack"} {
			method, path, _ := strings.Cut(ep, " ")
			req, _ := http.NewRequest(method, a.url+path, nil)
			if auth != "" {
				req.Header.Set("Authorization", auth)
			}
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			if resp.StatusCode != http.StatusUnauthorized {
				t.Errorf("%s with %q: %d, want 401", ep, auth, resp.StatusCode)
			}
		}
	}
	bad := agent.NewClient(a.url, "nope", nil)
	if _, err := bad.Status(ctx); !errors.Is(err, agent.ErrUnauthorized) {
		t.Errorf("client with a wrong token: %v", err)
	}
	if err := bad.Ack(ctx); !errors.Is(err, agent.ErrUnauthorized) {
		t.Errorf("ack with a wrong token: %v", err)
	}
	for _, q := range []string{"offset=-1", "offset=x", "offset=0&wait=forever", "offset=0&wait=NaN"} {
		req, _ := http.NewRequest(http.MethodGet, a.url+"/v1/log?"+q, nil)
		req.Header.Set("Authorization", "Bearer "+testAPIToken)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusBadRequest {
			t.Errorf("%s: %d, want 400", q, resp.StatusCode)
		}
	}
	if a.wait(0) {
		t.Fatal("the agent exited after a refused ack")
	}
}

func TestLongPollWaitsForNewBytes(t *testing.T) {
	spec := testJob{strategy: job.GitNone, steps: []job.Step{script(`echo first`, `sleep 1`, `echo second`)}}.spec(t)
	a := startAgent(t, spec, Options{})
	a.waitLog(t, "\nfirst\n")
	_, size, _, err := a.client.Log(context.Background(), 0)
	if err != nil {
		t.Fatal(err)
	}
	// A wait longer than the sleep: the answer is the new bytes, not an
	// empty timeout.
	a.client.Wait = 20 * time.Second
	data, _, _, err := a.client.Log(context.Background(), size)
	if err != nil {
		t.Fatal(err)
	}
	if len(data) == 0 {
		t.Fatal("long poll answered without new bytes")
	}
	rest := string(data) + a.pull(t, size+int64(len(data)))
	if !strings.Contains(rest, "second") {
		t.Errorf("rest of the log: %q", rest)
	}
}

func TestAckEndsAgentAndLingerOtherwise(t *testing.T) {
	spec := testJob{strategy: job.GitNone, steps: []job.Step{script(`true`)}}.spec(t)
	a := startAgent(t, spec, Options{Linger: time.Hour})
	a.waitDone(t)
	if a.wait(200 * time.Millisecond) {
		t.Fatal("the agent exited before the ack")
	}
	a.ack(t)

	a = startAgent(t, spec, Options{Linger: 300 * time.Millisecond})
	if !a.wait(20 * time.Second) {
		t.Fatal("the agent did not exit after the linger")
	}
	if a.err != nil {
		t.Errorf("Run after linger: %v", a.err)
	}
}

func TestNoShellIsAgentFailure(t *testing.T) {
	t.Setenv("PATH", t.TempDir())
	spec := testJob{strategy: job.GitNone, steps: []job.Step{script(`true`)}}.spec(t)
	a := startAgent(t, spec, Options{})
	log, st := a.waitDone(t)
	if st.Result.FailureReason != gitlab.RunnerSystemFailure || !strings.Contains(log, "neither bash nor sh found") {
		t.Errorf("%+v\n%s", st.Result, log)
	}
	a.ack(t)
	if !errors.Is(a.err, ErrAgent) {
		t.Errorf("Run: %v, want ErrAgent", a.err)
	}
}

func TestFilesAndEnv(t *testing.T) {
	dir := t.TempDir()
	f := filepath.Join(dir, "secret", "deep", "file")
	spec := testJob{strategy: job.GitNone, steps: []job.Step{script(`cat "$FILE"; echo; echo "env:$EXTRA"; pwd`)}}.spec(t)
	spec.Files = map[string]string{f: "file-content"}
	spec.Env = []string{"FILE=" + f, "EXTRA=extra-value"}
	a := startAgent(t, spec, Options{})
	log, st := a.waitDone(t)
	if !st.Result.Success || !strings.Contains(log, "file-content\nenv:extra-value\n"+spec.Plan.ProjectDir+"\n") {
		t.Errorf("%+v\n%s", st.Result, log)
	}
	for p, want := range map[string]os.FileMode{f: 0o600, filepath.Dir(f): 0o700} {
		fi, err := os.Stat(p)
		if err != nil || fi.Mode().Perm() != want {
			t.Errorf("%s: %v %v, want %v", p, fi.Mode().Perm(), err, want)
		}
	}
}

func TestSubmodules(t *testing.T) {
	repo := newGitRepo(t, 1)
	repo.addSubmoduleRepo("deep", "")
	repo.addSubmoduleRepo("lib", "deep")
	runGit(t, repo.work, "-c", "protocol.file.allow=always", "submodule", "add", "-q", "../lib.git", "lib")
	runGit(t, repo.work, "commit", "-q", "-m", "add lib")
	runGit(t, repo.work, "push", "-q", "origin", "main")
	sha := runGit(t, repo.work, "rev-parse", "HEAD")
	repo.pipelineRef(1, sha)

	for _, tc := range []struct {
		strategy, msg string
		deep          bool
	}{
		{job.SubmoduleNormal, "Updating/initializing submodules...", false},
		{job.SubmoduleRecursive, "Updating/initializing submodules recursively...", true},
	} {
		t.Run(tc.strategy, func(t *testing.T) {
			spec := testJob{repo: repo, sha: sha, pipeline: 1, steps: []job.Step{script(`cat lib/lib.txt`, `ls lib/deep | wc -l`)}}.spec(t)
			spec.Sources.Submodules = tc.strategy
			a := startAgent(t, spec, Options{})
			log, st := a.waitDone(t)
			if !st.Result.Success || !strings.Contains(log, tc.msg) || !strings.Contains(log, "\nlib\n") {
				t.Fatalf("%+v\n%s", st.Result, log)
			}
			_, err := os.Stat(filepath.Join(spec.Plan.ProjectDir, "lib", "deep", "deep.txt"))
			if tc.deep != (err == nil) {
				t.Errorf("nested submodule checked out: %v, want %v", err == nil, tc.deep)
			}
			if strings.Contains(log, testJobToken) {
				t.Errorf("token leaked:\n%s", log)
			}
		})
	}
}

func TestFetchFlags(t *testing.T) {
	for _, tc := range []struct {
		flags   []string
		prune   bool
		tags    git.TagMode
		ignored []string
	}{
		{nil, false, git.TagFollowing, nil},                           // GIT_FETCH_EXTRA_FLAGS=none
		{[]string{"--prune", "--quiet"}, true, git.TagFollowing, nil}, // the default
		{[]string{"-p", "--no-prune", "-t"}, false, git.AllTags, nil},
		{[]string{"--no-tags", "--verbose", "--progress"}, false, git.NoTags, nil},
		{[]string{"-n", "--jobs=4", "--prune", "--refetch"}, true, git.NoTags, []string{"--jobs=4", "--refetch"}},
	} {
		prune, tags, ignored := fetchFlags(tc.flags)
		if prune != tc.prune || tags != tc.tags || !slices.Equal(ignored, tc.ignored) {
			t.Errorf("fetchFlags(%q) = %v, %v, %q; want %v, %v, %q", tc.flags, prune, tags, ignored, tc.prune, tc.tags, tc.ignored)
		}
	}
}

// GIT_FETCH_EXTRA_FLAGS reaches the agent: what go-git cannot do is named
// in the job's log, and the job goes on.
func TestFetchExtraFlagsIgnoredAreNamed(t *testing.T) {
	repo := newGitRepo(t, 1)
	repo.pipelineRef(1, repo.commits[0])
	spec := testJob{repo: repo, sha: repo.commits[0], pipeline: 1, steps: []job.Step{script(`cat version.txt`)},
		vars: job.Variables{{Key: "GIT_FETCH_EXTRA_FLAGS", Value: "--no-tags --jobs=4", Public: true}}}.spec(t)
	if !slices.Equal(spec.Sources.FetchFlags, []string{"--no-tags", "--jobs=4"}) {
		t.Fatalf("spec fetch flags %q", spec.Sources.FetchFlags)
	}
	a := startAgent(t, spec, Options{})
	log, st := a.waitDone(t)
	if !st.Result.Success || !strings.Contains(log, "GIT_FETCH_EXTRA_FLAGS: --jobs=4 ignored") || strings.Contains(log, "--no-tags ignored") {
		t.Errorf("result %+v, log:\n%s", st.Result, log)
	}
}

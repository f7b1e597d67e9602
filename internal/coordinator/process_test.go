package coordinator

import (
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/podrunner/podrunner/internal/ciyaml"
	"github.com/podrunner/podrunner/internal/gitlab"
)

// tweakJobs makes CreatePipeline see job fields set by the test (the
// YAML parser may not read every keyword yet).
func tweakJobs(s *Server, tweak func(jobs map[string]*ciyaml.Job)) {
	s.evaluate = func(c *ciyaml.Config, env ciyaml.Env) ([]*ciyaml.Job, error) {
		jobs, err := c.Evaluate(env)
		if err != nil {
			return nil, err
		}
		byName := map[string]*ciyaml.Job{}
		for _, j := range jobs {
			byName[j.Name] = j
		}
		tweak(byName)
		return jobs, nil
	}
}

// latest returns the latest (not retried) job called name.
func latest(t *testing.T, s *Server, pl int64, name string) JobView {
	t.Helper()
	v, _ := s.Pipeline(pl)
	for i := len(v.Jobs) - 1; i >= 0; i-- {
		if v.Jobs[i].Name == name && !v.Jobs[i].Retried {
			return v.Jobs[i]
		}
	}
	t.Fatalf("no job %s in pipeline %d", name, pl)
	return JobView{}
}

// runJob takes the pending job called name as a runner would and ends it.
func runJob(t *testing.T, s *Server, pl int64, name, status string, reason gitlab.FailureReason, code int) {
	t.Helper()
	id := latest(t, s, pl, name).ID
	s.mu.Lock()
	defer s.mu.Unlock()
	j := s.jobs[id]
	if j.status != StatusPending {
		t.Fatalf("job %s is %s, want pending", name, j.status)
	}
	s.startJobLocked(j)
	s.finishLocked(j, status, reason, code)
}

func statuses(s *Server, pl int64) string {
	v, _ := s.Pipeline(pl)
	var out []string
	for _, j := range v.Jobs {
		if !j.Retried {
			out = append(out, j.Name+"="+j.Status)
		}
	}
	return strings.Join(out, " ")
}

type schedStep struct {
	run      string // job to take and end
	status   string // "success" when empty
	reason   gitlab.FailureReason
	code     int
	play     string // job to play
	want     string // statuses of the latest jobs afterwards
	pipeline string // pipeline status afterwards, when set
}

func TestScheduling(t *testing.T) {
	t.Parallel()
	need := func(names ...string) []ciyaml.Need {
		out := []ciyaml.Need{}
		for _, n := range names {
			out = append(out, ciyaml.Need{Job: n, Artifacts: true})
		}
		return out
	}
	tests := []struct {
		name  string
		ci    string
		tweak func(map[string]*ciyaml.Job)
		steps []schedStep
	}{{
		name: "needs start before their stage; needs: [] at once",
		ci:   "stages: [build, test, deploy]\na: {stage: build, script: x}\nb: {stage: build, script: x}\nc: {stage: test, script: x}\nd: {stage: test, script: x}\ne: {stage: deploy, script: x}\n",
		tweak: func(j map[string]*ciyaml.Job) {
			j["c"].Needs = need("a")
			j["e"].Needs = need()
		},
		steps: []schedStep{
			{want: "a=pending b=pending c=created d=created e=pending", pipeline: StatusPending},
			{run: "a", want: "a=success b=pending c=pending d=created e=pending", pipeline: StatusRunning},
			{run: "c", want: "a=success b=pending c=success d=created e=pending"},
			{run: "b", want: "a=success b=success c=success d=pending e=pending"},
			{run: "d"}, {run: "e", want: "a=success b=success c=success d=success e=success", pipeline: StatusSuccess},
		},
	}, {
		name: "a failed need skips the job; later stages see the failure",
		ci:   "stages: [build, test, deploy]\na: {stage: build, script: x}\nc: {stage: test, script: x}\nd: {stage: deploy, script: x, when: always}\n",
		tweak: func(j map[string]*ciyaml.Job) {
			j["c"].Needs = need("a")
		},
		steps: []schedStep{
			{run: "a", status: StatusFailed, want: "a=failed c=skipped d=pending"},
			{run: "d", pipeline: StatusFailed},
		},
	}, {
		name: "optional need missing from the pipeline",
		ci:   "stages: [build, test]\na: {stage: build, script: x}\nc: {stage: test, script: x}\n",
		tweak: func(j map[string]*ciyaml.Job) {
			j["c"].Needs = []ciyaml.Need{{Job: "gone", Optional: true}}
		},
		steps: []schedStep{{want: "a=pending c=pending"}},
	}, {
		name:  "manual job allowed to fail blocks nothing",
		ci:    "stages: [build, test]\nm: {stage: build, script: x, when: manual}\nt: {stage: test, script: x}\n",
		tweak: func(j map[string]*ciyaml.Job) { j["m"].AllowFailure = true },
		steps: []schedStep{
			{want: "m=manual t=pending"},
			{run: "t", want: "m=manual t=success", pipeline: StatusSuccess},
			{play: "m", want: "m=pending t=success", pipeline: StatusRunning},
			{run: "m", pipeline: StatusSuccess},
		},
	}, {
		name:  "manual job with allow_failure false blocks the pipeline",
		ci:    "stages: [build, test]\nm: {stage: build, script: x, when: manual}\nt: {stage: test, script: x}\n",
		tweak: func(j map[string]*ciyaml.Job) { j["m"].AllowFailure = false },
		steps: []schedStep{
			{want: "m=manual t=created", pipeline: StatusManual},
			{play: "m", want: "m=pending t=created", pipeline: StatusPending},
			{run: "m", want: "m=success t=pending"},
			{run: "t", pipeline: StatusSuccess},
		},
	}, {
		name: "a job needing a manual job is skipped until it is played",
		ci:   "stages: [build, test]\nm: {stage: build, script: x, when: manual}\nn: {stage: test, script: x}\n",
		tweak: func(j map[string]*ciyaml.Job) {
			j["m"].AllowFailure = true
			j["n"].Needs = need("m")
		},
		steps: []schedStep{
			{want: "m=manual n=skipped", pipeline: StatusSkipped},
			{play: "m", want: "m=pending n=created"},
			{run: "m", want: "m=success n=pending"},
		},
	}, {
		name:  "allow_failure exit code: failed with warnings, pipeline passes",
		ci:    "stages: [build, test]\na: {stage: build, script: x}\nt: {stage: test, script: x}\n",
		tweak: func(j map[string]*ciyaml.Job) { j["a"].AllowFailureExitCodes = []int{3, 4} },
		steps: []schedStep{
			{run: "a", status: StatusFailed, code: 4, want: "a=failed t=pending"},
			{run: "t", pipeline: StatusSuccess},
		},
	}, {
		name:  "allow_failure exit code not matched fails the pipeline",
		ci:    "stages: [build, test]\na: {stage: build, script: x}\nt: {stage: test, script: x}\n",
		tweak: func(j map[string]*ciyaml.Job) { j["a"].AllowFailureExitCodes = []int{3} },
		steps: []schedStep{
			{run: "a", status: StatusFailed, code: 1, want: "a=failed t=skipped", pipeline: StatusFailed},
		},
	}, {
		name: "when: always and on_failure after a failure",
		ci:   "stages: [build, test]\na: {stage: build, script: x}\nok: {stage: test, script: x}\nf: {stage: test, script: x, when: on_failure}\nal: {stage: test, script: x, when: always}\n",
		steps: []schedStep{
			{run: "a", status: StatusFailed, want: "a=failed ok=skipped f=pending al=pending"},
			{run: "f"}, {run: "al", pipeline: StatusFailed},
		},
	}, {
		name:  "all skipped earlier stages let on_success run",
		ci:    "stages: [build, test]\nf: {stage: build, script: x, when: on_failure}\nt: {stage: test, script: x}\n",
		steps: []schedStep{{want: "f=skipped t=pending"}},
	}, {
		name:  "retry on a matching reason, up to max",
		ci:    "stages: [build, test]\nr: {stage: build, script: x}\nt: {stage: test, script: x}\n",
		tweak: func(j map[string]*ciyaml.Job) { j["r"].Retry = ciyaml.Retry{Max: 2, When: []string{"script_failure"}} },
		steps: []schedStep{
			{run: "r", status: StatusFailed, want: "t=created r=pending"},
			{run: "r", status: StatusFailed, want: "t=created r=pending"},
			{run: "r", status: StatusFailed, want: "t=skipped r=failed", pipeline: StatusFailed},
		},
	}, {
		name: "retry does not apply to another reason",
		ci:   "r: {stage: test, script: x}\n",
		tweak: func(j map[string]*ciyaml.Job) {
			j["r"].Retry = ciyaml.Retry{Max: 2, When: []string{"runner_system_failure"}}
		},
		steps: []schedStep{{run: "r", status: StatusFailed, reason: "script_failure", want: "r=failed", pipeline: StatusFailed}},
	}, {
		name: "retry then success",
		ci:   "r: {stage: test, script: x}\n",
		tweak: func(j map[string]*ciyaml.Job) {
			j["r"].Retry = ciyaml.Retry{Max: 1, When: []string{"runner_system_failure"}}
		},
		steps: []schedStep{
			{run: "r", status: StatusFailed, reason: "runner_system_failure", want: "r=pending"},
			{run: "r", want: "r=success", pipeline: StatusSuccess},
		},
	}, {
		name:  "retry exit_codes only",
		ci:    "r: {stage: test, script: x}\n",
		tweak: func(j map[string]*ciyaml.Job) { j["r"].Retry = ciyaml.Retry{Max: 1, ExitCodes: []int{137}} },
		steps: []schedStep{
			{run: "r", status: StatusFailed, code: 137, want: "r=pending"},
			{run: "r", status: StatusFailed, code: 137, want: "r=failed", pipeline: StatusFailed},
		},
	}, {
		name:  "retry exit_codes, other code",
		ci:    "r: {stage: test, script: x}\n",
		tweak: func(j map[string]*ciyaml.Job) { j["r"].Retry = ciyaml.Retry{Max: 1, ExitCodes: []int{137}} },
		steps: []schedStep{{run: "r", status: StatusFailed, code: 1, want: "r=failed"}},
	}}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			s, _, _ := setup(t, Options{}, tc.ci)
			if tc.tweak != nil {
				tweakJobs(s, tc.tweak)
			}
			pl, err := s.CreatePipeline("group/demo", "main")
			if err != nil {
				t.Fatal(err)
			}
			for i, st := range tc.steps {
				if st.run != "" {
					status := st.status
					if status == "" {
						status = StatusSuccess
					}
					runJob(t, s, pl.ID, st.run, status, st.reason, st.code)
				}
				if st.play != "" {
					if err := s.Play(latest(t, s, pl.ID, st.play).ID); err != nil {
						t.Fatal(err)
					}
				}
				if st.want != "" {
					if got := statuses(s, pl.ID); got != st.want {
						t.Fatalf("step %d: jobs %s, want %s", i, got, st.want)
					}
				}
				if st.pipeline != "" {
					if v, _ := s.Pipeline(pl.ID); v.Status != st.pipeline {
						t.Fatalf("step %d: pipeline %s, want %s (%s)", i, v.Status, st.pipeline, statuses(s, pl.ID))
					}
				}
			}
		})
	}
}

func TestRetryKeepsOldJob(t *testing.T) {
	t.Parallel()
	s, _, _ := setup(t, Options{}, "r: {stage: test, script: x}\n")
	tweakJobs(s, func(j map[string]*ciyaml.Job) { j["r"].Retry = ciyaml.Retry{Max: 1} })
	pl, err := s.CreatePipeline("group/demo", "main")
	if err != nil {
		t.Fatal(err)
	}
	first := latest(t, s, pl.ID, "r")
	runJob(t, s, pl.ID, "r", StatusFailed, "script_failure", 1)
	second := latest(t, s, pl.ID, "r")
	if second.ID == first.ID || second.Token == first.Token {
		t.Fatalf("retry reused id/token: %d %d", first.ID, second.ID)
	}
	old, _ := s.Job(first.ID)
	if !old.Retried || old.Status != StatusFailed || old.FailureReason != "script_failure" || old.ExitCode != 1 {
		t.Errorf("retried job = %+v", old)
	}
	runJob(t, s, pl.ID, "r", StatusSuccess, "", 0)
	v, err := s.WaitPipeline(ctxT(t), pl.ID)
	if err != nil || v.Status != StatusSuccess || len(v.Jobs) != 2 {
		t.Fatalf("pipeline %s with %d jobs, err %v", v.Status, len(v.Jobs), err)
	}
	// A UI retry of the successful job makes a third.
	id, err := s.Retry(second.ID)
	if err != nil || id == second.ID {
		t.Fatalf("Retry = %d, %v", id, err)
	}
	if v, _ := s.Pipeline(pl.ID); v.Status != StatusPending {
		t.Errorf("pipeline after retry = %s", v.Status)
	}
	if _, err := s.Retry(first.ID); err == nil {
		t.Error("retrying a retried job must fail")
	}
}

func TestDelayedJob(t *testing.T) {
	t.Parallel()
	s, _, _ := setup(t, Options{}, "stages: [a, b]\nd: {stage: a, script: x, when: delayed, start_in: 1 second}\nn: {stage: b, script: x}\n")
	tweakJobs(s, func(j map[string]*ciyaml.Job) { j["d"].StartIn = 150 * time.Millisecond })
	pl, err := s.CreatePipeline("group/demo", "main")
	if err != nil {
		t.Fatal(err)
	}
	d := latest(t, s, pl.ID, "d")
	if d.Status != StatusScheduled || d.ScheduledAt.IsZero() {
		t.Fatalf("delayed job = %s", d.Status)
	}
	if v, _ := s.Pipeline(pl.ID); v.Status != StatusScheduled {
		t.Errorf("pipeline = %s, want scheduled", v.Status)
	}
	if _, err := s.WaitJob(ctxT(t), d.ID, StatusPending); err != nil {
		t.Fatal(err)
	}
	if got := statuses(s, pl.ID); got != "d=pending n=created" {
		t.Errorf("after start_in: %s", got)
	}
}

func TestPipelineOptionsJobs(t *testing.T) {
	t.Parallel()
	ci := "stages: [build, test, deploy]\na: {stage: build, script: x}\nb: {stage: build, script: x}\nc: {stage: test, script: x}\nm: {stage: deploy, script: x, when: manual}\n"
	s, _, _ := setup(t, Options{}, ci)
	tweakJobs(s, func(j map[string]*ciyaml.Job) { j["c"].Needs = []ciyaml.Need{{Job: "a", Artifacts: true}} })
	pl, err := s.CreatePipelineWith("group/demo", PipelineOptions{Jobs: []string{"c", "m"}})
	if err != nil {
		t.Fatal(err)
	}
	if got := statuses(s, pl.ID); got != "a=pending c=created m=created" {
		t.Fatalf("jobs: %s", got)
	}
	runJob(t, s, pl.ID, "a", StatusSuccess, "", 0)
	runJob(t, s, pl.ID, "c", StatusSuccess, "", 0)
	if got := statuses(s, pl.ID); got != "a=success c=success m=pending" {
		t.Fatalf("named manual job must run as if played: %s", got)
	}
	if _, err := s.CreatePipelineWith("group/demo", PipelineOptions{Jobs: []string{"nope"}}); err == nil || !strings.Contains(err.Error(), `"nope"`) {
		t.Errorf("unknown job: %v", err)
	}
}

func TestCreatePipelineEnv(t *testing.T) {
	t.Parallel()
	s, _, _ := setup(t, Options{}, "variables: {GLOBAL: g}\nt: {script: x}\n")
	if err := s.SetProjectVariable("group/demo", ProjectVariable{Key: "PV", Value: "p"}); err != nil {
		t.Fatal(err)
	}
	var got ciyaml.Env
	s.evaluate = func(c *ciyaml.Config, env ciyaml.Env) ([]*ciyaml.Job, error) {
		got = env
		return nil, fmt.Errorf("rules: %w", ciyaml.ErrFiltered)
	}
	_, err := s.CreatePipelineWith("group/demo", PipelineOptions{Variables: []ProjectVariable{{Key: "PIPE", Value: "x"}}})
	if !errors.Is(err, ciyaml.ErrFiltered) {
		t.Fatalf("filtered pipeline error = %v", err)
	}
	for k, v := range map[string]string{"GLOBAL": "g", "PV": "p", "PIPE": "x", "CI_COMMIT_BRANCH": "main", "CI_PIPELINE_SOURCE": "push", "CI_PROJECT_PATH": "group/demo", "CI_DEFAULT_BRANCH": "main"} {
		if got.Variables[k] != v {
			t.Errorf("env %s = %q, want %q", k, got.Variables[k], v)
		}
	}
	if got.Ref != "main" || got.RefType != "branch" || got.Source != "push" || got.Changes != nil || got.Exists == nil {
		t.Errorf("env = %+v", got)
	}
	for glob, want := range map[string]bool{"hello.txt": true, "*.txt": true, "**/*.txt": true, "{x,hello}.txt": true, "nope/*": false, ".gitlab-ci.yml": true} {
		if ok, err := got.Exists([]string{glob}); err != nil || ok != want {
			t.Errorf("exists %s = %v, %v", glob, ok, err)
		}
	}
	// A pipeline with no jobs is not created.
	s.evaluate = func(*ciyaml.Config, ciyaml.Env) ([]*ciyaml.Job, error) { return nil, nil }
	if _, err := s.CreatePipeline("group/demo", "main"); err == nil || !strings.Contains(err.Error(), "No stages / jobs") {
		t.Errorf("empty pipeline: %v", err)
	}
}

func TestCompositeStatus(t *testing.T) {
	t.Parallel()
	j := func(status string, allow bool) *jobState { return &jobState{status: status, allowFailure: allow} }
	tests := []struct {
		jobs []*jobState
		dag  bool
		want string
	}{
		{nil, false, ""},
		{[]*jobState{j(StatusSuccess, false), j(StatusFailed, true)}, false, StatusSuccess},
		{[]*jobState{j(StatusSuccess, false), j(StatusFailed, false)}, false, StatusFailed},
		{[]*jobState{j(StatusSuccess, false), j(StatusManual, true)}, false, StatusSuccess},
		{[]*jobState{j(StatusSuccess, false), j(StatusManual, false)}, false, StatusManual},
		{[]*jobState{j(StatusSuccess, false), j(StatusManual, true)}, true, StatusSkipped},
		{[]*jobState{j(StatusSkipped, false), j(StatusSuccess, false)}, false, StatusSuccess},
		{[]*jobState{j(StatusSkipped, false), j(StatusSuccess, false)}, true, StatusSkipped},
		{[]*jobState{j(StatusSkipped, false)}, false, StatusSkipped},
		{[]*jobState{j(StatusCanceled, false), j(StatusSuccess, false)}, false, StatusCanceled},
		{[]*jobState{j(StatusCanceled, true), j(StatusSuccess, false)}, false, StatusSuccess},
		{[]*jobState{j(StatusPending, false), j(StatusCreated, false)}, false, StatusPending},
		{[]*jobState{j(StatusRunning, false), j(StatusFailed, false)}, false, StatusRunning},
		{[]*jobState{j(StatusSuccess, false), j(StatusCreated, false)}, false, StatusRunning},
		{[]*jobState{j(StatusScheduled, false), j(StatusSuccess, false)}, false, StatusScheduled},
		{[]*jobState{j(StatusFailed, false), j(StatusCanceled, false)}, false, StatusFailed},
	}
	for i, tc := range tests {
		if got := compositeStatus(tc.jobs, tc.dag); got != tc.want {
			t.Errorf("%d: composite = %q, want %q", i, got, tc.want)
		}
	}
}

func TestAutoRetryAllowed(t *testing.T) {
	t.Parallel()
	tests := []struct {
		retry  ciyaml.Retry
		reason gitlab.FailureReason
		code   int
		count  int
		want   bool
	}{
		{ciyaml.Retry{}, "script_failure", 1, 0, false},
		{ciyaml.Retry{Max: 2}, "script_failure", 1, 0, true},
		{ciyaml.Retry{Max: 2}, "script_failure", 1, 2, false},
		{ciyaml.Retry{Max: 2, When: []string{"always"}}, "api_failure", 1, 1, true},
		{ciyaml.Retry{Max: 2, When: []string{"stuck_or_timeout_failure"}}, "stuck_or_timeout_failure", 0, 0, true},
		{ciyaml.Retry{Max: 2, When: []string{"stuck_or_timeout_failure"}}, "job_execution_timeout", 0, 0, false},
		{ciyaml.Retry{Max: 2, When: []string{"job_execution_timeout"}}, "job_execution_timeout", 0, 0, true},
		{ciyaml.Retry{Max: 2, When: []string{"unknown_failure"}}, "unknown_failure", 0, 0, true},
		{ciyaml.Retry{Max: 2, ExitCodes: []int{137}}, "script_failure", 137, 0, true},
		{ciyaml.Retry{Max: 2, ExitCodes: []int{137}}, "script_failure", 1, 0, false},
		{ciyaml.Retry{Max: 2, When: []string{"runner_system_failure"}, ExitCodes: []int{137}}, "runner_system_failure", 0, 0, true},
		{ciyaml.Retry{Max: 2, When: []string{"runner_system_failure"}, ExitCodes: []int{137}}, "script_failure", 137, 0, true},
		{ciyaml.Retry{Max: 2}, "missing_dependency_failure", 0, 0, false},
		{ciyaml.Retry{}, "scheduler_failure", 0, 1, true},
		{ciyaml.Retry{}, "scheduler_failure", 0, 2, false},
	}
	for i, tc := range tests {
		j := &jobState{def: &ciyaml.Job{Retry: tc.retry}, reason: tc.reason, exitCode: tc.code}
		if got := autoRetryAllowed(j, tc.count); got != tc.want {
			t.Errorf("%d: %+v %s/%d after %d retries = %v, want %v", i, tc.retry, tc.reason, tc.code, tc.count, got, tc.want)
		}
	}
}

func TestDependencySelection(t *testing.T) {
	t.Parallel()
	ci := "stages: [build, test, deploy]\na: {stage: build, script: x}\nb: {stage: build, script: x}\nc: {stage: test, script: x}\nd: {stage: deploy, script: x}\n"
	tests := []struct {
		name  string
		tweak func(d *ciyaml.Job)
		want  []string
	}{
		{"earlier stages", func(d *ciyaml.Job) {}, []string{"a", "b", "c"}},
		{"dependencies", func(d *ciyaml.Job) { d.Dependencies = []string{"b"} }, []string{"b"}},
		{"dependencies: []", func(d *ciyaml.Job) { d.Dependencies = []string{} }, nil},
		{"needs with artifacts", func(d *ciyaml.Job) {
			d.Needs = []ciyaml.Need{{Job: "a", Artifacts: true}, {Job: "c", Artifacts: false}}
		}, []string{"a"}},
		{"needs narrowed by dependencies", func(d *ciyaml.Job) {
			d.Needs = []ciyaml.Need{{Job: "a", Artifacts: true}, {Job: "b", Artifacts: true}}
			d.Dependencies = []string{"b"}
		}, []string{"b"}},
		{"needs: []", func(d *ciyaml.Job) { d.Needs = []ciyaml.Need{} }, nil},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			s, _, _ := setup(t, Options{}, ci)
			tweakJobs(s, func(j map[string]*ciyaml.Job) { tc.tweak(j["d"]) })
			pl, err := s.CreatePipeline("group/demo", "main")
			if err != nil {
				t.Fatal(err)
			}
			s.mu.Lock()
			var got []string
			for _, o := range s.dependencyJobsLocked(s.jobs[pl.Jobs["d"]]) {
				got = append(got, o.def.Name)
			}
			s.mu.Unlock()
			if !slices.Equal(got, tc.want) {
				t.Errorf("dependencies = %v, want %v", got, tc.want)
			}
		})
	}
}

func TestGlob(t *testing.T) {
	t.Parallel()
	tests := []struct {
		glob, path string
		want       bool
	}{
		{"*.go", "main.go", true},
		{"*.go", "cmd/main.go", false},
		{"**/*.go", "main.go", true},
		{"**/*.go", "a/b/main.go", true},
		{"src/**", "src/a/b", true},
		{"src/*", "src/a/b", false},
		{"{a,b}/x", "b/x", true},
		{"file?.txt", "file1.txt", true},
		{"file[0-9].txt", "filex.txt", false},
		{".env*", ".env.local", true},
		{"docs/**/*.md", "docs/x.md", true},
	}
	for _, tc := range tests {
		re, err := globRegexp(tc.glob)
		if err != nil {
			t.Fatal(err)
		}
		if got := re.MatchString(tc.path); got != tc.want {
			t.Errorf("%s ~ %s = %v, want %v", tc.glob, tc.path, got, tc.want)
		}
	}
	if _, err := globRegexp("{a,b"); err == nil {
		t.Error("unterminated { accepted")
	}
}

// TestYAMLPipeline runs keywords through the real parser; it skips while
// the parser does not read them yet.
func TestYAMLPipeline(t *testing.T) {
	t.Parallel()
	ci := `
stages: [build, test, deploy]
build:
  stage: build
  script: x
  artifacts:
    paths: [out/]
    reports:
      dotenv: build.env
lint:
  stage: build
  script: x
unit:
  stage: test
  needs: [build]
  script: x
  retry:
    max: 1
    when: script_failure
deploy:
  stage: deploy
  script: x
  when: manual
  allow_failure: false
`
	cfg, err := ciyaml.Parse(".gitlab-ci.yml", []byte(ci))
	if err != nil {
		t.Fatal(err)
	}
	if u := cfg.Job("unit"); u == nil || u.Needs == nil || u.Retry.Max == 0 || cfg.Job("build").Artifacts == nil {
		t.Fatal("ciyaml did not read needs, retry or artifacts")
	}
	s, c, tok := setup(t, Options{}, ci)
	pl, err := s.CreatePipeline("group/demo", "main")
	if err != nil {
		t.Fatal(err)
	}
	if got := statuses(s, pl.ID); got != "build=pending lint=pending unit=created deploy=created" {
		t.Fatalf("jobs: %s", got)
	}
	p := c.payload(c.requestJob(tok, "", nil))
	if p.JobInfo.Name != "build" || len(p.Artifacts) != 2 || p.Artifacts[1].Type != "dotenv" {
		t.Fatalf("build payload artifacts = %+v", p.Artifacts)
	}
	c.update(p.ID, p.Token, "success", finalOK(""))
	if got := statuses(s, pl.ID); got != "build=success lint=pending unit=pending deploy=created" {
		t.Fatalf("needs: %s", got)
	}
	runJob(t, s, pl.ID, "unit", StatusFailed, "script_failure", 1)
	runJob(t, s, pl.ID, "unit", StatusSuccess, "", 0)
	runJob(t, s, pl.ID, "lint", StatusSuccess, "", 0)
	v, err := s.WaitPipeline(ctxT(t), pl.ID)
	if err != nil || v.Status != StatusManual {
		t.Fatalf("pipeline = %s (%v), want manual (blocked by deploy)", v.Status, err)
	}
}

package job

import (
	"bytes"
	"context"
	"errors"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/podrunner/podrunner/internal/gitlab"
)

func testPayload(steps ...Step) *Payload {
	return &Payload{
		ID: 1, Token: "tok", RunnerInfo: RunnerInfo{Timeout: 60},
		GitInfo: GitInfo{RepoURL: "https://u:p@example.com/g/p.git", Ref: "main", Sha: "0123456789abcdef"},
		Steps:   steps,
	}
}

func testPlan(t *testing.T, p *Payload) *Plan {
	t.Helper()
	vars, err := BuildVariables(p, RunnerEnv{BuildsDir: "/b", ProjectDir: "/b/p"})
	if err != nil {
		t.Fatal(err)
	}
	plan, err := NewPlan(t.Context(), p, vars, ScriptOptions{})
	if err != nil {
		t.Fatal(err)
	}
	return plan
}

func stageNames(p *Plan) []string {
	var n []string
	for _, s := range p.Stages {
		n = append(n, s.Name)
	}
	return n
}

func TestPlanStages(t *testing.T) {
	p := testPayload(
		Step{Name: StepScript, Script: []string{"echo hi"}, When: WhenOnSuccess},
		Step{Name: StepRelease, Script: []string{"echo rel"}, When: WhenOnSuccess},
		Step{Name: StepAfterScript, Script: []string{"echo after"}, When: WhenAlways, AllowFailure: true},
	)
	p.Artifacts = []Artifact{{Paths: []string{"out"}}}
	plan := testPlan(t, p)
	got := strings.Join(stageNames(plan), ",")
	want := "get_sources,step_script,step_release,after_script,upload_artifacts_on_success,upload_artifacts_on_failure,cleanup_file_variables"
	if got != want {
		t.Fatalf("stages %s\nwant   %s", got, want)
	}
	if plan.Timeout != 60*time.Second || plan.Stages[3].Timeout != DefaultAfterScriptTimeout {
		t.Errorf("timeouts: job %v after %v", plan.Timeout, plan.Stages[3].Timeout)
	}
	if strings.Contains(plan.Stages[0].Script, "u:p@") == false {
		t.Error("get_sources must use the URL with credentials")
	}
	if !strings.Contains(plan.Stages[0].Script, "Fetching changes from https://example.com/g/p.git") {
		t.Error("the URL is displayed without credentials")
	}
}

func TestPlanErrors(t *testing.T) {
	for _, tc := range []struct{ key, val, want string }{
		{"GIT_STRATEGY", "copy", "GIT_STRATEGY"},
		{"GIT_DEPTH", "deep", "GIT_DEPTH"},
		{"GIT_SUBMODULE_STRATEGY", "all", "GIT_SUBMODULE_STRATEGY"},
		{"GIT_CHECKOUT", "maybe", "GIT_CHECKOUT"},
	} {
		p := testPayload(Step{Name: StepScript, Script: []string{"true"}})
		p.Variables = Variables{{Key: tc.key, Value: tc.val}}
		vars, _ := BuildVariables(p, RunnerEnv{ProjectDir: "/b/p"})
		if _, err := NewPlan(t.Context(), p, vars, ScriptOptions{}); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s=%s: err %v", tc.key, tc.val, err)
		}
	}
	p := testPayload(Step{Name: StepScript, Script: []string{"true"}})
	vars, _ := BuildVariables(p, RunnerEnv{ProjectDir: "relative"})
	if _, err := NewPlan(t.Context(), p, vars, ScriptOptions{}); err == nil {
		t.Error("relative CI_PROJECT_DIR accepted")
	}
}

// fakeRun runs stages by name from a table of behaviours.
type fakeRun struct {
	mu    sync.Mutex
	ran   []string
	codes map[string]int
	errs  map[string]error
	block map[string]bool // wait for ctx
	seen  map[string]Stage
}

func (f *fakeRun) run(ctx context.Context, st Stage, w io.Writer) (int, error) {
	f.mu.Lock()
	f.ran = append(f.ran, st.Name)
	if f.seen == nil {
		f.seen = map[string]Stage{}
	}
	f.seen[st.Name] = st
	f.mu.Unlock()
	if f.block[st.Name] {
		<-ctx.Done()
		return 143, nil
	}
	return f.codes[st.Name], f.errs[st.Name]
}

func (f *fakeRun) names() string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return strings.Join(f.ran, ",")
}

func stdPayload() *Payload {
	return testPayload(
		Step{Name: StepScript, Script: []string{"x"}, When: WhenOnSuccess},
		Step{Name: StepAfterScript, Script: []string{"y"}, When: WhenAlways, AllowFailure: true},
	)
}

func TestExecuteSemantics(t *testing.T) {
	tests := []struct {
		name    string
		f       *fakeRun
		payload func() *Payload
		want    Result
		ran     string
		trace   string
	}{
		{name: "success", f: &fakeRun{}, want: Result{Success: true},
			ran: "get_sources,step_script,after_script,cleanup_file_variables", trace: "Job succeeded"},
		{name: "exit 3", f: &fakeRun{codes: map[string]int{"step_script": 3}},
			want: Result{FailureReason: gitlab.ScriptFailure, ExitCode: 3},
			ran:  "get_sources,step_script,after_script,cleanup_file_variables", trace: "ERROR: Job failed: exit code 3"},
		{name: "after_script failure ignored", f: &fakeRun{codes: map[string]int{"after_script": 9}},
			want: Result{Success: true}, ran: "get_sources,step_script,after_script,cleanup_file_variables",
			trace: "after_script failed, but job will continue unaffected: exit code 9"},
		{name: "get_sources fails: no user script, no after_script",
			f:    &fakeRun{codes: map[string]int{"get_sources": 128}},
			want: Result{FailureReason: gitlab.ScriptFailure, ExitCode: 128}, ran: "get_sources,cleanup_file_variables"},
		{name: "executor error", f: &fakeRun{errs: map[string]error{"step_script": errors.New("boom")}},
			want: Result{FailureReason: gitlab.RunnerSystemFailure},
			ran:  "get_sources,step_script,after_script,cleanup_file_variables", trace: "boom"},
		{name: "failure skips later success stages, runs on_failure ones",
			f: &fakeRun{codes: map[string]int{"step_script": 1}},
			payload: func() *Payload {
				p := stdPayload()
				p.Steps = append(p.Steps, Step{Name: StepRelease, Script: []string{"r"}, When: WhenOnSuccess})
				p.Artifacts = []Artifact{{Paths: []string{"a"}}}
				return p
			},
			want: Result{FailureReason: gitlab.ScriptFailure, ExitCode: 1},
			ran:  "get_sources,step_script,after_script,upload_artifacts_on_failure,cleanup_file_variables"},
		{name: "allowed failure", f: &fakeRun{codes: map[string]int{"step_script": 2}},
			payload: func() *Payload {
				p := stdPayload()
				p.Steps[0].AllowFailure = true
				return p
			},
			want: Result{Success: true}, ran: "get_sources,step_script,after_script,cleanup_file_variables"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := stdPayload()
			if tt.payload != nil {
				p = tt.payload()
			}
			plan := testPlan(t, p)
			var trace bytes.Buffer
			res := plan.Execute(context.Background(), nil, &trace, tt.f.run)
			if res.Success != tt.want.Success || res.FailureReason != tt.want.FailureReason || res.ExitCode != tt.want.ExitCode {
				t.Errorf("result %+v, want %+v", res, tt.want)
			}
			if got := tt.f.names(); got != tt.ran {
				t.Errorf("ran %s, want %s", got, tt.ran)
			}
			if !strings.Contains(trace.String(), tt.trace) {
				t.Errorf("trace lacks %q:\n%s", tt.trace, trace.String())
			}
			if !strings.Contains(trace.String(), "section_start:") || !strings.Contains(trace.String(), "section_end:") {
				t.Errorf("no sections in trace:\n%s", trace.String())
			}
		})
	}
}

func TestExecuteJobStatusForAfterScript(t *testing.T) {
	f := &fakeRun{codes: map[string]int{"step_script": 1}}
	testPlan(t, stdPayload()).Execute(context.Background(), nil, io.Discard, f.run)
	if s := f.seen["after_script"].Script; !strings.Contains(s, "CI_JOB_STATUS=failed;") {
		t.Errorf("after_script does not get CI_JOB_STATUS=failed:\n%s", s)
	}
	if s := f.seen["step_script"].Script; !strings.Contains(s, "CI_JOB_STATUS=running;") {
		t.Errorf("step_script does not get CI_JOB_STATUS=running")
	}
}

func TestExecuteGracefulCancel(t *testing.T) {
	f := &fakeRun{block: map[string]bool{"step_script": true}}
	cancel := make(chan struct{})
	go func() {
		for !strings.Contains(f.names(), "step_script") {
			time.Sleep(5 * time.Millisecond)
		}
		close(cancel)
	}()
	var trace bytes.Buffer
	res := testPlan(t, stdPayload()).Execute(context.Background(), cancel, &trace, f.run)
	if res.Success || res.FailureReason != gitlab.JobCanceled {
		t.Errorf("result %+v", res)
	}
	if f.names() != "get_sources,step_script,after_script,cleanup_file_variables" {
		t.Errorf("ran %s", f.names())
	}
	if !strings.Contains(f.seen["after_script"].Script, "CI_JOB_STATUS=canceled;") {
		t.Error("after_script should see CI_JOB_STATUS=canceled")
	}
	for _, s := range []string{"script canceled externally (UI, API)", "ERROR: Job failed: canceled"} {
		if !strings.Contains(trace.String(), s) {
			t.Errorf("trace lacks %q", s)
		}
	}
}

func TestExecuteJobTimeout(t *testing.T) {
	f := &fakeRun{block: map[string]bool{"step_script": true}}
	plan := testPlan(t, stdPayload())
	plan.Timeout = 100 * time.Millisecond
	var trace bytes.Buffer
	res := plan.Execute(context.Background(), nil, &trace, f.run)
	if res.FailureReason != gitlab.JobExecutionTimeout {
		t.Errorf("result %+v", res)
	}
	if f.names() != "get_sources,step_script,after_script,cleanup_file_variables" {
		t.Errorf("ran %s", f.names())
	}
	if !strings.Contains(trace.String(), "execution took longer than 100ms seconds") {
		t.Errorf("trace:\n%s", trace.String())
	}
}

func TestExecuteStageTimeout(t *testing.T) {
	f := &fakeRun{block: map[string]bool{"step_script": true}}
	p := stdPayload()
	p.Variables = Variables{{Key: "RUNNER_SCRIPT_TIMEOUT", Value: "50ms"}}
	res := testPlan(t, p).Execute(context.Background(), nil, io.Discard, f.run)
	if res.FailureReason != gitlab.JobExecutionTimeout || !strings.Contains(f.names(), "after_script") {
		t.Errorf("result %+v ran %s", res, f.names())
	}
}

func TestExecuteAfterScriptTimeout(t *testing.T) {
	f := &fakeRun{block: map[string]bool{"after_script": true}}
	p := stdPayload()
	p.Variables = Variables{{Key: "RUNNER_AFTER_SCRIPT_TIMEOUT", Value: "50ms"}}
	var trace bytes.Buffer
	res := testPlan(t, p).Execute(context.Background(), nil, &trace, f.run)
	if !res.Success {
		t.Errorf("after_script timeout must not fail the job: %+v", res)
	}
	if !strings.Contains(trace.String(), "after_script failed, but job will continue unaffected: execution took longer than 50ms") {
		t.Errorf("trace:\n%s", trace.String())
	}
}

func TestExecuteAbort(t *testing.T) {
	f := &fakeRun{block: map[string]bool{"step_script": true}}
	ctx, cancel := context.WithCancel(context.Background())
	go func() {
		for !strings.Contains(f.names(), "step_script") {
			time.Sleep(5 * time.Millisecond)
		}
		cancel()
	}()
	res := testPlan(t, stdPayload()).Execute(ctx, nil, io.Discard, f.run)
	if !res.Aborted || res.FailureReason != gitlab.JobCanceled {
		t.Errorf("result %+v", res)
	}
	if f.names() != "get_sources,step_script" {
		t.Errorf("abort must stop at once, ran %s", f.names())
	}
}

// runSh runs a stage script with a real shell, like an executor would.
func runSh(t *testing.T, shell string, st Stage, dir string) (string, int) {
	t.Helper()
	path, err := exec.LookPath(shell)
	if err != nil {
		t.Skipf("%s not installed", shell)
	}
	file := filepath.Join(t.TempDir(), st.Name)
	if err := os.WriteFile(file, []byte(st.Script), 0o600); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(path, file)
	cmd.Dir = dir
	out, err := cmd.CombinedOutput()
	var ee *exec.ExitError
	if err != nil && !errors.As(err, &ee) {
		t.Fatal(err)
	}
	return string(out), cmd.ProcessState.ExitCode()
}

func TestStepScriptWithRealShell(t *testing.T) {
	for _, shell := range []string{"sh", "bash"} {
		t.Run(shell, func(t *testing.T) {
			dir := t.TempDir()
			p := testPayload(Step{Name: StepScript, When: WhenOnSuccess, Script: []string{
				"echo one",
				"if true; then\n  echo multi\nfi",
				`echo "$SECRET|$PUB|$(cat "$FILEVAR")|$RAW"`,
				"false || echo recovered",
				"exit 3",
				"echo never",
			}})
			p.Variables = Variables{
				{Key: "SECRET", Value: "it's \"quoted\" $x `id` \n line2", Masked: true, Raw: true},
				{Key: "PUB", Value: "✅ 동작", Public: true},
				{Key: "FILEVAR", Value: "file-content\n", File: true},
				{Key: "RAW", Value: "$PUB", Raw: true},
				{Key: "1BAD", Value: "skipped"},
			}
			vars, err := BuildVariables(p, RunnerEnv{BuildsDir: dir, ProjectDir: dir + "/proj"})
			if err != nil {
				t.Fatal(err)
			}
			plan, err := NewPlan(t.Context(), p, vars, ScriptOptions{Shell: shell, PreBuildScript: "echo pre", PostBuildScript: "echo post"})
			if err != nil {
				t.Fatal(err)
			}
			if err := os.MkdirAll(dir+"/proj", 0o755); err != nil {
				t.Fatal(err)
			}
			var step Stage
			for _, s := range plan.Stages {
				if s.Name == StageStepScript {
					step = s
				}
			}
			out, code := runSh(t, shell, step, dir)
			if code != 3 {
				t.Errorf("exit code %d, want 3\n%s", code, out)
			}
			for _, want := range []string{
				"\x1b[32;1m$ echo pre\x1b[0;m\npre\n",
				"\x1b[32;1m$ echo one\x1b[0;m\none\n",
				"$ if true; then # collapsed multi-line command\x1b[0;m\nmulti\n",
				"it's \"quoted\" $x `id` \n line2|✅ 동작|file-content|$PUB\n",
				"recovered\n",
				"$ exit 3",
			} {
				if !strings.Contains(out, want) {
					t.Errorf("output lacks %q:\n%s", want, out)
				}
			}
			if strings.Contains(out, "never") || strings.Contains(out, "post") {
				t.Errorf("ran past the failing command:\n%s", out)
			}
			if b, err := os.ReadFile(dir + "/proj.tmp/FILEVAR"); err != nil || string(b) != "file-content\n" {
				t.Errorf("file variable file: %q %v", b, err)
			}
			// cleanup removes it
			out, code = runSh(t, shell, plan.Stages[len(plan.Stages)-1], dir)
			if code != 0 {
				t.Fatalf("cleanup: %d %s", code, out)
			}
			if _, err := os.Stat(dir + "/proj.tmp/FILEVAR"); !os.IsNotExist(err) {
				t.Errorf("file variable not cleaned up: %v", err)
			}
		})
	}
}

func TestPipefailWithBash(t *testing.T) {
	dir := t.TempDir()
	p := testPayload(Step{Name: StepScript, Script: []string{"false | true", "echo after-pipe"}})
	vars, _ := BuildVariables(p, RunnerEnv{BuildsDir: dir, ProjectDir: dir})
	plan, err := NewPlan(t.Context(), p, vars, ScriptOptions{Shell: "bash"})
	if err != nil {
		t.Fatal(err)
	}
	out, code := runSh(t, "bash", plan.Stages[1], dir)
	if code != 1 || strings.Contains(out, "after-pipe") {
		t.Errorf("pipefail not in effect: code %d\n%s", code, out)
	}
}

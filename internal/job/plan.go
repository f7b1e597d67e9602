package job

import (
	"context"
	"errors"
	"fmt"
	"io"
	"path"
	"strings"
	"sync"
	"time"

	"github.com/podrunner/podrunner/internal/gitlab"
	"github.com/podrunner/podrunner/internal/trace"
)

// Defaults for stage timeouts.
const (
	DefaultAfterScriptTimeout = 5 * time.Minute
	// DefaultFailureStageTimeout bounds stages that run after the job
	// already failed or timed out (artifact uploads on failure, cleanup),
	// since the job timeout no longer applies to them.
	DefaultFailureStageTimeout = 5 * time.Minute
)

// StageKind says how the sequencer treats a stage.
type StageKind string

const (
	// KindSystem stages prepare or finish the job (sources, cache,
	// artifacts); their failure fails the job.
	KindSystem StageKind = "system"
	// KindUser stages run the job's steps (step_script, step_<name>).
	KindUser StageKind = "user"
	// KindAfterScript runs after the user stages whatever their result,
	// with its own timeout; its failure does not change the result.
	KindAfterScript StageKind = "after_script"
	// KindCleanup always runs last; its failure does not change the result.
	KindCleanup StageKind = "cleanup"
)

// Stage names as GitLab Runner uses them (also the section names).
const (
	StageGetSources           = "get_sources"
	StageRestoreCache         = "restore_cache"
	StageDownloadArtifacts    = "download_artifacts"
	StageStepScript           = "step_script"
	StageAfterScript          = "after_script"
	StageArchiveCache         = "archive_cache"
	StageArchiveCacheOnFail   = "archive_cache_on_failure"
	StageUploadArtifactsOK    = "upload_artifacts_on_success"
	StageUploadArtifactsFail  = "upload_artifacts_on_failure"
	StageCleanupFileVariables = "cleanup_file_variables"
)

// Stage is one script the job runs.
type Stage struct {
	Name   string    `json:"name"`   // stage and section name, also the script's file name
	Title  string    `json:"title"`  // header line shown in the trace
	Kind   StageKind `json:"kind"`   // how failures count
	When   string    `json:"when"`   // on_success, on_failure or always
	Script string    `json:"script"` // complete shell script; empty: nothing to run
	// Timeout bounds this stage; 0 means only the job timeout applies.
	Timeout      time.Duration `json:"timeout"`
	AllowFailure bool          `json:"allow_failure"`
	// PreScript and PostScript are set on get_sources only: the pre and
	// post get-sources hooks (runner config and job hooks) as complete
	// scripts of their own, empty when there is none. Script already holds
	// them; they are for a runner that fetches the sources itself instead
	// of running Script (the in-pod agent). PostScript runs in ProjectDir.
	PreScript  string `json:"pre_script,omitempty"`
	PostScript string `json:"post_script,omitempty"`
}

// WithJobStatus returns the stage with CI_JOB_STATUS set to status
// (success, failed, canceled) in its script.
func (s Stage) WithJobStatus(status string) Stage {
	s.Script = strings.Replace(s.Script, statusLine, "\nCI_JOB_STATUS="+quote(status)+"; export CI_JOB_STATUS\n", 1)
	return s
}

// Plan is the ordered list of stages of one job. It is plain data (it can
// be serialised and executed elsewhere, e.g. by an agent in a pod).
type Plan struct {
	JobID  int64   `json:"job_id"`
	Stages []Stage `json:"stages"`
	// Timeout is the job timeout (runner_info.timeout, default 2 h).
	Timeout time.Duration `json:"timeout"`
	// Shell the scripts were written for ("bash" or "sh").
	Shell string `json:"shell"`
	// ProjectDir is CI_PROJECT_DIR and TempDir the job's temporary
	// directory (file variables).
	ProjectDir string `json:"project_dir"`
	TempDir    string `json:"temp_dir"`
	// Warnings are printed to the trace when the plan starts.
	Warnings []string `json:"warnings,omitempty"`
	// secrets are values in the scripts the trace must hide (the
	// signatures of pre-signed cache URLs); Prepare adds them to the mask.
	secrets []string
}

// NewPlan builds the stages of a job. vars are the job's expanded variables
// (BuildVariables); they must hold an absolute CI_PROJECT_DIR. Errors are
// about the job's settings (bad GIT_STRATEGY …) and say what to change.
// ctx bounds what the cache store's URL signer may ask of the network.
func NewPlan(ctx context.Context, p *Payload, vars Variables, opts ScriptOptions) (*Plan, error) {
	dir := vars.Get("CI_PROJECT_DIR")
	if !path.IsAbs(dir) || path.Clean(dir) == "/" {
		return nil, fmt.Errorf("CI_PROJECT_DIR %q must be an absolute directory below /", dir)
	}
	for _, v := range vars {
		if strings.IndexByte(v.Value, 0) >= 0 {
			return nil, fmt.Errorf("variable %s: value contains a NUL byte, which cannot be passed to a shell", v.Key)
		}
	}
	for _, s := range []string{opts.PreGetSourcesScript, opts.PostGetSourcesScript, opts.PreBuildScript, opts.PostBuildScript} {
		if strings.IndexByte(s, 0) >= 0 {
			return nil, errors.New("a pre/post script of the runner config contains a NUL byte")
		}
	}
	shell := opts.Shell
	switch shell {
	case "":
		shell = "sh"
	case "sh", "bash":
	default:
		return nil, fmt.Errorf("shell %q is not supported: use bash or sh", shell)
	}
	timeout := time.Duration(p.RunnerInfo.Timeout) * time.Second
	if timeout <= 0 {
		timeout = DefaultTimeoutSeconds * time.Second
	}
	plan := &Plan{JobID: p.ID, Timeout: timeout, Shell: shell, ProjectDir: dir, TempDir: vars.Get(TempProjectDirKey)}

	src, err := gitSources(p, vars, opts)
	if err != nil {
		return nil, err
	}
	var w scriptWriter
	w.getSources(p, vars, src, opts)
	pre, post := sourceHooks(p, vars, src, opts, shell)
	plan.add(Stage{Name: StageGetSources, Title: "Getting source from Git repository", Kind: KindSystem, When: WhenOnSuccess,
		Script: w.finish(shell), PreScript: pre, PostScript: post})

	for _, st := range restoreCacheStages(ctx, p, vars, opts, shell, timeout, &plan.secrets) {
		plan.add(st)
	}
	for _, st := range downloadArtifactsStages(p, vars, opts, shell) {
		plan.add(st)
	}

	scriptTimeout, warn := durationVar(vars, "RUNNER_SCRIPT_TIMEOUT", 0)
	plan.warn(warn)
	afterTimeout, warn := durationVar(vars, "RUNNER_AFTER_SCRIPT_TIMEOUT", DefaultAfterScriptTimeout)
	plan.warn(warn)

	var after *Step
	for i := range p.Steps {
		st := p.Steps[i]
		if st.Name == StepAfterScript {
			after = &p.Steps[i]
			continue
		}
		var w scriptWriter
		w.exports(vars)
		w.command("cd", dir)
		if st.Name == StepScript {
			w.commands(configScript(opts.PreBuildScript)...)
			w.commands(st.Script...)
			w.commands(configScript(opts.PostBuildScript)...)
		} else {
			w.commands(st.Script...)
		}
		name := "step_" + st.Name
		t := scriptTimeout
		if st.Timeout > 0 && (t == 0 || time.Duration(st.Timeout)*time.Second < t) {
			t = time.Duration(st.Timeout) * time.Second
		}
		when := st.When
		if when == "" {
			when = WhenOnSuccess
		}
		plan.add(Stage{Name: name, Title: fmt.Sprintf("Executing %q stage of the job script", name), Kind: KindUser,
			When: when, Script: w.finish(shell), Timeout: t, AllowFailure: st.AllowFailure})
	}
	if after != nil && len(after.Script) > 0 {
		var w scriptWriter
		w.exports(vars)
		w.command("cd", dir)
		w.notice("Running after script...")
		w.commands(after.Script...)
		plan.add(Stage{Name: StageAfterScript, Title: "Running after_script", Kind: KindAfterScript,
			When: WhenAlways, Script: w.finish(shell), Timeout: afterTimeout, AllowFailure: true})
	}
	for _, st := range archiveCacheStages(ctx, p, vars, opts, shell, timeout, &plan.secrets) {
		plan.add(st)
	}
	for _, st := range uploadArtifactsStages(p, vars, opts, shell) {
		plan.add(st)
	}

	var c scriptWriter
	x := vars.index()
	for i, v := range vars {
		if v.File && ValidName(v.Key) && x.isLast(i) {
			c.command("rm", "-f", x.filePath(v.Key))
		}
	}
	c.line(":")
	plan.add(Stage{Name: StageCleanupFileVariables, Title: "Cleaning up project directory and file based variables",
		Kind: KindCleanup, When: WhenAlways, Script: c.finish(shell), AllowFailure: true})
	return plan, nil
}

func (p *Plan) add(s Stage) { p.Stages = append(p.Stages, s) }

func (p *Plan) warn(w string) {
	if w != "" {
		p.Warnings = append(p.Warnings, w)
	}
}

// durationVar reads a Go duration ("10m") or plain seconds from a variable.
func durationVar(vars Variables, key string, def time.Duration) (time.Duration, string) {
	s := strings.TrimSpace(vars.Get(key))
	if s == "" {
		return def, ""
	}
	if d, err := time.ParseDuration(s); err == nil && d > 0 {
		return d, ""
	}
	var secs int
	if _, err := fmt.Sscanf(s, "%d", &secs); err == nil && fmt.Sprint(secs) == s && secs > 0 {
		return time.Duration(secs) * time.Second, ""
	}
	if def == 0 {
		return 0, fmt.Sprintf("%s %q is not a duration (e.g. 10m); ignored", key, s)
	}
	return def, fmt.Sprintf("%s %q is not a duration (e.g. 10m); using %v", key, s, def)
}

// stageContext derives the context a stage runs under.
func stageContext(abort, script context.Context, st Stage, onMainPath bool) (context.Context, context.CancelFunc) {
	if onMainPath {
		if st.Timeout > 0 {
			return context.WithTimeout(script, st.Timeout)
		}
		return context.WithCancel(script)
	}
	t := st.Timeout
	if t <= 0 {
		t = DefaultFailureStageTimeout
	}
	return context.WithTimeout(abort, t)
}

// StageRunner runs one stage's script and returns its exit code. When ctx
// is cancelled it must stop the script (SIGTERM to its processes) and
// return; err is for failures to run the script at all (runner side).
type StageRunner func(ctx context.Context, stage Stage, trace io.Writer) (exitCode int, err error)

// Result is how a job ended.
type Result struct {
	Success       bool
	FailureReason gitlab.FailureReason // empty on success
	ExitCode      int                  // exit code of the failing stage script
	// Aborted is set when ctx was cancelled: the job stopped at once.
	Aborted bool
	// Err is the runner-side error behind a runner_system_failure.
	Err error
}

// Execute runs the stages in order under GitLab Runner's rules and writes
// the stage sections and the final "Job succeeded" / "ERROR: Job failed"
// line to out.
//
//   - A failing stage (non-zero exit) fails the job with script_failure and
//     its exit code (unless the stage allows failure); later on_success
//     stages are skipped, on_failure and always stages run.
//   - after_script runs when a user stage was started, whatever its
//     result, with its own timeout; its failure is only a warning.
//   - gracefulCancel closed: the running stage is stopped (its ctx is
//     cancelled), after_script runs, the result is job_canceled.
//   - The job timeout stops the running stage the same way; the result is
//     job_execution_timeout.
//   - ctx cancelled (abort): no further stage runs; Result.Aborted is set,
//     with reason job_execution_timeout if ctx's deadline passed, else
//     job_canceled (the runner may override it). The "ERROR: Job failed"
//     line is left to the caller when ctx was cancelled with a cause.
//   - A StageRunner error is runner_system_failure.
func (p *Plan) Execute(ctx context.Context, gracefulCancel <-chan struct{}, out io.Writer, run StageRunner) Result {
	now := time.Now
	for _, w := range p.Warnings {
		trace.Warningf(out, "%s", w)
	}
	timeout := p.Timeout
	if timeout <= 0 {
		timeout = DefaultTimeoutSeconds * time.Second
	}
	jobCtx, cancelJob := context.WithTimeout(ctx, timeout)
	defer cancelJob()
	scriptCtx, cancelScript := context.WithCancel(jobCtx)
	defer cancelScript()

	var (
		mu       sync.Mutex
		canceled bool
	)
	isCanceled := func() bool { mu.Lock(); defer mu.Unlock(); return canceled }
	stop := make(chan struct{})
	var wg sync.WaitGroup
	if gracefulCancel != nil {
		wg.Add(1)
		go func() {
			defer wg.Done()
			select {
			case <-gracefulCancel:
				mu.Lock()
				canceled = true
				mu.Unlock()
				cancelScript()
			case <-stop:
			}
		}()
	}
	defer func() { close(stop); wg.Wait() }()

	res := Result{Success: true}
	failed := false
	userStarted := false
	status := func() string {
		switch {
		case !failed:
			return "success"
		case res.FailureReason == gitlab.JobCanceled:
			return "canceled"
		}
		return "failed"
	}
	fail := func(reason gitlab.FailureReason, code int, err error) {
		failed = true
		res = Result{FailureReason: reason, ExitCode: code, Err: err}
	}
	// classify explains why a stage running under scriptCtx stopped,
	// when it was stopped from outside.
	classify := func() bool {
		switch {
		case ctx.Err() != nil:
			return false
		case isCanceled():
			trace.Warningf(out, "script canceled externally (UI, API)")
			fail(gitlab.JobCanceled, 0, nil)
			return true
		case errors.Is(jobCtx.Err(), context.DeadlineExceeded):
			fail(gitlab.JobExecutionTimeout, 0, nil)
			return true
		}
		return false
	}

	for _, st := range p.Stages {
		if ctx.Err() != nil {
			break
		}
		switch {
		case st.Kind == KindAfterScript:
			if !userStarted {
				continue
			}
		case st.When == WhenAlways:
		case st.When == WhenOnFailure:
			if !failed {
				continue
			}
		default:
			if failed {
				continue
			}
		}
		if st.Script == "" {
			continue
		}
		// Stages of the normal path run under the script context (graceful
		// cancel and job timeout stop them); the others, which run after
		// the outcome is known, only under the abort context.
		onMainPath := !failed && (st.Kind == KindSystem || st.Kind == KindUser)
		if onMainPath && scriptCtx.Err() != nil {
			if classify() {
				continue
			}
			break // aborted
		}
		sctx, cancel := stageContext(ctx, scriptCtx, st, onMainPath)
		if st.Kind == KindUser {
			userStarted = true
		}
		io.WriteString(out, trace.SectionStart(now(), st.Name, "", trace.SectionOptions{})+trace.Header(st.Title))
		jobStatus := "running"
		if !onMainPath {
			jobStatus = status()
		}
		code, err := run(sctx, st.WithJobStatus(jobStatus), out)
		stageTimedOut := errors.Is(sctx.Err(), context.DeadlineExceeded) && jobCtx.Err() == nil
		cancel()
		io.WriteString(out, trace.SectionEnd(now(), st.Name))
		if ctx.Err() != nil {
			break
		}
		if !onMainPath {
			if err != nil || code != 0 || stageTimedOut {
				what := fmt.Sprintf("exit code %d", code)
				switch {
				case stageTimedOut:
					what = fmt.Sprintf("execution took longer than %v seconds", st.Timeout)
				case err != nil:
					what = err.Error()
				}
				trace.Warningf(out, "%s failed, but job will continue unaffected: %s", st.Name, what)
			}
			continue
		}
		switch {
		case classify():
		case stageTimedOut:
			fail(gitlab.JobExecutionTimeout, 0, nil)
			res.Err = fmt.Errorf("execution took longer than %v seconds", st.Timeout)
		case err != nil:
			fail(gitlab.RunnerSystemFailure, 0, fmt.Errorf("stage %s: %w", st.Name, err))
		case code != 0 && st.AllowFailure:
			trace.Warningf(out, "%s failed (exit code %d), but failure is allowed", st.Name, code)
		case code != 0:
			fail(gitlab.ScriptFailure, code, nil)
		}
	}

	if ctx.Err() != nil {
		reason := gitlab.JobCanceled
		msg := "canceled"
		if errors.Is(ctx.Err(), context.DeadlineExceeded) {
			reason = gitlab.JobExecutionTimeout
			msg = "execution took longer than the job timeout"
		}
		// A canceller that gave a cause (the runner shutting down) knows
		// better what happened and writes the job's last line itself.
		if cause := context.Cause(ctx); cause == ctx.Err() {
			trace.Errorf(out, "Job failed: %s", msg)
		}
		return Result{FailureReason: reason, Aborted: true, Err: context.Cause(ctx)}
	}
	switch res.FailureReason {
	case "":
		trace.Infof(out, "Job succeeded")
	case gitlab.ScriptFailure:
		trace.Errorf(out, "Job failed: exit code %d", res.ExitCode)
	case gitlab.JobCanceled:
		trace.Errorf(out, "Job failed: canceled")
	case gitlab.JobExecutionTimeout:
		if res.Err != nil {
			trace.Errorf(out, "Job failed: %v", res.Err)
		} else {
			trace.Errorf(out, "Job failed: execution took longer than %v seconds", timeout)
		}
	default:
		trace.Errorf(out, "Job failed (system failure): %v", res.Err)
	}
	return res
}

//go:build unix

// Package shell is the executor that runs jobs as processes on the local
// machine with sh or bash, like GitLab Runner's shell executor.
package shell

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"strings"
	"time"

	"github.com/podrunner/podrunner/internal/executor"
	"github.com/podrunner/podrunner/internal/gitlab"
	"github.com/podrunner/podrunner/internal/job"
	"github.com/podrunner/podrunner/internal/proc"
	"github.com/podrunner/podrunner/internal/trace"
)

// Options configure the executor (the config.toml [[runners]] keys).
type Options struct {
	// BuildsDir is builds_dir; default <working directory>/builds.
	BuildsDir string
	// CacheDir is cache_dir: local caches when CacheStore is nil.
	CacheDir string
	// CacheStore is the remote cache store ([runners.cache]); may be nil.
	CacheStore *job.CacheStore
	// HelperPath is the podrunner binary the job scripts call for
	// artifacts and caches; the running binary when empty.
	HelperPath string
	// Shell is "bash" or "sh"; default bash when installed, else sh.
	Shell       string
	Environment []string // config environment, KEY=VALUE

	PreGetSourcesScript  string
	PostGetSourcesScript string
	// TLSCAFile is the CA bundle the runner trusts for GitLab; jobs get
	// it as CI_SERVER_TLS_CA_FILE.
	TLSCAFile       string
	PreBuildScript  string
	PostBuildScript string

	RunnerToken string // only its short form is used
	RunnerID    int64
	Logger      *slog.Logger
	CloneURL    string

	// RunnerVersion and RunnerRevision fill CI_RUNNER_VERSION/REVISION.
	RunnerVersion  string
	RunnerRevision string
	// TermGrace is the time between SIGTERM and SIGKILL when a stage is
	// stopped (graceful cancel, timeout); default 10 s.
	TermGrace time.Duration
}

// Executor runs jobs with the local shell. It is safe for concurrent Run
// calls: each job has its own directory (per project slot) and temp files.
type Executor struct {
	opts Options
	log  *slog.Logger
}

var _ executor.Executor = (*Executor)(nil)

// New returns a shell executor.
func New(opts Options) *Executor {
	log := opts.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Executor{opts: opts, log: log}
}

// runnerSecrets are environment variables of the runner process that must
// not leak into jobs (registration and runner tokens).
var runnerSecrets = map[string]bool{
	"CI_SERVER_TOKEN": true, "REGISTRATION_TOKEN": true, "RUNNER_TOKEN": true,
	"CI_RUNNER_TOKEN": true,
}

// Run runs one job; see executor.Executor.
func (e *Executor) Run(ctx context.Context, j *executor.Job) (executor.Result, error) {
	p := j.Payload
	out := j.Trace
	if out == nil {
		out = io.Discard
	}
	log := e.log.With("job", p.ID)

	shellName, shellPath, err := e.shell()
	if err != nil {
		return executor.Result{}, err
	}
	buildsDir, err := e.buildsDir()
	if err != nil {
		return executor.Result{}, err
	}
	projectDir, err := ProjectDir(buildsDir, e.opts.RunnerToken, j.ProjectSlot, p)
	if err != nil {
		return executor.Result{}, err
	}

	trace.Section(out, "prepare_executor", `Preparing the "shell" executor`, func() {
		trace.Infof(out, "Using Shell (%s) executor...", shellName)
		if what := unusedImages(p); what != "" {
			// Said in the job's own log: a job that passes here did not
			// run in its image.
			trace.Warningf(out, "%s not used by the shell executor: the job runs on this machine", what)
		}
	})
	host, _ := os.Hostname()
	trace.Section(out, "prepare_script", "Preparing environment", func() {
		fmt.Fprintf(out, "Running on %s...\n", host)
	})

	prep, err := job.Prepare(ctx, p, job.RunnerEnv{
		BuildsDir:           buildsDir,
		ProjectDir:          projectDir,
		ConcurrentID:        j.Slot,
		ConcurrentProjectID: j.ProjectSlot,
		RunnerToken:         e.opts.RunnerToken,
		RunnerVersion:       e.opts.RunnerVersion,
		RunnerRevision:      e.opts.RunnerRevision,
		SharedEnvironment:   true,
		Environment:         e.opts.Environment,
		TLSCAFile:           e.opts.TLSCAFile,
	}, job.ScriptOptions{
		Shell:                shellName,
		PreGetSourcesScript:  e.opts.PreGetSourcesScript,
		PostGetSourcesScript: e.opts.PostGetSourcesScript,
		PreBuildScript:       e.opts.PreBuildScript,
		PostBuildScript:      e.opts.PostBuildScript,
		CloneURL:             e.opts.CloneURL,
		HelperPath:           e.helperPath(),
		CacheDir:             e.opts.CacheDir,
		CacheStore:           e.opts.CacheStore,
	})
	if err != nil {
		return e.configError(out, err), nil
	}
	plan := prep.Plan

	if err := os.MkdirAll(filepath.Dir(projectDir), 0o755); err != nil {
		return executor.Result{}, fmt.Errorf("create builds directory: %w", err)
	}
	// Scripts hold every variable, secrets included: private directory,
	// removed with the job.
	scriptDir, err := os.MkdirTemp("", fmt.Sprintf("podrunner-job-%d-", p.ID))
	if err != nil {
		return executor.Result{}, fmt.Errorf("create script directory: %w", err)
	}
	if j.Tracker != nil {
		j.Tracker.Files(scriptDir, plan.TempDir)
	}
	defer func() {
		if err := os.RemoveAll(scriptDir); err != nil {
			log.Warn("remove script directory", "dir", scriptDir, "err", err)
		}
		// The job's temporary directory (file variables); the project
		// directory itself stays for the next fetch.
		if err := os.RemoveAll(plan.TempDir); err != nil {
			log.Warn("remove job temp directory", "dir", plan.TempDir, "err", err)
		}
	}()

	env := processEnv()
	run := func(sctx context.Context, st job.Stage, w io.Writer) (int, error) {
		file := filepath.Join(scriptDir, st.Name)
		if err := os.WriteFile(file, []byte(st.Script), 0o600); err != nil {
			return -1, fmt.Errorf("write %s script: %w", st.Name, err)
		}
		log.Debug("stage start", "stage", st.Name)
		code, err := proc.Run(sctx, proc.Cmd{
			Path:      shellPath,
			Args:      []string{file},
			Dir:       buildsDir,
			Env:       env,
			Output:    w,
			TermGrace: e.opts.TermGrace,
			Abort:     ctx.Done(),
			Started: func(pgid int) {
				if j.Tracker != nil {
					start, _ := proc.StartTime(pgid)
					j.Tracker.Process(pgid, start)
				}
			},
		})
		log.Debug("stage end", "stage", st.Name, "exit_code", code, "err", err)
		return code, err
	}
	res := plan.Execute(ctx, j.GracefulCancel, out, run)
	log.Info("job finished", "success", res.Success, "failure_reason", res.FailureReason, "exit_code", res.ExitCode, "aborted", res.Aborted)
	if res.FailureReason == gitlab.RunnerSystemFailure && res.Err != nil {
		return executor.Result{FailureReason: res.FailureReason}, res.Err
	}
	return executor.Result{Success: res.Success, FailureReason: res.FailureReason, ExitCode: res.ExitCode}, nil
}

// configError reports a job whose settings cannot be turned into scripts.
func (e *Executor) configError(out io.Writer, err error) executor.Result {
	trace.Errorf(out, "Job failed: %v", err)
	return executor.Result{FailureReason: gitlab.ScriptFailure}
}

func (e *Executor) shell() (name, path string, err error) {
	name = e.opts.Shell
	switch name {
	case "":
		if p, err := exec.LookPath("bash"); err == nil {
			return "bash", p, nil
		}
		name = "sh"
	case "bash", "sh":
	default:
		return "", "", fmt.Errorf("shell %q is not supported by the shell executor: set shell to bash or sh", name)
	}
	p, err := exec.LookPath(name)
	if err != nil {
		return "", "", fmt.Errorf("shell %s not found in PATH: install it or set shell in config.toml: %w", name, err)
	}
	return name, p, nil
}

func (e *Executor) buildsDir() (string, error) {
	d := e.opts.BuildsDir
	if d == "" {
		d = "builds"
	}
	abs, err := filepath.Abs(d)
	if err != nil {
		return "", fmt.Errorf("builds_dir %q: %w", d, err)
	}
	return abs, nil
}

// ProjectDir is where a job's sources go:
// <builds dir>/<short token>/<concurrent project id>/<project full path>.
// The project slot (CI_CONCURRENT_PROJECT_ID) keeps concurrent jobs of one
// project apart while letting later jobs reuse the directory (fetch).
func ProjectDir(buildsDir, runnerToken string, projectSlot int, p *job.Payload) (string, error) {
	full := strings.Trim(p.JobInfo.ProjectFullPath, "/")
	if full == "" {
		full = fmt.Sprintf("project-%d", p.JobInfo.ProjectID)
	}
	clean := path.Clean(full)
	if clean == "." || clean == ".." || strings.HasPrefix(clean, "../") || strings.Contains(clean, "/../") || path.IsAbs(clean) {
		return "", fmt.Errorf("job_info.project_full_path %q is not a relative project path", p.JobInfo.ProjectFullPath)
	}
	short := job.ShortToken(runnerToken)
	if short == "" {
		short = "local"
	}
	if strings.ContainsAny(short, "/\\") || short == "." || short == ".." {
		return "", errors.New("runner token contains a path separator")
	}
	return filepath.Join(buildsDir, short, fmt.Sprint(projectSlot), filepath.FromSlash(clean)), nil
}

// processEnv is the runner's environment minus its own secrets; job
// variables are exported by the scripts themselves.
func processEnv() []string {
	var env []string
	for _, kv := range os.Environ() {
		k, _, _ := strings.Cut(kv, "=")
		if runnerSecrets[k] {
			continue
		}
		env = append(env, kv)
	}
	return env
}

// helperPath is the binary the job scripts call for artifacts and caches:
// this very binary, so that helper and runner versions always match.
func (e *Executor) helperPath() string {
	if e.opts.HelperPath != "" {
		return e.opts.HelperPath
	}
	if p, err := os.Executable(); err == nil {
		return p
	}
	return "podrunner"
}

// unusedImages names the job's image and services ("" when it has none).
func unusedImages(p *job.Payload) string {
	var what []string
	if p.Image.Name != "" {
		what = append(what, "image "+p.Image.Name)
	}
	for _, sv := range p.Services {
		what = append(what, "service "+sv.Name)
	}
	return strings.Join(what, ", ")
}

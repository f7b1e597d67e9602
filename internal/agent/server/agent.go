//go:build unix

package server

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"time"

	"github.com/podrunner/podrunner/internal/agent"
	"github.com/podrunner/podrunner/internal/gitlab"
	"github.com/podrunner/podrunner/internal/job"
	"github.com/podrunner/podrunner/internal/proc"
	"github.com/podrunner/podrunner/internal/trace"
)

// Defaults of Options.
const (
	DefaultLinger = 10 * time.Minute
	// DefaultStopLinger: see Options.StopLinger.
	DefaultStopLinger = 3 * time.Second
	// LogFile is the job log's name in the state directory.
	LogFile = "job.log"
)

// Options configure Run.
type Options struct {
	// Listener serves the API; nil means listen on Spec.Listen (":8765"
	// when empty).
	Listener net.Listener
	// StateDir holds the job log and the stage scripts; default BinDir.
	StateDir string
	// Linger is how long the agent keeps serving after the job ended when
	// the runner does not ack; default DefaultLinger.
	Linger time.Duration
	// StopLinger is how long a stopped agent (its context ended, e.g. by
	// SIGTERM) keeps serving the log's end unless the runner acks first;
	// default DefaultStopLinger.
	StopLinger time.Duration
	// Reap makes the agent reap orphaned processes (set it when running
	// as PID 1).
	Reap bool
	// TermGrace is the time between SIGTERM and SIGKILL when a stage is
	// stopped; 0 means proc.DefaultTermGrace.
	TermGrace time.Duration
	Logger    *slog.Logger

	// mount, when set, installs the API handler on a server Await already
	// runs, instead of Run serving on Listener; the returned func stops
	// that server gracefully (answering the requests in flight).
	mount func(http.Handler) (stop func())
	// held: the spec came on hold (Await): no script runs before the
	// runner says start.
	held bool
}

// ErrAgent wraps the errors of Run that mean the agent itself failed (as
// opposed to the job, whose result is served by the API).
var ErrAgent = errors.New("agent failed")

// Run runs the job of spec and serves the API until the runner acked the
// end, Linger passed after the end, or ctx ended (ctx ending also aborts a
// running job). An ack received while the job runs (typically after an
// abort) makes Run return as soon as the job ended. It returns nil when the job ran, whatever its result, and
// an error when the agent could not do its work (no shell, files not
// writable, API not served); the API still serves the failure as a
// runner_system_failure when it could be started.
func Run(ctx context.Context, spec *agent.Spec, opts Options) error {
	if err := spec.Validate(); err != nil {
		return fmt.Errorf("%w: %w", ErrAgent, err)
	}
	a := &jobRun{spec: spec, opts: opts, log: opts.Logger}
	if a.log == nil {
		a.log = slog.New(slog.DiscardHandler)
	}
	if a.opts.StateDir == "" {
		a.opts.StateDir = agent.BinDir
	}
	if a.opts.Linger <= 0 {
		a.opts.Linger = DefaultLinger
	}
	if a.opts.StopLinger <= 0 {
		a.opts.StopLinger = DefaultStopLinger
	}
	return a.run(ctx)
}

type jobRun struct {
	spec   *agent.Spec
	opts   Options
	log    *slog.Logger
	jl     *jobLog
	ctl    *controls
	reaper *reaper
	shell  string // path of the shell
	script string // directory of the stage scripts
}

// lockedWriter serialises writes: the sequencer and the stage output copier
// both write, never at once in practice, but the masker must not be
// shared unguarded.
type lockedWriter struct {
	mu sync.Mutex
	w  io.Writer
}

func (l *lockedWriter) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(p)
}

func (a *jobRun) run(ctx context.Context) (err error) {
	start := childrenUsage()
	if err := os.MkdirAll(a.opts.StateDir, 0o700); err != nil {
		return fmt.Errorf("%w: create state directory: %w", ErrAgent, err)
	}
	a.jl, err = openLog(filepath.Join(a.opts.StateDir, LogFile))
	if err != nil {
		return fmt.Errorf("%w: %w", ErrAgent, err)
	}
	a.ctl = newControls()
	if !a.opts.held {
		a.ctl.start()
	}

	handler := (&server{token: []byte(a.spec.Token), log: a.jl, ctl: a.ctl, slog: a.log}).handler()
	served := make(chan error, 1)
	if a.opts.mount != nil {
		stop := a.opts.mount(handler)
		// As below: the requests in flight (the runner's long poll of the
		// log's end) are answered before the log is closed.
		defer func() { stop(); a.jl.close() }()
	} else {
		ln := a.opts.Listener
		if ln == nil {
			addr := a.spec.Listen
			if addr == "" {
				addr = fmt.Sprintf(":%d", agent.DefaultPort)
			}
			ln, err = net.Listen("tcp", addr)
			if err != nil {
				a.jl.close()
				return fmt.Errorf("%w: listen on %s for the agent API: %w", ErrAgent, addr, err)
			}
		}
		srv := &http.Server{
			Handler:           handler,
			ReadHeaderTimeout: 10 * time.Second,
			IdleTimeout:       2 * time.Minute,
			ErrorLog:          slog.NewLogLogger(a.log.Handler(), slog.LevelWarn),
		}
		go func() { served <- srv.Serve(ln) }()
		a.log.Info("agent API listening", "addr", ln.Addr().String())
		defer func() {
			sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			if err := srv.Shutdown(sctx); err != nil {
				srv.Close()
			}
			<-served
			a.jl.close()
		}()
	}

	if a.opts.Reap {
		a.reaper = newReaper()
		rctx, stop := context.WithCancel(context.Background())
		var wg sync.WaitGroup
		wg.Add(1)
		go func() { defer wg.Done(); a.reaper.run(rctx) }()
		defer func() { stop(); wg.Wait() }()
	}

	masker := trace.NewMasker(a.jl, a.spec.Mask.Values, a.spec.Mask.Prefixes)
	out := &lockedWriter{w: masker}
	res, runErr := a.execute(ctx, out)
	res.Stopped = ctx.Err() != nil && !res.Success
	if runErr != nil {
		trace.Errorf(out, "Job failed (system failure): %v", runErr)
		res = agent.Result{FailureReason: gitlab.RunnerSystemFailure}
		runErr = fmt.Errorf("%w: %w", ErrAgent, runErr)
	}
	fmt.Fprint(out, trace.Plain(resourcesLine(start)))
	out.mu.Lock()
	_ = masker.Close()
	out.mu.Unlock()
	a.jl.finish(res)
	a.log.Info("job finished", "success", res.Success, "failure_reason", res.FailureReason, "exit_code", res.ExitCode)

	// Keep serving until the runner has everything.
	linger := time.NewTimer(a.opts.Linger)
	defer linger.Stop()
	select {
	case <-a.ctl.acked:
		a.log.Info("runner acknowledged the end of the job")
	case <-linger.C:
		a.log.Warn("no acknowledgement from the runner; exiting", "linger", a.opts.Linger)
	case <-ctx.Done():
		// Stopped (SIGTERM) with the job's end in the log: the runner may
		// be between two polls of that end. A little more serving lets it
		// take the rest (the pod's grace period allows for it).
		t := time.NewTimer(a.opts.StopLinger)
		defer t.Stop()
		select {
		case <-a.ctl.acked:
		case <-t.C:
		}
	case err := <-served:
		served <- err // for the deferred wait
		a.log.Error("agent API stopped", "err", err)
	}
	return runErr
}

// execute prepares the job and runs its plan. A non-nil error is an agent
// failure; the result then does not count.
func (a *jobRun) execute(ctx context.Context, out io.Writer) (agent.Result, error) {
	var err error
	a.shell, err = findShell()
	if err != nil {
		return agent.Result{}, err
	}
	if err := writeFiles(a.spec.Files); err != nil {
		return agent.Result{}, err
	}
	a.script, err = os.MkdirTemp(a.opts.StateDir, "scripts-")
	if err != nil {
		return agent.Result{}, fmt.Errorf("create script directory: %w", err)
	}
	defer os.RemoveAll(a.script)
	if err := mkdir(a.spec.Plan.ProjectDir); err != nil {
		return agent.Result{}, err
	}

	jobCtx, abort := context.WithCancel(ctx)
	defer abort()
	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		select {
		case <-a.ctl.aborted:
			a.log.Info("job aborted by the runner")
			abort()
		case <-stop:
		}
	}()
	defer func() { close(stop); wg.Wait() }()

	r := a.spec.Plan.Execute(jobCtx, a.ctl.canceled, out, func(sctx context.Context, st job.Stage, w io.Writer) (int, error) {
		return a.stage(sctx, jobCtx.Done(), st, w)
	})
	if r.Err != nil {
		a.log.Warn("job error", "err", r.Err)
	}
	return agent.Result{Success: r.Success, FailureReason: r.FailureReason, ExitCode: r.ExitCode}, nil
}

// stage runs one stage; get_sources is done in Go when the spec says how.
func (a *jobRun) stage(ctx context.Context, abort <-chan struct{}, st job.Stage, w io.Writer) (int, error) {
	dir := a.spec.Plan.ProjectDir
	if err := mkdir(dir); err != nil {
		return -1, err
	}
	src := a.spec.Sources
	if st.Name != job.StageGetSources || src == nil {
		return a.sh(ctx, abort, st.Name, st.Script, w)
	}
	if st.PreScript != "" {
		if code, err := a.sh(ctx, abort, st.Name+"_pre", st.PreScript, w); err != nil || code != 0 {
			return code, err
		}
	}
	if ctx.Err() != nil {
		return -1, nil
	}
	srcDir := src.Dir
	if srcDir == "" {
		srcDir = dir
	}
	if code := getSources(ctx, src, srcDir, w); code != 0 {
		return code, nil
	}
	if st.PostScript != "" {
		return a.sh(ctx, abort, st.Name+"_post", st.PostScript, w)
	}
	return 0, nil
}

// sh runs a script with the image's shell in the project directory.
func (a *jobRun) sh(ctx context.Context, abort <-chan struct{}, name, script string, w io.Writer) (int, error) {
	file := filepath.Join(a.script, name)
	if err := os.WriteFile(file, []byte(script), 0o600); err != nil {
		return -1, fmt.Errorf("write %s script: %w", name, err)
	}
	defer os.Remove(file)
	// A held job may fetch its sources (Go, in this process) but runs no
	// code of the job before the runner says start.
	select {
	case <-a.ctl.started:
	case <-abort:
		return -1, nil
	case <-ctx.Done():
		return -1, nil
	}
	started := a.reaper.startChild()
	pid := 0
	code, err := proc.Run(ctx, proc.Cmd{
		Path:      a.shell,
		Args:      []string{file},
		Dir:       a.spec.Plan.ProjectDir,
		Env:       append(os.Environ(), a.spec.Env...),
		Output:    w,
		TermGrace: a.opts.TermGrace,
		Abort:     abort,
		Started:   func(p int) { pid = p; started(p) },
	})
	started(0) // not started: release the reaper
	a.reaper.childDone(pid)
	return code, err
}

// findShell returns bash when the image has it, else sh.
func findShell() (string, error) {
	for _, s := range []string{"bash", "sh"} {
		if p, err := exec.LookPath(s); err == nil {
			return p, nil
		}
	}
	return "", errors.New("neither bash nor sh found in PATH: the job image needs a POSIX shell")
}

// writeFiles writes the file variables (0600, new directories 0700).
func writeFiles(files map[string]string) error {
	for p, content := range files {
		if err := os.MkdirAll(filepath.Dir(p), 0o700); err != nil {
			return fmt.Errorf("file variable %s: %w", p, err)
		}
		if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
			return fmt.Errorf("file variable %s: %w", p, err)
		}
		// WriteFile keeps the mode of an existing file.
		if err := os.Chmod(p, 0o600); err != nil {
			return fmt.Errorf("file variable %s: %w", p, err)
		}
	}
	return nil
}

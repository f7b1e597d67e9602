package runner

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/url"
	"time"

	"github.com/podrunner/podrunner/internal/executor"
	"github.com/podrunner/podrunner/internal/gitlab"
	"github.com/podrunner/podrunner/internal/job"
	"github.com/podrunner/podrunner/internal/trace"
)

// jobState is a running job as the manager tracks it.
type jobState struct {
	ID        int64
	Runner    string
	ProjectID int64
	Slot      int
	Started   time.Time
}

// errAbortedByGitLab is the abort cause when GitLab answered canceled,
// failed or 403 for a running job.
var errAbortedByGitLab = errors.New("job aborted by GitLab")

// admitBuild reserves one job start against MaxBuilds; false once the
// budget is used up (then the loops stop).
func (m *Manager) admitBuild() bool {
	if m.opts.MaxBuilds <= 0 {
		return true
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.started >= m.opts.MaxBuilds {
		return false
	}
	m.started++
	return true
}

func (m *Manager) unadmitBuild() {
	if m.opts.MaxBuilds <= 0 {
		return
	}
	m.mu.Lock()
	m.started--
	m.mu.Unlock()
}

// startJob runs a received job in its own goroutine, owned by m.running.
// The slots are released when the job's final state is reported.
func (m *Manager) startJob(st *runnerState, r *Runner, slot, limitSlot int, res gitlab.RequestJobResult) {
	m.startJobWith(st, r, slot, limitSlot, func() { m.runJob(st, r, slot, res) })
}

func (m *Manager) startJobWith(st *runnerState, r *Runner, slot, limitSlot int, run func()) {
	m.running.Add(1)
	go func() {
		defer m.running.Done()
		defer st.limit.release(limitSlot)
		defer m.slots.release(slot)
		run()
		m.mu.Lock()
		m.lastJobAt = time.Now()
		done := m.opts.MaxBuilds > 0 && m.started >= m.opts.MaxBuilds
		m.mu.Unlock()
		if done {
			m.log.Info("Maximum number of builds reached; stopping", "max_builds", m.opts.MaxBuilds)
			m.stopPoll()
		}
	}()
}

func (m *Manager) runJob(st *runnerState, r *Runner, slot int, res gitlab.RequestJobResult) {
	p, decodeErr := job.Decode(res.Body)
	if decodeErr != nil && (p == nil || p.ID <= 0 || p.Token == "") {
		m.log.Error("Received a job payload that cannot be decoded, not even its id and token; GitLab will time the job out",
			"runner", r.ShortToken, "request_id", res.RequestID, "error", decodeErr)
		return
	}
	log := m.log.With("job", p.ID, "runner", r.ShortToken, "project", p.JobInfo.ProjectID)
	log.Info("Checking for jobs... received", "repo_url", redactURL(p.GitInfo.RepoURL), "request_id", res.RequestID)

	// Two-phase commit: confirm the job before doing anything with it.
	confirm, ok := m.confirmJob(r, p, log)
	if !ok {
		return
	}

	js := &jobState{ID: p.ID, Runner: r.ShortToken, ProjectID: p.JobInfo.ProjectID, Slot: slot, Started: time.Now()}
	m.addJob(js, r)
	if mt := m.opts.Metrics; mt != nil {
		mt.queueDuration.WithLabelValues(r.ShortToken, r.Name, m.opts.SystemID).Observe(p.JobInfo.TimeInQueue)
	}
	defer m.removeJob(js, r, log)

	_, adopts := r.Executor.(adopter) // its jobs outlive the runner: no crash record
	tr, err := m.newTrace(r, p, log, !adopts)
	if err != nil {
		// Without a trace file the job cannot be run; report what we can.
		log.Error("Cannot create the job log; failing the job", "error", err)
		m.failWithoutTrace(r, p, log)
		return
	}
	defer tr.Close()
	tr.Start(m.jobsCtx)

	header := trace.Banner(m.opts.Version, m.opts.Revision, r.Name, r.ShortToken, m.opts.SystemID)
	tr.WriteString(header)

	var result executor.Result
	switch {
	case decodeErr != nil:
		trace.Errorf(tr, "Job failed (system failure): the job payload is not valid: %v", decodeErr)
		result = executor.Result{FailureReason: gitlab.RunnerSystemFailure}
	case confirm.CancelRequested:
		trace.Errorf(tr, "Job failed: canceled before it started")
		result = executor.Result{FailureReason: gitlab.JobCanceled}
	default:
		var handedOver bool
		result, handedOver = m.runExecutor(st, p, tr, log, func(ctx context.Context, j *executor.Job) (executor.Result, error) {
			j.Slot = slot
			j.Preamble = []byte(header)
			if tr.rec != nil {
				j.Tracker = tr.rec
			}
			return r.Executor.Run(ctx, j)
		})
		if handedOver {
			m.handOver(tr, log)
			return
		}
	}
	m.finish(r, p, js, tr, result, log)
}

// finish reports the job's final state (retried until GitLab confirms it).
func (m *Manager) finish(r *Runner, p *job.Payload, js *jobState, tr *jobTrace, result executor.Result, log *slog.Logger) {
	final := gitlab.UpdateJobRequest{State: gitlab.StateSuccess}
	if !result.Success {
		final = gitlab.UpdateJobRequest{
			State:         gitlab.StateFailed,
			FailureReason: gitlab.MapFailureReason(result.FailureReason, p.Features.FailureReasons),
			ExitCode:      result.ExitCode,
		}
		m.countFailure(r, result.FailureReason)
		log.Warn("Job failed", "failure_reason", result.FailureReason, "exit_code", result.ExitCode, "duration_s", time.Since(js.Started).Seconds())
	} else {
		log.Info("Job succeeded", "duration_s", time.Since(js.Started).Seconds())
	}
	if err := tr.Finish(m.finishCtx, final); err != nil {
		if errors.Is(err, trace.ErrAborted) {
			// GitLab answered that the job has ended on its side (it
			// was canceled, or it already holds a final state).
			log.Info("Submitting job to coordinator... the job has already ended in GitLab", "detail", err)
			return
		}
		log.Error("Submitting job to coordinator... failed; GitLab may show the job as running until it times out", "error", err)
		return
	}
	log.Info("Submitting job to coordinator... ok", "job-status", final.State)
	if mt := m.opts.Metrics; mt != nil {
		mt.jobDuration.WithLabelValues(r.ShortToken, r.Name, m.opts.SystemID).Observe(time.Since(js.Started).Seconds())
	}
}

// confirmJob sends the two-phase commit's "running" update. GitLab keeps
// the job assigned but unstarted until it arrives (and hands it out again
// if it never does), so a job is only run once confirmed. Transient
// failures are retried for about a minute.
func (m *Manager) confirmJob(r *Runner, p *job.Payload, log *slog.Logger) (gitlab.UpdateResult, bool) {
	wait := 200 * time.Millisecond
	deadline := time.Now().Add(time.Minute)
	for {
		res := r.API.UpdateJob(m.jobsCtx, p.ID, p.Token, gitlab.UpdateJobRequest{State: gitlab.StateRunning})
		switch res.State {
		case gitlab.UpdateSucceeded:
			return res, true
		case gitlab.UpdateAbort:
			log.Warn("GitLab took the job back before it started; dropping it")
			return res, false
		}
		if time.Now().After(deadline) || !sleep(m.jobsCtx, wait) {
			log.Error("Could not confirm the job to GitLab; dropping it so GitLab can hand it out again", "error", errString(res.Err))
			return res, false
		}
		wait = min(2*wait, 10*time.Second)
	}
}

// handOver drops a job another manager took over: no more log, no final
// state from this one.
func (m *Manager) handOver(tr *jobTrace, log *slog.Logger) {
	tr.Drop()
	log.Warn("Another runner manager took the job over; this one stops reporting it")
}

// runExecutor runs the job through the executor (run) and turns every
// way it can end into a result; handedOver is true when another manager
// took the job over (nothing may be reported then).
func (m *Manager) runExecutor(st *runnerState, p *job.Payload, tr *jobTrace, log *slog.Logger, run func(context.Context, *executor.Job) (executor.Result, error)) (res executor.Result, handedOver bool) {
	projectSlot := st.projectSlot(p.JobInfo.ProjectID)
	defer st.releaseProjectSlot(p.JobInfo.ProjectID, projectSlot)

	jobCtx, abort := context.WithCancelCause(m.jobsCtx)
	defer abort(nil)
	watchDone := make(chan struct{})
	go func() {
		defer close(watchDone)
		select {
		case <-tr.Aborted():
			log.Warn("GitLab aborted the job; stopping it")
			abort(errAbortedByGitLab)
		case <-jobCtx.Done():
		}
	}()
	defer func() { abort(nil); <-watchDone }()

	res, err := run(jobCtx, &executor.Job{
		Payload:        p,
		ProjectSlot:    projectSlot,
		Trace:          tr,
		GracefulCancel: tr.Canceling(),
	})
	if errors.Is(err, executor.ErrHandedOver) {
		return executor.Result{}, true
	}
	switch cause := context.Cause(jobCtx); {
	case errors.Is(cause, errShutdown):
		tr.WriteString("\n" + trace.Error("Job failed (system failure): the runner was shut down while the job was running"))
		return executor.Result{FailureReason: gitlab.RunnerSystemFailure}, false
	case errors.Is(cause, errAbortedByGitLab):
		return executor.Result{FailureReason: gitlab.JobCanceled}, false
	}
	if err != nil {
		log.Error("Executor failed", "error", err)
		tr.WriteString("\n" + trace.Error(fmt.Sprintf("Job failed (system failure): %v", err)))
		return executor.Result{FailureReason: gitlab.RunnerSystemFailure}, false
	}
	return res, false
}

// failWithoutTrace reports a job failed when not even its log can be made.
func (m *Manager) failWithoutTrace(r *Runner, p *job.Payload, log *slog.Logger) {
	req := gitlab.UpdateJobRequest{State: gitlab.StateFailed,
		FailureReason: gitlab.MapFailureReason(gitlab.RunnerSystemFailure, p.Features.FailureReasons)}
	for i := 0; i < 10 && m.finishCtx.Err() == nil; i++ {
		res := r.API.UpdateJob(m.finishCtx, p.ID, p.Token, req)
		if res.State == gitlab.UpdateSucceeded || res.State == gitlab.UpdateAbort {
			return
		}
		sleep(m.finishCtx, time.Duration(1<<i)*time.Second)
	}
	log.Error("Could not report the job as failed")
}

func (m *Manager) addJob(js *jobState, r *Runner) {
	m.mu.Lock()
	m.jobs[js.ID] = js
	m.mu.Unlock()
	if mt := m.opts.Metrics; mt != nil {
		mt.jobsTotal.WithLabelValues(r.ShortToken, r.Name, m.opts.SystemID).Inc()
		mt.jobs.WithLabelValues(r.ShortToken, r.Name, m.opts.SystemID, "running", "", "").Inc()
		mt.slotsNumber.Set(float64(m.slots.inUse()))
	}
}

func (m *Manager) removeJob(js *jobState, r *Runner, log *slog.Logger) {
	m.mu.Lock()
	delete(m.jobs, js.ID)
	n := len(m.jobs)
	now := time.Now()
	for id, at := range m.ended {
		if now.Sub(at) > endedMemory {
			delete(m.ended, id)
		}
	}
	m.ended[js.ID] = now
	m.mu.Unlock()
	if mt := m.opts.Metrics; mt != nil {
		mt.jobs.WithLabelValues(r.ShortToken, r.Name, m.opts.SystemID, "running", "", "").Dec()
		mt.slotsNumber.Set(float64(m.slots.inUse()))
	}
	log.Info("Removed job from processing list", "builds", n)
}

// endedMemory is how long a job this process ended is remembered: longer
// than a pod takes to go after its deletion.
const endedMemory = time.Hour

// endedHere reports whether this process ended the job lately.
func (m *Manager) endedHere(id int64) bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	_, ok := m.ended[id]
	return ok
}

func (m *Manager) countFailure(r *Runner, reason gitlab.FailureReason) {
	if mt := m.opts.Metrics; mt != nil {
		mt.failedJobs.WithLabelValues(r.ShortToken, r.Name, string(reason), "").Inc()
	}
}

// Jobs lists the running jobs (for /debug/jobs/list).
func (m *Manager) Jobs() []jobState {
	m.mu.Lock()
	defer m.mu.Unlock()
	out := make([]jobState, 0, len(m.jobs))
	for _, j := range m.jobs {
		out = append(out, *j)
	}
	return out
}

// redactURL drops credentials (the job token) from a repository URL.
func redactURL(raw string) string {
	u, err := url.Parse(raw)
	if err != nil {
		return "(unparsable URL)"
	}
	u.User = nil
	return u.String()
}

var _ io.Writer = (*jobTrace)(nil)

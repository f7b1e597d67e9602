package runner

import (
	"errors"
	"os"

	"github.com/podrunner/podrunner/internal/gitlab"
	"github.com/podrunner/podrunner/internal/jobrecord"
	"github.com/podrunner/podrunner/internal/proc"
	"github.com/podrunner/podrunner/internal/trace"
)

// diedLine ends the log of a job whose runner process died under it.
var diedLine = "\n" + trace.Error("Job failed (system failure): the runner process died while this job was running")

// recoverAll finishes the jobs of runner r that a dead process of this
// runner (same config, token and system_id) left records of: their
// processes are killed, their files removed, and the final state is
// submitted — the recorded result, or failed (runner_system_failure).
// Records of a live process are left alone. Each job is finished in its
// own goroutine (owned by m.running; GitLab may be down for a while) and
// takes no slot: nothing runs any more.
func (m *Manager) recoverAll(st *runnerState) {
	if m.records == nil {
		return
	}
	r := st.cfg.Load()
	if _, ok := r.Executor.(adopter); ok {
		return
	}
	m.recoverMu.Lock()
	defer m.recoverMu.Unlock()
	log := m.log.With("runner", r.ShortToken)
	recs, bad, err := m.records.Load()
	if err != nil {
		log.Error("Cannot look for jobs left by a dead runner process", "error", err)
		return
	}
	for _, b := range bad {
		to, err := m.records.MoveAside(b.Path)
		if err != nil {
			log.Error("A job record cannot be read nor moved aside", "record", b.Path, "problem", b.Err, "error", err)
			continue
		}
		log.Error("A job record cannot be read; moved aside, its job is not finished by this runner (GitLab times it out)",
			"record", b.Path, "moved_to", to, "problem", b.Err)
	}
	id := jobrecord.RunnerID(r.Key)
	for _, rec := range recs {
		if rec.Runner != id || rec.SystemID != m.opts.SystemID || m.recovering[rec.JobID] || m.hasJob(rec.JobID) {
			continue
		}
		if proc.Alive(rec.PID, rec.PIDStart) {
			log.Info("Leaving the record of a job alone: the runner process running it lives", "job", rec.JobID, "pid", rec.PID)
			continue
		}
		m.recovering[rec.JobID] = true
		m.running.Add(1)
		go func() {
			defer m.running.Done()
			m.recoverJob(r, rec)
		}()
	}
}

// recoverJob finishes one job of a dead runner process.
func (m *Manager) recoverJob(r *Runner, rec *jobrecord.Record) {
	defer func() {
		m.recoverMu.Lock()
		delete(m.recovering, rec.JobID)
		m.recoverMu.Unlock()
	}()
	log := m.log.With("job", rec.JobID, "runner", r.ShortToken, "dead_pid", rec.PID)
	log.Warn("Finishing a job whose runner process died while it was running")
	if rec.PGID > 0 {
		killed, err := proc.KillGroupOf(rec.PGID, rec.PGIDStart)
		switch {
		case err != nil:
			log.Warn("Not killing the job's process group", "pgid", rec.PGID, "error", err)
		case killed:
			log.Info("Killed the job's remaining processes", "pgid", rec.PGID)
		}
	}
	for _, p := range rec.Paths {
		if err := os.RemoveAll(p); err != nil {
			log.Warn("Cannot remove a file of the job", "path", p, "error", err)
		}
	}
	final := gitlab.UpdateJobRequest{State: gitlab.StateFailed, FailureReason: rec.SystemFailure}
	tail := diedLine
	if res := rec.Result; res != nil {
		// The job had ended; only its final update was missing.
		final = gitlab.UpdateJobRequest{State: gitlab.JobState(res.State), FailureReason: res.FailureReason, ExitCode: res.ExitCode}
		tail = ""
	}
	src, err := trace.OpenLeftover(rec.TraceFile, rec.TraceSent, tail)
	if err != nil {
		log.Warn("The job log left behind cannot be read; GitLab keeps what it has", "error", err)
		src, _ = trace.OpenLeftover("", rec.TraceSent, tail)
	}
	s := trace.NewSender(r.API, src, trace.SenderOptions{
		JobID: rec.JobID, JobToken: rec.JobToken, DebugTrace: rec.DebugTrace, Sent: rec.TraceSent,
		UpdateInterval: m.opts.TraceUpdateInterval, RetryBackoff: m.opts.TraceUpdateInterval,
		Logger: log,
	})
	err = s.Finish(m.finishCtx, final)
	src.Close()
	switch {
	case errors.Is(err, trace.ErrAborted):
		log.Info("Submitting job to coordinator... the job has already ended in GitLab", "detail", err)
	case err != nil:
		log.Error("Submitting job to coordinator... failed; the record is kept for the next runner start", "error", err)
		return
	default:
		log.Info("Submitting job to coordinator... ok", "job-status", final.State)
	}
	if rec.TraceFile != "" {
		if err := os.Remove(rec.TraceFile); err != nil && !errors.Is(err, os.ErrNotExist) {
			log.Warn("Cannot remove the job log left behind", "path", rec.TraceFile, "error", err)
		}
	}
	if err := m.records.Remove(rec.JobID); err != nil {
		log.Warn("Cannot remove the job's record", "error", err)
	}
}

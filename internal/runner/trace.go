package runner

import (
	"context"
	"errors"
	"log/slog"
	"os"

	"github.com/podrunner/podrunner/internal/gitlab"
	"github.com/podrunner/podrunner/internal/job"
	"github.com/podrunner/podrunner/internal/jobrecord"
	"github.com/podrunner/podrunner/internal/trace"
)

// jobTrace is a job's log (masked, stored, size-limited) together with the
// uploader that streams it to GitLab.
type jobTrace struct {
	*trace.Trace
	sender *trace.Sender
	// rec is the job's crash record (nil: none kept).
	rec *jobrecord.Tracker
}

// newTrace makes the job's log; with track, the job also gets a crash
// record (for executors whose jobs die with the runner process).
func (m *Manager) newTrace(r *Runner, p *job.Payload, log *slog.Logger, track bool) (*jobTrace, error) {
	mask := job.MaskFor(p, p.Variables.Expand())
	t, err := trace.New(trace.Options{
		MaskValues:   mask.Values,
		JobToken:     p.Token,
		MaskPrefixes: mask.Prefixes,
		Limit:        r.OutputLimit,
		TempDir:      m.opts.TraceDir,
	})
	if err != nil {
		return nil, err
	}
	var rec *jobrecord.Tracker
	if track && m.records != nil {
		rec = m.records.Track(jobrecord.Record{
			Runner: jobrecord.RunnerID(r.Key), SystemID: m.opts.SystemID,
			PID: os.Getpid(), PIDStart: m.pidStart,
			JobID: p.ID, JobToken: p.Token, DebugTrace: p.Variables.Bool("CI_DEBUG_TRACE"),
			TraceFile:     t.Buffer().Name(),
			SystemFailure: gitlab.MapFailureReason(gitlab.RunnerSystemFailure, p.Features.FailureReasons),
		}, log)
	}
	s := trace.NewSender(r.API, t.Buffer(), trace.SenderOptions{
		JobID:          p.ID,
		JobToken:       p.Token,
		DebugTrace:     p.Variables.Bool("CI_DEBUG_TRACE"),
		UpdateInterval: m.opts.TraceUpdateInterval,
		RetryBackoff:   m.opts.TraceUpdateInterval,
		Logger:         log,
		OnSent:         rec.Sent,
	})
	return &jobTrace{Trace: t, sender: s, rec: rec}, nil
}

func (t *jobTrace) Start(ctx context.Context)  { t.sender.Start(ctx) }
func (t *jobTrace) Canceling() <-chan struct{} { return t.sender.Canceling() }
func (t *jobTrace) Aborted() <-chan struct{}   { return t.sender.Aborted() }

// Drop stops streaming the log without a final state (another manager
// took the job over).
func (t *jobTrace) Drop() {
	t.sender.Stop()
	t.rec.Done()
}

// Finish flushes the masker's held bytes and submits the final state. A
// failed flush does not stop the state (the job must not stay running in
// GitLab): the buffer writes its own failures into the log.
func (t *jobTrace) Finish(ctx context.Context, final gitlab.UpdateJobRequest) error {
	_ = t.Trace.Finish()
	// The whole log and the result on disk first: should the runner die
	// now, the next process submits them.
	t.Buffer().Flush()
	t.rec.Result(jobrecord.Result{State: string(final.State), FailureReason: final.FailureReason, ExitCode: final.ExitCode})
	err := t.sender.Finish(ctx, final)
	if err == nil || errors.Is(err, trace.ErrAborted) {
		t.rec.Done()
	}
	return err
}

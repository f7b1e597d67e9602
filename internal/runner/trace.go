package runner

import (
	"context"
	"log/slog"

	"github.com/podrunner/podrunner/internal/gitlab"
	"github.com/podrunner/podrunner/internal/job"
	"github.com/podrunner/podrunner/internal/trace"
)

// jobTrace is a job's log (masked, stored, size-limited) together with the
// uploader that streams it to GitLab.
type jobTrace struct {
	*trace.Trace
	sender *trace.Sender
}

func (m *Manager) newTrace(r *Runner, p *job.Payload, log *slog.Logger) (*jobTrace, error) {
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
	s := trace.NewSender(r.API, t.Buffer(), trace.SenderOptions{
		JobID:          p.ID,
		JobToken:       p.Token,
		DebugTrace:     p.Variables.Bool("CI_DEBUG_TRACE"),
		UpdateInterval: m.opts.TraceUpdateInterval,
		RetryBackoff:   m.opts.TraceUpdateInterval,
		Logger:         log,
	})
	return &jobTrace{Trace: t, sender: s}, nil
}

func (t *jobTrace) Start(ctx context.Context)  { t.sender.Start(ctx) }
func (t *jobTrace) Canceling() <-chan struct{} { return t.sender.Canceling() }
func (t *jobTrace) Aborted() <-chan struct{}   { return t.sender.Aborted() }

// Drop stops streaming the log without a final state (another manager
// took the job over).
func (t *jobTrace) Drop() { t.sender.Stop() }

// Finish flushes the masker's held bytes and submits the final state. A
// failed flush does not stop the state (the job must not stay running in
// GitLab): the buffer writes its own failures into the log.
func (t *jobTrace) Finish(ctx context.Context, final gitlab.UpdateJobRequest) error {
	_ = t.Trace.Finish()
	return t.sender.Finish(ctx, final)
}

package trace

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"sync"
	"time"

	"github.com/podrunner/podrunner/internal/gitlab"
)

// API is what the Sender needs from GitLab; *gitlab.Client satisfies it.
type API interface {
	PatchTrace(ctx context.Context, jobID int64, jobToken string, content []byte, offset int64, debugTrace bool) gitlab.PatchResult
	UpdateJob(ctx context.Context, jobID int64, jobToken string, req gitlab.UpdateJobRequest) gitlab.UpdateResult
}

// Source is the stored log the Sender reads; *Buffer satisfies it. Bytes
// below the snapshot size must never change.
type Source interface {
	io.ReaderAt
	Snapshot() (size int64, checksum string)
}

// ErrAborted is returned (wrapped) by Finish when GitLab answered that the
// job is gone: canceled or failed on GitLab's side, or the job token was
// revoked (403/404). The final state cannot be submitted any more.
var ErrAborted = errors.New("GitLab aborted the job")

// errReadLog marks a failure to read the stored log (not GitLab's fault).
var errReadLog = errors.New("read job log")

// Defaults follow GitLab Runner.
const (
	DefaultUpdateInterval    = 3 * time.Second
	MaxUpdateInterval        = 15 * time.Minute
	DefaultForceSendInterval = 30 * time.Second
	DefaultPatchLimit        = 1024 * 1024
	DefaultRetryBackoff      = time.Second
	// DefaultMaxRetryBackoff caps the final-update backoff. GitLab Runner
	// goes up to 60 min; a minute keeps the final state flowing soon after
	// GitLab recovers.
	DefaultMaxRetryBackoff = time.Minute
	// DefaultFinalTraceRejections: an honest GitLab refuses a resumed log
	// once or twice at most.
	DefaultFinalTraceRejections = 10
)

// SenderOptions configure a Sender. Zero durations and limits mean the
// defaults.
type SenderOptions struct {
	JobID      int64
	JobToken   string
	DebugTrace bool // CI_DEBUG_TRACE: PATCH with debug_trace=true

	UpdateInterval    time.Duration // between PATCH rounds; GitLab may change it
	ForceSendInterval time.Duration // keep-alive PUT after this long without success
	PatchLimit        int           // bytes per PATCH
	RetryBackoff      time.Duration // first wait between final-update attempts
	MaxRetryBackoff   time.Duration
	// FinalRetryLimit bounds the final-update attempts; 0 (the default)
	// retries until Finish's context ends, because the final state must
	// never be lost. GitLab Runner's job_status_final_update_retry_limit is
	// 10.
	FinalRetryLimit int
	// FinalTraceRejections bounds how often GitLab may refuse the log
	// during Finish (416 range mismatch, 412 checksum mismatch) or the log
	// may be unreadable before the final state is submitted without the
	// unsent rest, so a broken server or disk cannot hold the job
	// forever; 0 means DefaultFinalTraceRejections.
	FinalTraceRejections int

	Logger *slog.Logger // job story lines, carrying the job's attributes (job id…); never given the token

	// Sent is the offset GitLab already has (a job finished by a later
	// runner process); OnSent, if set, is called with each offset GitLab
	// acknowledges.
	Sent   int64
	OnSent func(offset int64)
}

// Sender streams a job's log to GitLab while the job runs and submits the
// final state. Start begins the periodic loop; Finish stops it (waiting for
// it) and submits the final state.
type Sender struct {
	api  API
	src  Source
	opts SenderOptions
	log  *slog.Logger

	// Owned by the loop goroutine while it runs, then by Finish.
	interval    time.Duration
	sent        int64
	lastSuccess time.Time
	chunk       []byte

	canceling, aborted    chan struct{}
	cancelOnce, abortOnce sync.Once
	mu                    sync.Mutex
	stop                  context.CancelFunc
	done                  chan struct{}
	started, finishing    bool
}

// NewSender returns a Sender for one job.
func NewSender(api API, src Source, opts SenderOptions) *Sender {
	if opts.UpdateInterval <= 0 {
		opts.UpdateInterval = DefaultUpdateInterval
	}
	if opts.ForceSendInterval <= 0 {
		opts.ForceSendInterval = DefaultForceSendInterval
	}
	if opts.PatchLimit <= 0 {
		opts.PatchLimit = DefaultPatchLimit
	}
	if opts.RetryBackoff <= 0 {
		opts.RetryBackoff = DefaultRetryBackoff
	}
	if opts.MaxRetryBackoff <= 0 {
		opts.MaxRetryBackoff = DefaultMaxRetryBackoff
	}
	if opts.FinalTraceRejections <= 0 {
		opts.FinalTraceRejections = DefaultFinalTraceRejections
	}
	log := opts.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Sender{
		api: api, src: src, opts: opts,
		log:       log,
		interval:  opts.UpdateInterval,
		sent:      max(opts.Sent, 0),
		canceling: make(chan struct{}),
		aborted:   make(chan struct{}),
	}
}

// Canceling is closed when GitLab asked for a graceful cancel
// (Job-Status: canceling) in any response.
func (s *Sender) Canceling() <-chan struct{} { return s.canceling }

// Aborted is closed when GitLab answered abort (Job-Status canceled/failed,
// 403): the job must stop at once.
func (s *Sender) Aborted() <-chan struct{} { return s.aborted }

// Start begins sending the log every update interval until Finish or ctx
// ends. It does nothing when called twice or after Finish.
func (s *Sender) Start(ctx context.Context) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.started || s.finishing {
		return
	}
	s.started = true
	ctx, s.stop = context.WithCancel(ctx)
	s.done = make(chan struct{})
	s.lastSuccess = time.Now()
	go s.run(ctx)
}

func (s *Sender) run(ctx context.Context) {
	defer close(s.done)
	t := time.NewTimer(s.interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		if !s.tick(ctx) {
			return // aborted: nothing more will be accepted
		}
		t.Reset(s.interval)
	}
}

// tick sends what is unsent and, if GitLab heard nothing from us for the
// force-send interval, a keep-alive PUT. It returns false on abort.
func (s *Sender) tick(ctx context.Context) bool {
	size, sum := s.src.Snapshot()
	for s.sent < size && ctx.Err() == nil {
		switch s.patch(ctx, size).State {
		case gitlab.PatchSucceeded:
			continue
		case gitlab.PatchAbort:
			return false
		}
		return true // 404, 416, failure: again next tick
	}
	if ctx.Err() != nil || time.Since(s.lastSuccess) < s.opts.ForceSendInterval {
		return true
	}
	res := s.update(ctx, gitlab.UpdateJobRequest{State: gitlab.StateRunning, Checksum: sum, Bytesize: size}, "keep-alive")
	return res.State != gitlab.UpdateAbort
}

// patch sends one slice of at most PatchLimit bytes from s.sent.
func (s *Sender) patch(ctx context.Context, size int64) gitlab.PatchResult {
	if s.chunk == nil {
		s.chunk = make([]byte, s.opts.PatchLimit)
	}
	start := s.sent
	n := int(min(int64(len(s.chunk)), size-start))
	n, err := s.src.ReadAt(s.chunk[:n], start)
	if n == 0 || (err != nil && !errors.Is(err, io.EOF)) {
		err = fmt.Errorf("%w at %d of %d bytes: %w", errReadLog, start, size, orUnknown(err))
		s.log.Error("read job log for sending", "error", err)
		return gitlab.PatchResult{State: gitlab.PatchFailed, Err: err}
	}
	res := s.api.PatchTrace(ctx, s.opts.JobID, s.opts.JobToken, s.chunk[:n], start, s.opts.DebugTrace)
	s.observe(res.CancelRequested, res.UpdateInterval)
	sentLog := fmt.Sprintf("%d-%d", start, start+int64(n)-1)
	switch res.State {
	case gitlab.PatchSucceeded:
		s.sent = start + int64(n)
		s.lastSuccess = time.Now()
		s.log.Info("Appending trace to coordinator... ok", "sent-log", sentLog, "status", res.StatusCode)
		s.acknowledged()
	case gitlab.PatchRangeMismatch:
		s.sent = min(max(res.NewOffset, 0), size)
		s.log.Warn("Appending trace to coordinator... range mismatch", "sent-log", sentLog, "status", res.StatusCode, "new-offset", s.sent)
		s.acknowledged()
	case gitlab.PatchNotFound:
		s.log.Warn("Appending trace to coordinator... not found", "sent-log", sentLog, "status", res.StatusCode)
	case gitlab.PatchAbort:
		s.log.Warn("Appending trace to coordinator... aborted", "sent-log", sentLog, "status", res.StatusCode, "error", errString(res.Err))
		s.abort()
	default:
		s.log.Warn("Appending trace to coordinator... failed", "sent-log", sentLog, "status", res.StatusCode, "error", errString(res.Err))
	}
	return res
}

// update sends PUT jobs/:id and handles what every answer may carry.
func (s *Sender) update(ctx context.Context, req gitlab.UpdateJobRequest, what string) gitlab.UpdateResult {
	res := s.api.UpdateJob(ctx, s.opts.JobID, s.opts.JobToken, req)
	s.observe(res.CancelRequested, res.UpdateInterval)
	attrs := []any{"kind", what, "state", req.State, "checksum", req.Checksum, "bytesize", req.Bytesize, "status", res.StatusCode}
	switch res.State {
	case gitlab.UpdateSucceeded:
		s.lastSuccess = time.Now()
		s.log.Info("Updating job... ok", attrs...)
	case gitlab.UpdateAcceptedNotComplete:
		s.lastSuccess = time.Now()
		s.log.Info("Updating job... accepted, trace not complete yet", attrs...)
	case gitlab.UpdateTraceValidationFailed:
		s.log.Warn("Updating job... trace validation failed, resending the whole trace", attrs...)
	case gitlab.UpdateAbort:
		s.log.Warn("Updating job... aborted", append(attrs, "error", errString(res.Err))...)
		s.abort()
	default:
		s.log.Warn("Updating job... failed", append(attrs, "error", errString(res.Err))...)
	}
	return res
}

func (s *Sender) observe(cancel bool, interval time.Duration) {
	if cancel {
		s.cancelOnce.Do(func() {
			s.log.Info("GitLab requested graceful cancel (Job-Status: canceling)")
			close(s.canceling)
		})
	}
	if interval > 0 {
		s.interval = min(interval, MaxUpdateInterval)
	}
}

func (s *Sender) acknowledged() {
	if s.opts.OnSent != nil {
		s.opts.OnSent(s.sent)
	}
}

func (s *Sender) abort() { s.abortOnce.Do(func() { close(s.aborted) }) }

func errString(err error) string {
	if err == nil {
		return ""
	}
	return err.Error()
}

// Stop ends the periodic loop (and waits for it) without sending anything
// more: another process reports the job now. Finish fails after it.
func (s *Sender) Stop() {
	s.mu.Lock()
	stop, done := s.stop, s.done
	s.finishing = true
	s.mu.Unlock()
	if stop != nil {
		stop()
		<-done
	}
}

// Finish stops the periodic loop (and waits for it), sends the rest of the
// log and submits final (its Checksum and Bytesize are filled from the
// source). It retries with exponential backoff until GitLab confirms, ctx
// ends, or FinalRetryLimit is reached; it returns ErrAborted (wrapped) when
// GitLab aborted the job. Call it once, after the Trace's Finish.
func (s *Sender) Finish(ctx context.Context, final gitlab.UpdateJobRequest) error {
	s.mu.Lock()
	if s.finishing {
		s.mu.Unlock()
		return errors.New("trace sender: Finish called twice")
	}
	s.finishing = true
	stop, done := s.stop, s.done
	s.mu.Unlock()
	if stop != nil {
		stop()
		<-done
	}

	s.interval = s.opts.UpdateInterval // as GitLab Runner: reset for the final update
	backoff := s.opts.RetryBackoff
	var rej refusals
	withoutRest := false
	for attempt := 1; ; attempt++ {
		err := s.finalUpdate(ctx, final, withoutRest, &rej)
		if err == nil {
			return nil
		}
		if errors.Is(err, ErrAborted) {
			return fmt.Errorf("submit final state %q of job %d: %w", final.State, s.opts.JobID, err)
		}
		if ctx.Err() != nil {
			return fmt.Errorf("submit final state %q of job %d: stopped before GitLab confirmed it: %w (last error: %v)", final.State, s.opts.JobID, ctx.Err(), err)
		}
		if !withoutRest && rej.exhausted(s.opts.FinalTraceRejections) {
			// Deliver the state with the log GitLab has rather than
			// never: without a checksum GitLab does not validate it.
			withoutRest = true
			s.log.Error("The job log could not be sent completely; submitting the final state with the part GitLab has",
				"sent-bytes", s.sent, "error", err)
			continue
		}
		if s.opts.FinalRetryLimit > 0 && attempt >= s.opts.FinalRetryLimit {
			return fmt.Errorf("submit final state %q of job %d: gave up after %d attempts: %w", final.State, s.opts.JobID, attempt, err)
		}
		s.log.Warn("final update failed, retrying", "attempt", attempt, "retry-in", backoff, "error", err)
		if !sleep(ctx, backoff) {
			return fmt.Errorf("submit final state %q of job %d: stopped before GitLab confirmed it: %w (last error: %v)", final.State, s.opts.JobID, ctx.Err(), err)
		}
		backoff = min(2*backoff, s.opts.MaxRetryBackoff)
	}
}

// errTraceRejected marks a final attempt that failed because GitLab
// refused the log or it could not be read.
var errTraceRejected = errors.New("job log refused")

// refusals counts, during Finish, 416s since the last accepted PATCH (a
// lost answer or a lost tail is followed by one; a broken server never
// accepts again), every 412 (each one means resending the whole log) and
// read errors of the stored log.
type refusals struct{ since416, total412, reads int }

func (r *refusals) exhausted(limit int) bool {
	return r.since416 >= limit || r.total412 >= limit || r.reads >= limit
}

// finalUpdate is one attempt: PATCH everything, PUT the final state,
// repeating on 202 (after an interval). A 412 (GitLab dropped its copy:
// resend from byte 0), a 416 or an unreadable log counts in rej and ends
// the attempt once the count reaches the bound. withoutRest
// submits the state alone, leaving GitLab's log as it is.
func (s *Sender) finalUpdate(ctx context.Context, final gitlab.UpdateJobRequest, withoutRest bool, rej *refusals) error {
	limit := s.opts.FinalTraceRejections
	for {
		size, sum := s.src.Snapshot()
	send:
		for !withoutRest && s.sent < size {
			res := s.patch(ctx, size)
			switch res.State {
			case gitlab.PatchSucceeded:
				rej.since416 = 0
			case gitlab.PatchNotFound:
				break send // GitLab will not take more log; submit the state anyway
			case gitlab.PatchRangeMismatch:
				if rej.since416++; rej.exhausted(limit) {
					return fmt.Errorf("%w: GitLab keeps answering 416 (range mismatch) to the log at %d", errTraceRejected, s.sent)
				}
				if !sleep(ctx, s.interval) {
					return ctx.Err()
				}
			case gitlab.PatchAbort:
				return fmt.Errorf("%w: %v", ErrAborted, res.Err)
			case gitlab.PatchFailed:
				if errors.Is(res.Err, errReadLog) {
					rej.reads++
					return fmt.Errorf("%w: %w", errTraceRejected, res.Err)
				}
				return fmt.Errorf("send job log: %w", orUnknown(res.Err))
			default:
				return fmt.Errorf("send job log: %w", orUnknown(res.Err))
			}
		}
		req := final
		if !withoutRest {
			req.Checksum, req.Bytesize = sum, size
		}
		res := s.update(ctx, req, "final")
		switch res.State {
		case gitlab.UpdateSucceeded:
			return nil
		case gitlab.UpdateAcceptedNotComplete:
		case gitlab.UpdateTraceValidationFailed:
			s.sent = 0
			if rej.total412++; rej.exhausted(limit) || withoutRest {
				return fmt.Errorf("%w: GitLab keeps answering 412 (checksum mismatch) to the final update", errTraceRejected)
			}
		case gitlab.UpdateAbort:
			return fmt.Errorf("%w: %v", ErrAborted, res.Err)
		default:
			return fmt.Errorf("update job: %w", orUnknown(res.Err))
		}
		if !sleep(ctx, s.interval) {
			return ctx.Err()
		}
	}
}

func orUnknown(err error) error {
	if err == nil {
		return errors.New("unknown error")
	}
	return err
}

// sleep waits d or until ctx ends; it reports whether d elapsed.
func sleep(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}

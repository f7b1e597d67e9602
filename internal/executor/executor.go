// Package executor defines the contract between the runner and the places
// jobs run in (local processes, Kubernetes pods).
//
// Call order: the runner creates one Executor per configured [[runners]]
// entry and calls Run once per job, from as many goroutines as it has job
// slots; implementations must be safe for concurrent Run calls. Run owns the
// job environment it creates: it prepares it, runs the job's stages in the
// order and under the conditions of the job's plan, writes everything the
// job prints to Job.Trace, and removes the environment before it returns,
// also when it fails or is aborted; or, once nothing of the job runs any
// more, hands that removal to a goroutine of its own that its Close (an
// io.Closer's, which the runner calls after the last Run) waits for. Run
// is not retried by the runner; an
// implementation that retries internally (e.g. a pod creation refused by a
// quota) must keep it idempotent.
//
// Cancellation: cancelling ctx is an abort (GitLab said canceled/failed, the
// runner is shutting down hard, or the job timed out): stop at once, clean
// up, return. Closing Job.GracefulCancel is GitLab's "canceling": stop the
// user script (SIGTERM), still run after_script, then return a failed result
// with reason job_canceled.
package executor

import (
	"context"
	"errors"
	"io"

	"github.com/podrunner/podrunner/internal/gitlab"
	"github.com/podrunner/podrunner/internal/job"
)

// Job is everything an executor needs to run one job.
type Job struct {
	Payload *job.Payload
	// Slot is the runner's concurrency slot for this job (CI_CONCURRENT_ID,
	// the pod name's concurrent-<n>).
	Slot int
	// ProjectSlot is the lowest index not used by another running job of the
	// same runner and project (CI_CONCURRENT_PROJECT_ID).
	ProjectSlot int
	// Trace receives the job log. It masks secrets itself; executors write
	// raw output to it.
	Trace io.Writer
	// GracefulCancel is closed when GitLab asks for a graceful cancel.
	GracefulCancel <-chan struct{}
	// Preamble is what the runner wrote to Trace before calling Run (its
	// "Running with" header). An executor that keeps a copy of the trace
	// outside the runner (to continue a job after a runner restart) must
	// start that copy with it, so the rebuilt trace is byte-identical.
	Preamble []byte
	// Tracker, when set, is told what the job leaves on this machine, so
	// that a later runner process can clean up after a crash of this one.
	Tracker Tracker
}

// Tracker records a job's processes and files (see Job.Tracker).
type Tracker interface {
	// Process names the process group of the stage now running and its
	// leader's start time (proc.StartTime).
	Process(pgid int, start uint64)
	// Files names files and directories of the job to remove.
	Files(paths ...string)
}

// Result is how a job ended.
type Result struct {
	// Success is true only when every stage that had to succeed did.
	Success bool
	// FailureReason is one of GitLab's failure reasons (script_failure,
	// runner_system_failure, job_execution_timeout, image_pull_failure,
	// job_canceled, ...); empty on success.
	FailureReason gitlab.FailureReason
	// ExitCode is the exit code of the failed user script, 0 otherwise.
	ExitCode int
}

// ErrHandedOver (wrapped) from Run means another runner manager now owns
// the job and reports it: the runner must send neither more log nor a final
// state for it.
var ErrHandedOver = errors.New("the job was taken over by another runner manager")

// Executor runs jobs.
type Executor interface {
	// Run runs one job to completion; see the package comment for the
	// contract. A non-nil error means the executor itself failed (it is
	// reported as runner_system_failure); a failed job is a Result.
	Run(ctx context.Context, j *Job) (Result, error)
}

// Adoptable is a job an executor found still running outside the runner
// process (a pod): the runner's own from before a restart, or one a dead
// manager of the same runner left. The runner claims it, then resumes it
// in a job slot like a new job. Executors that can do this offer Adopt,
// Claim, ResumeJob and Cleanup (the runner's adopter interface; the
// Kubernetes executor's adopt.go states the protocol).
type Adoptable struct {
	JobID int64
	// Where the job runs (the pod's name), for logs.
	Where string
	// Payload is the job as GitLab sent it (token included).
	Payload *job.Payload
	// TracePrefix is what the runner wrote to the trace before the
	// executor's own log.
	TracePrefix []byte
	// Slot is the concurrency slot the job ran in (concurrent-<n>).
	Slot int
	// Owner is the system id of the manager that owned the job when it
	// was found ("" when unknown).
	Owner string
	// Handle is the executor's own state of the job, opaque to the runner.
	Handle any
}

// ErrClaimLost (wrapped) from Claim means another manager claimed the job
// first: it is theirs now.
var ErrClaimLost = errors.New("another manager claimed the job first")

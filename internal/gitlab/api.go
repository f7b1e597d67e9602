// Package gitlab is the client of GitLab's runner API (/api/v4): register,
// verify, unregister, job requests with long polling, job updates, trace
// patches and artifacts.
package gitlab

import (
	"errors"
	"time"
)

// Credentials identify a runner against one GitLab instance.
type Credentials struct {
	URL         string
	Token       string
	TLSCAFile   string
	TLSCertFile string
	TLSKeyFile  string
}

// ErrForbidden is returned (wrapped) when GitLab answers 403 (and 401 on
// artifact downloads).
var ErrForbidden = errors.New("forbidden")

// ErrNotFound is returned (wrapped) when GitLab answers 404.
var ErrNotFound = errors.New("not found")

// ErrTooLarge is returned (wrapped) when GitLab answers 413 to an artifacts
// upload.
var ErrTooLarge = errors.New("too large")

// RequestJobStatus classifies the answer to POST jobs/request.
type RequestJobStatus int

const (
	JobReceived    RequestJobStatus = iota // 201
	NoJob                                  // 204
	JobForbidden                           // 403: unhealthy
	JobUnavailable                         // 503 after retries
	JobFailed                              // anything else
)

// RequestJobResult is the answer to POST jobs/request.
type RequestJobResult struct {
	Status RequestJobStatus
	// Healthy is false when the answer counts against the runner's health
	// (403, or a client that could not be built).
	Healthy bool
	// Body is the raw job payload of a 201; decode it with job.Decode.
	Body []byte
	// RequestID is the X-Request-Id of the response (ours when the server
	// sent none), for logs.
	RequestID string
	// StatusCode is the final HTTP status, 0 when no response arrived.
	StatusCode int
	// PushedBack is true when any transport attempt got a retriable answer
	// (408/429/5xx); adaptive request concurrency halves its limit on it.
	PushedBack bool
	// TLSCAChain is the PEM CA chain seen on the TLS connection of a 201
	// (empty over plain http), to hand to tools that talk to GitLab.
	TLSCAChain string
	Err        error
}

// JobState is the state sent with PUT jobs/:id.
type JobState string

const (
	StateRunning JobState = "running"
	StateSuccess JobState = "success"
	StateFailed  JobState = "failed"
)

// UpdateJobRequest is the body of PUT jobs/:id (without info/token, which
// the client adds).
type UpdateJobRequest struct {
	State         JobState
	FailureReason FailureReason // already mapped against the job's accepted reasons
	ExitCode      int
	Checksum      string // "crc32:%08x", empty for none
	Bytesize      int64
}

// UpdateState classifies the answer to PUT jobs/:id.
type UpdateState int

const (
	UpdateSucceeded             UpdateState = iota // 200
	UpdateAcceptedNotComplete                      // 202: PUT again after an interval
	UpdateTraceValidationFailed                    // 412: resend the whole trace, then PUT again
	UpdateAbort                                    // 403, 404, Job-Status canceled/failed
	UpdateFailed                                   // anything else: retry later
)

// UpdateResult is the answer to PUT jobs/:id.
type UpdateResult struct {
	State UpdateState
	// CancelRequested is true when the response said Job-Status: canceling.
	CancelRequested bool
	// UpdateInterval is the X-GitLab-Trace-Update-Interval, 0 when absent.
	UpdateInterval time.Duration
	// StatusCode is the final HTTP status, 0 when no response arrived.
	StatusCode int
	// PushedBack: see RequestJobResult.PushedBack.
	PushedBack bool
	Err        error
}

// PatchState classifies the answer to PATCH jobs/:id/trace.
type PatchState int

const (
	PatchSucceeded     PatchState = iota // 202
	PatchNotFound                        // 404
	PatchRangeMismatch                   // 416: resume from NewOffset
	PatchAbort                           // 403, Job-Status canceled/failed
	PatchFailed                          // anything else: retry on the next tick
)

// PatchResult is the answer to PATCH jobs/:id/trace.
type PatchResult struct {
	State PatchState
	// NewOffset is the offset the next patch starts at: end+1 after a 202,
	// the end of the server's Range header after a 416.
	NewOffset       int64
	CancelRequested bool
	UpdateInterval  time.Duration
	// StatusCode is the final HTTP status, 0 when no response arrived (or
	// nothing had to be sent).
	StatusCode int
	// PushedBack: see RequestJobResult.PushedBack.
	PushedBack bool
	Err        error
}

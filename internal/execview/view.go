// Package execview shows a locally run pipeline (`podrunner exec`): a live
// view redrawn in place when the output is a terminal, plain greppable
// lines otherwise, and the summary table printed at the end.
//
// The views only render; the caller polls the coordinator and hands them
// snapshots (Update) and new log bytes (Log), from one goroutine.
package execview

import (
	"fmt"
	"slices"
	"strings"
	"time"
)

// Job statuses as GitLab names them (the coordinator's words).
const (
	StatusCreated   = "created"
	StatusPending   = "pending"
	StatusRunning   = "running"
	StatusSuccess   = "success"
	StatusFailed    = "failed"
	StatusCanceling = "canceling"
	StatusCanceled  = "canceled"
	StatusSkipped   = "skipped"
	StatusManual    = "manual"
	// StatusScheduled is a delayed job waiting for its start_in.
	StatusScheduled = "scheduled"
)

// Job is one job (one attempt of it) as the views show it.
type Job struct {
	ID    int64
	Name  string
	Stage string
	// Status is the GitLab job status.
	Status string
	// Attempt is 1 for the first run of a job and 2, 3… for its
	// retries (GitLab creates a new job for each retry).
	Attempt int
	// Retried is true when a later attempt of the job replaced this one.
	Retried       bool
	AllowFailure  bool
	FailureReason string
	ExitCode      int
	Started       time.Time
	Finished      time.Time
	// ScheduledAt is when a delayed (scheduled) job starts.
	ScheduledAt time.Time
}

// startsIn says when a scheduled job starts: "starts in 4.0s".
func (j Job) startsIn(now time.Time) string {
	if j.Status != StatusScheduled || j.ScheduledAt.IsZero() {
		return ""
	}
	return "starts in " + FormatDuration(max(j.ScheduledAt.Sub(now), 0))
}

// Label names the job, with the attempt for retries: "flaky (attempt 2)".
func (j Job) Label() string {
	if j.Attempt > 1 {
		return fmt.Sprintf("%s (attempt %d)", j.Name, j.Attempt)
	}
	return j.Name
}

// Final reports whether the job will not change any more.
func (j Job) Final() bool { return IsFinal(j.Status) }

// IsFinal reports whether a job status is final.
func IsFinal(status string) bool {
	switch status {
	case StatusSuccess, StatusFailed, StatusCanceled, StatusSkipped:
		return true
	}
	return false
}

// Duration is how long the job ran, up to now while it runs; 0 when it
// never started.
func (j Job) Duration(now time.Time) time.Duration {
	if j.Started.IsZero() {
		return 0
	}
	end := j.Finished
	if end.IsZero() {
		end = now
	}
	if end.Before(j.Started) {
		return 0
	}
	return end.Sub(j.Started)
}

// StatusText is the status with the failure reason and exit code:
// "failed (script_failure, exit code 4)".
func (j Job) StatusText() string {
	if j.Status != StatusFailed {
		return j.Status
	}
	var notes []string
	if j.FailureReason != "" {
		notes = append(notes, j.FailureReason)
	}
	if j.ExitCode != 0 {
		notes = append(notes, fmt.Sprintf("exit code %d", j.ExitCode))
	}
	if len(notes) == 0 {
		return j.Status
	}
	return j.Status + " (" + strings.Join(notes, ", ") + ")"
}

// Note says why a failure does not count: "retried" or "allowed to
// fail"; empty otherwise.
func (j Job) Note() string {
	if j.Status != StatusFailed {
		return ""
	}
	switch {
	case j.Retried:
		return "retried"
	case j.AllowFailure:
		return "allowed to fail"
	}
	return ""
}

// Outcome is StatusText with Note: "failed (exit code 4) [allowed to fail]".
func (j Job) Outcome() string {
	if n := j.Note(); n != "" {
		return j.StatusText() + " [" + n + "]"
	}
	return j.StatusText()
}

// Pipeline is a snapshot of the pipeline.
type Pipeline struct {
	ID     int64
	Status string
	// Stages in run order; jobs of other stages are shown after them.
	Stages []string
	Jobs   []Job
}

// StageGroup is the jobs of one stage, in the order given.
type StageGroup struct {
	Stage string
	Jobs  []Job
}

// ByStage groups the jobs by stage in run order, dropping empty stages.
func (p Pipeline) ByStage() []StageGroup {
	var groups []StageGroup
	index := map[string]int{}
	add := func(stage string) {
		if _, ok := index[stage]; !ok {
			index[stage] = len(groups)
			groups = append(groups, StageGroup{Stage: stage})
		}
	}
	for _, s := range p.Stages {
		add(s)
	}
	for _, j := range p.Jobs {
		add(j.Stage)
		g := &groups[index[j.Stage]]
		g.Jobs = append(g.Jobs, j)
	}
	return slices.DeleteFunc(groups, func(g StageGroup) bool { return len(g.Jobs) == 0 })
}

// View shows a pipeline while it runs.
type View interface {
	// Log hands over bytes appended to a job's log since the last call,
	// before the Update that shows the job's new status.
	Log(j Job, data []byte)
	// Update shows the pipeline at now.
	Update(p Pipeline, now time.Time)
	// Close ends the view (the live view leaves its last frame on screen).
	Close()
}

// FormatDuration prints a duration the way the views do: 0.4s, 12.3s,
// 2m05s, 1h02m.
func FormatDuration(d time.Duration) string {
	if r := d.Round(100 * time.Millisecond); r < time.Minute {
		return fmt.Sprintf("%.1fs", r.Seconds())
	}
	if r := d.Round(time.Second); r < time.Hour {
		return fmt.Sprintf("%dm%02ds", int(r/time.Minute), int(r%time.Minute/time.Second))
	}
	r := d.Round(time.Minute)
	return fmt.Sprintf("%dh%02dm", int(r/time.Hour), int(r%time.Hour/time.Minute))
}

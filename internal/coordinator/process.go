package coordinator

import (
	"fmt"
	"slices"
	"time"

	"github.com/podrunner/podrunner/internal/ciyaml"
	"github.com/podrunner/podrunner/internal/gitlab"
)

// Pipeline processing as GitLab's AtomicProcessingService does it: a job
// in "created" looks at the composite status of what it waits for (the
// jobs of all earlier stages, or its needs), waits while that is not
// complete, and then runs, is skipped, becomes manual or scheduled
// according to its when:.

// compositeStatus is Gitlab::Ci::Status::Composite over jobs: failed and
// canceled jobs allowed to fail count as success with warnings, manual
// jobs allowed to fail are ignored. dag is the needs variant, where a
// skipped or ignored need skips the job. It returns "" for no jobs.
func compositeStatus(jobs []*jobState, dag bool) string {
	if len(jobs) == 0 {
		return ""
	}
	set := map[string]bool{}
	for _, j := range jobs {
		st := j.status
		if st == StatusCanceling {
			st = StatusRunning
		}
		switch {
		case j.allowFailure && (st == StatusFailed || st == StatusCanceled):
			set["success_with_warnings"] = true
		case j.allowFailure && st == StatusManual:
			set["ignored"] = true
		default:
			set[st] = true
		}
	}
	only := func(allowed ...string) bool {
		for k := range set {
			if !slices.Contains(allowed, k) {
				return false
			}
		}
		return true
	}
	anyOf := func(l ...string) bool {
		for _, k := range l {
			if set[k] {
				return true
			}
		}
		return false
	}
	switch {
	case dag && anyOf(StatusSkipped, "ignored"):
		return StatusSkipped
	case only(StatusSkipped, "ignored"):
		return StatusSkipped
	case only(StatusSuccess, StatusSkipped, "success_with_warnings", "ignored"):
		return StatusSuccess
	case only(StatusCreated, "success_with_warnings", "ignored"):
		return StatusCreated
	case only(StatusCanceled, StatusSuccess, StatusSkipped, "success_with_warnings", "ignored"):
		return StatusCanceled
	case only(StatusPending, StatusCreated, StatusSkipped, "success_with_warnings", "ignored"):
		return StatusPending
	case anyOf(StatusRunning, StatusPending):
		return StatusRunning
	case anyOf(StatusManual):
		return StatusManual
	case anyOf(StatusScheduled):
		return StatusScheduled
	case anyOf(StatusCreated):
		return StatusRunning
	default:
		return StatusFailed
	}
}

// latestLocked are the jobs of the pipeline not replaced by a retry.
func latestLocked(pl *pipeline) []*jobState {
	var out []*jobState
	for _, j := range pl.jobs {
		if !j.retried {
			out = append(out, j)
		}
	}
	return out
}

// jobsNamed are the latest jobs called name (all nodes of a parallel job
// when name is the job's name before expansion).
func jobsNamed(pl *pipeline, name string) []*jobState {
	var out []*jobState
	for _, j := range pl.jobs {
		if !j.retried && matchesName(j.def, name) {
			out = append(out, j)
		}
	}
	return out
}

func matchesName(d *ciyaml.Job, name string) bool {
	return d.Name == name || (d.ParallelOf != "" && d.ParallelOf == name)
}

// previousStatusLocked is what j waits for: its needs (dag) or the jobs
// of earlier stages. No jobs at all count as success.
func previousStatusLocked(pl *pipeline, j *jobState) string {
	var prev []*jobState
	if j.dag {
		for _, n := range j.needs {
			prev = append(prev, jobsNamed(pl, n.name)...)
		}
	} else {
		for _, o := range latestLocked(pl) {
			if o.stageIdx < j.stageIdx {
				prev = append(prev, o)
			}
		}
	}
	st := compositeStatus(prev, j.dag)
	if st == "" {
		return StatusSuccess
	}
	return st
}

// validPrevious is Ci::ProcessBuildService: the statuses of what the job
// waits for that let it run; any other complete status skips it.
func validPrevious(j *jobState) []string {
	switch j.def.When {
	case ciyaml.WhenOnFailure:
		return []string{StatusFailed}
	case ciyaml.WhenAlways:
		return []string{StatusSuccess, StatusFailed, StatusSkipped}
	default: // on_success, manual, delayed
		if j.dag {
			return []string{StatusSuccess}
		}
		return []string{StatusSuccess, StatusSkipped}
	}
}

// processLocked advances the pipeline until nothing changes, then
// updates its status.
func (s *Server) processLocked(pl *pipeline) {
	for changed := true; changed; {
		changed = false
		jobs := latestLocked(pl)
		slices.SortStableFunc(jobs, func(a, b *jobState) int { return a.stageIdx - b.stageIdx })
		for _, j := range jobs {
			if j.status != StatusCreated {
				continue
			}
			prev := previousStatusLocked(pl, j)
			switch prev {
			case StatusSuccess, StatusFailed, StatusCanceled, StatusSkipped:
			default:
				continue // still waiting
			}
			changed = true
			if !slices.Contains(validPrevious(j), prev) {
				j.status = StatusSkipped
				j.endedAt = time.Now()
				continue
			}
			s.runProcessableLocked(j)
		}
	}
	s.updatePipelineStatusLocked(pl)
}

// runProcessableLocked starts a job whose turn came: delayed jobs are
// scheduled, manual ones wait to be played, the rest are queued.
func (s *Server) runProcessableLocked(j *jobState) {
	switch {
	case j.def.When == ciyaml.WhenDelayed && !j.played:
		j.status = StatusScheduled
		j.scheduledAt = time.Now().Add(j.def.StartIn)
		s.afterFuncLocked(j.def.StartIn, func() {
			s.mu.Lock()
			defer s.mu.Unlock()
			if j.status == StatusScheduled {
				s.enqueueLocked(j)
			}
		})
	case j.def.When == ciyaml.WhenManual && !j.played:
		j.status = StatusManual
	default:
		s.enqueueLocked(j)
	}
}

// resting reports whether a pipeline status waits for nothing but a
// person (WaitPipeline returns): finished, or blocked on a manual job.
func resting(status string) bool {
	switch status {
	case StatusSuccess, StatusFailed, StatusCanceled, StatusSkipped, StatusManual:
		return true
	}
	return false
}

// updatePipelineStatusLocked sets the pipeline status to the composite
// status of its latest jobs, as GitLab does ("success with warnings" is
// success; a pipeline blocked by a manual job is "manual").
func (s *Server) updatePipelineStatusLocked(pl *pipeline) {
	st := compositeStatus(latestLocked(pl), false)
	if st == "" {
		st = StatusSkipped
	}
	old := pl.status
	pl.status = st
	switch {
	case resting(st) && !pl.doneClosed:
		close(pl.done)
		pl.doneClosed = true
	case !resting(st) && pl.doneClosed:
		pl.done = make(chan struct{})
		pl.doneClosed = false
	}
	if old != st {
		s.notifyLocked()
	}
}

func (s *Server) enqueueLocked(j *jobState) {
	j.status = StatusPending
	j.queuedAt = time.Now()
	// Tick the queue of every runner that can take the job, like
	// Ci::UpdateBuildQueueService, so their long polls return.
	for _, r := range s.runners {
		if s.canPick(r, j) {
			r.queue = randHex(16)
		}
	}
	s.updatePipelineStatusLocked(j.pipeline)
	s.notifyLocked()
}

// Play starts a manual job, or a delayed (scheduled) one at once, as the
// UI's play button does. Jobs skipped because they wait for it are
// processed again (AfterRequeueJobService).
func (s *Server) Play(id int64) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	j := s.jobs[id]
	if j == nil || (j.status != StatusManual && j.status != StatusScheduled) {
		return fmt.Errorf("job %d is not a manual or delayed job waiting to be played", id)
	}
	j.played = true
	s.enqueueLocked(j)
	s.requeueDependentsLocked(j)
	s.processLocked(j.pipeline)
	return nil
}

// Retry retries a finished job as the UI's retry button does: a new job
// with the same name and a new id is queued; the old one keeps its status
// and is marked retried. It returns the new job's id.
func (s *Server) Retry(id int64) (int64, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	j := s.jobs[id]
	if j == nil || j.retried || !(j.status == StatusSuccess || j.status == StatusFailed || j.status == StatusCanceled) {
		return 0, fmt.Errorf("job %d cannot be retried (only the latest finished run of a job can)", id)
	}
	n := s.retryLocked(j)
	s.requeueDependentsLocked(n)
	s.processLocked(j.pipeline)
	return n.id, nil
}

// retryLocked is Ci::RetryJobService: a clone with a new id and token,
// queued at once; the original is marked retried.
func (s *Server) retryLocked(j *jobState) *jobState {
	j.retried = true
	n := &jobState{
		id: s.newID("job"), pipeline: j.pipeline, def: j.def, stageIdx: j.stageIdx,
		token: "glcbt-" + randHex(16), status: StatusCreated, allowFailure: j.def.AllowFailure,
		played: j.played, dag: j.dag, needs: j.needs, cacheKeys: j.cacheKeys,
	}
	j.pipeline.jobs = append(j.pipeline.jobs, n)
	s.jobs[n.id] = n
	s.enqueueLocked(n)
	return n
}

// requeueDependentsLocked is AfterRequeueJobService: skipped jobs of
// later stages (without needs) and jobs needing j, transitively, go back
// to created so processing looks at them again.
func (s *Server) requeueDependentsLocked(j *jobState) {
	pl := j.pipeline
	seen := map[*jobState]bool{j: true}
	queue := []*jobState{j}
	for len(queue) > 0 {
		cur := queue[0]
		queue = queue[1:]
		for _, o := range latestLocked(pl) {
			if seen[o] {
				continue
			}
			dependent := (!o.dag && o.stageIdx > cur.stageIdx) ||
				(o.dag && slices.ContainsFunc(o.needs, func(n needRef) bool { return matchesName(cur.def, n.name) }))
			if !dependent {
				continue
			}
			seen[o] = true
			queue = append(queue, o)
			if o.status == StatusSkipped {
				o.status = StatusCreated
				o.endedAt = time.Time{}
			}
		}
	}
}

// finishLocked ends a job, retries it when retry: allows, and advances
// its pipeline.
func (s *Server) finishLocked(j *jobState, status string, reason gitlab.FailureReason, exitCode int) {
	j.status, j.reason, j.exitCode = status, reason, exitCode
	j.waitAck = false
	j.endedAt = time.Now()
	if status == StatusFailed && j.reason == "" {
		j.reason = gitlab.ScriptFailure
	}
	if status == StatusFailed && len(j.def.AllowFailureExitCodes) > 0 {
		// allow_failure:exit_codes: allowed only with one of the codes.
		j.allowFailure = slices.Contains(j.def.AllowFailureExitCodes, exitCode)
	}
	if status == StatusFailed && autoRetryAllowed(j, retriesCount(j)) {
		s.retryLocked(j)
	}
	s.processLocked(j.pipeline)
	s.notifyLocked()
}

// retriesCount is how often a job of that name was retried already.
func retriesCount(j *jobState) int {
	n := 0
	for _, o := range j.pipeline.jobs {
		if o.retried && o != j && o.def.Name == j.def.Name {
			n++
		}
	}
	return n
}

// Failure reasons GitLab never retries automatically, and those it
// retries without retry: (Gitlab::Ci::Build::AutoRetry).
var (
	neverRetried = []gitlab.FailureReason{gitlab.CIQuotaExceeded, gitlab.NoMatchingRunner, gitlab.MissingDependencyFailure,
		gitlab.ForwardDeploymentFailure, gitlab.EnvironmentCreationFailure}
	defaultRetries = map[gitlab.FailureReason]int{gitlab.SchedulerFailure: 2, "runner_provisioning_timeout": 2}
)

// autoRetryAllowed is Gitlab::Ci::Build::AutoRetry#allowed?: retry:max
// applies when the failure reason is in retry:when (default always) or
// the exit code is in retry:exit_codes; with exit_codes and no when,
// only those exit codes retry.
func autoRetryAllowed(j *jobState, count int) bool {
	if slices.Contains(neverRetried, j.reason) {
		return false
	}
	r := j.def.Retry
	when := r.When
	if len(when) == 0 && len(r.ExitCodes) == 0 {
		when = []string{"always"}
	}
	onReason := slices.Contains(when, "always") || slices.Contains(when, string(j.reason))
	onCode := slices.Contains(r.ExitCodes, j.exitCode)
	maxRetries := defaultRetries[j.reason]
	if r.Max > 0 && (onReason || onCode) {
		maxRetries = r.Max
	}
	return maxRetries > 0 && maxRetries > count
}

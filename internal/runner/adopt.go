package runner

import (
	"context"
	"errors"
	"log/slog"
	"time"

	"github.com/podrunner/podrunner/internal/executor"
	"github.com/podrunner/podrunner/internal/gitlab"
)

// adopter is an executor whose jobs survive a restart of the runner and
// can be taken over by another manager of the same token: their state
// lives in the cluster (the Kubernetes executor).
type adopter interface {
	Adopt(ctx context.Context) ([]executor.Adoptable, error)
	Claim(ctx context.Context, a *executor.Adoptable) error
	ResumeJob(ctx context.Context, a executor.Adoptable, j *executor.Job) (executor.Result, error)
	Cleanup(ctx context.Context, keep func(jobID int64) bool) ([]string, error)
}

// cleanupInterval is how often leftover pods of ended jobs are looked for;
// takeoverInterval how often pods of dead managers are. With the
// executor's 15 s lease, a dead manager's jobs are taken over at most
// 15 s + 2 × 5 s after its last lease renewal.
const (
	cleanupInterval  = 5 * time.Minute
	takeoverInterval = 5 * time.Second
)

// adoptAll continues the jobs of this runner that were running when it
// stopped, and deletes the leftovers of the others. It runs before the
// runner asks for new jobs.
func (m *Manager) adoptAll(ctx context.Context, st *runnerState) {
	r := st.cfg.Load()
	ad, ok := r.Executor.(adopter)
	if !ok {
		return
	}
	actx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	resumed, _ := m.adoptPass(actx, st, r, ad, true)
	if _, err := ad.Cleanup(actx, func(id int64) bool { return resumed[id] || m.hasJob(id) }); err != nil {
		m.log.Warn("Cleaning up leftover pods failed", "runner", r.ShortToken, "error", err)
	}
}

// adoptPass resumes the jobs Adopt offers (this manager's from an earlier
// process, or a dead manager's) that still run in GitLab, each once it is
// claimed; ended ones are claimed for Cleanup. With wait it waits for free
// slots (at start); otherwise a job without a free slot is left for a
// later pass or another manager. It returns the jobs it resumed and
// whether an ended job's pod was claimed.
func (m *Manager) adoptPass(ctx context.Context, st *runnerState, r *Runner, ad adopter, wait bool) (resumed map[int64]bool, ended bool) {
	log := m.log.With("runner", r.ShortToken)
	resumed = map[int64]bool{}
	found, err := ad.Adopt(ctx)
	if err != nil {
		log.Error("Looking for the pods of running jobs failed; they are not adopted", "error", err)
		return resumed, false
	}
	for _, a := range found {
		if m.hasJob(a.JobID) {
			continue // run by this process (an executor replaced by a reload)
		}
		if m.endedHere(a.JobID) {
			// Reported by this process; its pod outlived the deletion
			// (the API server was down): Cleanup deletes it.
			ended = true
			continue
		}
		p := a.Payload
		jlog := log.With("job", a.JobID, "pod", a.Where, "previous_owner", a.Owner)
		// Is the job still running in GitLab? A keep-alive says so.
		res := r.API.UpdateJob(ctx, p.ID, p.Token, gitlab.UpdateJobRequest{State: gitlab.StateRunning})
		if res.State != gitlab.UpdateSucceeded {
			jlog.Info("Not adopting the pod of a job that has ended in GitLab", "answer", res.State.String())
			if err := ad.Claim(ctx, &a); err == nil {
				ended = true
			}
			continue
		}
		slot, limitSlot, ok := m.adoptSlots(ctx, st, a.Slot, wait)
		if !ok {
			jlog.Info("No slot free to adopt the job; it is left for later or another manager")
			continue
		}
		if err := ad.Claim(ctx, &a); err != nil {
			m.slots.release(slot)
			st.limit.release(limitSlot)
			if errors.Is(err, executor.ErrClaimLost) {
				jlog.Info("Another manager adopted the job first")
			} else {
				jlog.Warn("Claiming the job's pod failed", "error", err)
			}
			continue
		}
		if a.Owner == m.opts.SystemID {
			jlog.Info("Adopting the running job of an earlier runner process")
		} else {
			jlog.Warn("Taking over the running job of a manager whose lease expired")
		}
		resumed[p.ID] = true
		a := a
		m.startJobWith(st, r, slot, limitSlot, func() { m.resumeJob(st, r, ad, a, slot, jlog) })
	}
	return resumed, ended
}

// adoptSlots takes a concurrency slot (the pod's own when free) and a
// slot of the runner's limit; with wait (at start, before any request) it
// waits for them, without it does not block.
func (m *Manager) adoptSlots(ctx context.Context, st *runnerState, want int, wait bool) (slot, limitSlot int, ok bool) {
	if !wait {
		// A take-over must not wait for this manager's own long poll (up
		// to 50 s, and again after it), which holds the free capacity
		// with concurrent = 1: it borrows that capacity.
		if slot, ok = m.slots.borrow(want); !ok {
			return 0, 0, false
		}
		if limitSlot, ok = st.limit.borrow(-1); !ok {
			m.slots.release(slot)
			return 0, 0, false
		}
		return slot, limitSlot, true
	}
	slot = want
	if !m.slots.take(slot) {
		var err error
		if slot, err = m.slots.acquire(ctx); err != nil {
			return 0, 0, false
		}
	}
	limitSlot, err := st.limit.acquire(ctx)
	if err != nil {
		m.slots.release(slot)
		return 0, 0, false
	}
	return slot, limitSlot, true
}

// cleanupLoop deletes leftover pods periodically and takes over the jobs
// of dead managers more often, until the loops stop.
func (m *Manager) cleanupLoop(ctx context.Context, st *runnerState) {
	defer m.pollers.Done()
	lastCleanup := time.Now()
	for sleep(ctx, takeoverInterval) {
		r := st.cfg.Load()
		ad, ok := r.Executor.(adopter)
		if !ok {
			continue
		}
		resumed, ended := m.adoptPass(ctx, st, r, ad, false)
		if ended || time.Since(lastCleanup) >= cleanupInterval {
			lastCleanup = time.Now()
			if _, err := ad.Cleanup(ctx, func(id int64) bool { return resumed[id] || m.hasJob(id) }); err != nil {
				m.log.Warn("Cleaning up leftover pods failed", "runner", r.ShortToken, "error", err)
			}
		}
	}
}

func (m *Manager) hasJob(id int64) bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.jobs[id] != nil
}

// resumeJob is runJob for an adopted job: the trace is rebuilt by the
// executor from the pod (the same bytes GitLab already has), the trace
// sender learns GitLab's offset from its first answer, and the final
// state is reported as for any job.
func (m *Manager) resumeJob(st *runnerState, r *Runner, ad adopter, a executor.Adoptable, slot int, log *slog.Logger) {
	p := a.Payload
	js := &jobState{ID: p.ID, Runner: r.ShortToken, ProjectID: p.JobInfo.ProjectID, Slot: slot, Started: time.Now()}
	m.addJob(js, r)
	defer m.removeJob(js, r, log)
	tr, err := m.newTrace(r, p, log, false)
	if err != nil {
		log.Error("Cannot create the job log; failing the job", "error", err)
		m.failWithoutTrace(r, p, log)
		return
	}
	defer tr.Close()
	tr.Start(m.jobsCtx)
	result, handedOver := m.runExecutor(st, p, tr, log, func(ctx context.Context, j *executor.Job) (executor.Result, error) {
		j.Slot = slot
		return ad.ResumeJob(ctx, a, j)
	})
	if handedOver {
		m.handOver(tr, log)
		return
	}
	m.finish(r, p, js, tr, result, log)
}

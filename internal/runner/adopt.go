package runner

import (
	"context"
	"log/slog"
	"time"

	"github.com/podrunner/podrunner/internal/executor"
	"github.com/podrunner/podrunner/internal/executor/kubernetes"
	"github.com/podrunner/podrunner/internal/gitlab"
)

// adopter is an executor whose jobs survive a restart of the runner: their
// state lives in the cluster (the Kubernetes executor).
type adopter interface {
	Adopt(ctx context.Context) ([]kubernetes.Adoptable, error)
	ResumeJob(ctx context.Context, a kubernetes.Adoptable, j *executor.Job) (executor.Result, error)
	Cleanup(ctx context.Context, keep func(jobID int64) bool) ([]string, error)
}

// cleanupInterval is how often leftover pods of ended jobs are looked for.
const cleanupInterval = 5 * time.Minute

// adoptAll continues the jobs of this runner that were running when it
// stopped, and deletes the leftovers of the others. It runs before the
// runner asks for new jobs.
func (m *Manager) adoptAll(ctx context.Context, st *runnerState) {
	r := st.cfg.Load()
	ad, ok := r.Executor.(adopter)
	if !ok {
		return
	}
	log := m.log.With("runner", r.ShortToken)
	actx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	found, err := ad.Adopt(actx)
	if err != nil {
		log.Error("Looking for the pods of running jobs failed; they are not adopted", "error", err)
		return
	}
	resumed := map[int64]bool{}
	for _, a := range found {
		p := a.Payload
		jlog := log.With("job", a.JobID, "pod", a.PodName)
		// Is the job still running in GitLab? A keep-alive says so.
		res := r.API.UpdateJob(actx, p.ID, p.Token, gitlab.UpdateJobRequest{State: gitlab.StateRunning})
		if res.State != gitlab.UpdateSucceeded {
			jlog.Info("Not adopting the pod of a job that has ended in GitLab", "answer", res.State.String())
			continue
		}
		slot := a.Slot
		if !m.slots.take(slot) {
			var err error
			if slot, err = m.slots.acquire(actx); err != nil {
				jlog.Error("No slot free to adopt the job", "error", err)
				continue
			}
		}
		limitSlot, err := st.limit.acquire(actx)
		if err != nil {
			m.slots.release(slot)
			continue
		}
		resumed[p.ID] = true
		jlog.Info("Adopting the running job of an earlier runner process")
		a := a
		m.startJobWith(st, r, slot, limitSlot, func() { m.resumeJob(st, r, ad, a, slot, jlog) })
	}
	if _, err := ad.Cleanup(actx, func(id int64) bool { return resumed[id] || m.hasJob(id) }); err != nil {
		log.Warn("Cleaning up leftover pods failed", "error", err)
	}
}

// cleanupLoop deletes leftover pods periodically until the loops stop.
func (m *Manager) cleanupLoop(ctx context.Context, st *runnerState) {
	defer m.pollers.Done()
	for sleep(ctx, cleanupInterval) {
		r := st.cfg.Load()
		if ad, ok := r.Executor.(adopter); ok {
			if _, err := ad.Cleanup(ctx, m.hasJob); err != nil {
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
func (m *Manager) resumeJob(st *runnerState, r *Runner, ad adopter, a kubernetes.Adoptable, slot int, log *slog.Logger) {
	p := a.Payload
	js := &jobState{ID: p.ID, Runner: r.ShortToken, ProjectID: p.JobInfo.ProjectID, Slot: slot, Started: time.Now()}
	m.addJob(js, r)
	defer m.removeJob(js, r, log)
	tr, err := m.newTrace(r, p, log)
	if err != nil {
		log.Error("Cannot create the job log; failing the job", "error", err)
		m.failWithoutTrace(r, p, log)
		return
	}
	defer tr.Close()
	tr.Start(m.jobsCtx)
	result := m.runExecutor(st, p, tr, log, func(ctx context.Context, j *executor.Job) (executor.Result, error) {
		j.Slot = slot
		return ad.ResumeJob(ctx, a, j)
	})
	m.finish(r, p, js, tr, result, log)
}

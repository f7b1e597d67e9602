package runner

import (
	"context"
	"sync"
	"sync/atomic"
	"time"

	"github.com/podrunner/podrunner/internal/gitlab"
)

// runnerState is one runner's request loops and its running-job counters.
type runnerState struct {
	m   *Manager
	cfg atomic.Pointer[Runner]

	health *health
	limit  *slots // the runner's `limit`; a huge pool when unlimited

	ctx    context.Context
	cancel context.CancelFunc

	mu           sync.Mutex
	projectSlots map[int64]map[int]bool
}

const unlimited = 1 << 30

func newRunnerState(m *Manager, r *Runner) *runnerState {
	st := &runnerState{
		m:            m,
		health:       newHealth(r.UnhealthyRequestsLimit, r.UnhealthyInterval),
		limit:        newSlots(limitOf(r)),
		projectSlots: map[int64]map[int]bool{},
	}
	st.cfg.Store(r)
	return st
}

func limitOf(r *Runner) int {
	if r.Limit <= 0 {
		return unlimited
	}
	return r.Limit
}

func requestConcurrency(r *Runner) int {
	if r.RequestConcurrency < 1 {
		return 1
	}
	return r.RequestConcurrency
}

// start launches request_concurrency request loops; the manager's pollers
// group owns them.
func (st *runnerState) start(parent context.Context) {
	st.ctx, st.cancel = context.WithCancel(parent)
	r := st.cfg.Load()
	if m := st.m.opts.Metrics; m != nil {
		m.limit.WithLabelValues(r.ShortToken, r.Name, st.m.opts.SystemID).Set(float64(r.Limit))
		m.requestConc.WithLabelValues(r.ShortToken, r.Name, st.m.opts.SystemID).Set(float64(requestConcurrency(r)))
	}
	// Jobs of an earlier runner process are adopted before new ones are
	// requested, so they get their slots back.
	st.m.pollers.Add(1)
	go func() {
		defer st.m.pollers.Done()
		st.m.adoptAll(st.ctx, st)
		st.m.recoverAll(st)
		if st.ctx.Err() != nil {
			return
		}
		if _, ok := r.Executor.(adopter); ok {
			st.m.pollers.Add(1)
			go st.m.cleanupLoop(st.ctx, st)
		}
		for i := 0; i < requestConcurrency(r); i++ {
			st.m.pollers.Add(1)
			go st.loop()
		}
	}()
}

func (st *runnerState) stop() { st.cancel() }

// update takes reloaded settings for the same runner. A changed request
// concurrency takes effect after a restart of the loops, which a changed
// token (a different Key) also causes.
func (st *runnerState) update(r *Runner) {
	old := st.cfg.Swap(r)
	st.limit.setLimit(limitOf(r))
	if requestConcurrency(old) != requestConcurrency(r) {
		st.m.log.Info("request_concurrency changes after the runner's loops restart", "runner", r.ShortToken)
	}
}

// loop asks GitLab for jobs until stopped. GitLab (Workhorse) holds the
// request open while there is nothing new (long polling), so a queued job
// arrives at once; after an empty answer the loop waits what is left of
// check_interval, so a server without long polling is not hammered.
func (st *runnerState) loop() {
	defer st.m.pollers.Done()
	ctx := st.ctx
	for ctx.Err() == nil {
		if d := st.health.wait(); d > 0 {
			if !sleep(ctx, min(d, time.Minute)) {
				return
			}
			continue
		}
		limitSlot, err := st.limit.acquire(ctx)
		if err != nil {
			return
		}
		slot, err := st.m.slots.acquire(ctx)
		if err != nil {
			st.limit.release(limitSlot)
			return
		}
		if !st.m.admitBuild() {
			st.m.slots.release(slot)
			st.limit.release(limitSlot)
			return
		}
		r := st.cfg.Load()
		began := time.Now()
		st.m.slots.polling(slot, true)
		st.limit.polling(limitSlot, true)
		res := r.API.RequestJob(ctx, st.m.opts.SystemID)
		st.m.slots.polling(slot, false)
		st.limit.polling(limitSlot, false)
		if st.health.record(res.Healthy) {
			st.m.log.Error("Runner is unhealthy and will not ask for jobs for a while; check its token and GitLab",
				"runner", r.ShortToken, "unhealthy_interval", st.health.interval)
		}
		if res.Status != gitlab.JobReceived {
			st.m.unadmitBuild()
			st.m.slots.release(slot)
			st.limit.release(limitSlot)
			st.logRequest(r, res)
			if !sleep(ctx, st.m.checkInterval()-time.Since(began)) {
				return
			}
			continue
		}
		st.m.startJob(st, r, slot, limitSlot, res)
	}
}

func (st *runnerState) logRequest(r *Runner, res gitlab.RequestJobResult) {
	switch res.Status {
	case gitlab.NoJob:
		st.m.log.Debug("Checking for jobs... nothing", "runner", r.ShortToken)
	case gitlab.JobForbidden:
		st.m.log.Error("Checking for jobs... forbidden", "runner", r.ShortToken, "error", errString(res.Err))
	case gitlab.JobUnavailable:
		st.m.log.Warn("Checking for jobs... GitLab is currently unavailable", "runner", r.ShortToken)
	default:
		if st.ctx.Err() == nil {
			st.m.log.Warn("Checking for jobs... failed", "runner", r.ShortToken, "error", errString(res.Err))
		}
	}
}

func errString(err error) string {
	if err == nil {
		return ""
	}
	return err.Error()
}

// projectSlot returns the lowest index not used by another running job of
// this runner for the same project (CI_CONCURRENT_PROJECT_ID).
func (st *runnerState) projectSlot(project int64) int {
	st.mu.Lock()
	defer st.mu.Unlock()
	used := st.projectSlots[project]
	if used == nil {
		used = map[int]bool{}
		st.projectSlots[project] = used
	}
	for i := 0; ; i++ {
		if !used[i] {
			used[i] = true
			return i
		}
	}
}

func (st *runnerState) releaseProjectSlot(project int64, i int) {
	st.mu.Lock()
	defer st.mu.Unlock()
	delete(st.projectSlots[project], i)
	if len(st.projectSlots[project]) == 0 {
		delete(st.projectSlots, project)
	}
}

// sleep waits d or until ctx is done; it reports whether ctx is still live.
func sleep(ctx context.Context, d time.Duration) bool {
	if d <= 0 {
		return ctx.Err() == nil
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
		return false
	}
}

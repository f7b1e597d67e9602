// Package runner is the runner manager: per-runner job request loops,
// concurrency slots, the life of each job from GitLab's 201 to the confirmed
// final state, configuration reloads and graceful or hard shutdown.
package runner

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"sync"
	"time"

	"github.com/podrunner/podrunner/internal/executor"
	"github.com/podrunner/podrunner/internal/gitlab"
	"github.com/podrunner/podrunner/internal/jobrecord"
	"github.com/podrunner/podrunner/internal/proc"
)

// API is what the manager needs from GitLab for one runner.
type API interface {
	RequestJob(ctx context.Context, systemID string) gitlab.RequestJobResult
	UpdateJob(ctx context.Context, jobID int64, jobToken string, req gitlab.UpdateJobRequest) gitlab.UpdateResult
	PatchTrace(ctx context.Context, jobID int64, jobToken string, content []byte, offset int64, debugTrace bool) gitlab.PatchResult
}

// Runner is one [[runners]] entry, ready to use.
type Runner struct {
	// Name is the runner's description; ShortToken identifies it in logs
	// (never the full token).
	Name       string
	ShortToken string
	// Key identifies the runner across reloads (e.g. url + token).
	Key          string
	API          API
	Executor     executor.Executor
	ExecutorName string
	// Limit caps this runner's running jobs; 0 is unlimited.
	Limit int
	// RequestConcurrency is the number of job requests in flight at once.
	RequestConcurrency int
	// OutputLimit is the trace size limit in bytes; 0 means 4096 KiB.
	OutputLimit            int64
	UnhealthyRequestsLimit int
	UnhealthyInterval      time.Duration
}

// Settings are the global settings plus the runners.
type Settings struct {
	Concurrent      int
	CheckInterval   time.Duration
	ShutdownTimeout time.Duration
	Runners         []*Runner
}

// Options configure a Manager.
type Options struct {
	Logger   *slog.Logger
	SystemID string
	Version  string
	Revision string
	Metrics  *Metrics
	// TraceDir holds the on-disk job logs; "" is the OS temp dir.
	TraceDir string
	// StateDir holds a record per running job of an executor whose jobs
	// die with the runner (shell), so that the next runner process can
	// finish them after a crash (internal/jobrecord); "" keeps none.
	StateDir string
	// TraceUpdateInterval overrides the 3 s trace send interval (tests).
	TraceUpdateInterval time.Duration
	// MaxBuilds stops the manager after that many jobs (run-single); 0 is
	// unlimited.
	MaxBuilds int
	// WaitTimeout stops the manager when no job arrived for that long
	// (run-single --wait-timeout); 0 waits forever.
	WaitTimeout time.Duration
	// UntilStopped keeps Run running with no runner configured, until
	// Stop, Abort or the context (podrunner run: a config.toml without
	// runners yet waits for one to be registered).
	UntilStopped bool
}

const defaultCheckInterval = 3 * time.Second

// Manager runs the request loops and the jobs.
type Manager struct {
	opts Options
	log  *slog.Logger

	slots *slots

	mu       sync.Mutex
	settings Settings
	runners  map[string]*runnerState
	jobs     map[int64]*jobState
	// ended are the jobs this process ended lately, so a pod of one
	// that outlived its deletion (API server down) is not taken for a
	// job to adopt.
	ended     map[int64]time.Time
	started   int // jobs started, for MaxBuilds
	lastJobAt time.Time

	// pollCtx stops the request loops (graceful and hard stop).
	pollCtx  context.Context
	stopPoll context.CancelFunc
	// jobsCtx aborts running jobs (hard stop).
	jobsCtx   context.Context
	abortJobs context.CancelCauseFunc
	// finishCtx bounds final updates once a hard stop's timeout passed.
	finishCtx    context.Context
	cancelFinish context.CancelFunc

	// records is nil without StateDir; recovering holds the jobs of dead
	// runner processes being finished.
	records    *jobrecord.Store
	pidStart   uint64 // this process's start time, in its records
	recoverMu  sync.Mutex
	recovering map[int64]bool

	pollers sync.WaitGroup
	running sync.WaitGroup
	stopped chan struct{}
	once    sync.Once
}

// errShutdown is the abort cause of jobs stopped by a hard shutdown.
var errShutdown = errors.New("runner is shutting down")

// New builds a manager; call Run to start it.
func New(s Settings, opts Options) (*Manager, error) {
	if err := validate(s); err != nil {
		return nil, err
	}
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	m := &Manager{
		opts:      opts,
		log:       opts.Logger,
		slots:     newSlots(s.Concurrent),
		settings:  s,
		runners:   map[string]*runnerState{},
		jobs:      map[int64]*jobState{},
		ended:     map[int64]time.Time{},
		stopped:   make(chan struct{}),
		lastJobAt: time.Now(),

		recovering: map[int64]bool{},
	}
	if opts.StateDir != "" {
		// Without records the runner still works, as before: jobs of a
		// crashed process then stay running until GitLab times them out.
		st, err := jobrecord.Open(opts.StateDir)
		if err == nil {
			m.pidStart, err = proc.StartTime(os.Getpid())
		}
		if err != nil {
			m.log.Warn("Running without job records: after a crash of the runner its shell jobs are not finished", "error", err)
		} else {
			m.records = st
		}
	}
	m.pollCtx, m.stopPoll = context.WithCancel(context.Background())
	m.jobsCtx, m.abortJobs = context.WithCancelCause(context.Background())
	m.finishCtx, m.cancelFinish = context.WithCancel(context.Background())
	return m, nil
}

func validate(s Settings) error {
	if s.Concurrent < 1 {
		return fmt.Errorf("concurrent = %d: must be at least 1", s.Concurrent)
	}
	seen := map[string]bool{}
	for i, r := range s.Runners {
		if r.API == nil || r.Executor == nil {
			return fmt.Errorf("runners[%d] (%s): no API client or executor", i, r.Name)
		}
		if seen[r.Key] {
			return fmt.Errorf("runners[%d] (%s): the same runner is configured twice", i, r.Name)
		}
		seen[r.Key] = true
	}
	return nil
}

// Run starts the request loops and blocks until the manager stopped (Stop,
// Abort, MaxBuilds or WaitTimeout) and every job has been reported.
func (m *Manager) Run(ctx context.Context) error {
	go func() {
		select {
		case <-ctx.Done():
			m.Abort()
		case <-m.stopped:
		}
	}()
	m.mu.Lock()
	m.applyLocked(m.settings)
	m.mu.Unlock()
	if m.opts.WaitTimeout > 0 {
		m.pollers.Add(1)
		go m.watchIdle()
	}
	if m.opts.UntilStopped {
		m.pollers.Add(1)
		go func() {
			defer m.pollers.Done()
			<-m.pollCtx.Done()
		}()
	}
	m.pollers.Wait()
	m.running.Wait()
	m.once.Do(func() { close(m.stopped) })
	m.cancelFinish()
	m.abortJobs(errShutdown)
	return nil
}

// Stop stops asking for jobs and lets running jobs finish (SIGQUIT).
func (m *Manager) Stop() {
	m.log.Info("Stopping: no new jobs will be requested; waiting for running jobs to finish", "jobs", m.runningJobs())
	m.stopPoll()
}

// Abort stops asking for jobs and aborts running jobs, each reported failed;
// the final updates get ShutdownTimeout to reach GitLab (SIGTERM/SIGINT).
func (m *Manager) Abort() {
	m.mu.Lock()
	timeout := m.settings.ShutdownTimeout
	m.mu.Unlock()
	if timeout <= 0 {
		timeout = 30 * time.Second
	}
	m.log.Warn("Aborting running jobs", "jobs", m.runningJobs(), "shutdown_timeout", timeout)
	m.stopPoll()
	m.abortJobs(errShutdown)
	go func() {
		select {
		case <-time.After(timeout):
			m.log.Error("Shutdown timeout passed; giving up on the remaining final updates", "jobs", m.runningJobs())
			m.cancelFinish()
		case <-m.stopped:
		}
	}()
}

// Update applies reloaded settings. Running jobs are not disturbed: removed
// runners stop asking for jobs, their running jobs go on.
func (m *Manager) Update(s Settings) error {
	if err := validate(s); err != nil {
		return err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	m.settings = s
	m.slots.setLimit(s.Concurrent)
	if m.pollCtx.Err() == nil {
		m.applyLocked(s)
	}
	return nil
}

func (m *Manager) applyLocked(s Settings) {
	if m.opts.Metrics != nil {
		m.opts.Metrics.concurrent.Set(float64(s.Concurrent))
	}
	keep := map[string]bool{}
	for _, r := range s.Runners {
		keep[r.Key] = true
		if st, ok := m.runners[r.Key]; ok {
			st.update(r)
			continue
		}
		st := newRunnerState(m, r)
		m.runners[r.Key] = st
		st.start(m.pollCtx)
	}
	for key, st := range m.runners {
		if !keep[key] {
			st.stop()
			delete(m.runners, key)
		}
	}
}

func (m *Manager) checkInterval() time.Duration {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.settings.CheckInterval <= 0 {
		return defaultCheckInterval
	}
	return m.settings.CheckInterval
}

func (m *Manager) runningJobs() int {
	m.mu.Lock()
	defer m.mu.Unlock()
	return len(m.jobs)
}

// watchIdle implements run-single's --wait-timeout.
func (m *Manager) watchIdle() {
	defer m.pollers.Done()
	t := time.NewTicker(100 * time.Millisecond)
	defer t.Stop()
	for {
		select {
		case <-m.pollCtx.Done():
			return
		case <-t.C:
			m.mu.Lock()
			idle := len(m.jobs) == 0 && time.Since(m.lastJobAt) > m.opts.WaitTimeout
			m.mu.Unlock()
			if idle {
				m.log.Info("No job received within the wait timeout; stopping", "wait_timeout", m.opts.WaitTimeout)
				m.stopPoll()
				return
			}
		}
	}
}

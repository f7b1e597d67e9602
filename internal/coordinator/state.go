package coordinator

import (
	"encoding/json"
	"fmt"
	"hash/crc32"
	"os"
	"slices"
	"strings"
	"time"

	"github.com/podrunner/podrunner/internal/ciyaml"
	"github.com/podrunner/podrunner/internal/gitlab"
	"github.com/podrunner/podrunner/internal/job"
)

// Job statuses as GitLab names them.
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

type runner struct {
	id          int64
	token       string
	description string
	tags        []string
	runUntagged bool
	locked      bool
	paused      bool
	maxTimeout  int
	expiresAt   time.Time
	queue       string // queue version sent as X-GitLab-Last-Update
	managers    map[string]*manager
	createdUI   bool // glrt- authentication token (runner created in the UI/API)
}

type manager struct {
	systemID  string
	info      json.RawMessage
	features  map[string]bool
	contacted time.Time
}

type projectVar struct {
	job.Variable
	Protected bool
}

type project struct {
	id            int64
	fullPath      string
	source        string // the repository it mirrors
	bare          string // bare mirror served over HTTP
	defaultBranch string
	// protected are branches protected besides the default branch
	// (GitLab's Settings › Repository › Protected branches).
	protected    map[string]bool
	objectFormat string
	vars         []projectVar
	nextIID      int64
	timeout      time.Duration
}

type commit struct {
	sha, beforeSha string
	ref, refType   string
	protected      bool
	authorName     string
	authorEmail    string
	timestamp      string
	message        string
	title          string
	description    string
}

type pipeline struct {
	id, iid   int64
	project   *project
	cfg       *ciyaml.Config
	commit    commit
	source    string
	status    string
	createdAt time.Time
	jobs      []*jobState
	vars      []job.Variable // pipeline (trigger/manual) variables
	// done is closed while the status is resting (see resting).
	done       chan struct{}
	doneClosed bool
}

type jobState struct {
	id        int64
	pipeline  *pipeline
	def       *ciyaml.Job
	stageIdx  int
	token     string
	status    string
	waitAck   bool // assigned, waiting for the two-phase confirmation
	runner    *runner
	manager   *manager
	payload   *job.Payload
	raw       []byte // trace as received
	masked    []byte // trace as GitLab stores it (job token hidden)
	reason    gitlab.FailureReason
	exitCode  int
	checksum  string
	bytesize  int64
	queuedAt  time.Time
	startedAt time.Time
	endedAt   time.Time
	touched   time.Time
	// allowFailure is the job's effective allow_failure: the YAML value,
	// or, with allow_failure:exit_codes, whether the exit code matched.
	allowFailure bool
	// retried marks a job replaced by a retry (GitLab keeps it, failed).
	retried bool
	// played: a manual job started by Play or named in PipelineOptions.Jobs.
	played bool
	// dag is true when the job has `needs:` (scheduling_type dag).
	dag bool
	// needs are the jobs of `needs:` present in the pipeline, after
	// parallel expansion.
	needs       []needRef
	scheduledAt time.Time
	// cacheKeys are the payload cache keys, computed at creation like
	// GitLab's pipeline seed does (cache:key:files needs git).
	cacheKeys []string
	files     map[string]*storedArtifact // by artifact_type
	// dotenv are the variables of the job's dotenv report.
	dotenv []job.Variable
	// fault hooks
	cancelAfterBytes int64
	cancelAfter      time.Duration
	cancelAfterSet   bool
	cancelGraceful   bool
}

type needRef struct {
	name      string
	artifacts bool
}

func (j *jobState) processingOnRunner() bool {
	return j.status == StatusRunning || j.status == StatusCanceling
}

// finished reports whether the job reached a final status.
func (j *jobState) finished() bool {
	switch j.status {
	case StatusSuccess, StatusFailed, StatusCanceled, StatusSkipped:
		return true
	}
	return false
}

// JobView is a snapshot of a job for tests.
type JobView struct {
	ID         int64
	PipelineID int64
	Name       string
	Stage      string
	Status     string
	Token      string
	RunnerID   int64
	// RunnerManager is the system_id of the manager that picked the job up
	// (GitLab shows it on the job page).
	RunnerManager string
	FailureReason gitlab.FailureReason
	ExitCode      int
	// Checksum and Bytesize are what the runner sent with its final update.
	Checksum string
	Bytesize int64
	// TraceChecksum is crc32:%08x of the trace received.
	TraceChecksum string
	TraceSize     int64
	Payload       *job.Payload
	QueuedAt      time.Time
	StartedAt     time.Time
	FinishedAt    time.Time
	HasArtifacts  bool
	// When is the job's when: (on_success, manual, delayed, …).
	When string
	// AllowFailure is the effective allow_failure: with
	// allow_failure:exit_codes it becomes true only when the job failed
	// with one of those codes ("failed, allowed to fail": a warning).
	AllowFailure bool
	// Retried is true for a job replaced by a retry (a new job id with the
	// same name); it keeps its failed status.
	Retried bool
	// Needs are the names of the jobs it needs; nil without needs:.
	Needs []string
	// Duration is from start to finish (to now while it runs).
	Duration time.Duration
	// ScheduledAt is when a delayed job starts (status scheduled).
	ScheduledAt time.Time
	// ArtifactTypes are the artifact types uploaded (archive, dotenv, …).
	ArtifactTypes []string
	// DotenvVariables are the variables of its dotenv report.
	DotenvVariables []job.Variable
}

// PipelineView is a snapshot of a pipeline.
type PipelineView struct {
	ID      int64
	IID     int64
	Project string
	Ref     string
	Sha     string
	Status  string
	Jobs    []JobView
	// Warnings are the ciyaml warnings (keywords ignored).
	Warnings []string
}

func (s *Server) viewLocked(j *jobState) JobView {
	v := JobView{
		ID: j.id, PipelineID: j.pipeline.id, Name: j.def.Name, Stage: j.def.Stage, Status: j.status,
		Token: j.token, FailureReason: j.reason, ExitCode: j.exitCode, Checksum: j.checksum,
		Bytesize: j.bytesize, TraceChecksum: crcString(j.raw), TraceSize: int64(len(j.raw)),
		Payload: j.payload, QueuedAt: j.queuedAt, StartedAt: j.startedAt, FinishedAt: j.endedAt,
		HasArtifacts: j.files["archive"] != nil, When: j.def.When, AllowFailure: j.allowFailure,
		Retried: j.retried, ScheduledAt: j.scheduledAt, DotenvVariables: slices.Clone(j.dotenv),
	}
	if v.When == "" {
		v.When = ciyaml.WhenOnSuccess
	}
	if j.dag {
		v.Needs = []string{}
		for _, n := range j.needs {
			v.Needs = append(v.Needs, n.name)
		}
	}
	if !j.startedAt.IsZero() {
		end := j.endedAt
		if end.IsZero() {
			end = time.Now()
		}
		v.Duration = end.Sub(j.startedAt)
	}
	for t := range j.files {
		v.ArtifactTypes = append(v.ArtifactTypes, t)
	}
	slices.Sort(v.ArtifactTypes)
	if j.runner != nil {
		v.RunnerID = j.runner.id
	}
	if j.manager != nil {
		v.RunnerManager = j.manager.systemID
	}
	return v
}

func crcString(b []byte) string {
	return fmt.Sprintf("crc32:%08x", crc32.ChecksumIEEE(b))
}

// Job returns a snapshot of the job; ok is false for an unknown id.
func (s *Server) Job(id int64) (JobView, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	j := s.jobs[id]
	if j == nil {
		return JobView{}, false
	}
	return s.viewLocked(j), true
}

// Trace is the job log as the runner sent it (before GitLab's masking of
// the job token), so tests see exactly what went over the wire.
func (s *Server) Trace(id int64) []byte {
	s.mu.Lock()
	defer s.mu.Unlock()
	if j := s.jobs[id]; j != nil {
		return slices.Clone(j.raw)
	}
	return nil
}

// StoredTrace is the job log as GitLab stores and shows it: the job token
// replaced by x characters of the same length.
func (s *Server) StoredTrace(id int64) []byte {
	s.mu.Lock()
	defer s.mu.Unlock()
	if j := s.jobs[id]; j != nil {
		return slices.Clone(j.masked)
	}
	return nil
}

// Artifact returns the uploaded artifact archive of a job, read whole
// into memory (for tests; downloads stream from disk).
func (s *Server) Artifact(id int64) (filename string, data []byte, ok bool) {
	return s.ArtifactOf(id, "archive")
}

// ArtifactOf returns a job's uploaded artifact of one artifact_type
// (archive, dotenv, junit, …) as stored (a gzip file for reports).
func (s *Server) ArtifactOf(id int64, typ string) (filename string, data []byte, ok bool) {
	s.mu.Lock()
	var a *storedArtifact
	if j := s.jobs[id]; j != nil {
		a = j.files[typ]
	}
	s.mu.Unlock()
	if a == nil {
		return "", nil, false
	}
	data, err := os.ReadFile(a.path)
	if err != nil {
		return "", nil, false
	}
	return a.filename, data, true
}

// Pipeline returns a snapshot of a pipeline.
func (s *Server) Pipeline(id int64) (PipelineView, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	p := s.pipelines[id]
	if p == nil {
		return PipelineView{}, false
	}
	return s.pipelineViewLocked(p), true
}

func (s *Server) pipelineViewLocked(p *pipeline) PipelineView {
	v := PipelineView{ID: p.id, IID: p.iid, Project: p.project.fullPath, Ref: p.commit.ref, Sha: p.commit.sha, Status: p.status}
	for _, j := range p.jobs {
		v.Jobs = append(v.Jobs, s.viewLocked(j))
	}
	for _, w := range p.cfg.Warnings {
		v.Warnings = append(v.Warnings, w.Error())
	}
	return v
}

// RunnerOptions describe a runner created directly (as in GitLab's UI or
// POST /user/runners), skipping registration.
type RunnerOptions struct {
	Description string
	Tags        []string
	RunUntagged bool
	Locked      bool
	Paused      bool
	// MaximumTimeout caps job timeouts, in seconds; 0 for none.
	MaximumTimeout int
	// TokenExpiresAt is sent as token_expires_at; zero for never.
	TokenExpiresAt time.Time
}

// CreateRunner creates a runner with a glrt- authentication token, as a
// runner created in GitLab's UI; register it with POST runners/verify.
func (s *Server) CreateRunner(o RunnerOptions) (id int64, token string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	r := s.addRunnerLocked(o, true)
	return r.id, r.token
}

func (s *Server) addRunnerLocked(o RunnerOptions, ui bool) *runner {
	r := &runner{
		id: s.newID("runner"), description: o.Description, tags: o.Tags, runUntagged: o.RunUntagged,
		locked: o.Locked, paused: o.Paused, maxTimeout: o.MaximumTimeout, expiresAt: o.TokenExpiresAt,
		queue: randHex(16), managers: map[string]*manager{}, createdUI: ui,
	}
	if ui {
		r.token = "glrt-" + randHex(10)
	} else {
		// Runners registered with a registration token get tokens without
		// the glrt- prefix; the runner relies on that to choose between
		// DELETE runners and DELETE runners/managers.
		r.token = randHex(10)
	}
	s.runners[r.id] = r
	return r
}

// RunnerManager is what a runner manager (one runner process, keyed by
// system_id) reported.
type RunnerManager struct {
	SystemID  string
	Info      json.RawMessage
	Features  map[string]bool
	Contacted time.Time
}

// RunnerView is a snapshot of a runner.
type RunnerView struct {
	ID          int64
	Token       string
	Description string
	Tags        []string
	RunUntagged bool
	Paused      bool
	Managers    []RunnerManager
}

// Runners lists the runners in id order.
func (s *Server) Runners() []RunnerView {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []RunnerView
	for _, r := range s.runners {
		v := RunnerView{ID: r.id, Token: r.token, Description: r.description, Tags: slices.Clone(r.tags), RunUntagged: r.runUntagged, Paused: r.paused}
		for _, m := range r.managers {
			v.Managers = append(v.Managers, RunnerManager{SystemID: m.systemID, Info: m.info, Features: m.features, Contacted: m.contacted})
		}
		slices.SortFunc(v.Managers, func(a, b RunnerManager) int { return strings.Compare(a.SystemID, b.SystemID) })
		out = append(out, v)
	}
	slices.SortFunc(out, func(a, b RunnerView) int { return int(a.ID - b.ID) })
	return out
}

// SetRunnerPaused pauses or resumes a runner (a paused runner gets 204).
func (s *Server) SetRunnerPaused(id int64, paused bool) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	r := s.runners[id]
	if r == nil {
		return fmt.Errorf("runner %d not found", id)
	}
	r.paused = paused
	r.queue = randHex(16)
	s.notifyLocked()
	return nil
}

func (s *Server) runnerByToken(tok string) *runner {
	if tok == "" {
		return nil
	}
	for _, r := range s.runners {
		if r.token == tok {
			return r
		}
	}
	return nil
}

// canPick reports whether the runner may take the job (tags).
func (s *Server) canPick(r *runner, j *jobState) bool {
	if r.paused {
		return false
	}
	if s.opts.IgnoreTags {
		return true
	}
	if len(j.def.Tags) == 0 {
		return r.runUntagged
	}
	for _, t := range j.def.Tags {
		if !slices.Contains(r.tags, t) {
			return false
		}
	}
	return true
}

package gitlabtest

import (
	"context"
	"fmt"
	"path"
	"slices"
	"strings"
	"time"

	"github.com/podrunner/podrunner/internal/ciyaml"
	"github.com/podrunner/podrunner/internal/job"
)

// ProjectVariable is a CI/CD variable set in the project settings.
type ProjectVariable struct {
	Key   string
	Value string
	// Masked hides the value in logs; File makes it a file variable; Raw
	// disables $VAR expansion; Protected limits it to protected refs.
	Masked, File, Raw, Protected bool
}

// AddProject serves the git repository at repoDir (a local repository
// with commits) as fullPath ("group/project"), from a bare mirror. It
// returns the project id.
func (s *Server) AddProject(fullPath, repoDir string) (int64, error) {
	fullPath = strings.Trim(fullPath, "/")
	if fullPath == "" || !strings.Contains(fullPath, "/") || strings.Contains(fullPath, "..") || strings.HasSuffix(fullPath, ".git") {
		return 0, fmt.Errorf("project path %q: want namespace/name", fullPath)
	}
	s.mu.Lock()
	if s.projects[fullPath] != nil {
		s.mu.Unlock()
		return 0, fmt.Errorf("project %s already exists", fullPath)
	}
	s.mu.Unlock()
	bare, err := s.mirror(fullPath, repoDir)
	if err != nil {
		return 0, err
	}
	head, _ := s.gitOut(bare, "symbolic-ref", "--short", "HEAD")
	format, err := s.gitOut(bare, "rev-parse", "--show-object-format")
	if err != nil || format == "" {
		format = "sha1"
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	p := &project{
		id: s.newID("project"), fullPath: fullPath, source: repoDir, bare: bare,
		defaultBranch: head, objectFormat: format, timeout: s.opts.ProjectTimeout,
	}
	if p.defaultBranch == "" {
		p.defaultBranch = "main"
	}
	s.projects[fullPath] = p
	return p.id, nil
}

// SetProjectVariable adds or replaces a project CI/CD variable.
func (s *Server) SetProjectVariable(project string, v ProjectVariable) error {
	if v.Key == "" {
		return fmt.Errorf("variable key is empty")
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	p := s.projects[project]
	if p == nil {
		return fmt.Errorf("project %s not found", project)
	}
	pv := projectVar{Variable: job.Variable{Key: v.Key, Value: v.Value, Public: false, Masked: v.Masked, File: v.File, Raw: v.Raw}, Protected: v.Protected}
	for i := range p.vars {
		if p.vars[i].Key == v.Key {
			p.vars[i] = pv
			return nil
		}
	}
	p.vars = append(p.vars, pv)
	return nil
}

// SetProjectTimeout sets the project's default job timeout.
func (s *Server) SetProjectTimeout(project string, d time.Duration) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	p := s.projects[project]
	if p == nil {
		return fmt.Errorf("project %s not found", project)
	}
	p.timeout = d
	return nil
}

// PipelineOptions refine CreatePipelineWith.
type PipelineOptions struct {
	// Ref is a branch or tag; the default branch when empty.
	Ref string
	// Source is CI_PIPELINE_SOURCE; "push" when empty.
	Source string
	// CIConfig, when set, replaces the .gitlab-ci.yml of the commit (for
	// `exec` on uncommitted changes).
	CIConfig []byte
	// Variables are pipeline variables (as from the UI "Run pipeline").
	Variables []ProjectVariable
	// Jobs, when not empty, limits the pipeline to these jobs and,
	// transitively, the jobs they need (`podrunner exec --job`); named
	// manual jobs run as if played.
	Jobs []string
}

// Pipeline is a created pipeline.
type Pipeline struct {
	ID  int64
	IID int64
	Sha string
	// Jobs are the job ids in file order.
	Jobs map[string]int64
	// Warnings name .gitlab-ci.yml keywords that were ignored.
	Warnings []string
}

// CreatePipeline runs the .gitlab-ci.yml at ref of the project.
func (s *Server) CreatePipeline(project, ref string) (*Pipeline, error) {
	return s.CreatePipelineWith(project, PipelineOptions{Ref: ref})
}

// CreatePipelineWith creates a pipeline: it refreshes the mirror from the
// source repository, reads the config at the commit, creates the jobs and
// queues the first stage.
func (s *Server) CreatePipelineWith(projectPath string, o PipelineOptions) (*Pipeline, error) {
	s.mu.Lock()
	p := s.projects[projectPath]
	s.mu.Unlock()
	if p == nil {
		return nil, fmt.Errorf("project %s not found (add it with AddProject)", projectPath)
	}
	if err := s.refresh(p); err != nil {
		return nil, err
	}
	ref := o.Ref
	if ref == "" {
		ref = p.defaultBranch
	}
	c, err := s.resolveCommit(p, ref)
	if err != nil {
		return nil, err
	}
	data := o.CIConfig
	if data == nil {
		data, err = s.gitBytes(p.bare, "cat-file", "blob", c.sha+":.gitlab-ci.yml")
		if err != nil {
			return nil, fmt.Errorf("read .gitlab-ci.yml at %s of %s (commit one, or pass PipelineOptions.CIConfig): %w", ref, projectPath, err)
		}
	}
	cfg, err := ciyaml.Parse(".gitlab-ci.yml", data)
	if err != nil {
		return nil, fmt.Errorf("pipeline for %s at %s: %w", projectPath, ref, err)
	}
	c.protected = c.refType == "branch" && c.ref == p.defaultBranch

	s.mu.Lock()
	pl := &pipeline{
		id: s.newID("pipeline"), project: p, cfg: cfg, commit: c, source: o.Source,
		status: StatusCreated, createdAt: time.Now(), done: make(chan struct{}),
	}
	s.mu.Unlock()
	if pl.source == "" {
		pl.source = "push"
	}
	// GitLab keeps a persistent ref per pipeline; runners fetch it.
	if _, err := s.gitOut(p.bare, "update-ref", fmt.Sprintf("refs/pipelines/%d", pl.id), c.sha); err != nil {
		return nil, fmt.Errorf("create pipeline ref: %w", err)
	}

	s.mu.Lock()
	defer s.mu.Unlock()
	p.nextIID++
	pl.iid = p.nextIID
	for _, v := range o.Variables {
		pl.vars = append(pl.vars, job.Variable{Key: v.Key, Value: v.Value, Masked: v.Masked, File: v.File, Raw: v.Raw})
	}
	out := &Pipeline{ID: pl.id, IID: pl.iid, Sha: c.sha, Jobs: map[string]int64{}}
	for _, w := range cfg.Warnings {
		out.Warnings = append(out.Warnings, w.Error())
	}
	for _, d := range cfg.Jobs {
		j := &jobState{
			id: s.newID("job"), pipeline: pl, def: d, stageIdx: slices.Index(cfg.Stages, d.Stage),
			token: "glcbt-" + randHex(16), status: StatusCreated,
		}
		pl.jobs = append(pl.jobs, j)
		s.jobs[j.id] = j
		out.Jobs[d.Name] = j.id
	}
	s.pipelines[pl.id] = pl
	s.processLocked(pl)
	return out, nil
}

// processLocked advances a pipeline stage by stage, as GitLab's
// ProcessPipelineService does for stage-ordered pipelines.
func (s *Server) processLocked(pl *pipeline) {
	prior := StatusSuccess // composite status of earlier stages
	for idx := range pl.cfg.Stages {
		var stage []*jobState
		for _, j := range pl.jobs {
			if j.stageIdx == idx {
				stage = append(stage, j)
			}
		}
		for _, j := range stage {
			if j.status != StatusCreated {
				continue
			}
			switch decide(j.def.When, prior) {
			case "run":
				s.enqueueLocked(j)
			case StatusManual:
				j.status = StatusManual
			case StatusSkipped:
				j.status = StatusSkipped
				j.endedAt = time.Now()
			}
		}
		for _, j := range stage {
			if !j.complete() {
				return // later stages wait for this one
			}
		}
		for _, j := range stage {
			switch {
			case j.failedBlocking():
				prior = StatusFailed
			case j.status == StatusCanceled && prior != StatusFailed:
				prior = StatusCanceled
			}
		}
	}
	// Every job is complete.
	if pl.status == StatusSuccess || pl.status == StatusFailed || pl.status == StatusCanceled {
		return
	}
	switch prior {
	case StatusFailed:
		pl.status = StatusFailed
	case StatusCanceled:
		pl.status = StatusCanceled
	default:
		pl.status = StatusSuccess
	}
	close(pl.done)
}

// decide maps a job's when: and the earlier stages' status to what happens.
func decide(when, prior string) string {
	switch when {
	case ciyaml.WhenOnFailure:
		if prior == StatusFailed {
			return "run"
		}
		return StatusSkipped
	case ciyaml.WhenAlways:
		return "run"
	case ciyaml.WhenManual:
		if prior == StatusSuccess {
			return StatusManual
		}
		return StatusSkipped
	default: // on_success, delayed (the delay is not implemented)
		if prior == StatusSuccess {
			return "run"
		}
		return StatusSkipped
	}
}

func (s *Server) enqueueLocked(j *jobState) {
	j.status = StatusPending
	j.queuedAt = time.Now()
	if j.pipeline.status == StatusCreated {
		j.pipeline.status = StatusPending
	}
	// Tick the queue of every runner that can take the job, like
	// Ci::UpdateBuildQueueService, so their long polls return.
	for _, r := range s.runners {
		if s.canPick(r, j) {
			r.queue = randHex(16)
		}
	}
	s.notifyLocked()
}

// Play starts a manual job.
func (s *Server) Play(id int64) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	j := s.jobs[id]
	if j == nil || j.status != StatusManual {
		return fmt.Errorf("job %d is not a manual job waiting to be played", id)
	}
	s.enqueueLocked(j)
	if j.pipeline.status == StatusSuccess {
		j.pipeline.status = StatusRunning
		j.pipeline.done = make(chan struct{})
	}
	return nil
}

// finishLocked ends a job and advances its pipeline.
func (s *Server) finishLocked(j *jobState, status, reason string, exitCode int) {
	j.status, j.reason, j.exitCode = status, reason, exitCode
	j.waitAck = false
	j.endedAt = time.Now()
	if status == StatusFailed && j.reason == "" {
		j.reason = "script_failure"
	}
	s.processLocked(j.pipeline)
	s.notifyLocked()
}

// WaitPipeline waits until the pipeline finished and returns its view.
func (s *Server) WaitPipeline(ctx context.Context, id int64) (PipelineView, error) {
	s.mu.Lock()
	pl := s.pipelines[id]
	s.mu.Unlock()
	if pl == nil {
		return PipelineView{}, fmt.Errorf("pipeline %d not found", id)
	}
	for {
		s.mu.Lock()
		done := pl.done
		s.mu.Unlock()
		select {
		case <-done:
			s.mu.Lock()
			v := s.pipelineViewLocked(pl)
			s.mu.Unlock()
			if v.Status == StatusSuccess || v.Status == StatusFailed || v.Status == StatusCanceled {
				return v, nil
			}
		case <-ctx.Done():
			s.mu.Lock()
			v := s.pipelineViewLocked(pl)
			s.mu.Unlock()
			return v, fmt.Errorf("wait for pipeline %d (status %s): %w", id, v.Status, ctx.Err())
		}
	}
}

// WaitJob waits until the job has one of the statuses.
func (s *Server) WaitJob(ctx context.Context, id int64, statuses ...string) (JobView, error) {
	for {
		s.mu.Lock()
		j := s.jobs[id]
		if j == nil {
			s.mu.Unlock()
			return JobView{}, fmt.Errorf("job %d not found", id)
		}
		v := s.viewLocked(j)
		ch := s.changed
		s.mu.Unlock()
		if slices.Contains(statuses, v.Status) {
			return v, nil
		}
		select {
		case <-ch:
		case <-time.After(20 * time.Millisecond): // status changes without a queue change (running)
		case <-ctx.Done():
			return v, fmt.Errorf("wait for job %d to be %s (is %s): %w", id, strings.Join(statuses, "/"), v.Status, ctx.Err())
		}
	}
}

// stuckLoop fails running jobs that stopped talking (StuckCiJobsWorker).
func (s *Server) stuckLoop() {
	defer s.wg.Done()
	t := time.NewTicker(max(s.opts.StuckTimeout/4, 10*time.Millisecond))
	defer t.Stop()
	for {
		select {
		case <-s.done:
			return
		case <-t.C:
		}
		s.mu.Lock()
		for _, j := range s.jobs {
			if j.processingOnRunner() && time.Since(j.touched) > s.opts.StuckTimeout {
				s.finishLocked(j, StatusFailed, "stuck_or_timeout_failure", 0)
			}
		}
		s.mu.Unlock()
	}
}

func projectName(fullPath string) string { return path.Base(fullPath) }

func projectNamespace(fullPath string) string { return path.Dir(fullPath) }

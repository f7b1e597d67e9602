package coordinator

import (
	"context"
	"fmt"
	"path"
	"slices"
	"strings"
	"time"

	"github.com/podrunner/podrunner/internal/ciyaml"
	"github.com/podrunner/podrunner/internal/gitlab"
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

// SetDefaultBranch sets the project's default branch (CI_DEFAULT_BRANCH;
// pipelines on it run on a protected ref). GitLab takes the first pushed
// branch; exec names the repository's own default, which its one-branch
// snapshot may not hold.
func (s *Server) SetDefaultBranch(project, branch string) error {
	if branch == "" {
		return fmt.Errorf("default branch of %s: empty name", project)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	p := s.projects[project]
	if p == nil {
		return fmt.Errorf("project %s not found", project)
	}
	p.defaultBranch = branch
	return nil
}

// ProtectBranch makes branch protected besides the default branch:
// pipelines on it get protected variables, CI_COMMIT_REF_PROTECTED=true and
// the -protected cache suffix.
func (s *Server) ProtectBranch(project, branch string) error {
	if branch == "" {
		return fmt.Errorf("protected branch of %s: empty name", project)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	p := s.projects[project]
	if p == nil {
		return fmt.Errorf("project %s not found", project)
	}
	if p.protected == nil {
		p.protected = map[string]bool{}
	}
	p.protected[branch] = true
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
	// BeforeSha is the commit before the push (CI_COMMIT_BEFORE_SHA);
	// rules:changes compare against it. Empty: none (a new branch), and
	// every rules:changes is true, as in GitLab.
	BeforeSha string
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

// CreatePipelineWith creates a pipeline as GitLab's CreatePipelineService
// does: it refreshes the mirror from the source repository, reads the
// config at the commit (includes from the same commit), evaluates
// workflow:rules, rules, only/except against the pipeline's variables and
// the push's changes, creates the jobs and processes the pipeline. A
// pipeline filtered out by workflow:rules is an error wrapping
// ciyaml.ErrFiltered; one without jobs is an error as in GitLab.
//
// With PipelineOptions.CIConfig (exec on uncommitted changes), included
// files are read from the working copy of the source repository instead
// of the commit, so they may be uncommitted too.
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
	if o.BeforeSha != "" {
		before, err := s.gitOut(p.bare, "rev-parse", "--verify", o.BeforeSha+"^{commit}")
		if err != nil {
			return nil, fmt.Errorf("before sha %s of %s: %w", o.BeforeSha, projectPath, err)
		}
		c.beforeSha = before
	}
	c.protected = c.refType == "branch" && (c.ref == p.defaultBranch || p.protected[c.ref])
	readFile := s.commitReader(p, c.sha)
	data := o.CIConfig
	if data == nil {
		data, err = readFile(".gitlab-ci.yml")
		if err != nil {
			return nil, fmt.Errorf("read .gitlab-ci.yml at %s of %s (commit one, or pass PipelineOptions.CIConfig): %w", ref, projectPath, err)
		}
	} else {
		readFile = workingCopyReader(p.source)
	}
	source := o.Source
	if source == "" {
		source = "push"
	}

	s.mu.Lock()
	pl := &pipeline{
		id: s.newID("pipeline"), project: p, cfg: &ciyaml.Config{}, commit: c, source: source,
		status: StatusCreated, createdAt: time.Now(), done: make(chan struct{}),
	}
	p.nextIID++
	pl.iid = p.nextIID
	for _, v := range o.Variables {
		pl.vars = append(pl.vars, job.Variable{Key: v.Key, Value: v.Value, Masked: v.Masked, File: v.File, Raw: v.Raw})
	}
	// include:rules and include paths see the pipeline's variables
	// without the YAML's (GitLab reads includes before the YAML).
	incEnv := ciyaml.Env{Variables: s.pipelineEnvLocked(pl), Ref: c.ref, RefType: c.refType, Source: source}
	s.mu.Unlock()
	incEnv.Exists = s.existsFunc(p, c.sha)
	if !isZeroSha(c.beforeSha) {
		incEnv.Changes, err = s.changesFunc(p, c.beforeSha, c.sha)
		if err != nil {
			return nil, err
		}
	}
	cfg, err := ciyaml.ParseWith(".gitlab-ci.yml", data, ciyaml.ParseOptions{ReadFile: readFile, IncludeEnv: &incEnv})
	if err != nil {
		return nil, fmt.Errorf("pipeline for %s at %s: %w", projectPath, ref, err)
	}
	s.mu.Lock()
	pl.cfg = cfg
	env := ciyaml.Env{Variables: s.pipelineEnvLocked(pl), Ref: c.ref, RefType: c.refType, Source: source}
	s.mu.Unlock()
	env.Exists, env.Changes = incEnv.Exists, incEnv.Changes
	evaluate := s.evaluate
	if evaluate == nil {
		evaluate = (*ciyaml.Config).Evaluate
	}
	defs, err := evaluate(cfg, env)
	if err != nil {
		return nil, fmt.Errorf("pipeline for %s at %s: %w", projectPath, ref, err)
	}
	defs, played, err := selectJobs(defs, cfg.Stages, o.Jobs)
	if err != nil {
		return nil, fmt.Errorf("pipeline for %s at %s: %w", projectPath, ref, err)
	}
	if len(defs) == 0 {
		return nil, fmt.Errorf("pipeline for %s at %s: No stages / jobs for this pipeline", projectPath, ref)
	}
	jobs := make([]*jobState, 0, len(defs))
	for _, d := range defs {
		j := &jobState{
			pipeline: pl, def: d, stageIdx: slices.Index(cfg.Stages, d.Stage), status: StatusCreated,
			allowFailure: d.AllowFailure, played: played[d], dag: d.Needs != nil,
		}
		if j.stageIdx < 0 {
			return nil, fmt.Errorf("pipeline for %s at %s: %s job: chosen stage %s does not exist", projectPath, ref, d.Name, d.Stage)
		}
		if j.needs, err = resolveNeeds(d, defs); err != nil {
			return nil, fmt.Errorf("pipeline for %s at %s: %w", projectPath, ref, err)
		}
		if j.cacheKeys, err = s.cacheKeys(p, c, d); err != nil {
			return nil, fmt.Errorf("pipeline for %s at %s: %w", projectPath, ref, err)
		}
		jobs = append(jobs, j)
	}
	// GitLab keeps a persistent ref per pipeline; runners fetch it.
	if _, err := s.gitOut(p.bare, "update-ref", fmt.Sprintf("refs/pipelines/%d", pl.id), c.sha); err != nil {
		return nil, fmt.Errorf("create pipeline ref: %w", err)
	}

	s.mu.Lock()
	defer s.mu.Unlock()
	out := &Pipeline{ID: pl.id, IID: pl.iid, Sha: c.sha, Jobs: map[string]int64{}}
	for _, w := range cfg.Warnings {
		out.Warnings = append(out.Warnings, w.Error())
	}
	for _, j := range jobs {
		j.id = s.newID("job")
		j.token = "glcbt-" + randHex(16)
		pl.jobs = append(pl.jobs, j)
		s.jobs[j.id] = j
		out.Jobs[j.def.Name] = j.id
	}
	s.pipelines[pl.id] = pl
	s.processLocked(pl)
	return out, nil
}

// selectJobs keeps the named jobs (all nodes of a parallel job when named
// by its base name) and, transitively, the jobs they need and the jobs
// they take artifacts from (Ci::BuildDependencies: those named in
// dependencies:, else, for a job without needs, every earlier-stage job
// that keeps artifacts). Named jobs are played: a named manual or delayed
// job runs at once.
func selectJobs(defs []*ciyaml.Job, stages []string, names []string) ([]*ciyaml.Job, map[*ciyaml.Job]bool, error) {
	played := map[*ciyaml.Job]bool{}
	if len(names) == 0 {
		return defs, played, nil
	}
	keep := map[*ciyaml.Job]bool{}
	var queue []*ciyaml.Job
	for _, n := range names {
		found := false
		for _, d := range defs {
			if matchesName(d, n) {
				found = true
				played[d] = true
				if !keep[d] {
					keep[d] = true
					queue = append(queue, d)
				}
			}
		}
		if !found {
			return nil, nil, fmt.Errorf("job %q is not in the pipeline (check its name, and its rules, only and except)", n)
		}
	}
	for len(queue) > 0 {
		d := queue[0]
		queue = queue[1:]
		for _, o := range defs {
			if !keep[o] && (needsJob(d, o) || producesFor(d, o, stages)) {
				keep[o] = true
				queue = append(queue, o)
			}
		}
	}
	var out []*ciyaml.Job
	for _, d := range defs {
		if keep[d] {
			out = append(out, d)
		}
	}
	return out, played, nil
}

func needsJob(d, o *ciyaml.Job) bool {
	return slices.ContainsFunc(d.Needs, func(n ciyaml.Need) bool { return matchesName(o, n.Job) })
}

// producesFor reports whether d, run in the same pipeline, would download
// o's artifacts.
func producesFor(d, o *ciyaml.Job, stages []string) bool {
	if d.Dependencies != nil {
		return slices.ContainsFunc(d.Dependencies, func(n string) bool { return matchesName(o, n) })
	}
	return d.Needs == nil && o.Artifacts != nil && slices.Index(stages, o.Stage) < slices.Index(stages, d.Stage)
}

// resolveNeeds expands needs: to the jobs present (parallel jobs by their
// base name); a missing need is GitLab's creation error unless optional.
func resolveNeeds(d *ciyaml.Job, defs []*ciyaml.Job) ([]needRef, error) {
	var out []needRef
	for _, n := range d.Needs {
		found := false
		for _, o := range defs {
			if matchesName(o, n.Job) {
				found = true
				if !slices.ContainsFunc(out, func(r needRef) bool { return r.name == o.Name }) {
					out = append(out, needRef{name: o.Name, artifacts: n.Artifacts})
				}
			}
		}
		if !found && !n.Optional {
			return nil, fmt.Errorf("'%s' job needs '%s' job, but '%s' does not exist in the pipeline. "+
				"This might be because of the only, except, or rules keywords. "+
				"To need a job that sometimes does not exist in the pipeline, use needs:optional.", d.Name, n.Job, n.Job)
		}
	}
	return out, nil
}

func isZeroSha(sha string) bool { return strings.Trim(sha, "0") == "" }

// WaitPipeline waits until the pipeline finished (success, failed,
// canceled, skipped) or is blocked by a manual job (manual), and returns
// its view.
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
			if resting(v.Status) {
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
				s.finishLocked(j, StatusFailed, gitlab.StuckOrTimeoutFailure, 0)
			}
		}
		s.mu.Unlock()
	}
}

func projectName(fullPath string) string { return path.Base(fullPath) }

func projectNamespace(fullPath string) string { return path.Dir(fullPath) }

package ciyaml

// Types and entry points shared with the test coordinator and `exec`.
// The coordinator (internal/coordinator) builds jobs and payloads from
// these; keep their shape stable.

// ParseOptions refine ParseWith.
type ParseOptions struct {
	// ReadFile reads a file of the same repository for `include: local`
	// (and `include: <path>`); name is relative to the repository root,
	// without a leading slash. Nil: includes are an error.
	ReadFile func(name string) ([]byte, error)
	// IncludeEnv evaluates `include:rules` (if, exists, changes) with its
	// Variables (predefined and project ones: GitLab does not see the
	// YAML's variables there), Exists and Changes. Nil: include rules are
	// ignored with a warning and every file is included. (Addition to the
	// first contract.)
	IncludeEnv *Env
}

// Need is one entry of `needs:`.
type Need struct {
	Job string
	// Artifacts is false for `artifacts: false` (default true).
	Artifacts bool
	// Optional jobs may be missing from the pipeline.
	Optional bool
	Pos      Pos
	// matrix is needs:parallel:matrix (encoded, to keep Need comparable);
	// the parser resolves it to concrete job names.
	matrix string
	file   string // file of the need, for messages
}

// Retry is `retry:` (a number or {max, when, exit_codes}). Empty When
// retries any failure (GitLab's `always`); with ExitCodes, only failures
// with those exit codes are retried.
type Retry struct {
	Max       int
	When      []string
	ExitCodes []int
}

// Artifacts is the job's `artifacts:`.
type Artifacts struct {
	Name      string
	Paths     []string
	Exclude   []string
	Untracked bool
	// When is on_success (default), on_failure or always.
	When     string
	ExpireIn string
	// Reports maps a report type (dotenv, junit, …) to its paths.
	Reports map[string][]string
	Pos     Pos
}

// Cache is one entry of the job's `cache:` (a map or a list of maps).
type Cache struct {
	// Key is the literal key (default "default"); with KeyFiles the
	// coordinator derives the key from those files and KeyPrefix.
	Key          string
	KeyFiles     []string
	KeyPrefix    string
	Paths        []string
	Untracked    bool
	Policy       string // pull-push (default), pull, push
	When         string // on_success (default), on_failure, always
	FallbackKeys []string
	Unprotect    bool
	Pos          Pos
}

// Env is what rules, only/except and workflow:rules are evaluated
// against when a pipeline is created.
type Env struct {
	// Variables are the pipeline's variables (predefined, project,
	// pipeline and global YAML ones) by name, for `rules:if`, `only:
	// variables` and `$VAR` in `changes`/`exists`.
	Variables map[string]string
	// Ref is the branch or tag name, RefType "branch" or "tag", Source
	// CI_PIPELINE_SOURCE (push, web, schedule, merge_request_event …).
	// Set RefType: jobs without rules or only run for branches and tags
	// only (GitLab's default only: [branches, tags]), and not in
	// merge_request_event pipelines.
	Ref, RefType, Source string
	// Changes reports whether a file matching one of the globs changed in
	// the pipeline's push; nil means "always true" (GitLab's answer when
	// there is no diff base, e.g. a new branch or a web pipeline).
	Changes func(globs []string) (bool, error)
	// Exists reports whether a file matching one of the globs exists in
	// the commit; nil means no file exists.
	Exists func(globs []string) (bool, error)
}

// ErrFiltered is wrapped by Evaluate's error when workflow:rules filter
// the pipeline out (GitLab: "Pipeline filtered out by workflow rules").
var ErrFiltered = errFiltered{}

type errFiltered struct{}

func (errFiltered) Error() string { return "Pipeline filtered out by workflow rules." }

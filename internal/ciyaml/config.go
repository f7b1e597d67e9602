// Package ciyaml reads a .gitlab-ci.yml the way GitLab interprets it.
//
// ParseWith composes the configuration like GitLab (YAML anchors,
// aliases and merge keys as Ruby's Psych reads them; `include:` of files
// of the same repository, deep-merged with the including file winning;
// `extends` with GitLab's deep merge; `!reference` tags), validates every
// keyword with GitLab's lint wording and file:line:col, expands
// `parallel:` (number and matrix) and checks the needs/dependencies graph.
// Config.Evaluate then applies workflow:rules, rules and only/except for
// one pipeline (ref, source, variables, changed and existing files).
//
// Keywords GitLab has but podrunner does not run (coverage,
// resource_group, trigger, pages, release, secrets, id_tokens, hooks, …)
// are accepted with a warning (Config.Warnings). Expansion is bounded
// (maxNodes) so hostile YAML fails fast instead of exhausting memory.
package ciyaml

import (
	"time"

	"go.yaml.in/yaml/v3"
)

// Default stages when the file has no `stages:` (GitLab's).
var DefaultStages = []string{"build", "test", "deploy"}

// Stage names GitLab always adds around the user's stages.
const (
	StagePre  = ".pre"
	StagePost = ".post"
)

// Job conditions (`when:`) GitLab accepts on a job.
const (
	WhenOnSuccess = "on_success"
	WhenOnFailure = "on_failure"
	WhenAlways    = "always"
	WhenManual    = "manual"
	WhenDelayed   = "delayed"
)

// Config is a parsed .gitlab-ci.yml.
type Config struct {
	File string
	// Stages in run order, starting with .pre and ending with .post.
	Stages []string
	// Variables are the global `variables:`, in file order.
	Variables []Variable
	Default   Default
	// Jobs are the visible jobs in file order, with defaults applied.
	Jobs []*Job
	// Warnings name keywords that are valid for GitLab but not implemented
	// here yet (they are ignored).
	Warnings []*Error
	// Root is the composed root node (includes merged, extends and
	// !reference resolved).
	Root *yaml.Node
	// Workflow is `workflow:rules` (nil without it); WorkflowName is
	// `workflow:name`.
	Workflow     []Rule
	WorkflowName string
}

// Job returns the job with that name, or nil.
func (c *Config) Job(name string) *Job {
	for _, j := range c.Jobs {
		if j.Name == name {
			return j
		}
	}
	return nil
}

// Default holds the `default:` keyword (and the deprecated global forms
// of image, services, before_script and after_script).
type Default struct {
	Image        *Image
	Services     []Image
	BeforeScript []string
	AfterScript  []string
	Tags         []string
	Timeout      time.Duration
	// Artifacts, Cache, Retry and Interruptible are the `default:` ones
	// (`cache:` also in its deprecated global form).
	Artifacts     *Artifacts
	Cache         []Cache
	Retry         *Retry
	Interruptible bool
}

// Job is one visible job with `default:` values inherited.
type Job struct {
	Name  string
	Pos   Pos
	Stage string
	// Image is nil when neither the job nor default names one.
	Image        *Image
	Services     []Image
	Tags         []string
	BeforeScript []string
	Script       []string
	AfterScript  []string
	// When is on_success, on_failure, always, manual or delayed.
	When    string
	StartIn time.Duration
	// AllowFailure is true when a failure does not fail the pipeline;
	// GitLab's default is false, and true for manual jobs.
	AllowFailure bool
	// AllowFailureExitCodes, when not empty, allows failure only for
	// these exit codes (allow_failure: {exit_codes: [...]}).
	AllowFailureExitCodes []int
	// Timeout is 0 when not set.
	Timeout time.Duration
	// Variables are the job's own `variables:`; global ones are in
	// Config.Variables.
	Variables []Variable
	// Needs is nil without `needs:` (the job waits for all earlier
	// stages); non-nil, possibly empty, with it (the job starts as soon as
	// these jobs are done; `needs: []` starts at once).
	Needs []Need
	// Dependencies is nil without `dependencies:` (artifacts of every job
	// of earlier stages, or of Needs with Artifacts); non-nil: only these
	// jobs' artifacts (empty: none).
	Dependencies []string
	Retry        Retry
	Artifacts    *Artifacts
	Cache        []Cache
	// ParallelOf is the job's name before `parallel:` expansion ("" for
	// jobs without parallel); NodeIndex (1-based) and NodeTotal are
	// CI_NODE_INDEX and CI_NODE_TOTAL. Matrix variables are in Variables.
	ParallelOf           string
	NodeIndex, NodeTotal int
	// Environment is `environment:` (its name), for CI_ENVIRONMENT_NAME.
	Environment string
	// EnvironmentURL, EnvironmentAction and EnvironmentTier are
	// environment:url, :action and :deployment_tier (empty when not set).
	EnvironmentURL, EnvironmentAction, EnvironmentTier string
	Interruptible                                      bool
	// InheritVariables is `inherit:variables`: nil, the job sees every
	// global variable (Config.Variables); non-nil, only those named here
	// (none when empty). Workflow variables prepended by Evaluate are
	// filtered the same way. (Addition to the first contract: callers
	// that merge Config.Variables must honour it.)
	InheritVariables []string
	// Rules, Only and Except are the job's conditions, applied by
	// Config.Evaluate (nil when not given).
	Rules        []Rule
	Only, Except *Policy
	// Keys holds every key of the job (after merge keys) with its raw
	// node, for keywords implemented later.
	Keys map[string]*yaml.Node

	allowFailureSet bool
	parallel        *parallelSpec
	matrixVars      map[string]string // a parallel:matrix instance's own variables
}

// Image is `image:` or one entry of `services:`.
type Image struct {
	Name       string
	Alias      string
	Entrypoint []string
	Command    []string
	Variables  []Variable
	PullPolicy []string
	Pos        Pos
}

// Variable is one entry of `variables:`.
type Variable struct {
	Key         string
	Value       string
	Description string
	// Expand is false for `expand: false` (the value is raw).
	Expand bool
	Pos    Pos
}

// Package job holds the job payload GitLab sends to a runner (the 201 body of
// POST /api/v4/jobs/request), its variables, and the stage plan and shell
// scripts generated from it.
package job

import "github.com/podrunner/podrunner/internal/gitlab"

// Payload is the job as GitLab sends it. Field names follow the wire format.
type Payload struct {
	ID            int64        `json:"id"`
	Token         string       `json:"token"`
	AllowGitFetch bool         `json:"allow_git_fetch"`
	JobInfo       JobInfo      `json:"job_info"`
	GitInfo       GitInfo      `json:"git_info"`
	RunnerInfo    RunnerInfo   `json:"runner_info"`
	Variables     Variables    `json:"variables"`
	Steps         []Step       `json:"steps"`
	Image         Image        `json:"image"`
	Services      []Image      `json:"services"`
	Artifacts     []Artifact   `json:"artifacts"`
	Cache         []Cache      `json:"cache"`
	Credentials   []Credential `json:"credentials"`
	Dependencies  []Dependency `json:"dependencies"`
	Features      Features     `json:"features"`
	Hooks         []Hook       `json:"hooks,omitempty"`
}

// JobInfo describes the job and its project.
type JobInfo struct {
	Name            string  `json:"name"`
	Stage           string  `json:"stage"`
	PipelineID      int64   `json:"pipeline_id"`
	ProjectID       int64   `json:"project_id"`
	ProjectName     string  `json:"project_name"`
	ProjectFullPath string  `json:"project_full_path"`
	NamespaceID     int64   `json:"namespace_id,omitempty"`
	RootNamespaceID int64   `json:"root_namespace_id,omitempty"`
	UserID          int64   `json:"user_id,omitempty"`
	TimeInQueue     float64 `json:"time_in_queue_seconds,omitempty"`
	QueueSize       int64   `json:"queue_size,omitempty"`
	QueueDepth      int64   `json:"queue_depth,omitempty"`
}

// GitInfo tells the runner how to fetch the sources.
type GitInfo struct {
	RepoURL          string   `json:"repo_url"`
	RepoObjectFormat string   `json:"repo_object_format,omitempty"`
	Ref              string   `json:"ref"`
	Sha              string   `json:"sha"`
	BeforeSha        string   `json:"before_sha"`
	RefType          string   `json:"ref_type"`
	Refspecs         []string `json:"refspecs"`
	Depth            int      `json:"depth"`
	Protected        *bool    `json:"protected,omitempty"`
}

// RunnerInfo carries per-job runner settings; Timeout is in seconds.
type RunnerInfo struct {
	UUID    string `json:"uuid,omitempty"`
	Timeout int    `json:"timeout"`
}

// Step is one user step: "script", "after_script" or "run".
type Step struct {
	Name         string   `json:"name"`
	Script       []string `json:"script"`
	Timeout      int      `json:"timeout"`
	When         string   `json:"when"`
	AllowFailure bool     `json:"allow_failure"`
}

// Step names and step conditions as GitLab sends them.
const (
	StepScript      = "script"
	StepAfterScript = "after_script"

	WhenOnSuccess = "on_success"
	WhenOnFailure = "on_failure"
	WhenAlways    = "always"
)

// Image is the job image or a service.
type Image struct {
	Name       string       `json:"name"`
	Alias      string       `json:"alias,omitempty"`
	Command    []string     `json:"command,omitempty"`
	Entrypoint []string     `json:"entrypoint,omitempty"`
	Ports      []Port       `json:"ports,omitempty"`
	Variables  Variables    `json:"variables,omitempty"`
	PullPolicy []string     `json:"pull_policy,omitempty"`
	Executor   *ExecutorOpt `json:"executor_opts,omitempty"`
}

// Port is an image port.
type Port struct {
	Number   int    `json:"number"`
	Protocol string `json:"protocol,omitempty"`
	Name     string `json:"name,omitempty"`
}

// ExecutorOpt holds executor specific image options.
type ExecutorOpt struct {
	Docker *struct {
		Platform string `json:"platform,omitempty"`
		User     string `json:"user,omitempty"`
	} `json:"docker,omitempty"`
	Kubernetes *struct {
		User string `json:"user,omitempty"`
	} `json:"kubernetes,omitempty"`
}

// Artifact is one entry of the job's artifacts.
type Artifact struct {
	Name      string   `json:"name"`
	Untracked bool     `json:"untracked"`
	Paths     []string `json:"paths"`
	Exclude   []string `json:"exclude"`
	When      string   `json:"when"`
	Type      string   `json:"artifact_type"`
	Format    string   `json:"artifact_format"`
	ExpireIn  string   `json:"expire_in"`
}

// Cache is one entry of the job's caches.
type Cache struct {
	Key          string   `json:"key"`
	Untracked    bool     `json:"untracked"`
	Policy       string   `json:"policy"`
	Paths        []string `json:"paths"`
	When         string   `json:"when"`
	FallbackKeys []string `json:"fallback_keys"`
}

// Credential is a registry login for image pulls.
type Credential struct {
	Type     string `json:"type"`
	URL      string `json:"url"`
	Username string `json:"username"`
	Password string `json:"password"`
}

// Dependency is an earlier job whose artifacts this job downloads.
type Dependency struct {
	ID            int64  `json:"id"`
	Token         string `json:"token"`
	Name          string `json:"name"`
	ArtifactsFile struct {
		Filename string `json:"filename"`
		Size     int64  `json:"size"`
	} `json:"artifacts_file"`
}

// Features are switches GitLab sends with the job.
type Features struct {
	TraceSections     bool                   `json:"trace_sections"`
	TokenMaskPrefixes []string               `json:"token_mask_prefixes,omitempty"`
	FailureReasons    []gitlab.FailureReason `json:"failure_reasons,omitempty"`
}

// Hook is a pre/post get-sources hook.
type Hook struct {
	Name   string   `json:"name"`
	Script []string `json:"script"`
}

// Variable is one job variable.
type Variable struct {
	Key    string `json:"key"`
	Value  string `json:"value"`
	Public bool   `json:"public"`
	Masked bool   `json:"masked"`
	File   bool   `json:"file"`
	Raw    bool   `json:"raw"`
}

// Variables is an ordered list of variables; later entries win.
type Variables []Variable

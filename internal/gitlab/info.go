package gitlab

import "runtime"

// Features is info.features: what the runner can do. GitLab decides from it
// what it may send (e.g. cancel_gracefully → it sets canceling first,
// trace_checksum → it verifies the final checksum). Every key is sent, true
// or false, as GitLab Runner does.
type Features struct {
	Variables               bool `json:"variables"`
	Image                   bool `json:"image"`
	Services                bool `json:"services"`
	Artifacts               bool `json:"artifacts"`
	Cache                   bool `json:"cache"`
	FallbackCacheKeys       bool `json:"fallback_cache_keys"`
	Shared                  bool `json:"shared"`
	UploadMultipleArtifacts bool `json:"upload_multiple_artifacts"`
	UploadRawArtifacts      bool `json:"upload_raw_artifacts"`
	Session                 bool `json:"session"`
	Terminal                bool `json:"terminal"`
	Refspecs                bool `json:"refspecs"`
	Masking                 bool `json:"masking"`
	Proxy                   bool `json:"proxy"`
	RawVariables            bool `json:"raw_variables"`
	ArtifactsExclude        bool `json:"artifacts_exclude"`
	MultiBuildSteps         bool `json:"multi_build_steps"`
	TraceReset              bool `json:"trace_reset"`
	TraceChecksum           bool `json:"trace_checksum"`
	TraceSize               bool `json:"trace_size"`
	VaultSecrets            bool `json:"vault_secrets"`
	Cancelable              bool `json:"cancelable"`
	ReturnExitCode          bool `json:"return_exit_code"`
	ServiceVariables        bool `json:"service_variables"`
	ServiceMultipleAliases  bool `json:"service_multiple_aliases"`
	ImageExecutorOpts       bool `json:"image_executor_opts"`
	ServiceExecutorOpts     bool `json:"service_executor_opts"`
	CancelGracefully        bool `json:"cancel_gracefully"`
	NativeStepsIntegration  bool `json:"native_steps_integration"`
	TwoPhaseJobCommit       bool `json:"two_phase_job_commit"`
	JobInputs               bool `json:"job_inputs"`
}

// DefaultFeatures are the features podrunner implements. Executors without
// container images (shell) should clear Image and Services.
func DefaultFeatures() Features {
	return Features{
		Variables:         true,
		Image:             true,
		Services:          true,
		Artifacts:         true,
		Cache:             true,
		Refspecs:          true,
		Masking:           true,
		RawVariables:      true,
		MultiBuildSteps:   true,
		TraceReset:        true,
		TraceChecksum:     true,
		TraceSize:         true,
		Cancelable:        true,
		ReturnExitCode:    true,
		CancelGracefully:  true,
		TwoPhaseJobCommit: true,
	}
}

// InfoConfig is info.config.
type InfoConfig struct {
	GPUs string `json:"gpus"`
}

// Info is the info object sent with register, verify, jobs/request and
// PUT job. GitLab creates the runner-manager record from it.
type Info struct {
	Name         string            `json:"name,omitempty"`
	Version      string            `json:"version,omitempty"`
	Revision     string            `json:"revision,omitempty"`
	Platform     string            `json:"platform,omitempty"`
	Architecture string            `json:"architecture,omitempty"`
	Executor     string            `json:"executor,omitempty"`
	Shell        string            `json:"shell,omitempty"`
	Features     Features          `json:"features"`
	Config       InfoConfig        `json:"config"`
	Labels       map[string]string `json:"labels,omitempty"`
}

func buildInfo(opts Options) Info {
	v := versionDefaults(opts.Version)
	f := DefaultFeatures()
	if opts.Features != nil {
		f = *opts.Features
	}
	var labels map[string]string
	if len(opts.Labels) > 0 {
		labels = make(map[string]string, len(opts.Labels))
		for k, val := range opts.Labels {
			labels[k] = val
		}
	}
	return Info{
		Name:         v.Name,
		Version:      v.Version,
		Revision:     v.Revision,
		Platform:     runtime.GOOS,
		Architecture: runtime.GOARCH,
		Executor:     opts.Executor,
		Shell:        opts.Shell,
		Features:     f,
		Config:       InfoConfig{GPUs: opts.GPUs},
		Labels:       labels,
	}
}

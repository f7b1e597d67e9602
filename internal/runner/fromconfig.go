package runner

import (
	"fmt"
	"github.com/podrunner/podrunner/internal/cache"
	"log/slog"
	"path/filepath"
	"slices"
	"time"

	"github.com/podrunner/podrunner/internal/archive"
	"github.com/podrunner/podrunner/internal/config"
	"github.com/podrunner/podrunner/internal/executor"
	"github.com/podrunner/podrunner/internal/executor/kubernetes"
	"github.com/podrunner/podrunner/internal/executor/shell"
	"github.com/podrunner/podrunner/internal/gitlab"
	"github.com/podrunner/podrunner/internal/job"
)

// Build is what FromConfig needs besides the config file.
type Build struct {
	Logger   *slog.Logger
	Version  gitlab.VersionInfo
	SystemID string
	// ConfigDir is the directory of config.toml (for certs/).
	ConfigDir string
	// WorkingDir is the base of relative builds_dir/cache_dir defaults.
	WorkingDir string
	Metrics    *Metrics
	// APIMinBackoff shortens transport retries (tests).
	APIMinBackoff time.Duration
	// Executors reuses executors across reloads; nil builds new ones.
	Executors *Executors
}

// FromConfig turns config.toml into manager settings: one GitLab client
// and one executor per [[runners]] entry.
func FromConfig(cfg *config.Config, b Build) (Settings, error) {
	s := Settings{
		Concurrent:      cfg.Concurrent,
		CheckInterval:   time.Duration(cfg.CheckInterval) * time.Second,
		ShutdownTimeout: time.Duration(cfg.ShutdownTimeout) * time.Second,
	}
	if b.Logger == nil {
		b.Logger = slog.Default()
	}
	for i, rc := range cfg.Runners {
		r, err := runnerFromConfig(cfg, rc, b)
		if err != nil {
			return Settings{}, fmt.Errorf("runners[%d] (%s): %w", i, rc.Name, err)
		}
		s.Runners = append(s.Runners, r)
	}
	return s, nil
}

func runnerFromConfig(cfg *config.Config, rc *config.Runner, b Build) (*Runner, error) {
	short := job.ShortToken(rc.Token)
	log := b.Logger.With("runner", short)
	opts := gitlab.Options{
		Version:    b.Version,
		Executor:   rc.Executor,
		Shell:      rc.Shell,
		CertDir:    filepath.Join(b.ConfigDir, "certs"),
		Logger:     log,
		MinBackoff: b.APIMinBackoff,
		Labels:     rc.Labels,
	}
	if cfg.ConnectionMaxAge != nil {
		opts.ConnectionMaxAge = cfg.ConnectionMaxAge.Duration
	}
	if b.Metrics != nil {
		m, sys := b.Metrics, b.SystemID
		opts.Observer = gitlab.ObserverFunc(func(r gitlab.APIRequest) {
			m.APIRequest(short, sys, r.Endpoint, r.Method, r.Status)
		})
	}
	if rc.Executor == config.ExecutorShell {
		f := gitlab.DefaultFeatures()
		// The shell executor runs no images or services; GitLab must not
		// think it does.
		f.Image, f.Services = false, false
		opts.Features = &f
	}
	client, err := gitlab.NewClient(gitlab.Credentials{
		URL: rc.URL, Token: rc.Token,
		TLSCAFile: rc.TLSCAFile, TLSCertFile: rc.TLSCertFile, TLSKeyFile: rc.TLSKeyFile,
	}, opts)
	if err != nil {
		return nil, err
	}
	create := func() (executor.Executor, error) { return newExecutor(rc, b, log) }
	var ex executor.Executor
	if b.Executors != nil {
		ex, err = b.Executors.get(rc.URL+"\x00"+rc.Token, rc, create)
	} else {
		ex, err = create()
	}
	if err != nil {
		return nil, err
	}
	var unhealthy time.Duration
	if rc.UnhealthyInterval != nil {
		unhealthy = rc.UnhealthyInterval.Duration
	}
	outputLimit := int64(rc.OutputLimit) * 1024
	return &Runner{
		Name: rc.Name, ShortToken: short, Key: rc.URL + "\x00" + rc.Token,
		API: client, Executor: ex, ExecutorName: rc.Executor,
		Limit: rc.Limit, RequestConcurrency: rc.RequestConcurrency, OutputLimit: outputLimit,
		UnhealthyRequestsLimit: rc.UnhealthyRequestsLimit, UnhealthyInterval: unhealthy,
	}, nil
}

// jobEnvironment is config environment plus the extraction caps, which
// the helper the job scripts call reads from its environment.
func jobEnvironment(rc *config.Runner) []string {
	env := slices.Clone(rc.Environment)
	for name, v := range map[string]int64{archive.EnvMaxSize: rc.ExtractMaxSize, archive.EnvMaxRatio: rc.ExtractMaxRatio, archive.EnvRatioFreeSize: rc.ExtractRatioFreeSize} {
		if v > 0 {
			env = append(env, fmt.Sprintf("%s=%d", name, v))
		}
	}
	slices.Sort(env[len(rc.Environment):]) // a stable order
	return env
}

func newExecutor(rc *config.Runner, b Build, log *slog.Logger) (executor.Executor, error) {
	// The CA the manager trusts for GitLab, for the jobs' git, artifacts
	// and cache transfers.
	caFile := gitlab.CAFile(rc.URL, rc.TLSCAFile, filepath.Join(b.ConfigDir, "certs"))
	env := jobEnvironment(rc)
	switch rc.Executor {
	case config.ExecutorShell:
		builds := rc.BuildsDir
		if builds == "" {
			builds = filepath.Join(b.WorkingDir, "builds")
		}
		cacheDir := rc.CacheDir
		if cacheDir == "" {
			cacheDir = filepath.Join(b.WorkingDir, "cache")
		}
		return shell.New(shell.Options{
			BuildsDir: builds, CacheDir: cacheDir, Shell: rc.Shell, Environment: env,
			PreGetSourcesScript: rc.PreGetSourcesScript, PostGetSourcesScript: rc.PostGetSourcesScript,
			PreBuildScript: rc.PreBuildScript, PostBuildScript: rc.PostBuildScript,
			RunnerToken: rc.Token, RunnerID: rc.ID, Logger: log, CloneURL: rc.CloneURL,
			RunnerVersion: b.Version.Version, RunnerRevision: b.Version.Revision,
			CacheStore: cache.FromConfig(rc.Cache), TLSCAFile: caFile,
		}), nil
	case config.ExecutorKubernetes:
		return kubernetes.New(kubernetes.Options{
			Config: rc.Kubernetes, RunnerToken: rc.Token, RunnerName: rc.Name, SystemID: b.SystemID, Logger: log,
			Shell: rc.Shell, Environment: env,
			PreGetSourcesScript: rc.PreGetSourcesScript, PostGetSourcesScript: rc.PostGetSourcesScript,
			PreBuildScript: rc.PreBuildScript, PostBuildScript: rc.PostBuildScript,
			CloneURL: rc.CloneURL, RunnerVersion: b.Version.Version, RunnerRevision: b.Version.Revision,
			CacheDir: rc.CacheDir, CacheStore: cache.FromConfig(rc.Cache), TLSCAFile: caFile,
		})
	}
	return nil, fmt.Errorf("unknown executor %q: use \"shell\" or \"kubernetes\"", rc.Executor)
}

package runner

import (
	"fmt"
	"log/slog"
	"maps"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/podrunner/podrunner/internal/archive"
	"github.com/podrunner/podrunner/internal/config"
	"github.com/podrunner/podrunner/internal/executor"
	"github.com/podrunner/podrunner/internal/gitlab"
	"github.com/podrunner/podrunner/internal/job"
	"github.com/prometheus/client_golang/prometheus"
)

// ExecutorEnv is what an executor is built with besides its [[runners]]
// entry.
type ExecutorEnv struct {
	Logger   *slog.Logger
	Version  gitlab.VersionInfo
	SystemID string
	// WorkingDir is the base of relative builds_dir/cache_dir defaults.
	WorkingDir string
	// TLSCAFile is the CA the manager trusts for GitLab (tls-ca-file or
	// certs/<host>.crt), for the jobs' git, artifacts and cache transfers.
	TLSCAFile string
	// Environment is the jobs' environment: config's `environment` plus
	// what the runner adds (the extraction caps). Use it, not
	// rc.Environment.
	Environment []string
}

// ExecutorFactory builds the executor of a [[runners]] entry. The runner
// knows no executor implementation: cmd gives one factory per executor
// name (config.ExecutorShell, config.ExecutorKubernetes).
type ExecutorFactory func(rc *config.Runner, env ExecutorEnv) (executor.Executor, error)

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
	// Factories build executors, by executor name.
	Factories map[string]ExecutorFactory
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
	if c, ok := ex.(prometheus.Collector); ok && b.Metrics != nil {
		b.Metrics.Executor(c)
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
	create, ok := b.Factories[rc.Executor]
	if !ok {
		names := slices.Sorted(maps.Keys(b.Factories))
		return nil, fmt.Errorf("unknown executor %q: use %s", rc.Executor, quoted(names))
	}
	return create(rc, ExecutorEnv{
		Logger: log, Version: b.Version, SystemID: b.SystemID, WorkingDir: b.WorkingDir,
		TLSCAFile:   gitlab.CAFile(rc.URL, rc.TLSCAFile, filepath.Join(b.ConfigDir, "certs")),
		Environment: jobEnvironment(rc),
	})
}

// quoted is "a", "b" or "c".
func quoted(names []string) string {
	for i, n := range names {
		names[i] = fmt.Sprintf("%q", n)
	}
	switch len(names) {
	case 0:
		return "none (no executor is built in)"
	case 1:
		return names[0]
	}
	return strings.Join(names[:len(names)-1], ", ") + " or " + names[len(names)-1]
}

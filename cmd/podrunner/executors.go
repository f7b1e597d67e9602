package main

import (
	"path/filepath"

	"github.com/podrunner/podrunner/internal/cache/presign"
	"github.com/podrunner/podrunner/internal/config"
	"github.com/podrunner/podrunner/internal/executor"
	"github.com/podrunner/podrunner/internal/executor/shell"
	"github.com/podrunner/podrunner/internal/runner"
)

// executorFactories are the executors this binary offers, by the names
// config.toml's `executor` takes. kubeconfig, when set, is the kubeconfig
// file of the Kubernetes executor (exec --kubeconfig) instead of
// $KUBECONFIG.
func executorFactories(kubeconfig string) map[string]runner.ExecutorFactory {
	return map[string]runner.ExecutorFactory{
		config.ExecutorShell:      newShellExecutor,
		config.ExecutorKubernetes: kubernetesFactory(kubeconfig),
	}
}

func newShellExecutor(rc *config.Runner, env runner.ExecutorEnv) (executor.Executor, error) {
	builds := rc.BuildsDir
	if builds == "" {
		builds = filepath.Join(env.WorkingDir, "builds")
	}
	cacheDir := rc.CacheDir
	if cacheDir == "" {
		cacheDir = filepath.Join(env.WorkingDir, "cache")
	}
	return shell.New(shell.Options{
		BuildsDir: builds, CacheDir: cacheDir, Shell: rc.Shell, Environment: env.Environment,
		PreGetSourcesScript: rc.PreGetSourcesScript, PostGetSourcesScript: rc.PostGetSourcesScript,
		PreBuildScript: rc.PreBuildScript, PostBuildScript: rc.PostBuildScript,
		RunnerToken: rc.Token, RunnerID: rc.ID, Logger: env.Logger, CloneURL: rc.CloneURL,
		RunnerVersion: env.Version.Version, RunnerRevision: env.Version.Revision,
		CacheStore: presign.FromConfig(rc.Cache), TLSCAFile: env.TLSCAFile,
	}), nil
}

//go:build !podrunner_shellonly

package main

import (
	"github.com/podrunner/podrunner/internal/cache/presign"
	"github.com/podrunner/podrunner/internal/config"
	"github.com/podrunner/podrunner/internal/executor"
	"github.com/podrunner/podrunner/internal/executor/kubernetes"
	"github.com/podrunner/podrunner/internal/runner"
)

// kubernetesFactory builds Kubernetes executors. Building with
// -tags podrunner_shellonly leaves the executor (and every k8s.io
// package) out of the binary: see executors_shellonly.go.
func kubernetesFactory(kubeconfig string) runner.ExecutorFactory {
	return func(rc *config.Runner, env runner.ExecutorEnv) (executor.Executor, error) {
		return newKubernetesExecutor(rc, env, kubeconfig)
	}
}

func newKubernetesExecutor(rc *config.Runner, env runner.ExecutorEnv, kubeconfig string) (executor.Executor, error) {
	return kubernetes.New(kubernetes.Options{
		Config: rc.Kubernetes, Kubeconfig: kubeconfig,
		RunnerToken: rc.Token, RunnerName: rc.Name, SystemID: env.SystemID, Logger: env.Logger,
		Shell: rc.Shell, Environment: env.Environment,
		PreGetSourcesScript: rc.PreGetSourcesScript, PostGetSourcesScript: rc.PostGetSourcesScript,
		PreBuildScript: rc.PreBuildScript, PostBuildScript: rc.PostBuildScript,
		CloneURL: rc.CloneURL, RunnerVersion: env.Version.Version, RunnerRevision: env.Version.Revision,
		CacheDir: rc.CacheDir, CacheStore: presign.FromConfig(rc.Cache), TLSCAFile: env.TLSCAFile,
	})
}

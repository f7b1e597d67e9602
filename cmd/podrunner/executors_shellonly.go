//go:build podrunner_shellonly

package main

import (
	"errors"

	"github.com/podrunner/podrunner/internal/config"
	"github.com/podrunner/podrunner/internal/executor"
	"github.com/podrunner/podrunner/internal/runner"
)

// errNoKubernetes is the answer of a manager built without the
// Kubernetes executor to a runner or exec that asks for it.
var errNoKubernetes = errors.New("this podrunner was built without the Kubernetes executor (-tags podrunner_shellonly): use a full build for executor = \"kubernetes\"")

func kubernetesFactory(string) runner.ExecutorFactory {
	return func(*config.Runner, runner.ExecutorEnv) (executor.Executor, error) { return nil, errNoKubernetes }
}

func (o *execOptions) kubeTarget() (*kubeTarget, error) { return nil, errNoKubernetes }

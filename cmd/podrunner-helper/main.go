// Command podrunner-helper is what runs inside a job's pod: the
// Kubernetes executor's agent and the artifacts and cache helpers. It
// links neither client-go nor the .gitlab-ci.yml parser nor the test
// coordinator, so job pods start from a small image (docs/kubernetes-executor.md).
package main

import (
	"os"

	// Untracked files without a git binary (most job images).
	_ "github.com/podrunner/podrunner/internal/archive/gitstatus"
	"github.com/podrunner/podrunner/internal/cli"
	"github.com/podrunner/podrunner/internal/helper"
	"github.com/podrunner/podrunner/internal/helper/agentcmd"
	"github.com/podrunner/podrunner/internal/version"
)

func main() {
	root := cli.NewRoot("podrunner-helper", "podrunner's helper for job pods (not for direct use)", version.Get().Version)
	root.AddCommand(helper.Commands()...)
	root.AddCommand(agentcmd.Command())
	os.Exit(cli.Execute(root, os.Args[1:], os.Stdout, os.Stderr))
}

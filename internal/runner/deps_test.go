package runner

import (
	"os/exec"
	"strings"
	"testing"
)

// The manager knows no executor implementation: executors are given to it
// (Build.Factories) by cmd, so a manager links only what its executors
// need, and no k8s.io code at all.
func TestRunnerLinksNoExecutorAndNoKubernetesClient(t *testing.T) {
	out, err := exec.Command("go", "list", "-deps", "-f", "{{.ImportPath}}", ".").Output()
	if err != nil {
		t.Fatalf("go list -deps: %v", err)
	}
	var bad []string
	for _, p := range strings.Fields(string(out)) {
		switch {
		case strings.HasPrefix(p, "github.com/podrunner/podrunner/internal/executor/"):
			bad = append(bad, p)
		case strings.HasPrefix(p, "k8s.io/") || strings.Contains(p, ".k8s.io/"):
			bad = append(bad, p)
		}
	}
	if len(bad) > 0 {
		t.Fatalf("internal/runner links %d packages it must not (an executor implementation or Kubernetes client code), e.g. %v", len(bad), bad[:min(len(bad), 5)])
	}
}

package main

import (
	"os/exec"
	"strings"
	"testing"
)

// The helper is what every job pod starts: it links neither client-go
// (nor any k8s.io code), nor the .gitlab-ci.yml parser, nor the test
// coordinator, nor the manager's runner and executors.
func TestHelperLinksOnlyWhatPodsRun(t *testing.T) {
	out, err := exec.Command("go", "list", "-deps", "-f", "{{.ImportPath}}", ".").Output()
	if err != nil {
		t.Fatalf("go list -deps: %v", err)
	}
	const mod = "github.com/podrunner/podrunner/internal/"
	var bad []string
	for _, p := range strings.Fields(string(out)) {
		switch {
		case strings.HasPrefix(p, "k8s.io/"), strings.Contains(p, ".k8s.io/"),
			strings.HasPrefix(p, mod+"ciyaml"), strings.HasPrefix(p, mod+"coordinator"),
			strings.HasPrefix(p, mod+"runner"), strings.HasPrefix(p, mod+"executor"):
			bad = append(bad, p)
		}
	}
	if len(bad) > 0 {
		t.Fatalf("podrunner-helper links %d packages it must not, e.g. %v", len(bad), bad[:min(len(bad), 5)])
	}
}

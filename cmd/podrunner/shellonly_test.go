package main

import (
	"os"
	"os/exec"
	"strings"
	"testing"
)

// linkedBad lists the packages the manager (built with tags, if any) links
// and bad picks out.
func linkedBad(t *testing.T, tags string, bad func(pkg string) bool) []string {
	t.Helper()
	out, err := exec.Command("go", "list", "-deps", "-tags", tags, "-f", "{{.ImportPath}}", ".").Output()
	if err != nil {
		t.Fatalf("go list -deps -tags %q: %v", tags, err)
	}
	var found []string
	for _, p := range strings.Fields(string(out)) {
		if bad(p) {
			found = append(found, p)
		}
	}
	return found
}

// A manager built for shell runners only (-tags podrunner_shellonly)
// compiles and links no k8s.io code: the Kubernetes executor is the one
// place that does.
func TestShellOnlyManagerLinksNoKubernetes(t *testing.T) {
	if out, err := exec.Command("go", "build", "-tags", "podrunner_shellonly", "-o", os.DevNull, ".").CombinedOutput(); err != nil {
		t.Fatalf("go build -tags podrunner_shellonly: %v\n%s", err, out)
	}
	bad := linkedBad(t, "podrunner_shellonly", func(p string) bool {
		return strings.HasPrefix(p, "k8s.io/") || strings.Contains(p, ".k8s.io/") || strings.HasSuffix(p, "/internal/executor/kubernetes")
	})
	if len(bad) > 0 {
		t.Fatalf("the shell-only manager links %d Kubernetes packages, e.g. %v", len(bad), bad[:min(len(bad), 5)])
	}
}

// The full manager takes from client-go only what the Kubernetes executor
// uses: no informer factory or listers of every API group (an informer
// per resource it watches), which cost it 8 MiB of idle RSS, and no
// clientset with the typed clients and apply configurations of every API
// group, which cost it 14 MiB more.
func TestManagerLinksOnlyTheKubernetesAPIItUses(t *testing.T) {
	bad := linkedBad(t, "", func(p string) bool {
		return strings.HasPrefix(p, "k8s.io/client-go/informers") || strings.HasPrefix(p, "k8s.io/client-go/listers") ||
			strings.HasPrefix(p, "k8s.io/client-go/kubernetes") || strings.HasPrefix(p, "k8s.io/client-go/applyconfigurations") ||
			strings.HasPrefix(p, "k8s.io/api/apps")
	})
	if len(bad) > 0 {
		t.Fatalf("the manager links Kubernetes API groups or client-go parts it does not use: %v", bad[:min(len(bad), 5)])
	}
}

// The manager links none of the in-pod code: not the agent, whose sources
// fetch links go-git, nor go-git itself (the shell executor's jobs clone
// with git). Together they cost 2 MiB of idle RSS.
func TestManagerLinksNoInPodCode(t *testing.T) {
	bad := linkedBad(t, "", func(p string) bool {
		return strings.HasPrefix(p, "github.com/go-git/") || strings.HasSuffix(p, "/internal/agent/server") ||
			strings.HasSuffix(p, "/internal/helper/agentcmd") || strings.HasSuffix(p, "/internal/archive/gitstatus")
	})
	if len(bad) > 0 {
		t.Fatalf("the manager links in-pod code: %v", bad[:min(len(bad), 5)])
	}
}

// TestManagerLinksNoBlobClient: the manager signs Azure URLs itself and
// gets user delegation keys through azcore; azblob's clients (and the
// Arrow and JSON libraries they bring) cost 6 MB of stripped binary and
// about 1.5 MiB of idle memory (bench/README.md, session 10).
func TestManagerLinksNoBlobClient(t *testing.T) {
	bad := linkedBad(t, "", func(p string) bool {
		return strings.HasPrefix(p, "github.com/Azure/azure-sdk-for-go/sdk/storage/") || strings.HasPrefix(p, "github.com/apache/arrow")
	})
	if len(bad) > 0 {
		t.Fatalf("the manager links Azure's blob clients: %v", bad[:min(len(bad), 5)])
	}
}

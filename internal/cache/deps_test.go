package cache_test

import (
	"os/exec"
	"strings"
	"testing"
)

// TestNoCloudSDK: the in-pod helper's cache code links no cloud SDK: the
// URLs it is given are its only credential, and the slim helper binary
// must stay small (the signers live in internal/cache/presign, which the
// runner links).
func TestNoCloudSDK(t *testing.T) {
	out, err := exec.Command("go", "list", "-deps", "github.com/podrunner/podrunner/internal/cache").CombinedOutput()
	if err != nil {
		t.Fatalf("go list: %v\n%s", err, out)
	}
	sdks := []string{"github.com/minio/", "github.com/Azure/", "cloud.google.com/", "google.golang.org/", "github.com/aws/", "k8s.io/",
		"github.com/podrunner/podrunner/internal/cache/presign"}
	for _, pkg := range strings.Fields(string(out)) {
		for _, sdk := range sdks {
			if strings.HasPrefix(pkg, sdk) {
				t.Errorf("internal/cache depends on %s", pkg)
			}
		}
	}
}

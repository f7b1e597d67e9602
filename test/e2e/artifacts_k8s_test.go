package e2e

import (
	"strings"
	"testing"
	"time"

	"github.com/podrunner/podrunner/internal/coordinator"
)

// Artifacts round trip (issue 8) with the Kubernetes executor: the helper
// commands run in the job pod (the agent's podrunner binary, no git in the
// image: untracked files come from go-git) and talk to the coordinator on
// the node address.
func TestKubernetesArtifacts(t *testing.T) {
	t.Parallel()
	e := newK8sEnv(t, `
stages: [build, test]
build:
  stage: build
  script:
    - mkdir -p out/sub
    - echo hello > out/file.txt
    - echo deep > out/sub/deep.txt
    - ln -s file.txt out/link
    - echo excluded > out/debug.log
    - echo untracked > notes.txt
    - printf 'BUILD_VERSION=1.2.3\n' > build.env
  artifacts:
    paths: [out/]
    exclude: ["out/*.log"]
    untracked: true
    reports:
      dotenv: build.env
test:
  stage: test
  dependencies: [build]
  script:
    - test "$(cat out/file.txt)" = hello
    - test "$(cat out/sub/deep.txt)" = deep
    - test -L out/link && test "$(cat out/link)" = hello
    - test ! -e out/debug.log
    - test "$(cat notes.txt)" = untracked
    - echo "version=$BUILD_VERSION"
    - echo artifacts-checked
`, k8sOptions{})
	v := e.pipeline(coordinator.PipelineOptions{}, 4*time.Minute)
	var build, test coordinator.JobView
	for _, j := range v.Jobs {
		switch j.Name {
		case "build":
			build = j
		case "test":
			test = j
		}
	}
	bt, tt := string(e.coord.Trace(build.ID)), string(e.coord.Trace(test.ID))
	if v.Status != coordinator.StatusSuccess {
		t.Fatalf("pipeline %s\nbuild:\n%s\ntest:\n%s", v.Status, bt, tt)
	}
	for _, w := range []string{"Uploading artifacts as \"archive\"", "Uploading artifacts as \"dotenv\"", "Uploaded artifacts"} {
		if !strings.Contains(bt, w) {
			t.Errorf("build trace lacks %q:\n%s", w, bt)
		}
	}
	for _, w := range []string{"Downloading artifacts for build", "artifacts-checked", "version=1.2.3"} {
		if !strings.Contains(tt, w) {
			t.Errorf("test trace lacks %q:\n%s", w, tt)
		}
	}
}

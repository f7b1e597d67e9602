package e2e

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/podrunner/podrunner/internal/testcluster"
)

var (
	execBinOnce sync.Once
	execBin     string
	execBinErr  error
)

// execBinary builds the podrunner binary once per test binary.
func execBinary(t *testing.T) string {
	t.Helper()
	execBinOnce.Do(func() {
		dir, err := os.MkdirTemp("", "podrunner-e2e-exec-")
		if err != nil {
			execBinErr = err
			return
		}
		execBin = filepath.Join(dir, "podrunner")
		build := exec.Command("go", "build", "-trimpath", "-o", execBin, "../../cmd/podrunner")
		build.Env = append(os.Environ(), "CGO_ENABLED=0")
		if out, err := build.CombinedOutput(); err != nil {
			execBinErr = fmt.Errorf("build podrunner: %v\n%s", err, out)
		}
	})
	if execBinErr != nil {
		t.Fatal(execBinErr)
	}
	return execBin
}

// execK8sPipeline is the acceptance pipeline of `podrunner exec` for pods:
// artifacts from build to test and to a `needs` job, an allowed failure,
// a flaky job passing on retry, and a `needs` job that must start before
// its stage (slow-test waits for its mark). Pods share nothing but the
// cache directory, a hostPath on the node, where the marks go.
const execK8sPipeline = `stages: [build, test, deploy]

variables:
  SYNC: /podrunner-cache/sync

build:
  stage: build
  script:
    - mkdir -p "$SYNC" dist
    - echo artifact-from-build > dist/app.txt
    - hostname
  artifacts:
    paths: [dist/]

slow-test:
  stage: test
  script:
    - echo "got $(cat dist/app.txt)"
    - i=0; while [ ! -f "$SYNC/early-deploy-ran" ] && [ $i -lt 1800 ]; do sleep 0.1; i=$((i+1)); done
    - test -f "$SYNC/early-deploy-ran"

lint:
  stage: test
  allow_failure: true
  script:
    - exit 7

flaky:
  stage: test
  retry: 1
  script:
    - if [ ! -f "$SYNC/flaky-marker" ]; then touch "$SYNC/flaky-marker"; echo flaky-first-try; exit 1; fi
    - echo flaky-passed

early-deploy:
  stage: deploy
  needs: [build]
  script:
    - echo "early got $(cat dist/app.txt)"
    - touch "$SYNC/early-deploy-ran"

deploy:
  stage: deploy
  script:
    - echo deploying
`

func TestExecKubernetes(t *testing.T) {
	t.Parallel()
	c := testcluster.Get(t)
	k8sPodrunnerImage(t)
	bin := execBinary(t)
	ns := c.Namespace(t)

	project := t.TempDir()
	if err := os.WriteFile(filepath.Join(project, ".gitlab-ci.yml"), []byte(execK8sPipeline), 0o644); err != nil {
		t.Fatal(err)
	}
	cacheDir := filepath.Join(t.TempDir(), "cache")

	ctx, cancel := context.WithTimeout(context.Background(), 8*time.Minute)
	defer cancel()
	// No --listen-address: exec must find the node address itself (the
	// address on the route to the API server).
	cmd := exec.CommandContext(ctx, bin, "exec", "--executor", "kubernetes",
		"--kubeconfig", os.Getenv(testcluster.EnvKubeconfig), "--namespace", ns,
		"--image", testcluster.BusyboxImage, "--helper-image", testcluster.HelperImage,
		"--pull-policy", "if-not-present", "--concurrency", "4", "--cache-dir", cacheDir)
	cmd.Dir = project
	outB, err := cmd.CombinedOutput()
	out := string(outB)
	t.Logf("podrunner exec output:\n%s", out)
	var exit *exec.ExitError
	if err != nil && !errors.As(err, &exit) {
		t.Fatal(err)
	}
	if err != nil {
		t.Errorf("exit code %d, want 0", exit.ExitCode())
	}
	for _, want := range []string{
		"[slow-test] got artifact-from-build",
		"[early-deploy] early got artifact-from-build",
		"job lint: failed (script_failure, exit code 7) [allowed to fail]",
		"job flaky: failed (script_failure, exit code 1) [retried]",
		"[flaky (attempt 2)] flaky-passed",
		"job flaky (attempt 2): success",
		"job deploy: success",
		"pipeline: success",
		"Fetching changes from http://" + c.NodeIP + ":",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("output lacks %q", want)
		}
	}
	early, slowDone := lineIndexK8s(out, "job early-deploy: running"), lineIndexK8s(out, "job slow-test: success")
	if early < 0 || slowDone < 0 || early > slowDone {
		t.Errorf("early-deploy started at line %d, slow-test ended at line %d: want the needs job first", early, slowDone)
	}
	// The jobs ran as pods of the namespace.
	if !strings.Contains(out, "[build] runner-") {
		t.Errorf("build's hostname is not a job pod's")
	}
	if _, err := os.Stat(filepath.Join(cacheDir, "sync", "flaky-marker")); err != nil {
		t.Errorf("the cache directory did not reach the pods as a hostPath: %v", err)
	}
	pods, err := c.Clientset.CoreV1().Pods(ns).List(context.Background(), metav1.ListOptions{})
	if err == nil && len(pods.Items) > 0 {
		// Pods are deleted when their job ends; give the last a moment.
		deadline := time.Now().Add(30 * time.Second)
		for time.Now().Before(deadline) && len(pods.Items) > 0 {
			time.Sleep(500 * time.Millisecond)
			pods, err = c.Clientset.CoreV1().Pods(ns).List(context.Background(), metav1.ListOptions{})
			if err != nil {
				break
			}
		}
		if err == nil && len(pods.Items) > 0 {
			t.Errorf("%d pods left in %s after exec, e.g. %s", len(pods.Items), ns, pods.Items[0].Name)
		}
	}
}

func lineIndexK8s(out, s string) int {
	for i, l := range strings.Split(out, "\n") {
		if strings.Contains(l, s) {
			return i
		}
	}
	return -1
}

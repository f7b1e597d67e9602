package acceptance

import (
	"bufio"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/podrunner/podrunner/internal/coordinator"
)

func TestRunSingle(t *testing.T) {
	e := newEnv(t, "one:\n  script: [echo single-ran]\n", coordinator.Options{})
	p := e.start("run-single", "--url", e.coord.URL(), "--token", e.token, "--executor", "shell",
		"--builds-dir", filepath.Join(e.dir, "builds"), "--max-builds", "1")
	v := e.pipeline(time.Minute)
	if j := jobByName(t, v, "one"); j.Status != "success" {
		t.Fatalf("job %s (%s)", j.Status, j.FailureReason)
	}
	if err := p.wait(t, 30*time.Second); err != nil {
		t.Fatalf("run-single --max-builds 1 exited with %v", err)
	}

	idle := e.start("run-single", "--url", e.coord.URL(), "--token", e.token, "--executor", "shell", "--wait-timeout", "1")
	if err := idle.wait(t, 70*time.Second); err != nil {
		t.Fatalf("run-single --wait-timeout exited with %v", err)
	}
}

// register (glrt- token), verify, list, unregister against the coordinator.
func TestRunnerLifecycleCommands(t *testing.T) {
	e := newEnv(t, "x:\n  script: [echo]\n", coordinator.Options{})
	cfg := filepath.Join(e.dir, "glrt.toml")
	run := func(args ...string) string {
		t.Helper()
		out, err := exec.Command(binary, args...).CombinedOutput()
		if err != nil {
			t.Fatalf("podrunner %v: %v\n%s", args, err, out)
		}
		return string(out)
	}
	run("register", "-n", "-c", cfg, "--url", e.coord.URL(), "--token", e.token, "--executor", "shell", "--name", "life")
	if out := run("verify", "-c", cfg); !strings.Contains(out, "is valid") {
		t.Fatalf("verify: %s", out)
	}
	out := run("list", "-c", cfg)
	if !strings.Contains(out, "life") || strings.Contains(out, e.token) {
		t.Fatalf("list must name the runner and hide its token:\n%s", out)
	}
	run("unregister", "-c", cfg, "--all-runners")
	data, err := os.ReadFile(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(string(data), e.token) {
		t.Fatalf("unregister left the runner in config.toml:\n%s", data)
	}
}

// log_format = "json": every line of the runner's log is a JSON object.
func TestJSONLog(t *testing.T) {
	e := newEnv(t, seed(t, "runner-test.gitlab-ci.yml"), coordinator.Options{})
	p := e.runConfig("log_format = \"json\"\n" + e.config(1, ""))
	e.pipeline(time.Minute)
	waitLog(t, p, "Removed job from processing list")
	sc := bufio.NewScanner(strings.NewReader(p.Log()))
	n := 0
	for sc.Scan() {
		var m map[string]any
		if err := json.Unmarshal(sc.Bytes(), &m); err != nil {
			t.Fatalf("not JSON: %q", sc.Text())
		}
		n++
	}
	if n < 3 {
		t.Fatalf("only %d log lines", n)
	}
}

package acceptance

import (
	"bytes"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/podrunner/podrunner/internal/coordinator"
)

// A payload the runner cannot use fails that job, with the reason in its
// log, and the runner goes on with the next one.
func TestMalformedPayloadFailsOnlyThatJob(t *testing.T) {
	e := newEnv(t, "a:\n  script: [echo a-ran]\nb:\n  script: [echo b-ran]\n", coordinator.Options{})
	e.coord.MangleNextPayload(func(b []byte) []byte {
		return bytes.Replace(b, []byte(`"steps":[`), []byte(`"steps":[42,`), 1)
	})
	p := e.runConfig(e.config(1, ""))
	v := e.pipeline(time.Minute)
	a, b := jobByName(t, v, "a"), jobByName(t, v, "b")
	if a.Status != "failed" || a.FailureReason != "runner_system_failure" {
		t.Fatalf("mangled job: %s (%s); want failed runner_system_failure", a.Status, a.FailureReason)
	}
	contains(t, e.coord.Trace(a.ID), "steps[0]")
	if strings.Contains(string(e.coord.Trace(a.ID)), "a-ran") {
		t.Fatal("the mangled job ran")
	}
	if b.Status != "success" {
		t.Fatalf("next job: %s (%s); want success", b.Status, b.FailureReason)
	}
	if p.cmd.ProcessState != nil {
		t.Fatal("runner exited")
	}
}

// config.toml edits are picked up while running; a broken edit is refused
// and the running configuration kept.
func TestConfigReload(t *testing.T) {
	e := newEnv(t, "x:\n  script: [echo reloaded-ok]\n", coordinator.Options{})
	good := e.config(1, "")
	wrong := strings.Replace(good, e.token, "glrt-notthetoken", 1)
	path := filepath.Join(e.dir, "config.toml")
	p := e.runConfig(wrong)
	pl, err := e.coord.CreatePipeline(projectPath, "main")
	if err != nil {
		t.Fatal(err)
	}
	id := pl.Jobs["x"]
	waitLog(t, p, "forbidden")

	// A broken edit: refused with file:line, the runner goes on.
	if err := os.WriteFile(path, []byte("concurrent = \"two\"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	p.cmd.Process.Signal(syscall.SIGHUP)
	waitLog(t, p, "config.toml:1")
	if j, _ := e.coord.Job(id); j.Status != "pending" {
		t.Fatalf("job %s while the runner has a wrong token", j.Status)
	}

	// The fixed config is picked up by the file watcher alone.
	time.Sleep(1100 * time.Millisecond) // a new mtime second
	if err := os.WriteFile(path, []byte(good), 0o600); err != nil {
		t.Fatal(err)
	}
	j := e.waitJobStatus(id, time.Minute, "success", "failed")
	if j.Status != "success" {
		t.Fatalf("job %s (%s)", j.Status, j.FailureReason)
	}
	contains(t, e.coord.Trace(id), "reloaded-ok")
}

func waitLog(t *testing.T, p *proc, want string) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for !strings.Contains(p.Log(), want) {
		if time.Now().After(deadline) {
			t.Fatalf("runner log never showed %q:\n%s", want, p.Log())
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func TestMetricsAndHealth(t *testing.T) {
	e := newEnv(t, seed(t, "runner-test.gitlab-ci.yml"), coordinator.Options{})
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	e.runConfig(fmt.Sprintf("listen_address = %q\n", addr) + e.config(1, ""))
	get := func(path string) (int, string) {
		t.Helper()
		deadline := time.Now().Add(20 * time.Second)
		for {
			resp, err := http.Get("http://" + addr + path)
			if err == nil {
				b, _ := io.ReadAll(resp.Body)
				resp.Body.Close()
				return resp.StatusCode, string(b)
			}
			if time.Now().After(deadline) {
				t.Fatalf("GET %s: %v", path, err)
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
	for _, path := range []string{"/health/live", "/health/ready"} {
		if code, _ := get(path); code != 200 {
			t.Fatalf("GET %s = %d", path, code)
		}
	}
	e.pipeline(time.Minute)
	_, metrics := get("/metrics")
	for _, want := range []string{
		"gitlab_runner_jobs_total{",
		`gitlab_runner_api_request_statuses_total{endpoint="request_job"`,
		`endpoint="patch_trace"`,
		"gitlab_runner_concurrent 1",
		"gitlab_runner_version_info{",
		"process_resident_memory_bytes",
	} {
		if !strings.Contains(metrics, want) {
			t.Fatalf("/metrics lacks %q:\n%s", want, metrics)
		}
	}
}

// podrunner exec runs a pipeline of the current directory without GitLab.
func TestExec(t *testing.T) {
	dir := t.TempDir()
	ci := `stages: [build, test]
build:
  stage: build
  script: [echo built > out.txt, cat out.txt]
test:
  stage: test
  script:
    - echo testing
    - exit 4
`
	if err := os.WriteFile(filepath.Join(dir, ".gitlab-ci.yml"), []byte(ci), 0o644); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(binary, "exec")
	cmd.Dir = dir
	out, err := cmd.CombinedOutput()
	if err == nil {
		t.Fatalf("exec succeeded on a failing pipeline:\n%s", out)
	}
	for _, want := range []string{"built", "testing", "Pipeline failed", "test                           failed (script_failure, exit code 4)"} {
		if !bytes.Contains(out, []byte(want)) {
			t.Fatalf("exec output lacks %q:\n%s", want, out)
		}
	}
	if strings.Contains(string(out), "glcbt-") {
		t.Fatalf("exec output shows a job token:\n%s", out)
	}
}

// TestEmptyConfigWaits: an empty config.toml (at start, or truncated while
// running, as editors and config management do before writing) is neither
// "zero runners" nor a reason to exit: the service keeps running (an exit
// with status 0 would defeat Restart=on-failure) and takes the runners
// once the file has them.
func TestEmptyConfigWaits(t *testing.T) {
	e := newEnv(t, "x:\n  script: [echo empty-config-ok]\n", coordinator.Options{})
	good := e.config(1, "")
	path := filepath.Join(e.dir, "config.toml")
	p := e.runConfig("")
	waitLog(t, p, "No runners in the configuration")
	time.Sleep(1100 * time.Millisecond) // a new mtime second
	if err := os.WriteFile(path, []byte(good), 0o600); err != nil {
		t.Fatal(err)
	}
	v := e.pipeline(time.Minute)
	if v.Status != "success" {
		t.Fatalf("first pipeline %s", v.Status)
	}

	// Truncated while running: ignored, the runner keeps its runners.
	time.Sleep(1100 * time.Millisecond)
	if err := os.WriteFile(path, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	p.cmd.Process.Signal(syscall.SIGHUP)
	waitLog(t, p, "config file is empty")
	select {
	case <-p.done:
		t.Fatalf("podrunner exited (%v) on an empty config.toml", p.err)
	default:
	}
	v = e.pipeline(time.Minute)
	if v.Status != "success" {
		t.Fatalf("pipeline after the truncation: %s", v.Status)
	}
	contains(t, e.coord.Trace(v.Jobs[0].ID), "empty-config-ok")
}

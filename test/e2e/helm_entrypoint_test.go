package e2e

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"

	"github.com/podrunner/podrunner/internal/coordinator"
	"github.com/podrunner/podrunner/internal/testcluster"
)

// The chart's entrypoint, as rendered, outside Kubernetes (with the shell
// executor): it registers with the registration token from the Secret's
// files, runs, turns SIGTERM into a graceful stop (the running job still
// succeeds) and unregisters. Here rather than in internal/helmchart because
// it builds podrunner (slow); it runs with the e2e tests.
func TestHelmEntrypointRegistersRunsAndUnregisters(t *testing.T) {
	testcluster.Get(t) // only for PODRUNNER_E2E=1; the cluster is not used
	bin, root := helmBinary(t)
	dir := t.TempDir()
	pr := filepath.Join(dir, "bin", "podrunner")
	build := exec.Command("go", "build", "-trimpath", "-o", pr, "./cmd/podrunner")
	build.Dir = root
	build.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("build podrunner: %v\n%s", err, out)
	}

	coord, err := coordinator.New(coordinator.Options{TraceUpdateInterval: time.Second, DataDir: filepath.Join(dir, "coordinator")})
	if err != nil {
		t.Fatal(err)
	}
	if err := coord.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { coord.Close() })
	repo := filepath.Join(dir, "repo")
	k8sGit(t, "", "init", "-q", "-b", "main", repo)
	if err := os.WriteFile(filepath.Join(repo, ".gitlab-ci.yml"), []byte("x:\n  script: [true]\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	k8sGit(t, repo, "add", "-A")
	k8sGit(t, repo, "-c", "user.name=t", "-c", "user.email=t@example.com", "commit", "-q", "-m", "ci")
	if _, err := coord.AddProject("group/demo", repo); err != nil {
		t.Fatal(err)
	}

	var glrt string // created when the legacy case is done
	for _, tc := range []struct {
		name   string
		token  func() string
		legacy bool
	}{
		{"registration token", func() string { return "runnerRegistrationToken=" + coord.RegistrationToken() }, true},
		// runners.tags is left set: GitLab owns the tags of glrt- runners,
		// the entrypoint must drop it rather than fail.
		{"glrt token", func() string {
			_, glrt = coord.CreateRunner(coordinator.RunnerOptions{Description: "glrt", Tags: []string{"aks"}})
			return "runnerToken=" + glrt
		}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			port := freePort(t)
			docs := helmTemplate(t, bin, root, "--namespace", "ci",
				"--set", "gitlabUrl="+coord.URL(),
				"--set", tc.token(),
				"--set", "runners.executor=shell",
				"--set", "runners.tags=aks",
				"--set", "runners.name=entrypoint-test",
				"--set", "checkInterval=1",
				"--set", fmt.Sprintf("metrics.port=%d", port),
				"--set", "registrationRetries=2",
			)
			cm := oneDoc[*corev1.ConfigMap](t, docs, "ConfigMap")
			sec := oneDoc[*corev1.Secret](t, docs, "Secret")
			dep := oneDoc[*appsv1.Deployment](t, docs, "Deployment")
			cmDir, secDir, cfgDir := filepath.Join(dir, "configmaps"), filepath.Join(dir, "secrets"), filepath.Join(dir, "config")
			for d, files := range map[string]map[string][]byte{cmDir: bytesOf(cm.Data), secDir: sec.Data} {
				if err := os.MkdirAll(d, 0o755); err != nil {
					t.Fatal(err)
				}
				for name, data := range files {
					if err := os.WriteFile(filepath.Join(d, name), data, 0o644); err != nil {
						t.Fatal(err)
					}
				}
			}

			shell := []string{"/bin/sh"}
			if _, err := os.Stat("/bin/busybox"); err == nil {
				shell = []string{"/bin/busybox", "sh"} // the image's shell
			}
			cmd := exec.Command(shell[0], append(shell[1:], filepath.Join(cmDir, "entrypoint"))...)
			cmd.Dir = dir
			env := []string{"PATH=" + filepath.Dir(pr) + ":" + os.Getenv("PATH"), "CONFIGMAPS_DIR=" + cmDir, "SECRETS_DIR=" + secDir}
			for _, e := range dep.Spec.Template.Spec.Containers[0].Env {
				switch e.Name {
				case "HOME", "CONFIG_DIR":
					e.Value = cfgDir
				case "CONFIG_FILE":
					e.Value = filepath.Join(cfgDir, "config.toml")
				}
				env = append(env, e.Name+"="+e.Value)
			}
			cmd.Env = env
			out, err := os.Create(filepath.Join(dir, "output"))
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { out.Close() })
			cmd.Stdout, cmd.Stderr = out, out
			if err := cmd.Start(); err != nil {
				t.Fatal(err)
			}
			done := make(chan error, 1)
			go func() { done <- cmd.Wait() }()
			output := func() string { b, _ := os.ReadFile(out.Name()); return string(b) }
			t.Cleanup(func() {
				select {
				case <-done:
				default:
					cmd.Process.Kill()
					<-done
				}
				if t.Failed() {
					t.Logf("entrypoint output:\n%s", output())
				}
			})

			// Registered, and ready on the health endpoint.
			waitFor(t, "the runner to register and be ready", 60*time.Second, func() bool {
				res, err := http.Get(fmt.Sprintf("http://127.0.0.1:%d/health/ready", port))
				if err != nil {
					return false
				}
				res.Body.Close()
				rs := coord.Runners()
				return res.StatusCode == http.StatusOK && len(rs) == 1 && len(rs[0].Managers) == 1
			})
			r := coord.Runners()[0]
			if strings.Join(r.Tags, ",") != "aks" || tc.legacy && r.Description != "entrypoint-test" {
				t.Errorf("runner %+v", r)
			}

			// A job runs; SIGTERM in the middle: it still succeeds, then the
			// runner is unregistered and the entrypoint exits 0.
			pl, err := coord.CreatePipelineWith("group/demo", coordinator.PipelineOptions{CIConfig: []byte("long:\n  tags: [aks]\n  script:\n    - echo started\n    - sleep 3\n    - echo finished\n")})
			if err != nil {
				t.Fatal(err)
			}
			id := pl.Jobs["long"]
			waitFor(t, "the job to start", 60*time.Second, func() bool { return strings.Contains(string(coord.Trace(id)), "started") })
			if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
				t.Fatal(err)
			}
			select {
			case err := <-done:
				done <- err
				if err != nil {
					t.Errorf("entrypoint exited: %v", err)
				}
			case <-time.After(60 * time.Second):
				t.Fatal("entrypoint still running 60 s after SIGTERM")
			}
			j, _ := coord.Job(id)
			if j.Status != coordinator.StatusSuccess || !strings.Contains(string(coord.Trace(id)), "finished") {
				t.Errorf("job %s after SIGTERM:\n%s", j.Status, coord.Trace(id))
			}
			rs := coord.Runners()
			switch {
			case tc.legacy && len(rs) != 0:
				t.Errorf("%d runners still registered", len(rs))
			case !tc.legacy && (len(rs) != 1 || len(rs[0].Managers) != 0):
				// glrt-: only this runner manager goes, as with GitLab.
				t.Errorf("runners after the stop %+v: want the runner without managers", rs)
			}
			o := output()
			for _, want := range []string{"Runner registered successfully", "SIGQUIT", "Unregistering runner from GitLab succeeded"} {
				if !strings.Contains(o, want) {
					t.Errorf("output lacks %q", want)
				}
			}
			if strings.Contains(o, coord.RegistrationToken()) || strings.Contains(o, r.Token) || glrt != "" && strings.Contains(o, glrt) {
				t.Error("output shows a token")
			}
		})
	}
}

func bytesOf(m map[string]string) map[string][]byte {
	out := map[string][]byte{}
	for k, v := range m {
		out[k] = []byte(v)
	}
	return out
}

func freePort(t *testing.T) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

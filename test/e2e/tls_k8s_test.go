package e2e

import (
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/podrunner/podrunner/internal/coordinator"
)

// HTTPS GitLab signed by a private CA with the Kubernetes executor: the CA
// given as tls-ca-file, or as certs/<host>.crt next to config.toml (where
// the Helm chart mounts its certsSecretName secret). The manager registers
// and polls, the agent clones in the pod, the helpers in the pod upload and
// download artifacts and the cache, jobs get CI_SERVER_TLS_CA_FILE, and
// GIT_CLEAN_FLAGS=none keeps an untracked file. Without the CA, the
// manager's log names the certificate problem and the fix.
func TestKubernetesHTTPSPrivateCA(t *testing.T) {
	pipeline, err := os.ReadFile("../testdata/tls/gitlab-ci.yml")
	if err != nil {
		t.Fatal(err)
	}
	preScript, err := os.ReadFile("../testdata/tls/pre_get_sources_script.sh")
	if err != nil {
		t.Fatal(err)
	}
	for _, how := range []string{"tls-ca-file", "certs-dir", "none"} {
		t.Run(how, func(t *testing.T) {
			e := newK8sEnv(t, string(pipeline), k8sOptions{external: true, tls: true})
			bin, cfg := e.runnerProcessConfig("e2e-tls", 1, 0)
			u, err := url.Parse(e.coord.URL())
			if err != nil {
				t.Fatal(err)
			}
			runnerKeys := "  pre_get_sources_script = '''\n" + string(preScript) + "'''\n  cache_dir = \"/cache\"\n"
			switch how {
			case "tls-ca-file":
				ca := filepath.Join(e.dir, "gitlab-ca.pem")
				if err := os.WriteFile(ca, e.coord.CACertPEM(), 0o644); err != nil {
					t.Fatal(err)
				}
				runnerKeys += fmt.Sprintf("  tls-ca-file = %q\n", ca)
			case "certs-dir":
				dir := filepath.Join(filepath.Dir(cfg), "certs")
				if err := os.MkdirAll(dir, 0o755); err != nil {
					t.Fatal(err)
				}
				if err := os.WriteFile(filepath.Join(dir, u.Hostname()+".crt"), e.coord.CACertPEM(), 0o644); err != nil {
					t.Fatal(err)
				}
			}
			host := t.TempDir()
			if err := os.Chmod(host, 0o777); err != nil {
				t.Fatal(err)
			}
			b, err := os.ReadFile(cfg)
			if err != nil {
				t.Fatal(err)
			}
			toml := strings.Replace(string(b), "  [runners.kubernetes]\n", runnerKeys+"  [runners.kubernetes]\n", 1) +
				fmt.Sprintf("    [[runners.kubernetes.volumes.host_path]]\n      name = \"cache\"\n      mount_path = \"/cache\"\n      host_path = %q\n", host)
			if err := os.WriteFile(cfg, []byte(toml), 0o600); err != nil {
				t.Fatal(err)
			}
			_, out := e.startRunnerProcess(bin, cfg)

			if how == "none" {
				deadline := time.Now().Add(60 * time.Second)
				for !strings.Contains(out.String(), "not trusted") && time.Now().Before(deadline) {
					time.Sleep(100 * time.Millisecond)
				}
				for _, want := range []string{"not trusted", "unknown authority", u.Hostname(), "tls-ca-file", "certsSecretName"} {
					if !strings.Contains(out.String(), want) {
						t.Fatalf("runner log lacks %q:\n%s", want, out.String())
					}
				}
				return
			}
			v := e.pipeline(coordinator.PipelineOptions{}, 5*time.Minute)
			if v.Status != coordinator.StatusSuccess {
				for _, j := range v.Jobs {
					t.Logf("job %s %s %s:\n%s", j.Name, j.Status, j.FailureReason, e.coord.Trace(j.ID))
				}
				t.Fatalf("pipeline %s", v.Status)
			}
			byName := map[string]coordinator.JobView{}
			for _, j := range v.Jobs {
				byName[j.Name] = j
			}
			want := map[string][]string{
				"noclean": {"untracked file kept", "sources cloned over HTTPS", "CA file is /builds/"},
				"clean":   {"untracked file removed"},
				"consume": {"artifact-payload", "cache-payload"},
			}
			for name, lines := range want {
				tr := string(e.coord.Trace(byName[name].ID))
				for _, l := range lines {
					if !strings.Contains(tr, l) {
						t.Errorf("job %s: trace lacks %q:\n%s", name, l, tr)
					}
				}
			}
			e.waitNoPods()
		})
	}
}

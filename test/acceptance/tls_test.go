package acceptance

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/podrunner/podrunner/internal/coordinator"
)

func tlsTestdata(t *testing.T, name string) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("..", "testdata", "tls", name))
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// HTTPS GitLab signed by a private CA, given with tls-ca-file: register,
// run, clone, artifacts and cache, CI_SERVER_TLS_CA_FILE, GIT_CLEAN_FLAGS.
func TestHTTPSPrivateCA(t *testing.T) {
	// git prefers GIT_SSL_CAINFO over http.<url>.sslCAInfo; a machine
	// that sets it (to the system bundle) would hide what is tested here.
	t.Setenv("GIT_SSL_CAINFO", "")
	os.Unsetenv("GIT_SSL_CAINFO")
	e := newEnv(t, tlsTestdata(t, "gitlab-ci.yml"), coordinator.Options{TLS: true})
	ca := filepath.Join(e.dir, "ca.crt")
	if err := os.WriteFile(ca, e.coord.CACertPEM(), 0o644); err != nil {
		t.Fatal(err)
	}

	// Without the CA: one clear error, naming the problem and the fix.
	out, err := exec.Command(binary, "register", "-n", "-c", filepath.Join(e.dir, "noca.toml"), "--url", e.coord.URL(),
		"--token", e.token, "--executor", "shell").CombinedOutput()
	if err == nil {
		t.Fatalf("register without the CA succeeded:\n%s", out)
	}
	for _, want := range []string{"not trusted", "unknown authority", "127.0.0.1", "tls-ca-file"} {
		if !strings.Contains(string(out), want) {
			t.Fatalf("register without the CA: output lacks %q:\n%s", want, out)
		}
	}
	// With it, as users do.
	cfg := filepath.Join(e.dir, "ca.toml")
	out, err = exec.Command(binary, "register", "-n", "-c", cfg, "--url", e.coord.URL(), "--token", e.token,
		"--executor", "shell", "--tls-ca-file", ca).CombinedOutput()
	if err != nil {
		t.Fatalf("register with the CA: %v\n%s", err, out)
	}
	if b, _ := os.ReadFile(cfg); !strings.Contains(string(b), "tls-ca-file") {
		t.Fatalf("config.toml lacks tls-ca-file:\n%s", b)
	}

	p := e.runConfig(e.config(1, "  tls-ca-file = \""+ca+"\"\n  pre_get_sources_script = '''\n"+tlsTestdata(t, "pre_get_sources_script.sh")+"'''\n"))
	v := e.pipeline(3 * time.Minute)
	if v.Status != "success" {
		for _, j := range v.Jobs {
			t.Logf("job %s %s %s:\n%s", j.Name, j.Status, j.FailureReason, e.coord.Trace(j.ID))
		}
		t.Fatalf("pipeline %s\n%s", v.Status, p.Log())
	}
	noclean := jobByName(t, v, "noclean")
	checkTrace(t, noclean)
	contains(t, e.coord.Trace(noclean.ID), "untracked file kept", "sources cloned over HTTPS", "CA file is "+e.dir)
	contains(t, e.coord.Trace(jobByName(t, v, "clean").ID), "untracked file removed")
	contains(t, e.coord.Trace(jobByName(t, v, "consume").ID), "artifact-payload", "cache-payload")
}

// A running manager without the CA: its log names the certificate problem and
// what to configure.
func TestHTTPSWithoutCA(t *testing.T) {
	e := newEnv(t, "x:\n  script: [echo]\n", coordinator.Options{TLS: true})
	p := e.runConfig(e.config(1, ""))
	waitLog(t, p, "not trusted")
	for _, want := range []string{"unknown authority", "tls-ca-file", "certsSecretName"} {
		if !strings.Contains(p.Log(), want) {
			t.Fatalf("runner log lacks %q:\n%s", want, p.Log())
		}
	}
}

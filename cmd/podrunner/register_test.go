package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"sync"
	"testing"

	"github.com/podrunner/podrunner/internal/config"
)

// fakeGitLab speaks the runner endpoints of the behaviour reference
// (sections 1.3-1.6) and records every request.
type fakeGitLab struct {
	*httptest.Server
	mu       sync.Mutex
	requests []fakeRequest
}

type fakeRequest struct {
	Method, Path string
	Body         map[string]any
}

const (
	regToken     = "GR1348941REGISTRATION"
	validToken   = "glrt-t1_validtoken12345"
	goneToken    = "glrt-gonetoken12345"
	legacyToken  = "legacyrunnertoken123"
	createdToken = "glrtr-createdtoken98765" // legacy-registered runners get glrtr- tokens
	resetToken   = "glrt-resettoken55555"
)

func newFakeGitLab(t *testing.T) *fakeGitLab {
	f := &fakeGitLab{}
	f.Server = httptest.NewServer(http.HandlerFunc(f.serve))
	t.Cleanup(f.Close)
	return f
}

func (f *fakeGitLab) serve(w http.ResponseWriter, r *http.Request) {
	body, _ := io.ReadAll(r.Body)
	var m map[string]any
	_ = json.Unmarshal(body, &m)
	f.mu.Lock()
	f.requests = append(f.requests, fakeRequest{Method: r.Method, Path: r.URL.Path, Body: m})
	f.mu.Unlock()
	token, _ := m["token"].(string)
	if token == "" {
		token = r.Header.Get("RUNNER-TOKEN")
	}
	reply := func(code int, v any) {
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(code)
		if v != nil {
			json.NewEncoder(w).Encode(v)
		}
	}
	forbidden := func() { reply(http.StatusForbidden, map[string]any{"message": "403 Forbidden"}) }
	known := token == validToken || token == legacyToken || token == createdToken || token == resetToken
	switch {
	case r.Method == http.MethodPost && r.URL.Path == "/api/v4/runners":
		if token != regToken {
			forbidden()
			return
		}
		reply(http.StatusCreated, map[string]any{"id": 123, "token": createdToken, "token_expires_at": "2030-01-02T03:04:05Z"})
	case r.Method == http.MethodPost && r.URL.Path == "/api/v4/runners/verify":
		if !known {
			forbidden()
			return
		}
		reply(http.StatusOK, map[string]any{"id": 7, "token": token, "token_expires_at": "0001-01-01T00:00:00Z"})
	case r.Method == http.MethodDelete && (r.URL.Path == "/api/v4/runners" || r.URL.Path == "/api/v4/runners/managers"):
		if !known {
			forbidden()
			return
		}
		w.WriteHeader(http.StatusNoContent)
	case r.Method == http.MethodPost && r.URL.Path == "/api/v4/runners/reset_authentication_token":
		if !known {
			forbidden()
			return
		}
		reply(http.StatusCreated, map[string]any{"token": resetToken, "token_expires_at": "2031-01-01T00:00:00Z"})
	default:
		reply(http.StatusNotFound, map[string]any{"message": "404 Not Found"})
	}
}

func (f *fakeGitLab) calls() []fakeRequest {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]fakeRequest(nil), f.requests...)
}

func (f *fakeGitLab) paths() []string {
	var out []string
	for _, r := range f.calls() {
		out = append(out, r.Method+" "+r.Path)
	}
	return out
}

// clearEnv blanks the environment variables the CLI reads, so the
// machine's environment cannot leak into tests.
func clearEnv(t *testing.T) {
	for _, kv := range os.Environ() {
		k, _, _ := strings.Cut(kv, "=")
		for _, p := range []string{"CI_SERVER_", "RUNNER_", "REGISTER_", "REGISTRATION_TOKEN", "KUBERNETES_", "CACHE_", "CONFIG_FILE", "LOG_", "DEBUG", "TEMPLATE_CONFIG_FILE", "CLONE_URL", "FEATURE_FLAGS", "PRIVATE_TOKEN"} {
			if strings.HasPrefix(k, p) {
				t.Setenv(k, "")
				os.Unsetenv(k)
			}
		}
	}
}

type result struct {
	code           int
	stdout, stderr string
}

func run(t *testing.T, args ...string) result {
	t.Helper()
	var out, errb bytes.Buffer
	code := execute(args, &out, &errb)
	return result{code: code, stdout: out.String(), stderr: errb.String()}
}

func writeFile(t *testing.T, path, content string) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
}

func loadT(t *testing.T, path string) *config.Config {
	t.Helper()
	cfg, _, err := config.Load(path)
	if err != nil {
		t.Fatalf("load %s: %v", path, err)
	}
	return cfg
}

func TestRegisterAuthTokenFromHelmEnv(t *testing.T) {
	clearEnv(t)
	gl := newFakeGitLab(t)
	dir := t.TempDir()
	cfgPath := filepath.Join(dir, "config.toml")
	writeFile(t, cfgPath, "concurrent = 10\ncheck_interval = 30\n\n[[runners]]\n  name = \"old\"\n  url = \"https://other.example.com\"\n  token = \"glrt-oldrunner123\"\n  executor = \"shell\"\n")
	tpl := filepath.Join(dir, "config.template.toml")
	writeFile(t, tpl, "[[runners]]\n  [runners.kubernetes]\n    namespace = \"from-template\"\n    image = \"alpine:3.20\"\n    cpu_limit = \"1\"\n    [[runners.kubernetes.volumes.empty_dir]]\n      name = \"scratch\"\n      mount_path = \"/scratch\"\n")
	// What the Helm chart's register-the-runner sets for a glrt- token.
	t.Setenv("CI_SERVER_URL", gl.URL+"/")
	t.Setenv("CI_SERVER_TOKEN", validToken)
	t.Setenv("RUNNER_EXECUTOR", "kubernetes")
	t.Setenv("KUBERNETES_NAMESPACE", "gitlab-runner")
	t.Setenv("REGISTER_NON_INTERACTIVE", "true")
	t.Setenv("REGISTER_RUN_UNTAGGED", "")
	t.Setenv("REGISTER_ACCESS_LEVEL", "")
	t.Setenv("CONFIG_FILE", cfgPath)
	t.Setenv("TEMPLATE_CONFIG_FILE", tpl)

	res := run(t, "register", "--name", "k8s-runner")
	if res.code != 0 {
		t.Fatalf("register failed: %+v", res)
	}
	if got := gl.paths(); len(got) != 1 || got[0] != "POST /api/v4/runners/verify" {
		t.Fatalf("requests = %v, want only POST runners/verify", got)
	}
	if sid, _ := gl.calls()[0].Body["system_id"].(string); !strings.HasPrefix(sid, "s_") && !strings.HasPrefix(sid, "r_") {
		t.Errorf("verify body system_id = %q", sid)
	}
	cfg := loadT(t, cfgPath)
	if cfg.Concurrent != 10 || len(cfg.Runners) != 2 || cfg.Runners[0].Name != "old" {
		t.Fatalf("existing config not kept: %+v", cfg)
	}
	r := cfg.Runners[1]
	if r.Name != "k8s-runner" || r.URL != gl.URL || r.ID != 7 || r.Token != validToken || r.Executor != "kubernetes" || r.TokenObtainedAt.IsZero() {
		t.Errorf("new runner = %+v", r)
	}
	k := r.Kubernetes
	if k == nil || k.Namespace != "gitlab-runner" || k.Image != "alpine:3.20" || k.CPULimit != "1" || len(k.Volumes.EmptyDirs) != 1 {
		t.Errorf("kubernetes = %+v (env must win over the template, template fills the rest)", k)
	}
	if st, _ := os.Stat(cfgPath); st.Mode().Perm() != 0o600 {
		t.Errorf("config mode = %v", st.Mode().Perm())
	}
	if strings.Contains(res.stdout+res.stderr, validToken) {
		t.Errorf("full token printed:\n%s\n%s", res.stdout, res.stderr)
	}
}

func TestRegisterAuthTokenRejectsLegacyOptions(t *testing.T) {
	clearEnv(t)
	gl := newFakeGitLab(t)
	cfgPath := filepath.Join(t.TempDir(), "config.toml")
	for _, tc := range []struct {
		name string
		args []string
		env  map[string]string
		want string
	}{
		{"flag", []string{"--tag-list", "a,b"}, nil, "--tag-list cannot be set"},
		{"locked flag", []string{"--locked=false"}, nil, "--locked cannot be set"},
		{"env", nil, map[string]string{"RUNNER_TAG_LIST": "aks"}, "$RUNNER_TAG_LIST cannot be set"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			for k, v := range tc.env {
				t.Setenv(k, v)
			}
			args := append([]string{"register", "-n", "-c", cfgPath, "-u", gl.URL, "-t", validToken, "--executor", "shell"}, tc.args...)
			res := run(t, args...)
			if res.code == 0 || !strings.Contains(res.stderr, tc.want) {
				t.Fatalf("res = %+v, want failure with %q", res, tc.want)
			}
		})
	}
	// Env values equal to the defaults are what the chart leaves: accepted.
	t.Setenv("REGISTER_LOCKED", "true")
	t.Setenv("REGISTER_RUN_UNTAGGED", "false")
	if res := run(t, "register", "-n", "-c", cfgPath, "-u", gl.URL, "-t", validToken, "--executor", "shell"); res.code != 0 {
		t.Fatalf("defaults from env refused: %+v", res)
	}
	if got := gl.paths(); len(got) != 1 {
		t.Errorf("requests = %v, want one verify (refused runs must not call GitLab)", got)
	}
}

func TestRegisterLegacyToken(t *testing.T) {
	clearEnv(t)
	t.Setenv("RUNNER_NAME", "from-env") // --description must win over it
	gl := newFakeGitLab(t)
	cfgPath := filepath.Join(t.TempDir(), "new", "config.toml")
	res := run(t, "register", "--non-interactive", "--config", cfgPath, "--url", gl.URL+"/ci", "--registration-token", regToken,
		"--description", "legacy", "--executor", "kubernetes", "--tag-list", "aks, linux", "--run-untagged", "--locked=false",
		"--access-level", "ref_protected", "--maximum-timeout", "600", "--limit", "3", "--env", "A=1", "--env", "B=2,3",
		"--kubernetes-namespace", "ci", "--kubernetes-bearer_token", "k8s-secret", "--kubernetes-node-selector", "kubernetes.io/os:linux",
		"--kubernetes-pull-policy", "always,if-not-present", "--kubernetes-privileged=false", "--cache-type", "s3", "--cache-s3-bucket-name", "b",
		"--feature-flags", "FF_TIMESTAMPS=false")
	if res.code != 0 {
		t.Fatalf("register: %+v", res)
	}
	calls := gl.calls()
	if len(calls) != 1 || calls[0].Path != "/api/v4/runners" {
		t.Fatalf("requests = %v", gl.paths())
	}
	b := calls[0].Body
	if b["token"] != regToken || b["description"] != "legacy" || b["tag_list"] != "aks,linux" || b["run_untagged"] != true || b["locked"] != false || b["access_level"] != "ref_protected" || b["maximum_timeout"] != float64(600) {
		t.Errorf("POST runners body = %v", b)
	}
	cfg := loadT(t, cfgPath)
	r := cfg.Runners[0]
	if r.ID != 123 || r.Token != createdToken || r.TokenExpiresAt.Year() != 2030 || r.URL != gl.URL || r.Limit != 3 {
		t.Errorf("runner = %+v", r)
	}
	if strings.Join(r.Environment, "|") != "A=1|B=2,3" || r.FeatureFlags["FF_TIMESTAMPS"] != false || len(r.FeatureFlags) != 1 {
		t.Errorf("environment/feature flags = %v %v", r.Environment, r.FeatureFlags)
	}
	k := r.Kubernetes
	if k.Namespace != "ci" || k.BearerToken != "k8s-secret" || k.NodeSelector["kubernetes.io/os"] != "linux" || strings.Join(k.PullPolicy, ",") != "always,if-not-present" || k.Privileged == nil || *k.Privileged {
		t.Errorf("kubernetes = %+v", k)
	}
	if r.Cache == nil || r.Cache.Type != "s3" || r.Cache.S3 == nil || r.Cache.S3.BucketName != "b" {
		t.Errorf("cache = %+v", r.Cache)
	}
	if st, _ := os.Stat(filepath.Dir(cfgPath)); st.Mode().Perm() != 0o700 {
		t.Errorf("config dir mode = %v", st.Mode().Perm())
	}
}

func TestRegisterUnregistersWhenSaveFails(t *testing.T) {
	clearEnv(t)
	old := saveConfig
	t.Cleanup(func() { saveConfig = old })
	saveConfig = func(*config.Config, string) error { return errors.New("disk full") }
	for _, leave := range []bool{false, true} {
		gl := newFakeGitLab(t)
		cfgPath := filepath.Join(t.TempDir(), "config.toml")
		args := []string{"register", "-n", "-c", cfgPath, "-u", gl.URL, "-r", regToken, "--executor", "shell"}
		if leave {
			args = append(args, "--leave-runner")
		}
		res := run(t, args...)
		if res.code == 0 || !strings.Contains(res.stderr, "disk full") {
			t.Fatalf("leave=%v: res = %+v", leave, res)
		}
		got := strings.Join(gl.paths(), ", ")
		want := "POST /api/v4/runners, DELETE /api/v4/runners"
		if leave {
			want = "POST /api/v4/runners"
		}
		if got != want {
			t.Errorf("leave=%v: requests = %s, want %s", leave, got, want)
		}
		if !leave {
			if tok := gl.calls()[1].Body["token"]; tok != createdToken {
				t.Errorf("unregistered token = %v, want the new runner's", tok)
			}
		}
	}
}

func TestRegisterErrors(t *testing.T) {
	clearEnv(t)
	gl := newFakeGitLab(t)
	dir := t.TempDir()
	bad := filepath.Join(dir, "bad.toml")
	writeFile(t, bad, "concurrent = 1\n\n[[runners]]\n  url = \"https://x\"\n  token = \"t\"\n  executor = \"dockr\"\n")
	badTpl := filepath.Join(dir, "tpl.toml")
	writeFile(t, badTpl, "[[runners]]\n[runners.kubernetes]\nmemory_limit = \"lots\"\n")
	good := filepath.Join(dir, "good.toml")
	tests := []struct {
		name string
		args []string
		want []string
	}{
		{"missing", []string{"register", "-n", "-c", good}, []string{"missing:", "--url ($CI_SERVER_URL)", "--token ($CI_SERVER_TOKEN) or --registration-token ($REGISTRATION_TOKEN)", "--executor ($RUNNER_EXECUTOR)"}},
		{"bad existing config", []string{"register", "-n", "-c", bad, "-u", gl.URL, "-t", validToken, "--executor", "shell"}, []string{bad + `:6: runners[0].executor: unknown executor "dockr"`}},
		{"bad executor", []string{"register", "-n", "-c", good, "-u", gl.URL, "-t", validToken, "--executor", "docker"}, []string{`runners[0].executor: unknown executor "docker": use "shell" or "kubernetes"`}},
		{"bad quantity flag", []string{"register", "-n", "-c", good, "-u", gl.URL, "-t", validToken, "--executor", "kubernetes", "--kubernetes-cpu-limit", "fast"}, []string{`runners[0].kubernetes.cpu_limit: invalid quantity "fast"`}},
		{"bad template", []string{"register", "-n", "-c", good, "-u", gl.URL, "-t", validToken, "--executor", "kubernetes", "--template-config", badTpl}, []string{badTpl + `:3: runners[0].kubernetes.memory_limit: invalid quantity "lots"`}},
		{"bad url", []string{"register", "-n", "-c", good, "-u", "gitlab.example.com", "-t", validToken, "--executor", "shell"}, []string{"--url: invalid URL"}},
		{"bad env", []string{"register", "-n", "-c", good, "-u", gl.URL, "-t", validToken, "--executor", "shell", "--env", "NOPE"}, []string{`--env: invalid entry "NOPE"`}},
		{"forbidden", []string{"register", "-n", "-c", good, "-u", gl.URL, "-t", goneToken, "--executor", "shell"}, []string{"403"}},
		{"forbidden registration", []string{"register", "-n", "-c", good, "-u", gl.URL, "-r", "wrong", "--executor", "shell"}, []string{"check the registration token"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			res := run(t, tt.args...)
			if res.code == 0 {
				t.Fatalf("succeeded: %+v", res)
			}
			for _, w := range tt.want {
				if !strings.Contains(res.stderr, w) {
					t.Errorf("stderr lacks %q:\n%s", w, res.stderr)
				}
			}
		})
	}
	if _, err := os.Stat(good); !os.IsNotExist(err) {
		t.Errorf("a failed register wrote %s", good)
	}
}

func TestMergeMissing(t *testing.T) {
	yes := true
	dst := &config.Runner{Name: "flag", Kubernetes: &config.Kubernetes{Namespace: "flag", NodeSelector: map[string]string{"a": "flag"}}}
	src := &config.Runner{Name: "tpl", Limit: 4, Environment: []string{"X=1"}, Kubernetes: &config.Kubernetes{Namespace: "tpl", Image: "img", Privileged: &yes, NodeSelector: map[string]string{"a": "tpl", "b": "tpl"}}, Cache: &config.Cache{Type: "s3"}}
	mergeMissing(reflect.ValueOf(dst).Elem(), reflect.ValueOf(src).Elem())
	if dst.Name != "flag" || dst.Limit != 4 || dst.Environment[0] != "X=1" || dst.Cache.Type != "s3" {
		t.Errorf("runner = %+v", dst)
	}
	k := dst.Kubernetes
	if k.Namespace != "flag" || k.Image != "img" || !*k.Privileged || k.NodeSelector["a"] != "flag" || k.NodeSelector["b"] != "tpl" {
		t.Errorf("kubernetes = %+v", k)
	}
}

// TestRegisterCacheCredentialsFromHelmEnv: runners.cache.secretName gives
// the keys as GitLab Runner's CACHE_* variables, runners.config the rest.
func TestRegisterCacheCredentialsFromHelmEnv(t *testing.T) {
	clearEnv(t)
	gl := newFakeGitLab(t)
	dir := t.TempDir()
	cfgPath := filepath.Join(dir, "config.toml")
	tpl := filepath.Join(dir, "config.template.toml")
	writeFile(t, tpl, "[[runners]]\n  [runners.cache]\n    Type = \"azure\"\n    [runners.cache.azure]\n      ContainerName = \"runner-cache\"\n  [runners.cache.gcs]\n    BucketName = \"b\"\n")
	t.Setenv("CACHE_AZURE_ACCOUNT_NAME", "acct")
	t.Setenv("CACHE_AZURE_ACCOUNT_KEY", "a2V5")
	t.Setenv("CACHE_GCS_ACCESS_ID", "sa@p.iam.gserviceaccount.com")
	t.Setenv("CACHE_GCS_PRIVATE_KEY", "pem")
	res := run(t, "register", "-n", "-c", cfgPath, "-u", gl.URL, "-t", validToken, "--executor", "shell", "--template-config", tpl)
	if res.code != 0 {
		t.Fatalf("register failed: %+v", res)
	}
	c := loadT(t, cfgPath).Runners[0].Cache
	if c == nil || c.Type != "azure" || c.Azure == nil || *c.Azure != (config.CacheAzure{AccountName: "acct", AccountKey: "a2V5", ContainerName: "runner-cache"}) ||
		c.GCS == nil || c.GCS.AccessID != "sa@p.iam.gserviceaccount.com" || c.GCS.PrivateKey != "pem" || c.GCS.BucketName != "b" {
		t.Errorf("cache = %+v azure %+v gcs %+v", c, c.Azure, c.GCS)
	}
}

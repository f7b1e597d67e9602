package gitlab

import (
	"context"
	"encoding/json"
	"net/http"
	"regexp"
	"runtime"
	"strings"
	"testing"
)

func TestNormalizeURL(t *testing.T) {
	tests := []struct {
		in, want, wantErr string
	}{
		{in: "https://gitlab.example.com", want: "https://gitlab.example.com/api/v4/"},
		{in: "https://gitlab.example.com/", want: "https://gitlab.example.com/api/v4/"},
		{in: "https://gitlab.example.com//", want: "https://gitlab.example.com/api/v4/"},
		{in: "https://gitlab.example.com/ci", want: "https://gitlab.example.com/api/v4/"},
		{in: "https://gitlab.example.com/ci/", want: "https://gitlab.example.com/api/v4/"},
		{in: "http://gitlab.example.com:8080/gitlab", want: "http://gitlab.example.com:8080/gitlab/api/v4/"},
		{in: "http://gitlab.example.com/gitlab/ci", want: "http://gitlab.example.com/gitlab/api/v4/"},
		{in: "https://gitlab.example.com/cid", want: "https://gitlab.example.com/cid/api/v4/"},
		{in: " https://gitlab.example.com ", want: "https://gitlab.example.com/api/v4/"},
		{in: "", wantErr: "empty"},
		{in: "ftp://gitlab.example.com", wantErr: "scheme must be http or https"},
		{in: "gitlab.example.com", wantErr: "scheme must be http or https"},
		{in: "unix:///var/run/x.sock", wantErr: "scheme must be http or https"},
		{in: "https://", wantErr: "no host"},
		{in: "https://gitlab.example.com/%zz", wantErr: "not a valid URL"},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			got, err := NormalizeURL(tt.in)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("NormalizeURL(%q) error = %v, want containing %q", tt.in, err, tt.wantErr)
				}
				if _, cerr := NewClient(Credentials{URL: tt.in}, Options{}); cerr == nil {
					t.Fatalf("NewClient(%q) accepted the URL", tt.in)
				}
				return
			}
			if err != nil || got != tt.want {
				t.Fatalf("NormalizeURL(%q) = %q, %v; want %q", tt.in, got, err, tt.want)
			}
		})
	}
}

func TestLegacyCIURLWarns(t *testing.T) {
	c, logs := newTestClient(t, "https://gitlab.example.com/ci", "t")
	if c.BaseURL() != "https://gitlab.example.com/api/v4/" {
		t.Fatalf("BaseURL = %q", c.BaseURL())
	}
	if !strings.Contains(logs.String(), "legacy") {
		t.Fatalf("no warning about the legacy /ci URL in %q", logs.String())
	}
}

func TestUserAgent(t *testing.T) {
	c, _ := newTestClient(t, "https://gitlab.example.com", "t")
	want := "podrunner 1.2.3 (main; " + runtime.Version() + "; " + runtime.GOOS + "/" + runtime.GOARCH + ")"
	if c.UserAgent() != want {
		t.Fatalf("UserAgent = %q, want %q", c.UserAgent(), want)
	}
	d, err := NewClient(Credentials{URL: "https://gitlab.example.com"}, Options{})
	if err != nil {
		t.Fatal(err)
	}
	if !regexp.MustCompile(`^podrunner dev \(unknown; go[^;]+; \w+/\w+\)$`).MatchString(d.UserAgent()) {
		t.Fatalf("default UserAgent = %q", d.UserAgent())
	}
}

func TestLabelsValidated(t *testing.T) {
	for _, labels := range []map[string]string{
		{"a": "x"},         // too short
		{"-bad": "x"},      // bad first char
		{"has space": "x"}, // bad char
		manyLabels(33),     // too many
	} {
		if _, err := NewClient(Credentials{URL: "https://gitlab.example.com"}, Options{Labels: labels}); err == nil {
			t.Errorf("labels %v accepted", labels)
		}
	}
	if _, err := NewClient(Credentials{URL: "https://gitlab.example.com"}, Options{Labels: manyLabels(32)}); err != nil {
		t.Errorf("32 valid labels refused: %v", err)
	}
}

func manyLabels(n int) map[string]string {
	m := map[string]string{}
	for i := range n {
		m["label_"+strings.Repeat("x", i+1)] = "v"
	}
	return m
}

func TestInfoObject(t *testing.T) {
	f := newFakeGitLab(t, func(w http.ResponseWriter, r *http.Request, _ []byte) { w.WriteHeader(http.StatusNoContent) })
	c, _ := newTestClient(t, f.srv.URL, testRunnerToken, func(o *Options) {
		o.Labels = map[string]string{"zone": "eu-1"}
		o.GPUs = "all"
	})
	c.RequestJob(context.Background(), "s_0123456789ab")
	var body struct {
		Info map[string]json.RawMessage `json:"info"`
	}
	if err := json.Unmarshal(f.last().Body, &body); err != nil {
		t.Fatal(err)
	}
	str := func(k string) string {
		var s string
		_ = json.Unmarshal(body.Info[k], &s)
		return s
	}
	for k, want := range map[string]string{
		"name": "podrunner", "version": "1.2.3", "revision": "abcdef01",
		"platform": runtime.GOOS, "architecture": runtime.GOARCH, "executor": "shell", "shell": "bash",
	} {
		if got := str(k); got != want {
			t.Errorf("info.%s = %q, want %q", k, got, want)
		}
	}
	var features map[string]bool
	if err := json.Unmarshal(body.Info["features"], &features); err != nil {
		t.Fatal(err)
	}
	for _, k := range []string{"variables", "image", "services", "artifacts", "cache", "masking", "raw_variables",
		"multi_build_steps", "trace_reset", "trace_checksum", "trace_size", "cancelable", "return_exit_code",
		"cancel_gracefully", "refspecs", "two_phase_job_commit"} {
		if !features[k] {
			t.Errorf("feature %s not reported true", k)
		}
	}
	for _, k := range []string{"shared", "service_executor_opts", "session", "terminal", "vault_secrets"} {
		v, ok := features[k]
		if !ok || v {
			t.Errorf("feature %s = %v (present %v), want present and false", k, v, ok)
		}
	}
	if string(body.Info["config"]) != `{"gpus":"all"}` {
		t.Errorf("info.config = %s", body.Info["config"])
	}
	if string(body.Info["labels"]) != `{"zone":"eu-1"}` {
		t.Errorf("info.labels = %s", body.Info["labels"])
	}

	// Labels are omitted when empty; Features can be overridden.
	shellFeatures := DefaultFeatures()
	shellFeatures.Image, shellFeatures.Services = false, false
	c2, _ := newTestClient(t, f.srv.URL, testRunnerToken, func(o *Options) { o.Features = &shellFeatures })
	c2.RequestJob(context.Background(), "s")
	var body2 struct {
		Info map[string]json.RawMessage `json:"info"`
	}
	if err := json.Unmarshal(f.last().Body, &body2); err != nil {
		t.Fatal(err)
	}
	if _, ok := body2.Info["labels"]; ok {
		t.Error("empty labels were sent")
	}
	var f2 map[string]bool
	_ = json.Unmarshal(body2.Info["features"], &f2)
	if f2["image"] || f2["services"] || !f2["variables"] {
		t.Errorf("feature override not applied: %v", f2)
	}
}

// TestEndpointRequests checks path, method and headers of every endpoint:
// the token header equals the body token, JSON endpoints send
// Content-Type/Accept, every request has a fresh dashless X-Request-Id.
func TestEndpointRequests(t *testing.T) {
	f := newFakeGitLab(t, func(w http.ResponseWriter, r *http.Request, _ []byte) {
		switch {
		case r.URL.Path == "/api/v4/runners" && r.Method == http.MethodPost,
			strings.HasSuffix(r.URL.Path, "reset_authentication_token"):
			writeJSON(w, http.StatusCreated, map[string]any{"id": 1, "token": "glrt-new"})
		case r.URL.Path == "/api/v4/runners/verify":
			writeJSON(w, http.StatusOK, map[string]any{"id": 1, "token": testRunnerToken})
		case r.Method == http.MethodDelete:
			w.WriteHeader(http.StatusNoContent)
		case r.URL.Path == "/api/v4/jobs/request":
			w.WriteHeader(http.StatusNoContent)
		case strings.HasSuffix(r.URL.Path, "/trace"):
			w.WriteHeader(http.StatusAccepted)
		default:
			w.WriteHeader(http.StatusOK)
		}
	})
	c, _ := newTestClient(t, f.srv.URL+"/", testRunnerToken)
	legacy, _ := newTestClient(t, f.srv.URL, "legacy-token-123")
	ctx := context.Background()

	tests := []struct {
		name        string
		call        func()
		method      string
		path        string
		tokenHeader string
		token       string
		bodyToken   bool // body carries "token" equal to the header
		json        bool // Content-Type application/json
		accept      bool // Accept application/json
		systemID    bool
	}{
		{"register", func() { _, _ = legacy.Register(ctx, RegisterRequest{}) }, "POST", "/api/v4/runners", "Runner-Token", "legacy-token-123", true, true, true, false},
		{"verify", func() { _, _ = c.Verify(ctx, "s_1") }, "POST", "/api/v4/runners/verify", "Runner-Token", testRunnerToken, true, true, true, true},
		{"unregister manager", func() { _ = c.Unregister(ctx, "s_1") }, "DELETE", "/api/v4/runners/managers", "Runner-Token", testRunnerToken, true, true, false, true},
		{"unregister legacy", func() { _ = legacy.Unregister(ctx, "s_1") }, "DELETE", "/api/v4/runners", "Runner-Token", "legacy-token-123", true, true, false, false},
		{"reset token", func() { _, _ = c.ResetToken(ctx) }, "POST", "/api/v4/runners/reset_authentication_token", "Runner-Token", testRunnerToken, true, true, true, false},
		{"reset token with PAT", func() { _, _ = c.ResetTokenWithPAT(ctx, 42, "glpat-PATSECRET") }, "POST", "/api/v4/runners/42/reset_authentication_token", "Private-Token", "glpat-PATSECRET", false, false, true, false},
		{"request job", func() { c.RequestJob(ctx, "s_1") }, "POST", "/api/v4/jobs/request", "Runner-Token", testRunnerToken, true, true, true, true},
		{"update job", func() { c.UpdateJob(ctx, 77, testJobToken, UpdateJobRequest{State: StateSuccess}) }, "PUT", "/api/v4/jobs/77", "Job-Token", testJobToken, true, true, false, false},
		{"patch trace", func() { c.PatchTrace(ctx, 77, testJobToken, []byte("x"), 0, false) }, "PATCH", "/api/v4/jobs/77/trace", "Job-Token", testJobToken, false, false, false, false},
	}
	seenIDs := map[string]bool{}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tt.call()
			r := f.last()
			if r.Method != tt.method || r.Path != tt.path {
				t.Fatalf("%s %s, want %s %s", r.Method, r.Path, tt.method, tt.path)
			}
			if got := r.Header.Get(tt.tokenHeader); got != tt.token {
				t.Errorf("%s = %q, want %q", tt.tokenHeader, got, tt.token)
			}
			for _, h := range []string{"Runner-Token", "Job-Token", "Private-Token"} {
				if h != tt.tokenHeader && r.Header.Get(h) != "" {
					t.Errorf("unexpected header %s", h)
				}
			}
			if tt.bodyToken {
				if got := decodeBody(t, r.Body)["token"]; got != tt.token {
					t.Errorf("body token = %v, want %q", got, tt.token)
				}
			}
			if ct := r.Header.Get("Content-Type"); tt.json != (ct == "application/json") {
				t.Errorf("Content-Type = %q, want JSON %v", ct, tt.json)
			}
			if acc := r.Header.Get("Accept"); tt.accept != (acc == "application/json") {
				t.Errorf("Accept = %q, want JSON %v", acc, tt.accept)
			}
			if tt.systemID {
				if got := decodeBody(t, r.Body)["system_id"]; got != "s_1" {
					t.Errorf("system_id = %v", got)
				}
			} else if tt.bodyToken {
				if _, ok := decodeBody(t, r.Body)["system_id"]; ok {
					t.Error("system_id sent")
				}
			}
			id := r.Header.Get("X-Request-Id")
			if !regexp.MustCompile(`^[0-9a-f]{32}$`).MatchString(id) || seenIDs[id] {
				t.Errorf("X-Request-Id %q is not a fresh dashless uuid", id)
			}
			seenIDs[id] = true
			if !strings.HasPrefix(r.Header.Get("User-Agent"), "podrunner 1.2.3 (main; go") {
				t.Errorf("User-Agent = %q", r.Header.Get("User-Agent"))
			}
		})
	}
}

func TestObserverSeesEveryAttempt(t *testing.T) {
	calls := 0
	f := newFakeGitLab(t, func(w http.ResponseWriter, r *http.Request, _ []byte) {
		calls++
		if calls == 1 {
			w.WriteHeader(http.StatusBadGateway)
			return
		}
		w.WriteHeader(http.StatusNoContent)
	})
	var seen []APIRequest
	c, _ := newTestClient(t, f.srv.URL, testRunnerToken, func(o *Options) {
		o.Observer = ObserverFunc(func(r APIRequest) { seen = append(seen, r) })
	})
	c.RequestJob(context.Background(), "s")
	if len(seen) != 2 {
		t.Fatalf("observed %d attempts, want 2: %+v", len(seen), seen)
	}
	for i, want := range []int{502, 204} {
		if seen[i].Endpoint != EndpointRequestJob || seen[i].Method != "POST" || seen[i].Status != want || seen[i].Attempt != i+1 {
			t.Errorf("attempt %d observed as %+v", i+1, seen[i])
		}
	}
}

func TestNonJSONSuccessIsAnError(t *testing.T) {
	f := newFakeGitLab(t, func(w http.ResponseWriter, r *http.Request, _ []byte) {
		w.Header().Set("Content-Type", "text/html")
		w.WriteHeader(http.StatusCreated)
		_, _ = w.Write([]byte(`{"id":1,"token":"x"}`))
	})
	c, _ := newTestClient(t, f.srv.URL, "legacy-token-123")
	if _, err := c.Register(context.Background(), RegisterRequest{}); err == nil || !strings.Contains(err.Error(), "expected application/json") {
		t.Fatalf("Register with text/html 201: err = %v", err)
	}
	if _, err := c.ResetToken(context.Background()); err == nil || !strings.Contains(err.Error(), "expected application/json") {
		t.Fatalf("ResetToken with text/html 201: err = %v", err)
	}
}

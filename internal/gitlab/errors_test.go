package gitlab

import (
	"context"
	"errors"
	"net/http"
	"strings"
	"testing"
	"time"
)

func TestErrorMessage(t *testing.T) {
	tests := []struct {
		body, want string
	}{
		{`{"message":"403 Forbidden"}`, "403 Forbidden"},
		{`{"message":{"runner_projects.base":["Maximum number exceeded"]}}`, "runner_projects.base: Maximum number exceeded"},
		{`{"message":{"b":["x","y"],"a":["z"]}}`, "a: z, b: x; y"},
		{`{"message":["one","two"]}`, "one; two"},
		{`{"message":{"n":[1,true]}}`, "n: 1; true"},
		{`{"error":"404 Not Found"}`, "404 Not Found"},
		{`{"message":"multi\nline"}`, "multi line"},
		{`{"message":null}`, ""},
		{`{"message":42}`, ""},
		{`<html>Bad Gateway</html>`, ""},
		{``, ""},
		{`[]`, ""},
	}
	for _, tt := range tests {
		if got := errorMessage([]byte(tt.body)); got != tt.want {
			t.Errorf("errorMessage(%s) = %q, want %q", tt.body, got, tt.want)
		}
	}
	long := `{"message":"` + strings.Repeat("x", 5000) + `"}`
	if got := errorMessage([]byte(long)); len(got) > 1100 {
		t.Errorf("long message not truncated: %d bytes", len(got))
	}
}

func TestStatusErrorText(t *testing.T) {
	se := &StatusError{Method: "POST", URL: "https://g/api/v4/runners", StatusCode: 400, Status: "400 Bad Request", Message: "m"}
	if se.Error() != "POST https://g/api/v4/runners: 400 Bad Request (m)" {
		t.Fatal(se.Error())
	}
	se = &StatusError{Method: "PUT", URL: "u", StatusCode: 404}
	if se.Error() != "PUT u: 404 Not Found" || !errors.Is(se, ErrNotFound) {
		t.Fatal(se.Error())
	}
	if !errors.Is(&StatusError{StatusCode: 413}, ErrTooLarge) || errors.Is(&StatusError{StatusCode: 500}, ErrForbidden) {
		t.Fatal("Unwrap mapping")
	}
}

func TestParseRangeEnd(t *testing.T) {
	tests := []struct {
		in   string
		want int64
	}{
		{"0-64", 64}, {"0-0", 0}, {"", 0}, {"64", 0}, {"0-", 0}, {"0-x", 0}, {"0--5", 0},
		{" 0-12 ", 12}, {"bytes=0-7", 7}, {"bytes 0-9", 9}, {"0-9223372036854775807", 9223372036854775807},
		{"0-9223372036854775808", 0},
	}
	for _, tt := range tests {
		if got := parseRangeEnd(tt.in); got != tt.want {
			t.Errorf("parseRangeEnd(%q) = %d, want %d", tt.in, got, tt.want)
		}
	}
}

func TestParseUpdateInterval(t *testing.T) {
	tests := []struct {
		in   string
		want time.Duration
	}{
		{"", 0}, {"3", 3 * time.Second}, {" 60 ", time.Minute}, {"0", 0}, {"-1", 0}, {"1.5", 0}, {"abc", 0},
		{"900", 15 * time.Minute}, {"901", 15 * time.Minute}, {"99999999999999999999", 0}, {"9223372036854775807", 15 * time.Minute},
	}
	for _, tt := range tests {
		if got := parseUpdateInterval(tt.in); got != tt.want {
			t.Errorf("parseUpdateInterval(%q) = %v, want %v", tt.in, got, tt.want)
		}
	}
}

func TestMapFailureReason(t *testing.T) {
	modern := []FailureReason{"unknown_failure", "script_failure", "runner_system_failure", "job_execution_timeout",
		"image_pull_failure", "runner_configuration_error", "runner_external_dependency_failure", "runner_interrupted"}
	tests := []struct {
		reason   FailureReason
		accepted []FailureReason
		want     FailureReason
	}{
		{"", nil, "script_failure"},
		{"", modern, "script_failure"},
		{"script_failure", nil, "script_failure"},
		{"runner_system_failure", nil, "runner_system_failure"},
		{"job_execution_timeout", nil, "job_execution_timeout"},
		{"image_pull_failure", modern, "image_pull_failure"},
		{"image_pull_failure", nil, "runner_system_failure"},
		{"runner_configuration_error", nil, "script_failure"},
		{"runner_configuration_error", modern, "runner_configuration_error"},
		{"runner_external_dependency_failure", nil, "runner_system_failure"},
		{"runner_interrupted", nil, "unknown_failure"},
		{"runner_interrupted", modern, "runner_interrupted"},
		{"job_canceled", modern, "unknown_failure"},
		{"unknown_failure", nil, "unknown_failure"},
		{"something_new", []FailureReason{"something_new"}, "something_new"},
		{"something_else", modern, "unknown_failure"},
	}
	for _, tt := range tests {
		if got := MapFailureReason(tt.reason, tt.accepted); got != tt.want {
			t.Errorf("MapFailureReason(%q, %v) = %q, want %q", tt.reason, tt.accepted, got, tt.want)
		}
	}
}

// TestNoTokenInLogs drives every endpoint through failures, retries and
// server messages that echo the tokens, and checks neither the debug log
// nor the returned errors hold a token.
func TestNoTokenInLogs(t *testing.T) {
	const pat = "glpat-PATSECRET789"
	secrets := []string{testRunnerToken, testJobToken, pat, "GR1348941REGSECRET"}
	n := 0
	f := newFakeGitLab(t, func(w http.ResponseWriter, r *http.Request, body []byte) {
		n++
		if n%3 == 0 {
			w.WriteHeader(http.StatusServiceUnavailable)
			return
		}
		echo := r.Header.Get("Runner-Token") + r.Header.Get("Job-Token") + r.Header.Get("Private-Token")
		writeJSON(w, http.StatusBadRequest, map[string]any{"message": map[string]any{"token": []string{"invalid token " + echo}}})
	})
	c, logs := newTestClient(t, f.srv.URL, testRunnerToken)
	reg, regLogs := newTestClient(t, f.srv.URL, "GR1348941REGSECRET")
	ctx := context.Background()
	var errs []error
	_, err := reg.Register(ctx, RegisterRequest{Description: "x"})
	errs = append(errs, err)
	_, err = c.Verify(ctx, "s")
	errs = append(errs, err)
	errs = append(errs, c.Unregister(ctx, "s"))
	_, err = c.ResetToken(ctx)
	errs = append(errs, err)
	_, err = c.ResetTokenWithPAT(ctx, 1, pat)
	errs = append(errs, err)
	errs = append(errs, c.RequestJob(ctx, "s").Err)
	errs = append(errs, c.UpdateJob(ctx, 1, testJobToken, UpdateJobRequest{State: StateFailed}).Err)
	errs = append(errs, c.PatchTrace(ctx, 1, testJobToken, []byte("x"), 0, true).Err)
	_, err = c.DownloadArtifacts(ctx, 1, testJobToken)
	errs = append(errs, err)
	errs = append(errs, c.UploadArtifacts(ctx, 1, testJobToken, ArtifactsOptions{}, strings.NewReader("zip")))

	all := logs.String() + regLogs.String()
	if !strings.Contains(all, "400 Bad Request (token: invalid token [MASKED])") {
		t.Fatalf("expected the redacted server message in the log:\n%s", all)
	}
	for _, s := range secrets {
		if strings.Contains(all, s) {
			t.Errorf("log holds secret %q:\n%s", s, all)
		}
	}
	for i, e := range errs {
		if e == nil {
			t.Errorf("call %d: no error", i)
			continue
		}
		for _, s := range secrets {
			if strings.Contains(e.Error(), s) {
				t.Errorf("call %d: error holds secret %q: %v", i, s, e)
			}
		}
	}
}

func TestStateNames(t *testing.T) {
	seen := map[string]bool{}
	for _, s := range []interface{ String() string }{
		JobReceived, NoJob, JobForbidden, JobUnavailable, JobFailed,
	} {
		if s.String() == "unknown" || seen[s.String()] {
			t.Errorf("%v has no unique name", s)
		}
		seen[s.String()] = true
	}
	if UpdateTraceValidationFailed.String() != "trace_validation_failed" || PatchRangeMismatch.String() != "range_mismatch" || PatchState(99).String() != "unknown" {
		t.Error("state names")
	}
}

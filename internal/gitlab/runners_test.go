package gitlab

import (
	"context"
	"errors"
	"net/http"
	"strings"
	"testing"
	"time"
)

// answer is a canned response.
type answer struct {
	status      int
	contentType string
	body        string
	header      map[string]string
}

func (a answer) write(w http.ResponseWriter) {
	for k, v := range a.header {
		w.Header().Set(k, v)
	}
	if a.contentType != "" {
		w.Header().Set("Content-Type", a.contentType)
	}
	w.WriteHeader(a.status)
	_, _ = w.Write([]byte(a.body))
}

func serveAnswer(t *testing.T, a answer) *fakeGitLab {
	return newFakeGitLab(t, func(w http.ResponseWriter, r *http.Request, _ []byte) { a.write(w) })
}

const jsonCT = "application/json"

func TestGitLabClient_RegisterRunner(t *testing.T) {
	tests := []struct {
		name      string
		answer    answer
		wantToken *RunnerToken
		wantErr   string
		forbidden bool
	}{
		{name: "201", answer: answer{status: 201, contentType: jsonCT, body: `{"id":12,"token":"glrt-new","token_expires_at":"2030-01-02T03:04:05.000Z"}`},
			wantToken: &RunnerToken{ID: 12, Token: "glrt-new", TokenExpiresAt: time.Date(2030, 1, 2, 3, 4, 5, 0, time.UTC)}},
		{name: "201 null expiry", answer: answer{status: 201, contentType: "application/json; charset=utf-8", body: `{"id":12,"token":"glrt-new","token_expires_at":null}`},
			wantToken: &RunnerToken{ID: 12, Token: "glrt-new"}},
		{name: "201 zero expiry", answer: answer{status: 201, contentType: jsonCT, body: `{"id":12,"token":"glrt-new","token_expires_at":"0001-01-01T00:00:00Z"}`},
			wantToken: &RunnerToken{ID: 12, Token: "glrt-new"}},
		{name: "201 bad expiry", answer: answer{status: 201, contentType: jsonCT, body: `{"id":12,"token":"glrt-new","token_expires_at":"soon"}`}, wantErr: "token_expires_at"},
		{name: "201 without token", answer: answer{status: 201, contentType: jsonCT, body: `{"id":12}`}, wantErr: "no token"},
		{name: "201 broken JSON", answer: answer{status: 201, contentType: jsonCT, body: `{"id":`}, wantErr: "decode"},
		{name: "403", answer: answer{status: 403, contentType: jsonCT, body: `{"message":"403 Forbidden"}`}, wantErr: "check the registration token", forbidden: true},
		{name: "400 runner limit", answer: answer{status: 400, contentType: jsonCT, body: `{"message":{"runner_projects.base":["Maximum number of ci registered project runners (1) exceeded"]}}`},
			wantErr: "POST " + "URL/api/v4/runners: 400 Bad Request (runner_projects.base: Maximum number of ci registered project runners (1) exceeded)"},
		{name: "500 after retries", answer: answer{status: 500}, wantErr: "500 Internal Server Error"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := serveAnswer(t, tt.answer)
			c, _ := newTestClient(t, f.srv.URL, "GR1348941regtoken")
			got, err := c.Register(context.Background(), RegisterRequest{
				Description: "my-runner", Tags: []string{"k8s", "linux"}, RunUntagged: true, Locked: true,
				AccessLevel: "ref_protected", MaximumTimeout: 3600,
			})
			if tt.wantErr != "" {
				want := strings.ReplaceAll(tt.wantErr, "URL", f.srv.URL)
				if err == nil || !strings.Contains(err.Error(), want) {
					t.Fatalf("err = %v, want containing %q", err, want)
				}
				if errors.Is(err, ErrForbidden) != tt.forbidden {
					t.Fatalf("errors.Is(err, ErrForbidden) = %v", !tt.forbidden)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if *got != *tt.wantToken {
				t.Fatalf("got %+v, want %+v", got, tt.wantToken)
			}
		})
	}
}

func TestRegisterBody(t *testing.T) {
	f := serveAnswer(t, answer{status: 201, contentType: jsonCT, body: `{"id":1,"token":"glrt-x"}`})
	c, _ := newTestClient(t, f.srv.URL, "GR1348941regtoken")
	if _, err := c.Register(context.Background(), RegisterRequest{
		Description: "my-runner", MaintenanceNote: "note", Tags: []string{"k8s", "linux"}, RunUntagged: true,
		Locked: true, AccessLevel: "not_protected", MaximumTimeout: 3600, Paused: true,
	}); err != nil {
		t.Fatal(err)
	}
	b := decodeBody(t, f.last().Body)
	want := map[string]any{
		"description": "my-runner", "maintenance_note": "note", "tag_list": "k8s,linux", "run_untagged": true,
		"locked": true, "access_level": "not_protected", "maximum_timeout": float64(3600), "paused": true,
		"token": "GR1348941regtoken",
	}
	for k, v := range want {
		if b[k] != v {
			t.Errorf("%s = %v, want %v", k, b[k], v)
		}
	}
	if _, ok := b["info"]; !ok {
		t.Error("info missing")
	}

	// Empty optional fields are omitted; booleans are always sent.
	if _, err := c.Register(context.Background(), RegisterRequest{}); err != nil {
		t.Fatal(err)
	}
	b = decodeBody(t, f.last().Body)
	for _, k := range []string{"description", "maintenance_note", "tag_list", "access_level", "maximum_timeout"} {
		if _, ok := b[k]; ok {
			t.Errorf("%s sent although empty", k)
		}
	}
	for _, k := range []string{"run_untagged", "locked", "paused"} {
		if b[k] != false {
			t.Errorf("%s = %v, want false", k, b[k])
		}
	}
}

func TestVerifyRunner(t *testing.T) {
	tests := []struct {
		name      string
		answer    answer
		want      *RunnerToken
		wantErr   string
		forbidden bool
	}{
		{name: "200", answer: answer{status: 200, contentType: jsonCT, body: `{"id":5,"token":"glrt-RUNNERSECRET123","token_expires_at":null}`},
			want: &RunnerToken{ID: 5, Token: testRunnerToken}},
		{name: "200 without token keeps ours", answer: answer{status: 200, contentType: jsonCT, body: `{"id":5}`},
			want: &RunnerToken{ID: 5, Token: testRunnerToken}},
		{name: "403 removed", answer: answer{status: 403, contentType: jsonCT, body: `{"message":"403 Forbidden"}`}, wantErr: "runner was removed", forbidden: true},
		{name: "404 is not removal", answer: answer{status: 404}, wantErr: "404 Not Found"},
		{name: "502 is not removal", answer: answer{status: 502}, wantErr: "502 Bad Gateway"},
		{name: "200 broken JSON", answer: answer{status: 200, contentType: jsonCT, body: `nope`}, wantErr: "decode"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := serveAnswer(t, tt.answer)
			c, _ := newTestClient(t, f.srv.URL, testRunnerToken)
			got, err := c.Verify(context.Background(), "s_0123456789ab")
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("err = %v, want containing %q", err, tt.wantErr)
				}
				if errors.Is(err, ErrForbidden) != tt.forbidden {
					t.Fatalf("errors.Is(err, ErrForbidden) = %v", !tt.forbidden)
				}
				return
			}
			if err != nil || *got != *tt.want {
				t.Fatalf("got %+v, %v; want %+v", got, err, tt.want)
			}
		})
	}
}

func TestVerifyRunnerOnLegacyServer(t *testing.T) {
	f := serveAnswer(t, answer{status: 200, contentType: "text/plain", body: "OK"})
	c, _ := newTestClient(t, f.srv.URL, "legacy-token-123")
	got, err := c.Verify(context.Background(), "s_1")
	if err != nil {
		t.Fatalf("legacy 200 without JSON: %v", err)
	}
	if got.ID != 0 || got.Token != "legacy-token-123" {
		t.Fatalf("got %+v", got)
	}
}

func TestUnregisterRunnerManager(t *testing.T) {
	tests := []struct {
		name      string
		token     string
		answer    answer
		wantPath  string
		wantErr   string
		forbidden bool
	}{
		{name: "glrt 204", token: testRunnerToken, answer: answer{status: 204}, wantPath: "/api/v4/runners/managers"},
		{name: "legacy 204", token: "legacy-token-123", answer: answer{status: 204}, wantPath: "/api/v4/runners"},
		{name: "403", token: testRunnerToken, answer: answer{status: 403}, wantPath: "/api/v4/runners/managers", wantErr: "403 Forbidden", forbidden: true},
		{name: "200 is not expected", token: testRunnerToken, answer: answer{status: 200}, wantPath: "/api/v4/runners/managers", wantErr: "200 OK"},
		{name: "404", token: "legacy-token-123", answer: answer{status: 404}, wantPath: "/api/v4/runners", wantErr: "404 Not Found"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := serveAnswer(t, tt.answer)
			c, _ := newTestClient(t, f.srv.URL, tt.token)
			err := c.Unregister(context.Background(), "s_0123456789ab")
			r := f.last()
			if r.Method != http.MethodDelete || r.Path != tt.wantPath {
				t.Fatalf("%s %s, want DELETE %s", r.Method, r.Path, tt.wantPath)
			}
			b := decodeBody(t, r.Body)
			_, hasSystemID := b["system_id"]
			if hasSystemID != IsAuthenticationToken(tt.token) {
				t.Errorf("system_id present = %v for token %q", hasSystemID, tt.token)
			}
			if tt.wantErr == "" {
				if err != nil {
					t.Fatal(err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) || errors.Is(err, ErrForbidden) != tt.forbidden {
				t.Fatalf("err = %v, want %q (forbidden %v)", err, tt.wantErr, tt.forbidden)
			}
		})
	}
}

func TestGitlabClient_ResetToken(t *testing.T) {
	tests := []struct {
		name      string
		answer    answer
		want      *RunnerToken
		wantErr   string
		forbidden bool
	}{
		{name: "201", answer: answer{status: 201, contentType: jsonCT, body: `{"token":"glrt-rotated","token_expires_at":"2031-05-06T07:08:09Z"}`},
			want: &RunnerToken{Token: "glrt-rotated", TokenExpiresAt: time.Date(2031, 5, 6, 7, 8, 9, 0, time.UTC)}},
		{name: "403", answer: answer{status: 403}, wantErr: "check the token", forbidden: true},
		{name: "200 is not expected", answer: answer{status: 200, contentType: jsonCT, body: `{"token":"x"}`}, wantErr: "200 OK"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := serveAnswer(t, tt.answer)
			c, _ := newTestClient(t, f.srv.URL, testRunnerToken)
			got, err := c.ResetToken(context.Background())
			if r := f.last(); r.Path != "/api/v4/runners/reset_authentication_token" || decodeBody(t, r.Body)["token"] != testRunnerToken || r.Header.Get("Private-Token") != "" {
				t.Fatalf("request %s %s %s", r.Method, r.Path, r.Body)
			}
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) || errors.Is(err, ErrForbidden) != tt.forbidden {
					t.Fatalf("err = %v, want %q", err, tt.wantErr)
				}
				return
			}
			if err != nil || *got != *tt.want {
				t.Fatalf("got %+v, %v; want %+v", got, err, tt.want)
			}
		})
	}
}

func TestResetTokenWithPAT(t *testing.T) {
	f := serveAnswer(t, answer{status: 201, contentType: jsonCT, body: `{"token":"glrt-rotated"}`})
	c, _ := newTestClient(t, f.srv.URL, testRunnerToken)
	got, err := c.ResetTokenWithPAT(context.Background(), 42, "glpat-PATSECRET")
	if err != nil || got.Token != "glrt-rotated" || got.ID != 42 {
		t.Fatalf("got %+v, %v", got, err)
	}
	r := f.last()
	if len(r.Body) != 0 || r.Header.Get("Private-Token") != "glpat-PATSECRET" || r.Header.Get("Runner-Token") != "" {
		t.Fatalf("PAT reset sent body %q, headers %v", r.Body, r.Header)
	}
}

package s3test

import (
	"fmt"
	"html"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"sync/atomic"
	"testing"
	"time"
)

// STS answers AssumeRoleWithWebIdentity as AWS STS does for IRSA: a
// request with the expected role and web identity token gets the test
// server's credentials (short-lived), any other token AccessDenied.
type STS struct {
	URL       string
	RoleARN   string
	TokenFile string // holds the web identity token, as IRSA mounts it
	calls     atomic.Int32
}

// Calls is how many credential exchanges were granted.
func (s *STS) Calls() int { return int(s.calls.Load()) }

// StartSTS starts the endpoint on loopback and writes the token file.
func StartSTS(t testing.TB, roleARN, token string) *STS {
	t.Helper()
	s := &STS{RoleARN: roleARN, TokenFile: filepath.Join(t.TempDir(), "token")}
	if err := os.WriteFile(s.TokenFile, []byte(token), 0o600); err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if err := r.ParseForm(); err != nil || r.Form.Get("Action") != "AssumeRoleWithWebIdentity" {
			http.Error(w, "unsupported action", http.StatusBadRequest)
			return
		}
		if r.Form.Get("RoleArn") != roleARN || r.Form.Get("WebIdentityToken") != token {
			w.Header().Set("Content-Type", "text/xml")
			w.WriteHeader(http.StatusForbidden)
			fmt.Fprint(w, `<ErrorResponse xmlns="https://sts.amazonaws.com/doc/2011-06-15/"><Error><Type>Sender</Type>`+
				`<Code>AccessDenied</Code><Message>Not authorized to perform sts:AssumeRoleWithWebIdentity</Message></Error></ErrorResponse>`)
			return
		}
		s.calls.Add(1)
		w.Header().Set("Content-Type", "text/xml")
		fmt.Fprintf(w, `<AssumeRoleWithWebIdentityResponse xmlns="https://sts.amazonaws.com/doc/2011-06-15/">`+
			`<AssumeRoleWithWebIdentityResult><Credentials><AccessKeyId>%s</AccessKeyId><SecretAccessKey>%s</SecretAccessKey>`+
			`<Expiration>%s</Expiration></Credentials></AssumeRoleWithWebIdentityResult></AssumeRoleWithWebIdentityResponse>`,
			html.EscapeString(AccessKey), html.EscapeString(SecretKey), time.Now().Add(time.Hour).UTC().Format(time.RFC3339))
	}))
	t.Cleanup(srv.Close)
	s.URL = srv.URL
	return s
}

// Env is the environment of a pod with IRSA (EKS injects the first two),
// plus the AWS SDKs' variable that points STS at this endpoint.
func (s *STS) Env() map[string]string {
	return map[string]string{
		"AWS_WEB_IDENTITY_TOKEN_FILE": s.TokenFile,
		"AWS_ROLE_ARN":                s.RoleARN,
		"AWS_ENDPOINT_URL_STS":        s.URL,
	}
}

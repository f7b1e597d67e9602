package gitlab

import (
	"context"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
)

// A GitLab signed by a CA the runner does not know: one clear error naming
// the host and what to configure, and no second try.
func TestUntrustedCertificate(t *testing.T) {
	var conns atomic.Int64
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		t.Errorf("request reached the server: %s", r.URL)
	}))
	srv.Config.ConnState = func(_ net.Conn, s http.ConnState) {
		if s == http.StateNew {
			conns.Add(1)
		}
	}
	srv.StartTLS()
	defer srv.Close()
	c, err := NewClient(Credentials{URL: srv.URL, Token: testRunnerToken}, Options{ArtifactRetryWait: 1})
	if err != nil {
		t.Fatal(err)
	}
	calls := map[string]func() error{
		"verify": func() error { _, err := c.Verify(context.Background(), "s_1"); return err },
		"upload": func() error {
			return c.UploadArtifacts(context.Background(), 1, "jobtok", ArtifactsOptions{}, strings.NewReader("zip"))
		},
		"download": func() error {
			rc, err := c.DownloadArtifacts(context.Background(), 1, "jobtok")
			if rc != nil {
				rc.Close()
			}
			return err
		},
	}
	var healthy bool
	calls["request job"] = func() error {
		res := c.RequestJob(context.Background(), "s_1")
		healthy = res.Healthy
		return res.Err
	}
	for name, call := range calls {
		conns.Store(0)
		err := call()
		if !IsCertificateError(err) {
			t.Errorf("%s: %v, want a certificate error", name, err)
			continue
		}
		for _, want := range []string{"127.0.0.1", "not trusted", "unknown authority", "tls-ca-file", "certsSecretName"} {
			if !strings.Contains(err.Error(), want) {
				t.Errorf("%s: error %q lacks %q", name, err, want)
			}
		}
		if n := conns.Load(); n != 1 {
			t.Errorf("%s: %d connections, want 1 (a certificate error is not retried)", name, n)
		}
	}
	if healthy {
		t.Error("a job request failing on the certificate counts as healthy")
	}
}

package coordinator

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"net/http"
	"strings"
	"testing"
)

func TestTLSPrivateCA(t *testing.T) {
	s := newServer(t, Options{TLS: true, TLSNames: []string{"gitlab.test"}})
	if !strings.HasPrefix(s.URL(), "https://127.0.0.1:") {
		t.Fatalf("URL %s, want https on the listen address", s.URL())
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(s.CACertPEM()) {
		t.Fatalf("CA is not PEM: %q", s.CACertPEM())
	}
	post := func(c *http.Client) (int, error) {
		resp, err := c.Post(s.URL()+"/api/v4/runners/verify", "application/json", strings.NewReader(`{"token":"nope"}`))
		if err != nil {
			return 0, err
		}
		resp.Body.Close()
		return resp.StatusCode, nil
	}
	trusting := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}}
	if code, err := post(trusting); err != nil || code != http.StatusForbidden {
		t.Errorf("with the CA: %d %v, want GitLab's 403 for an unknown token", code, err)
	}
	_, err := post(&http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: x509.NewCertPool()}}})
	var ua x509.UnknownAuthorityError
	if !errors.As(err, &ua) {
		t.Errorf("without the CA: %v, want unknown authority", err)
	}
	// The certificate covers the extra name.
	named := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool, ServerName: "gitlab.test"}}}
	if _, err := post(named); err != nil {
		t.Errorf("as gitlab.test: %v", err)
	}
	if _, err := New(Options{TLS: true, ExternalURL: "http://gitlab.test"}); err == nil {
		t.Error("http external URL accepted with TLS")
	}
}

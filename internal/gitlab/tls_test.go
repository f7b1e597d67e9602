package gitlab

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// testCert is a self-signed certificate with its PEM files.
type testCert struct {
	tls      tls.Certificate
	x509     *x509.Certificate
	certPEM  []byte
	keyPEM   []byte
	certPool *x509.CertPool
}

func newTestCert(t *testing.T, cn string, usage x509.ExtKeyUsage) testCert {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(time.Now().UnixNano()),
		Subject:               pkix.Name{CommonName: cn},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(time.Hour),
		KeyUsage:              x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
		ExtKeyUsage:           []x509.ExtKeyUsage{usage},
		BasicConstraintsValid: true,
		IsCA:                  true,
		IPAddresses:           []net.IP{net.ParseIP("127.0.0.1")},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	keyDER, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	c := testCert{
		certPEM: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}),
		keyPEM:  pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: keyDER}),
	}
	if c.tls, err = tls.X509KeyPair(c.certPEM, c.keyPEM); err != nil {
		t.Fatal(err)
	}
	if c.x509, err = x509.ParseCertificate(der); err != nil {
		t.Fatal(err)
	}
	c.certPool = x509.NewCertPool()
	c.certPool.AddCert(c.x509)
	return c
}

func newTLSServer(t *testing.T, server testCert, clientCA *testCert, h http.HandlerFunc) *httptest.Server {
	t.Helper()
	srv := httptest.NewUnstartedServer(h)
	srv.TLS = &tls.Config{Certificates: []tls.Certificate{server.tls}}
	if clientCA != nil {
		srv.TLS.ClientAuth = tls.RequireAndVerifyClientCert
		srv.TLS.ClientCAs = clientCA.certPool
	}
	srv.StartTLS()
	t.Cleanup(srv.Close)
	return srv
}

func writeFile(t *testing.T, path string, data []byte) {
	t.Helper()
	if err := os.WriteFile(path, data, 0o600); err != nil {
		t.Fatal(err)
	}
}

func noJob(w http.ResponseWriter, _ *http.Request) { w.WriteHeader(http.StatusNoContent) }

func TestTLSWithoutTrustFails(t *testing.T) {
	srv := newTLSServer(t, newTestCert(t, "server", x509.ExtKeyUsageServerAuth), nil, noJob)
	c, _ := newTestClient(t, srv.URL, testRunnerToken)
	res := c.RequestJob(context.Background(), "s")
	// Unhealthy, as GitLab Runner counts a client error: asking again gets
	// the same certificate.
	if res.Status != JobFailed || res.Healthy || res.Err == nil || !strings.Contains(res.Err.Error(), "certificate") {
		t.Fatalf("got %+v", res)
	}
}

func TestCertDirLookup(t *testing.T) {
	server := newTestCert(t, "server", x509.ExtKeyUsageServerAuth)
	client := newTestCert(t, "client", x509.ExtKeyUsageClientAuth)
	srv := newTLSServer(t, server, &client, func(w http.ResponseWriter, r *http.Request) {
		if len(r.TLS.PeerCertificates) == 0 || r.TLS.PeerCertificates[0].Subject.CommonName != "client" {
			w.WriteHeader(http.StatusForbidden)
			return
		}
		noJob(w, r)
	})

	dir := t.TempDir()
	writeFile(t, filepath.Join(dir, "127.0.0.1.crt"), server.certPEM)

	// CA only: the server demands a client certificate.
	c, _ := newTestClient(t, srv.URL, testRunnerToken, func(o *Options) { o.CertDir = dir })
	if res := c.RequestJob(context.Background(), "s"); res.Status != JobFailed || res.Err == nil {
		t.Fatalf("without client certificate: %+v", res)
	}

	// Only half of the client pair: ignored with a warning.
	writeFile(t, filepath.Join(dir, "127.0.0.1.auth.crt"), client.certPEM)
	_, logs := newTestClient(t, srv.URL, testRunnerToken, func(o *Options) { o.CertDir = dir })
	if !strings.Contains(logs.String(), "auth.key") {
		t.Errorf("no warning for a lone .auth.crt: %s", logs.String())
	}

	writeFile(t, filepath.Join(dir, "127.0.0.1.auth.key"), client.keyPEM)
	c, _ = newTestClient(t, srv.URL, testRunnerToken, func(o *Options) { o.CertDir = dir })
	if res := c.RequestJob(context.Background(), "s"); res.Status != NoJob {
		t.Fatalf("with cert dir files: %+v", res)
	}
}

func TestExplicitTLSFiles(t *testing.T) {
	server := newTestCert(t, "server", x509.ExtKeyUsageServerAuth)
	client := newTestCert(t, "client", x509.ExtKeyUsageClientAuth)
	srv := newTLSServer(t, server, &client, noJob)
	dir := t.TempDir()
	ca, cert, key := filepath.Join(dir, "ca.pem"), filepath.Join(dir, "c.pem"), filepath.Join(dir, "k.pem")
	writeFile(t, ca, server.certPEM)
	writeFile(t, cert, client.certPEM)
	writeFile(t, key, client.keyPEM)
	// A wrong cert dir file must not override explicit settings.
	writeFile(t, filepath.Join(dir, "127.0.0.1.crt"), []byte("garbage"))

	c, err := NewClient(Credentials{URL: srv.URL, Token: testRunnerToken, TLSCAFile: ca, TLSCertFile: cert, TLSKeyFile: key}, Options{CertDir: dir})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if res := c.RequestJob(context.Background(), "s"); res.Status != NoJob {
		t.Fatalf("got %+v", res)
	}

	bad := filepath.Join(dir, "bad.pem")
	writeFile(t, bad, []byte("not a certificate"))
	for name, creds := range map[string]Credentials{
		"missing CA":    {URL: srv.URL, TLSCAFile: filepath.Join(dir, "nope.pem")},
		"garbage CA":    {URL: srv.URL, TLSCAFile: bad},
		"cert only":     {URL: srv.URL, TLSCertFile: cert},
		"mismatch pair": {URL: srv.URL, TLSCertFile: cert, TLSKeyFile: ca},
	} {
		if _, err := NewClient(creds, Options{}); err == nil || !strings.Contains(err.Error(), "tls-") {
			t.Errorf("%s: err = %v, want one naming the tls- setting", name, err)
		}
	}
	// A broken cert dir file is an error too (it is what the admin meant).
	if _, err := NewClient(Credentials{URL: srv.URL}, Options{CertDir: dir}); err == nil {
		t.Error("garbage <host>.crt accepted")
	}
}

// TestConnectionMaxAgeReloadsCertificates: a CA file dropped into the cert
// dir is picked up without a new client.
func TestConnectionMaxAgeReloadsCertificates(t *testing.T) {
	server := newTestCert(t, "server", x509.ExtKeyUsageServerAuth)
	srv := newTLSServer(t, server, nil, noJob)
	dir := t.TempDir()
	c, logs := newTestClient(t, srv.URL, testRunnerToken, func(o *Options) {
		o.CertDir = dir
		o.ConnectionMaxAge = time.Nanosecond
	})
	if res := c.RequestJob(context.Background(), "s"); res.Status != JobFailed {
		t.Fatalf("untrusted server accepted: %+v", res)
	}
	writeFile(t, filepath.Join(dir, "127.0.0.1.crt"), server.certPEM)
	if res := c.RequestJob(context.Background(), "s"); res.Status != NoJob {
		t.Fatalf("after adding the CA: %+v\n%s", res, logs.String())
	}
	if !strings.Contains(logs.String(), "TLS files changed") {
		t.Errorf("reload not logged")
	}
}

func TestRequestJobRecordsCAChain(t *testing.T) {
	server := newTestCert(t, "server", x509.ExtKeyUsageServerAuth)
	srv := newTLSServer(t, server, nil, func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, http.StatusCreated, map[string]any{"id": 1, "token": "x"})
	})
	dir := t.TempDir()
	writeFile(t, filepath.Join(dir, "127.0.0.1.crt"), server.certPEM)
	c, _ := newTestClient(t, srv.URL, testRunnerToken, func(o *Options) { o.CertDir = dir })
	res := c.RequestJob(context.Background(), "s")
	if res.Status != JobReceived {
		t.Fatalf("got %+v", res)
	}
	if res.TLSCAChain != string(server.certPEM) {
		t.Fatalf("TLSCAChain = %q, want the server certificate", res.TLSCAChain)
	}
}

func TestTLSMinVersion(t *testing.T) {
	tr, err := buildTransport(tlsFiles{})
	if err != nil {
		t.Fatal(err)
	}
	if tr.TLSClientConfig.MinVersion != tls.VersionTLS12 {
		t.Fatalf("MinVersion = %x", tr.TLSClientConfig.MinVersion)
	}
	if tr.Proxy == nil || tr.TLSHandshakeTimeout != 10*time.Second || tr.ResponseHeaderTimeout != 10*time.Minute ||
		tr.MaxIdleConns != 100 || tr.IdleConnTimeout != 90*time.Second {
		t.Fatalf("transport settings differ from GitLab Runner's: %+v", tr)
	}
}

package gitlab

import (
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"
)

// tlsFiles are the TLS files in use for one GitLab host.
type tlsFiles struct {
	CA, Cert, Key string
}

// fileStamp detects a changed file without reading it.
type fileStamp struct {
	exists  bool
	size    int64
	modTime time.Time
}

// rotatingTransport is the one transport of a Client. At most every maxAge
// it closes idle connections, and rebuilds itself when the TLS files
// changed, so rotated certificates and rebalanced load balancers are picked
// up without a restart. The check runs lazily on the next request, which
// needs no goroutine to own.
type rotatingTransport struct {
	host     string
	creds    Credentials
	certDir  string
	maxAge   time.Duration
	log      *slog.Logger
	now      func() time.Time
	mu       sync.Mutex
	cur      *http.Transport
	files    tlsFiles
	stamps   [3]fileStamp
	lastTick time.Time
}

func newRotatingTransport(base *url.URL, creds Credentials, certDir string, maxAge time.Duration, log *slog.Logger) (*rotatingTransport, error) {
	t := &rotatingTransport{
		host:    base.Hostname(),
		creds:   creds,
		certDir: certDir,
		maxAge:  maxAge,
		log:     log,
		now:     time.Now,
	}
	files := t.resolveFiles()
	tr, err := buildTransport(files)
	if err != nil {
		return nil, err
	}
	t.cur, t.files, t.stamps, t.lastTick = tr, files, stampFiles(files), t.now()
	return t, nil
}

// resolveFiles prefers the files named in the credentials, then
// <CertDir>/<host>.crt, .auth.crt and .auth.key when they exist.
func (t *rotatingTransport) resolveFiles() tlsFiles {
	f := tlsFiles{CA: t.creds.TLSCAFile, Cert: t.creds.TLSCertFile, Key: t.creds.TLSKeyFile}
	if t.certDir == "" || t.host == "" {
		return f
	}
	lookup := func(name string) string { return certDirFile(t.certDir, name) }
	if f.CA == "" {
		f.CA = lookup(t.host + ".crt")
	}
	if f.Cert == "" && f.Key == "" {
		cert, key := lookup(t.host+".auth.crt"), lookup(t.host+".auth.key")
		if cert != "" && key != "" {
			f.Cert, f.Key = cert, key
		} else if cert != "" || key != "" {
			t.log.Warn("client certificate ignored: both <host>.auth.crt and <host>.auth.key are needed", "dir", t.certDir, "host", t.host)
		}
	}
	return f
}

func certDirFile(dir, name string) string {
	p := filepath.Join(dir, name)
	if st, err := os.Stat(p); err == nil && st.Mode().IsRegular() {
		return p
	}
	return ""
}

// CAFile is the CA bundle the client of serverURL trusts besides the
// system's: tlsCAFile (tls-ca-file) when set, else <certDir>/<host>.crt
// when it exists, else "". Executors hand it to jobs
// (CI_SERVER_TLS_CA_FILE), as GitLab Runner does.
func CAFile(serverURL, tlsCAFile, certDir string) string {
	if tlsCAFile != "" {
		return tlsCAFile
	}
	u, err := url.Parse(serverURL)
	if err != nil || u.Hostname() == "" || certDir == "" {
		return ""
	}
	return certDirFile(certDir, u.Hostname()+".crt")
}

func stampFiles(f tlsFiles) [3]fileStamp {
	var s [3]fileStamp
	for i, p := range []string{f.CA, f.Cert, f.Key} {
		if p == "" {
			continue
		}
		if st, err := os.Stat(p); err == nil {
			s[i] = fileStamp{exists: true, size: st.Size(), modTime: st.ModTime()}
		}
	}
	return s
}

func buildTLSConfig(f tlsFiles) (*tls.Config, error) {
	cfg := &tls.Config{MinVersion: tls.VersionTLS12}
	if f.CA != "" {
		pemData, err := os.ReadFile(f.CA)
		if err != nil {
			return nil, fmt.Errorf("read TLS CA file %s (check tls-ca-file): %w", f.CA, err)
		}
		pool, err := x509.SystemCertPool()
		if err != nil || pool == nil {
			pool = x509.NewCertPool()
		}
		if !pool.AppendCertsFromPEM(pemData) {
			return nil, fmt.Errorf("TLS CA file %s holds no PEM certificate (check tls-ca-file)", f.CA)
		}
		cfg.RootCAs = pool
	}
	switch {
	case f.Cert != "" && f.Key != "":
		pair, err := tls.LoadX509KeyPair(f.Cert, f.Key)
		if err != nil {
			return nil, fmt.Errorf("load TLS client certificate %s / key %s (check tls-cert-file and tls-key-file): %w", f.Cert, f.Key, err)
		}
		cfg.Certificates = []tls.Certificate{pair}
	case f.Cert != "" || f.Key != "":
		return nil, errors.New("tls-cert-file and tls-key-file must be set together")
	}
	return cfg, nil
}

func buildTransport(f tlsFiles) (*http.Transport, error) {
	tlsCfg, err := buildTLSConfig(f)
	if err != nil {
		return nil, err
	}
	dialer := &net.Dialer{Timeout: 30 * time.Second, KeepAlive: 30 * time.Second}
	return &http.Transport{
		Proxy:                 http.ProxyFromEnvironment,
		DialContext:           dialer.DialContext,
		TLSClientConfig:       tlsCfg,
		TLSHandshakeTimeout:   10 * time.Second,
		ResponseHeaderTimeout: 10 * time.Minute,
		ExpectContinueTimeout: time.Second,
		MaxIdleConns:          100,
		IdleConnTimeout:       90 * time.Second,
		// HTTP/1.1 as GitLab Runner: one connection per concurrent request,
		// so closing idle ones really rebalances, and uploads stream chunked.
	}, nil
}

// RoundTrip implements http.RoundTripper.
func (t *rotatingTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	return t.current().RoundTrip(req)
}

func (t *rotatingTransport) current() *http.Transport {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.maxAge > 0 && t.now().Sub(t.lastTick) >= t.maxAge {
		t.lastTick = t.now()
		t.rotateLocked()
	}
	return t.cur
}

// rotateLocked closes idle connections and swaps in a new transport when
// the TLS files changed. A broken new file keeps the old transport.
func (t *rotatingTransport) rotateLocked() {
	files := t.resolveFiles()
	stamps := stampFiles(files)
	if files == t.files && stamps == t.stamps {
		t.cur.CloseIdleConnections()
		return
	}
	tr, err := buildTransport(files)
	if err != nil {
		t.log.Warn("TLS files changed but cannot be loaded; keeping the previous ones", "error", err)
		t.cur.CloseIdleConnections()
		return
	}
	old := t.cur
	t.cur, t.files, t.stamps = tr, files, stamps
	old.CloseIdleConnections()
	t.log.Info("TLS files changed; new connections use them", "host", t.host)
}

func (t *rotatingTransport) closeIdle() {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.cur.CloseIdleConnections()
}

// caChainPEM is the CA part of the verified chain of a TLS connection (the
// leaf is left out unless it is the whole chain, i.e. self-signed), so
// helper tools can trust the same server.
func caChainPEM(st *tls.ConnectionState) string {
	if st == nil {
		return ""
	}
	var chain []*x509.Certificate
	if len(st.VerifiedChains) > 0 {
		chain = st.VerifiedChains[0]
	} else {
		chain = st.PeerCertificates
	}
	if len(chain) > 1 {
		chain = chain[1:]
	}
	var b strings.Builder
	for _, c := range chain {
		_ = pem.Encode(&b, &pem.Block{Type: "CERTIFICATE", Bytes: c.Raw})
	}
	return b.String()
}

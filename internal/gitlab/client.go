package gitlab

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/url"
	"regexp"
	"runtime"
	"strings"
	"sync"
	"time"
)

// VersionInfo names the runner in the User-Agent header and the info object.
type VersionInfo struct {
	Name     string // info.name and User-Agent product; "podrunner" when empty
	Version  string // "dev" when empty
	Revision string // "unknown" when empty
	Branch   string // "unknown" when empty
}

// Options configure a Client. The zero value is usable.
type Options struct {
	Version  VersionInfo
	Executor string // info.executor
	Shell    string // info.shell
	// CertDir is <config dir>/certs, searched for <host>.crt etc. when the
	// credentials name no TLS files.
	CertDir string
	Logger  *slog.Logger
	// MinBackoff overrides the first transport retry wait (100 ms); tests
	// shorten it.
	MinBackoff time.Duration
	// MaxBackoff overrides the largest transport retry wait (60 s).
	MaxBackoff time.Duration

	// Features are the info.features reported to GitLab; nil means
	// DefaultFeatures(). An executor that cannot run images should clear
	// Image/Services so GitLab does not send jobs it cannot honour.
	Features *Features
	// Labels are info.labels (at most 32; keys ^[a-zA-Z0-9_][a-zA-Z0-9._-]{2,64}$).
	Labels map[string]string
	// GPUs is info.config.gpus.
	GPUs string
	// ConnectionMaxAge closes idle connections (and re-reads changed TLS
	// files) at most this often, so load balancers rebalance and rotated
	// certificates are picked up. 0 means 15 min, negative disables.
	ConnectionMaxAge time.Duration
	// Observer, when set, is told about every HTTP attempt (for metrics).
	Observer Observer
	// ArtifactRetryWait is the wait between artifact upload/download tries
	// (1 s when zero).
	ArtifactRetryWait time.Duration
	// JobRequestTimeout bounds one jobs/request call (retries included);
	// DefaultJobRequestTimeout when zero.
	JobRequestTimeout time.Duration
}

// DefaultJobRequestTimeout: GitLab (Workhorse) holds a jobs/request long
// poll for at most 50 s; a request without an answer well after that is
// stuck in something between (a proxy), and costs one poll, not the
// transport's 10 minutes.
const DefaultJobRequestTimeout = 90 * time.Second

// Endpoint names used as the metrics "endpoint" label.
const (
	EndpointRequestJob        = "request_job"
	EndpointUpdateJob         = "update_job"
	EndpointPatchTrace        = "patch_trace"
	EndpointResetToken        = "reset_token"
	EndpointRegister          = "register"
	EndpointVerify            = "verify"
	EndpointUnregister        = "unregister"
	EndpointUploadArtifacts   = "upload_artifacts"
	EndpointDownloadArtifacts = "download_artifacts"
)

// APIRequest describes one HTTP attempt, for metrics.
type APIRequest struct {
	Endpoint string // one of the Endpoint* constants
	Method   string
	// Status is the HTTP status code, 0 when no response arrived.
	Status   int
	Attempt  int // 1 for the first try
	Duration time.Duration
}

// Observer is told about every HTTP attempt. It must be fast and safe for
// concurrent use; the runner counts gitlab_runner_api_request_statuses_total
// with it.
type Observer interface {
	ObserveAPIRequest(APIRequest)
}

// ObserverFunc adapts a function to Observer.
type ObserverFunc func(APIRequest)

// ObserveAPIRequest calls f.
func (f ObserverFunc) ObserveAPIRequest(r APIRequest) { f(r) }

// Client talks to one GitLab instance on behalf of one runner token. It
// remembers X-GitLab-Last-Update between job requests. Safe for concurrent
// use.
type Client struct {
	creds     Credentials
	opts      Options
	base      *url.URL
	log       *slog.Logger
	http      *http.Client
	transport *rotatingTransport
	info      Info
	userAgent string

	mu         sync.Mutex
	lastUpdate string
}

const (
	defaultConnectionMaxAge = 15 * time.Minute
	defaultMinBackoff       = 100 * time.Millisecond
	defaultMaxBackoff       = 60 * time.Second
)

// NewClient validates the URL (http/https only) and builds the client.
func NewClient(creds Credentials, opts Options) (*Client, error) {
	log := opts.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	base, legacyCI, err := normalizeURL(creds.URL)
	if err != nil {
		return nil, err
	}
	if legacyCI {
		log.Warn("the runner URL ends in /ci, a legacy form; use the GitLab URL without it", "url", base.Redacted())
	}
	if err := validateLabels(opts.Labels); err != nil {
		return nil, err
	}
	if opts.MinBackoff <= 0 {
		opts.MinBackoff = defaultMinBackoff
	}
	if opts.MaxBackoff <= 0 {
		opts.MaxBackoff = defaultMaxBackoff
	}
	if opts.MaxBackoff < opts.MinBackoff {
		opts.MaxBackoff = opts.MinBackoff
	}
	if opts.ConnectionMaxAge == 0 {
		opts.ConnectionMaxAge = defaultConnectionMaxAge
	}
	if opts.JobRequestTimeout <= 0 {
		opts.JobRequestTimeout = DefaultJobRequestTimeout
	}
	if opts.ArtifactRetryWait <= 0 {
		opts.ArtifactRetryWait = time.Second
	}
	c := &Client{creds: creds, opts: opts, base: base, log: log}
	tr, err := newRotatingTransport(base, creds, opts.CertDir, opts.ConnectionMaxAge, log)
	if err != nil {
		return nil, err
	}
	c.transport = tr
	c.http = &http.Client{
		Transport:     tr,
		Timeout:       60 * time.Minute,
		CheckRedirect: stripTokensOnRedirect,
	}
	c.info = buildInfo(opts)
	c.userAgent = buildUserAgent(opts.Version)
	return c, nil
}

// Close releases idle connections. The Client stays usable.
func (c *Client) Close() { c.transport.closeIdle() }

// BaseURL is the normalised API base, e.g. https://gitlab.example.com/api/v4/.
func (c *Client) BaseURL() string { return c.base.String() }

// UserAgent is the User-Agent header sent with every request, in GitLab
// Runner's form "<name> <version> (<branch>; <go version>; <os>/<arch>)"
// with name "podrunner" by default: GitLab parses nothing from it, and an
// honest product name lets GitLab admins tell podrunner apart in logs.
func (c *Client) UserAgent() string { return c.userAgent }

// Info is the info object sent with register, verify, jobs/request and PUT job.
func (c *Client) Info() Info { return c.info }

// LastUpdate is the last X-GitLab-Last-Update value seen (echoed as
// last_update in the next job request).
func (c *Client) LastUpdate() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.lastUpdate
}

func (c *Client) setLastUpdate(v string) {
	if v == "" {
		return
	}
	c.mu.Lock()
	c.lastUpdate = v
	c.mu.Unlock()
}

// NormalizeURL returns the API base for a configured GitLab URL: trailing
// slashes and a legacy trailing /ci removed, /api/v4/ appended.
func NormalizeURL(raw string) (string, error) {
	u, _, err := normalizeURL(raw)
	if err != nil {
		return "", err
	}
	return u.String(), nil
}

func normalizeURL(raw string) (*url.URL, bool, error) {
	raw = strings.TrimSpace(raw)
	if raw == "" {
		return nil, false, errors.New("GitLab URL is empty: set url to the GitLab instance, e.g. https://gitlab.example.com")
	}
	u, err := url.Parse(raw)
	if err != nil {
		return nil, false, fmt.Errorf("GitLab URL %q is not a valid URL: %w", raw, err)
	}
	if u.Scheme != "http" && u.Scheme != "https" {
		return nil, false, fmt.Errorf("GitLab URL %q: scheme must be http or https, e.g. https://gitlab.example.com", raw)
	}
	if u.Host == "" {
		return nil, false, fmt.Errorf("GitLab URL %q has no host, e.g. https://gitlab.example.com", raw)
	}
	u.RawQuery, u.Fragment, u.RawFragment = "", "", ""
	p := strings.TrimRight(u.Path, "/")
	legacy := strings.HasSuffix(p, "/ci")
	p = strings.TrimRight(strings.TrimSuffix(p, "/ci"), "/")
	u.Path = p + "/api/v4/"
	u.RawPath = ""
	return u, legacy, nil
}

var labelKeyRE = regexp.MustCompile(`^[a-zA-Z0-9_][a-zA-Z0-9._-]{2,64}$`)

func validateLabels(labels map[string]string) error {
	if len(labels) > 32 {
		return fmt.Errorf("runner labels: %d given, GitLab accepts at most 32", len(labels))
	}
	for k := range labels {
		if !labelKeyRE.MatchString(k) {
			return fmt.Errorf("runner label key %q: must match %s", k, labelKeyRE)
		}
	}
	return nil
}

func buildUserAgent(v VersionInfo) string {
	v = versionDefaults(v)
	return fmt.Sprintf("%s %s (%s; %s; %s/%s)", v.Name, v.Version, v.Branch, runtime.Version(), runtime.GOOS, runtime.GOARCH)
}

func versionDefaults(v VersionInfo) VersionInfo {
	if v.Name == "" {
		v.Name = "podrunner"
	}
	if v.Version == "" {
		v.Version = "dev"
	}
	if v.Revision == "" {
		v.Revision = "unknown"
	}
	if v.Branch == "" {
		v.Branch = "unknown"
	}
	return v
}

// newRequestID is a random UUIDv4 in hex without dashes.
func newRequestID() string {
	var b [16]byte
	_, _ = rand.Read(b[:])
	b[6] = b[6]&0x0f | 0x40
	b[8] = b[8]&0x3f | 0x80
	return hex.EncodeToString(b[:])
}

// redact removes the given secrets from s (for log lines and errors built
// from server text).
func redact(s string, secrets ...string) string {
	for _, sec := range secrets {
		if len(sec) >= 4 {
			s = strings.ReplaceAll(s, sec, "[MASKED]")
		}
	}
	return s
}

// stripTokensOnRedirect keeps token headers away from other hosts (object
// storage behind a 302) and bounds the redirect chain.
func stripTokensOnRedirect(req *http.Request, via []*http.Request) error {
	if len(via) >= 10 {
		return errors.New("stopped after 10 redirects")
	}
	if req.URL.Host != via[0].URL.Host || req.URL.Scheme != via[0].URL.Scheme {
		for _, h := range []string{headerRunnerToken, headerJobToken, headerPrivateToken} {
			req.Header.Del(h)
		}
	}
	return nil
}

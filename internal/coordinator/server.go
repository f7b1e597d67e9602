// Package coordinator is a GitLab-compatible coordinator for tests, `exec`
// and benchmarks: the runner API of /api/v4 (registration, job requests
// with long polling, job updates, trace patches, artifacts) as GitLab and
// Workhorse answer it, pipelines built from a real .gitlab-ci.yml, and the
// project repositories over smart HTTP so jobs really clone.
//
// Pipelines follow GitLab: the config is parsed with includes from the
// commit and evaluated (workflow:rules, rules, only/except) by ciyaml;
// jobs are processed like GitLab's AtomicProcessingService (stages, needs,
// when, manual jobs blocking only without allow_failure, delayed jobs,
// allow_failure:exit_codes, automatic retry with new job ids); artifacts
// are stored on disk per artifact_type with GitLab's token, size and
// expiry checks, and dotenv reports become variables of dependent jobs.
//
// It is strict on purpose: it is how podrunner's compatibility is tested,
// so it never answers more kindly than GitLab would. Deviations from
// GitLab are named in the docs of the option or method concerned.
package coordinator

import (
	"context"
	"crypto/rand"
	"crypto/tls"
	"encoding/hex"
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

	"github.com/podrunner/podrunner/internal/ciyaml"
)

// Options configure a Server. The zero value is usable.
type Options struct {
	// ListenAddr is where Start listens; "127.0.0.1:0" when empty. Any
	// address works (a node IP for pods to reach).
	ListenAddr string
	// ExternalURL is the URL advertised in job payloads (repo_url,
	// CI_SERVER_URL, …); the listen URL when empty.
	ExternalURL string
	// TLS serves HTTPS with a certificate from a private CA generated at
	// Start (CACertPEM), like a self-managed GitLab signed by a company CA.
	TLS bool
	// TLSNames are extra DNS names or IPs for the certificate, besides the
	// listen address, the external URL's host and localhost.
	TLSNames []string
	// RegistrationToken is the legacy registration token; random when empty.
	RegistrationToken string
	// LongPollTimeout is how long a jobs/request whose last_update is
	// current is held (Workhorse's apiCiLongPollingDuration). 0 means
	// 50 s; negative disables long polling.
	LongPollTimeout time.Duration
	// WorkhorseSeenChange makes a held jobs/request answer a plain 204
	// when the queue changes, exactly as Workhorse does (the runner must
	// ask again). By default the held request is answered with the job
	// itself, which is what Rails answers to the follow-up request.
	WorkhorseSeenChange bool
	// TraceUpdateInterval is sent as X-GitLab-Trace-Update-Interval on
	// trace patches. 0 means 60 s, GitLab's value for a log nobody is
	// watching (GitLab sends 3 s while someone watches the log).
	TraceUpdateInterval time.Duration
	// AcceptBackoff is the X-GitLab-Trace-Update-Interval sent with a 202
	// on the final update (ForceAccepted); 0 means 1 s.
	AcceptBackoff time.Duration
	// IgnoreTags lets any runner take any job (for local `exec`).
	IgnoreTags bool
	// ProjectTimeout is the default job timeout of projects; 0 means 1 h.
	ProjectTimeout time.Duration
	// GitDepth is the projects' ci_default_git_depth; 0 means 20,
	// negative means full clones (depth 0).
	GitDepth int
	// MaxTraceSize drops a job with trace_size_exceeded once its log
	// grows past it; 0 means 100 MiB (GitLab's default limit).
	MaxTraceSize int64
	// StuckTimeout fails a running job that sent nothing for this long
	// with stuck_or_timeout_failure (GitLab uses 1 h). 0 disables.
	StuckTimeout time.Duration
	// User is the pipeline user (GITLAB_USER_*).
	User User
	// DataDir holds the bare repositories; a temporary directory removed
	// by Close when empty.
	DataDir string
	// GitBinary is the git executable; "git" from PATH when empty.
	GitBinary string
	// Logger receives one line per request (tokens never logged).
	Logger *slog.Logger
	// ServerVersion is CI_SERVER_VERSION; "18.5.0" when empty.
	ServerVersion string
	// MaxArtifactsSize is the maximum size of one uploaded artifact file
	// (GitLab's "Maximum artifacts size"); bigger uploads get 413. 0 means
	// DefaultMaxArtifactsSize (100 MiB, GitLab's default). Artifacts are
	// stored under DataDir/artifacts.
	MaxArtifactsSize int64
	// MaxDotenvVariables is the dotenv_variables limit; 0 means
	// DefaultMaxDotenvVariables.
	MaxDotenvVariables int
	// Registry, when set, is the container registry of every project: jobs
	// get CI_REGISTRY, CI_REGISTRY_IMAGE, CI_REGISTRY_USER,
	// CI_REGISTRY_PASSWORD and a `credentials` entry of type registry, as
	// GitLab sends them when its container registry is enabled.
	Registry *Registry
}

// Registry is the container registry advertised to jobs.
type Registry struct {
	// Host is CI_REGISTRY and the credential's url (host[:port]).
	Host string
	// Username and Password are what jobs log in with. Empty: GitLab's
	// own, gitlab-ci-token and the job token (its registry checks the
	// token with GitLab). A registry with static accounts, like the local
	// cluster's, cannot check job tokens: give one of its accounts.
	Username, Password string
}

// User is the user who creates pipelines.
type User struct {
	ID    int64
	Login string
	Name  string
	Email string
}

// Server is a running coordinator. All methods are safe for concurrent use.
type Server struct {
	opts   Options
	log    *slog.Logger
	git    string
	dir    string
	ownDir bool

	mu        sync.Mutex
	changed   chan struct{} // closed and replaced on every queue change
	runners   map[int64]*runner
	projects  map[string]*project
	pipelines map[int64]*pipeline
	jobs      map[int64]*jobState
	nextID    map[string]int64
	faults    faultState
	recs      []Request
	external  *url.URL
	timers    []*time.Timer
	held      int              // job requests held by long polling
	clock     func() time.Time // tests move time for artifact expiry
	// evaluate replaces Config.Evaluate in tests (to set job fields).
	evaluate func(*ciyaml.Config, ciyaml.Env) ([]*ciyaml.Job, error)

	srv      *http.Server
	ln       net.Listener
	caPEM    []byte
	handler  http.Handler
	done     chan struct{}
	closeOne sync.Once
	wg       sync.WaitGroup
}

// New builds a server; call Start to listen, or mount Handler yourself
// (then set Options.ExternalURL).
func New(opts Options) (*Server, error) {
	if opts.ListenAddr == "" {
		opts.ListenAddr = "127.0.0.1:0"
	}
	if opts.RegistrationToken == "" {
		opts.RegistrationToken = "GR1348941" + randHex(10)
	}
	if opts.LongPollTimeout == 0 {
		opts.LongPollTimeout = 50 * time.Second
	}
	if opts.TraceUpdateInterval <= 0 {
		opts.TraceUpdateInterval = 60 * time.Second
	}
	if opts.AcceptBackoff <= 0 {
		opts.AcceptBackoff = time.Second
	}
	if opts.ProjectTimeout <= 0 {
		opts.ProjectTimeout = time.Hour
	}
	if opts.GitDepth == 0 {
		opts.GitDepth = 20
	} else if opts.GitDepth < 0 {
		opts.GitDepth = 0
	}
	if opts.MaxTraceSize <= 0 {
		opts.MaxTraceSize = 100 << 20
	}
	if opts.User.ID == 0 {
		opts.User = User{ID: 1, Login: "root", Name: "Administrator", Email: "admin@example.com"}
	}
	if opts.ServerVersion == "" {
		opts.ServerVersion = "18.5.0"
	}
	gitBin := opts.GitBinary
	if gitBin == "" {
		gitBin = "git"
	}
	path, err := lookPath(gitBin)
	if err != nil {
		return nil, fmt.Errorf("find git (install git, or set Options.GitBinary): %w", err)
	}
	log := opts.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	s := &Server{
		opts:      opts,
		log:       log,
		git:       path,
		changed:   make(chan struct{}),
		runners:   map[int64]*runner{},
		projects:  map[string]*project{},
		pipelines: map[int64]*pipeline{},
		jobs:      map[int64]*jobState{},
		nextID:    map[string]int64{},
		done:      make(chan struct{}),
	}
	s.faults.init(1)
	if opts.DataDir == "" {
		d, err := os.MkdirTemp("", "gitlabtest-")
		if err != nil {
			return nil, fmt.Errorf("create data dir: %w", err)
		}
		s.dir, s.ownDir = d, true
	} else {
		s.dir = opts.DataDir
	}
	if err := os.MkdirAll(filepath.Join(s.dir, "repos"), 0o755); err != nil {
		return nil, fmt.Errorf("create repos dir: %w", err)
	}
	if opts.ExternalURL != "" {
		u, err := url.Parse(strings.TrimSuffix(opts.ExternalURL, "/"))
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			return nil, fmt.Errorf("external URL %q: want http(s)://host[:port]", opts.ExternalURL)
		}
		if opts.TLS && u.Scheme != "https" {
			return nil, fmt.Errorf("external URL %q: the coordinator serves HTTPS (TLS), so the URL must be https://", opts.ExternalURL)
		}
		s.external = u
	}
	s.handler = s.routes()
	if opts.StuckTimeout > 0 {
		s.wg.Add(1)
		go s.stuckLoop()
	}
	return s, nil
}

// Start listens on Options.ListenAddr and serves until ctx ends or Close.
func (s *Server) Start(ctx context.Context) error {
	ln, err := net.Listen("tcp", s.opts.ListenAddr)
	if err != nil {
		return fmt.Errorf("listen on %s: %w", s.opts.ListenAddr, err)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	scheme := "http"
	if s.opts.TLS {
		scheme = "https"
	}
	if s.external == nil {
		s.external = &url.URL{Scheme: scheme, Host: ln.Addr().String()}
	}
	s.srv = &http.Server{Handler: s.handler, ReadHeaderTimeout: 10 * time.Second}
	if s.opts.TLS {
		cfg, ca, err := serverTLS(tlsHosts(ln.Addr(), s.external.Hostname(), s.opts.TLSNames))
		if err != nil {
			ln.Close()
			return err
		}
		s.srv.TLSConfig, s.caPEM = cfg, ca
		ln = tls.NewListener(ln, cfg)
	}
	s.ln = ln
	srv := s.srv
	s.wg.Add(2)
	go func() {
		defer s.wg.Done()
		if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			s.log.Error("coordinator stopped serving", "err", err)
		}
	}()
	go func() {
		defer s.wg.Done()
		select {
		case <-ctx.Done():
			s.shutdown()
		case <-s.done:
		}
	}()
	return nil
}

// CACertPEM is the certificate (PEM) of the private CA that signed the
// server's certificate, nil before Start or without Options.TLS. Runners
// trust it through tls-ca-file or certs/<host>.crt.
func (s *Server) CACertPEM() []byte {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.caPEM
}

// Handler is the HTTP handler (API and git), for mounting elsewhere.
func (s *Server) Handler() http.Handler { return s.handler }

// URL is the advertised base URL (no trailing slash), e.g.
// http://127.0.0.1:41234; runners are configured with it.
func (s *Server) URL() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.external == nil {
		return ""
	}
	return s.external.String()
}

// Addr is the address Start listens on, empty before Start.
func (s *Server) Addr() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.ln == nil {
		return ""
	}
	return s.ln.Addr().String()
}

// HeldRequests is the number of jobs/request calls held by long polling
// right now (tests wait for it before queueing a job).
func (s *Server) HeldRequests() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.held
}

// RegistrationToken is the legacy registration token for POST runners.
func (s *Server) RegistrationToken() string { return s.opts.RegistrationToken }

// Close stops serving, ends held requests and removes temporary data.
func (s *Server) Close() error {
	s.shutdown()
	s.wg.Wait()
	if s.ownDir {
		return os.RemoveAll(s.dir)
	}
	return nil
}

func (s *Server) shutdown() {
	s.closeOne.Do(func() {
		close(s.done)
		s.mu.Lock()
		srv := s.srv
		for _, t := range s.timers {
			t.Stop()
		}
		s.mu.Unlock()
		if srv != nil {
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			if err := srv.Shutdown(ctx); err != nil {
				_ = srv.Close()
			}
		}
	})
}

// notifyLocked wakes held job requests. The caller holds s.mu.
func (s *Server) notifyLocked() {
	close(s.changed)
	s.changed = make(chan struct{})
}

func (s *Server) newID(kind string) int64 {
	s.nextID[kind]++
	return s.nextID[kind]
}

// afterFuncLocked runs f after d unless the server closes first. The
// caller holds s.mu.
func (s *Server) afterFuncLocked(d time.Duration, f func()) {
	t := time.AfterFunc(d, func() {
		select {
		case <-s.done:
		default:
			f()
		}
	})
	s.timers = append(s.timers, t)
}

func randHex(n int) string {
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		panic(fmt.Sprintf("crypto/rand failed: %v", err)) // never happens on Linux
	}
	return hex.EncodeToString(b)
}

package gitlab

import (
	"context"
	"errors"
	"log/slog"
	"time"
)

// errNotImplemented marks the parts still to be written.
var errNotImplemented = errors.New("not implemented")

// VersionInfo names the runner in the User-Agent header and the info object.
type VersionInfo struct {
	Name     string // "gitlab-runner" compatible name sent in info.name
	Version  string
	Revision string
	Branch   string
}

// Options configure a Client.
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
}

// Client talks to one GitLab instance on behalf of one runner token. It
// remembers X-GitLab-Last-Update between job requests. Safe for concurrent
// use.
type Client struct {
	creds Credentials
	opts  Options
}

// NewClient validates the URL (http/https only) and builds the client.
func NewClient(creds Credentials, opts Options) (*Client, error) {
	return &Client{creds: creds, opts: opts}, nil
}

// RegisterRequest is the body of POST runners (legacy registration token).
type RegisterRequest struct {
	Description     string
	MaintenanceNote string
	Tags            []string
	RunUntagged     bool
	Locked          bool
	AccessLevel     string
	MaximumTimeout  int
	Paused          bool
}

// RunnerToken is what register, verify and reset-token return.
type RunnerToken struct {
	ID             int64
	Token          string
	TokenExpiresAt time.Time
}

// Register calls POST runners with the client's token as registration
// token. A 403 returns an error wrapping ErrForbidden.
func (c *Client) Register(ctx context.Context, req RegisterRequest) (*RunnerToken, error) {
	return nil, errNotImplemented
}

// Verify calls POST runners/verify. A 403 returns an error wrapping
// ErrForbidden (the runner was removed); other failures are plain errors.
func (c *Client) Verify(ctx context.Context, systemID string) (*RunnerToken, error) {
	return nil, errNotImplemented
}

// Unregister deletes the runner (DELETE runners) for legacy tokens, or only
// this runner manager (DELETE runners/managers) for glrt- tokens.
func (c *Client) Unregister(ctx context.Context, systemID string) error {
	return errNotImplemented
}

// ResetToken calls POST runners/reset_authentication_token.
func (c *Client) ResetToken(ctx context.Context) (*RunnerToken, error) {
	return nil, errNotImplemented
}

// RequestJob calls POST jobs/request, echoing the last X-GitLab-Last-Update.
func (c *Client) RequestJob(ctx context.Context, systemID string) RequestJobResult {
	return RequestJobResult{Status: JobFailed, Healthy: true, Err: errNotImplemented}
}

// UpdateJob calls PUT jobs/:id with the job token.
func (c *Client) UpdateJob(ctx context.Context, jobID int64, jobToken string, req UpdateJobRequest) UpdateResult {
	return UpdateResult{State: UpdateFailed, Err: errNotImplemented}
}

// PatchTrace sends content as the trace bytes starting at offset.
func (c *Client) PatchTrace(ctx context.Context, jobID int64, jobToken string, content []byte, offset int64, debugTrace bool) PatchResult {
	return PatchResult{State: PatchFailed, Err: errNotImplemented}
}

package gitlab

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"mime/multipart"
	"net/http"
	"net/url"
	"path/filepath"
	"strconv"
	"sync"
	"time"
)

// ArtifactsOptions describe one artifacts upload, copied from the job
// payload's artifacts[] entry.
type ArtifactsOptions struct {
	Name     string // file name without extension; "artifacts" when empty
	Format   string // artifact_format: zip (default), gzip, raw, zipzstd, tarzstd
	Type     string // artifact_type, e.g. archive, junit
	ExpireIn string // expire_in, e.g. "1 week"
}

const (
	artifactTriesOn503   = 6
	artifactTriesOther   = 3
	artifactMaxRedirects = 5
	artifactDownloadTry  = 3
)

// filename is Name plus the format's extension, as GitLab Runner's helper
// names it.
func (o ArtifactsOptions) filename() string {
	name := filepath.Base(o.Name)
	if o.Name == "" || name == "." || name == "/" {
		name = "artifacts"
	}
	switch o.Format {
	case "", "zip", "zipzstd":
		return name + ".zip"
	case "gzip":
		return name + ".gz"
	case "tarzstd":
		return name + ".tar.zst"
	default:
		return name
	}
}

func (o ArtifactsOptions) query() url.Values {
	q := url.Values{}
	if o.Format != "" {
		q.Set("artifact_format", o.Format)
	}
	if o.Type != "" {
		q.Set("artifact_type", o.Type)
	}
	if o.ExpireIn != "" {
		q.Set("expire_in", o.ExpireIn)
	}
	return q
}

// UploadArtifacts streams body as the job's artifacts archive (POST
// jobs/:id/artifacts, multipart field "file", chunked). The body can be
// sent once only, so nothing is retried; use UploadArtifactsFrom for
// retries. Errors wrap ErrForbidden (403) or ErrTooLarge (413).
func (c *Client) UploadArtifacts(ctx context.Context, jobID int64, jobToken string, opts ArtifactsOptions, body io.Reader) error {
	var used bool
	open := func() (io.ReadCloser, error) {
		if used {
			return nil, errors.New("the artifacts body cannot be read twice (use UploadArtifactsFrom to allow retries)")
		}
		used = true
		return io.NopCloser(body), nil
	}
	return c.uploadArtifacts(ctx, jobID, jobToken, opts, open, false)
}

// UploadArtifactsFrom is UploadArtifacts with a body that open can produce
// again for every try: 503 is tried up to 6 times, other failures up to 3,
// 307 re-uploads to the Location, 403 and 413 are final.
func (c *Client) UploadArtifactsFrom(ctx context.Context, jobID int64, jobToken string, opts ArtifactsOptions, open func() (io.ReadCloser, error)) error {
	return c.uploadArtifacts(ctx, jobID, jobToken, opts, open, true)
}

func (c *Client) uploadArtifacts(ctx context.Context, jobID int64, jobToken string, opts ArtifactsOptions, open func() (io.ReadCloser, error), reopenable bool) error {
	var target *url.URL
	redirects := 0
	for tries := 1; ; {
		status, location, err := c.uploadOnce(ctx, jobID, jobToken, opts, open, reopenable, target)
		if err == nil {
			return nil
		}
		if status == http.StatusTemporaryRedirect && location != nil {
			redirects++
			if redirects > artifactMaxRedirects {
				return fmt.Errorf("upload artifacts of job %d: more than %d redirects", jobID, artifactMaxRedirects)
			}
			if !reopenable {
				return fmt.Errorf("upload artifacts of job %d: GitLab redirected to %s but the body cannot be sent again: %w", jobID, location.Redacted(), err)
			}
			c.log.Info("artifacts upload redirected", "job", jobID, "location", location.Redacted())
			target = location
			continue
		}
		if !retryableUploadStatus(status) || !reopenable || ctx.Err() != nil || IsCertificateError(err) {
			return err
		}
		limit := artifactTriesOther
		if status == http.StatusServiceUnavailable {
			limit = artifactTriesOn503
		}
		if tries >= limit {
			return err
		}
		tries++
		c.log.Warn("artifacts upload failed; retrying", "job", jobID, "error", err, "try", tries)
		if werr := sleepCtx(ctx, artifactBackoff(c.opts.ArtifactRetryWait, tries-1)); werr != nil {
			return fmt.Errorf("upload artifacts of job %d: %w (stopped retrying: %w)", jobID, err, werr)
		}
	}
}

// retryableUploadStatus: no answer (network error), 5xx, 408 and 429 are
// worth another try; other 4xx (403 forbidden, 413 too large, 400 …)
// would only get the same answer again.
func retryableUploadStatus(status int) bool {
	switch {
	case status == 0, status >= 500:
		return true
	case status == http.StatusRequestTimeout, status == http.StatusTooManyRequests:
		return true
	}
	return false
}

// artifactBackoff doubles the wait for every retry already made (wait,
// 2·wait, 4·wait …), at most 30 s.
func artifactBackoff(wait time.Duration, retry int) time.Duration {
	const maxWait = 30 * time.Second
	for i := 1; i < retry && wait < maxWait; i++ {
		wait *= 2
	}
	return min(wait, maxWait)
}

// multipartBody streams one multipart part from src through a pipe. Close
// stops the writer goroutine and waits for it.
type multipartBody struct {
	pr   *io.PipeReader
	done chan struct{}
	once sync.Once
}

func (b *multipartBody) Read(p []byte) (int, error) { return b.pr.Read(p) }

func (b *multipartBody) Close() error {
	b.once.Do(func() {
		_ = b.pr.Close()
		<-b.done
	})
	return nil
}

func newMultipartBody(src io.ReadCloser, boundary, filename string) (*multipartBody, error) {
	pr, pw := io.Pipe()
	mw := multipart.NewWriter(pw)
	if err := mw.SetBoundary(boundary); err != nil {
		_ = src.Close()
		return nil, fmt.Errorf("multipart boundary: %w", err)
	}
	b := &multipartBody{pr: pr, done: make(chan struct{})}
	go func() {
		defer close(b.done)
		defer src.Close()
		part, err := mw.CreateFormFile("file", filename)
		if err == nil {
			_, err = io.Copy(part, src)
		}
		if err == nil {
			err = mw.Close()
		}
		_ = pw.CloseWithError(err)
	}()
	return b, nil
}

func randomBoundary() string {
	var b [16]byte
	_, _ = rand.Read(b[:])
	return "podrunner-" + hex.EncodeToString(b[:])
}

// uploadOnce is one upload try (with the transport retries when the body
// can be reopened). It returns the final status (0 without answer) and, for
// a 307, the resolved Location.
func (c *Client) uploadOnce(ctx context.Context, jobID int64, jobToken string, opts ArtifactsOptions, open func() (io.ReadCloser, error), reopenable bool, target *url.URL) (int, *url.URL, error) {
	boundary := randomBoundary()
	var (
		mu     sync.Mutex
		bodies []*multipartBody
	)
	defer func() {
		mu.Lock()
		defer mu.Unlock()
		for _, b := range bodies {
			_ = b.Close()
		}
	}()
	src := func() (io.ReadCloser, int64, error) {
		rc, err := open()
		if err != nil {
			return nil, 0, fmt.Errorf("open artifacts: %w", err)
		}
		b, err := newMultipartBody(rc, boundary, opts.filename())
		if err != nil {
			return nil, 0, err
		}
		mu.Lock()
		bodies = append(bodies, b)
		mu.Unlock()
		return b, -1, nil
	}
	req := &apiRequest{
		endpoint:    EndpointUploadArtifacts,
		method:      http.MethodPost,
		path:        "jobs/" + strconv.FormatInt(jobID, 10) + "/artifacts",
		query:       opts.query(),
		target:      target,
		authHeader:  headerJobToken,
		token:       jobToken,
		contentType: "multipart/form-data; boundary=" + boundary,
		body:        src,
		acceptJSON:  true,
		oneShot:     !reopenable,
	}
	resp, err := c.do(ctx, req)
	if err != nil {
		return 0, nil, fmt.Errorf("upload artifacts of job %d: %w", jobID, err)
	}
	switch resp.StatusCode {
	case http.StatusCreated:
		return resp.StatusCode, nil, nil
	case http.StatusTemporaryRedirect:
		loc, lerr := resp.Resp.Location()
		if lerr != nil || (loc.Scheme != "http" && loc.Scheme != "https") {
			return resp.StatusCode, nil, fmt.Errorf("upload artifacts of job %d: 307 without a usable http(s) Location", jobID)
		}
		return resp.StatusCode, loc, fmt.Errorf("upload artifacts of job %d: redirected", jobID)
	case http.StatusRequestEntityTooLarge:
		return resp.StatusCode, nil, fmt.Errorf("upload artifacts of job %d: %w: artifacts too large: raise the project's maximum artifacts size or upload less", jobID, c.fail(resp, jobToken))
	case http.StatusForbidden:
		return resp.StatusCode, nil, fmt.Errorf("upload artifacts of job %d: %w", jobID, c.fail(resp, jobToken))
	case http.StatusServiceUnavailable:
		return resp.StatusCode, nil, fmt.Errorf("upload artifacts of job %d: service unavailable: %w", jobID, c.fail(resp, jobToken))
	default:
		return resp.StatusCode, nil, fmt.Errorf("upload artifacts of job %d: %w", jobID, c.fail(resp, jobToken))
	}
}

// DownloadArtifacts fetches the artifacts archive of a job (usually a
// dependency, with that job's own token), following redirects to object
// storage without passing the token on. 401/403 wrap ErrForbidden, 404
// wraps ErrNotFound; other failures are tried 3 times. The caller closes
// the body.
func (c *Client) DownloadArtifacts(ctx context.Context, jobID int64, jobToken string) (io.ReadCloser, error) {
	req := &apiRequest{
		endpoint:   EndpointDownloadArtifacts,
		method:     http.MethodGet,
		path:       "jobs/" + strconv.FormatInt(jobID, 10) + "/artifacts",
		authHeader: headerJobToken,
		token:      jobToken,
	}
	for try := 1; ; try++ {
		resp, meta, err := c.send(ctx, req)
		if err != nil {
			err = fmt.Errorf("download artifacts of job %d: %w", jobID, err)
		} else if resp.StatusCode == http.StatusOK {
			return resp.Body, nil
		} else {
			ans := readErrorAnswer(resp, meta)
			se := c.fail(ans, jobToken)
			switch resp.StatusCode {
			case http.StatusUnauthorized:
				return nil, fmt.Errorf("download artifacts of job %d: %w: %w", jobID, ErrForbidden, se)
			case http.StatusForbidden, http.StatusNotFound:
				return nil, fmt.Errorf("download artifacts of job %d: %w", jobID, se)
			}
			err = fmt.Errorf("download artifacts of job %d: %w", jobID, se)
		}
		if try >= artifactDownloadTry || ctx.Err() != nil || IsCertificateError(err) {
			return nil, err
		}
		c.log.Warn("artifacts download failed; retrying", "job", jobID, "error", err, "try", try+1)
		if werr := sleepCtx(ctx, artifactBackoff(c.opts.ArtifactRetryWait, try)); werr != nil {
			return nil, fmt.Errorf("%w (stopped retrying: %w)", err, werr)
		}
	}
}

func readErrorAnswer(resp *http.Response, meta sendMeta) *apiResponse {
	defer resp.Body.Close()
	body, _ := io.ReadAll(io.LimitReader(resp.Body, maxErrorBody))
	return &apiResponse{StatusCode: resp.StatusCode, Status: resp.Status, Header: resp.Header, Body: body, Resp: resp, sendMeta: meta}
}

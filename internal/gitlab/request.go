package gitlab

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"mime"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"
)

const (
	headerRunnerToken    = "RUNNER-TOKEN"
	headerJobToken       = "JOB-TOKEN"
	headerPrivateToken   = "PRIVATE-TOKEN"
	headerRequestID      = "X-Request-Id"
	headerLastUpdate     = "X-GitLab-Last-Update"
	headerJobStatus      = "Job-Status"
	headerUpdateInterval = "X-GitLab-Trace-Update-Interval"
	headerRateLimitReset = "RateLimit-ResetTime"
	headerRetryAfter     = "Retry-After"

	maxAttempts = 5
	// maxHeaderWait bounds a server-requested wait (Retry-After,
	// RateLimit-ResetTime) to the client's overall timeout.
	maxHeaderWait = 60 * time.Minute
	// maxJSONBody bounds decoded answers; job payloads are far smaller.
	maxJSONBody = 64 << 20
	// maxErrorBody bounds what is read of an error answer.
	maxErrorBody = 64 << 10
)

// bodySource yields a fresh request body for each attempt; size -1 means
// unknown (chunked).
type bodySource func() (io.ReadCloser, int64, error)

func bytesBody(b []byte) bodySource {
	return func() (io.ReadCloser, int64, error) {
		return io.NopCloser(bytes.NewReader(b)), int64(len(b)), nil
	}
}

func jsonBody(v any) (bodySource, error) {
	b, err := json.Marshal(v)
	if err != nil {
		return nil, fmt.Errorf("encode request body: %w", err)
	}
	return bytesBody(b), nil
}

// apiRequest is one logical API call; send turns it into up to maxAttempts
// HTTP requests.
type apiRequest struct {
	endpoint    string
	method      string
	path        string     // relative to the API base
	query       url.Values // optional
	target      *url.URL   // absolute URL overriding path (307 re-upload)
	authHeader  string     // RUNNER-TOKEN, JOB-TOKEN or PRIVATE-TOKEN
	token       string
	contentType string
	body        bodySource // nil: no body
	acceptJSON  bool
	headers     http.Header // extra headers
	// oneShot: the body cannot be produced twice, so no transport retry.
	oneShot bool
}

// apiResponse is the final answer of a call with its body read.
type apiResponse struct {
	StatusCode int
	Status     string
	Header     http.Header
	Body       []byte
	Resp       *http.Response // body already consumed and closed
	sendMeta
}

type sendMeta struct {
	method     string
	url        string // without secrets, for logs
	requestID  string
	pushedBack bool
}

func (r *apiRequest) url(base *url.URL) *url.URL {
	if r.target != nil {
		u := *r.target
		return &u
	}
	u := base.JoinPath(r.path)
	if len(r.query) > 0 {
		u.RawQuery = r.query.Encode()
	}
	return u
}

func retriable(status int) bool {
	switch status {
	case http.StatusRequestTimeout, http.StatusTooManyRequests, http.StatusInternalServerError,
		http.StatusBadGateway, http.StatusServiceUnavailable, http.StatusGatewayTimeout:
		return true
	}
	return status >= 512
}

// send performs the call with the transport retries of GitLab Runner:
// retriable statuses are tried up to 5 times in total, waiting as the
// server says (RateLimit-ResetTime, then Retry-After) or with exponential
// backoff. The caller owns the returned response body.
func (c *Client) send(ctx context.Context, r *apiRequest) (*http.Response, sendMeta, error) {
	u := r.url(c.base)
	meta := sendMeta{method: r.method, url: u.Redacted()}
	for attempt := 1; ; attempt++ {
		req, err := c.newHTTPRequest(ctx, r, u)
		if err != nil {
			return nil, meta, err
		}
		ourID := req.Header.Get(headerRequestID)
		start := time.Now()
		resp, err := c.http.Do(req)
		dur := time.Since(start)
		status := 0
		if resp != nil {
			status = resp.StatusCode
		}
		c.observe(APIRequest{Endpoint: r.endpoint, Method: r.method, Status: status, Attempt: attempt, Duration: dur})
		if err != nil {
			meta.requestID = ourID
			c.log.Debug("GitLab API request failed", "method", r.method, "url", meta.url,
				"request_id", ourID, "attempt", attempt, "duration", dur, "error", err)
			if ctxErr := ctx.Err(); ctxErr != nil {
				return nil, meta, fmt.Errorf("%s %s: %w", r.method, meta.url, ctxErr)
			}
			if ce := certificateError(u.Hostname(), err); ce != nil {
				return nil, meta, fmt.Errorf("%s %s: %w", r.method, meta.url, ce)
			}
			return nil, meta, fmt.Errorf("%s %s: %w", r.method, meta.url, unwrapURLError(err))
		}
		meta.requestID = resp.Header.Get(headerRequestID)
		if meta.requestID == "" {
			meta.requestID = ourID
		}
		c.log.Debug("GitLab API request", "method", r.method, "url", meta.url, "status", status,
			"request_id", meta.requestID, "attempt", attempt, "duration", dur)
		if !retriable(status) {
			return resp, meta, nil
		}
		meta.pushedBack = true
		if attempt >= maxAttempts || r.oneShot {
			return resp, meta, nil
		}
		wait := c.retryWait(resp, attempt)
		drainClose(resp.Body)
		c.log.Info("GitLab answered with a retriable status; waiting before the next try",
			"method", r.method, "url", meta.url, "status", status, "request_id", meta.requestID,
			"attempt", attempt, "wait", wait)
		if err := sleepCtx(ctx, wait); err != nil {
			return nil, meta, fmt.Errorf("%s %s: waiting to retry after %d: %w", r.method, meta.url, status, err)
		}
	}
}

// unwrapURLError drops url.Error's own "Post \"url\":" prefix, which we
// already add.
func unwrapURLError(err error) error {
	var ue *url.Error
	if errors.As(err, &ue) {
		return ue.Err
	}
	return err
}

func (c *Client) newHTTPRequest(ctx context.Context, r *apiRequest, u *url.URL) (*http.Request, error) {
	var body io.ReadCloser
	size := int64(0)
	if r.body != nil {
		var err error
		body, size, err = r.body()
		if err != nil {
			return nil, fmt.Errorf("%s %s: prepare body: %w", r.method, u.Redacted(), err)
		}
	}
	req, err := http.NewRequestWithContext(ctx, r.method, u.String(), body)
	if err != nil {
		if body != nil {
			_ = body.Close()
		}
		return nil, fmt.Errorf("build %s request for %s: %w", r.method, u.Redacted(), err)
	}
	if body != nil {
		req.ContentLength = size
		if size == 0 {
			// Go would treat a zero-length non-nil body as unknown size.
			req.Body = http.NoBody
		}
	}
	req.Header.Set("User-Agent", c.userAgent)
	req.Header.Set(headerRequestID, newRequestID())
	if r.contentType != "" {
		req.Header.Set("Content-Type", r.contentType)
	}
	if r.acceptJSON {
		req.Header.Set("Accept", "application/json")
	}
	for k, vs := range r.headers {
		req.Header[k] = vs
	}
	if r.authHeader != "" && r.token != "" {
		req.Header.Set(r.authHeader, r.token)
	}
	return req, nil
}

func (c *Client) observe(r APIRequest) {
	if c.opts.Observer != nil {
		c.opts.Observer.ObserveAPIRequest(r)
	}
}

// retryWait follows GitLab Runner: RateLimit-ResetTime (RFC1123) first,
// then Retry-After (seconds), else exponential backoff with jitter.
func (c *Client) retryWait(resp *http.Response, attempt int) time.Duration {
	if v := resp.Header.Get(headerRateLimitReset); v != "" {
		if t, err := time.Parse(time.RFC1123, v); err == nil {
			if d := time.Until(t); d > 0 {
				return min(d, maxHeaderWait)
			}
		} else {
			c.log.Warn("cannot parse the RateLimit-ResetTime header", "value", v, "error", err)
		}
	}
	if v := resp.Header.Get(headerRetryAfter); v != "" {
		if s, err := strconv.Atoi(strings.TrimSpace(v)); err == nil {
			if s > 0 {
				return min(time.Duration(s)*time.Second, maxHeaderWait)
			}
		} else {
			c.log.Warn("cannot parse the Retry-After header", "value", v, "error", err)
		}
	}
	return backoff(c.opts.MinBackoff, c.opts.MaxBackoff, attempt)
}

// backoff is min·2^(attempt-1) capped at max, jittered into its upper half
// but never below min.
func backoff(minD, maxD time.Duration, attempt int) time.Duration {
	d := minD
	for i := 1; i < attempt && d < maxD; i++ {
		d *= 2
	}
	d = min(d, maxD)
	half := d / 2
	j := half + time.Duration(rand.Int64N(int64(half)+1))
	return max(j, minD)
}

func sleepCtx(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

func drainClose(rc io.ReadCloser) {
	_, _ = io.Copy(io.Discard, io.LimitReader(rc, maxErrorBody))
	_ = rc.Close()
}

// do sends the call and reads the whole answer (success bodies up to
// maxJSONBody, error bodies up to maxErrorBody).
func (c *Client) do(ctx context.Context, r *apiRequest) (*apiResponse, error) {
	resp, meta, err := c.send(ctx, r)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	limit := int64(maxErrorBody)
	if resp.StatusCode >= 200 && resp.StatusCode < 300 {
		limit = maxJSONBody
	}
	body, err := io.ReadAll(io.LimitReader(resp.Body, limit+1))
	if err != nil {
		return nil, fmt.Errorf("%s %s: read %d answer: %w", r.method, meta.url, resp.StatusCode, err)
	}
	if int64(len(body)) > limit {
		if limit == maxJSONBody {
			return nil, fmt.Errorf("%s %s: answer larger than %d bytes", r.method, meta.url, limit)
		}
		body = body[:limit]
	}
	return &apiResponse{
		StatusCode: resp.StatusCode,
		Status:     resp.Status,
		Header:     resp.Header,
		Body:       body,
		Resp:       resp,
		sendMeta:   meta,
	}, nil
}

// isJSON tells whether the answer declares a JSON body.
func isJSON(h http.Header) bool {
	mt, _, err := mime.ParseMediaType(h.Get("Content-Type"))
	return err == nil && mt == "application/json"
}

// decodeJSON decodes a success answer, refusing a non-JSON Content-Type as
// GitLab Runner does.
func decodeJSON(resp *apiResponse, v any) error {
	if !isJSON(resp.Header) {
		return fmt.Errorf("%s %s: %s answer has Content-Type %q, expected application/json",
			resp.method, resp.url, resp.Status, resp.Header.Get("Content-Type"))
	}
	if err := json.Unmarshal(resp.Body, v); err != nil {
		return fmt.Errorf("%s %s: decode %s answer: %w", resp.method, resp.url, resp.Status, err)
	}
	return nil
}

// fail builds the error for an unexpected status and logs it as
// "METHOD URL: <code> <text> (<message>)" (secrets removed).
func (c *Client) fail(resp *apiResponse, secrets ...string) *StatusError {
	se := &StatusError{
		Method:     resp.method,
		URL:        resp.url,
		StatusCode: resp.StatusCode,
		Status:     resp.Status,
		Message:    redact(errorMessage(resp.Body), append(secrets, c.creds.Token)...),
		RequestID:  resp.requestID,
	}
	c.log.Warn(se.Error(), "request_id", se.RequestID)
	return se
}

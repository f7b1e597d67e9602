package gitlab

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strconv"
)

type jobRequestBody struct {
	Info       Info   `json:"info"`
	Token      string `json:"token"`
	SystemID   string `json:"system_id,omitempty"`
	LastUpdate string `json:"last_update,omitempty"`
}

// RequestJob calls POST jobs/request, echoing the last X-GitLab-Last-Update.
// GitLab holds the request open (long polling) until a job or its timeout;
// ctx and Options.JobRequestTimeout bound the wait.
func (c *Client) RequestJob(ctx context.Context, systemID string) RequestJobResult {
	res := RequestJobResult{Status: JobFailed, Healthy: true}
	parent := ctx
	ctx, cancel := context.WithTimeout(ctx, c.opts.JobRequestTimeout)
	defer cancel()
	src, err := jsonBody(jobRequestBody{Info: c.info, Token: c.creds.Token, SystemID: systemID, LastUpdate: c.LastUpdate()})
	if err != nil {
		res.Err = fmt.Errorf("request job: %w", err)
		return res
	}
	resp, err := c.do(ctx, &apiRequest{
		endpoint:    EndpointRequestJob,
		method:      http.MethodPost,
		path:        "jobs/request",
		authHeader:  headerRunnerToken,
		token:       c.creds.Token,
		contentType: "application/json",
		body:        src,
		acceptJSON:  true,
	})
	if err != nil {
		if parent.Err() == nil && errors.Is(ctx.Err(), context.DeadlineExceeded) {
			err = fmt.Errorf("no answer within %v (GitLab answers a long poll within 50 s): "+
				"check proxies or load balancers between the runner and GitLab: %w", c.opts.JobRequestTimeout, err)
		}
		res.Err = fmt.Errorf("request job: %w", err)
		// Asking again gets the same certificate: count it against the
		// runner's health (unhealthy_requests_limit) instead of polling on.
		res.Healthy = !IsCertificateError(err)
		return res
	}
	c.setLastUpdate(resp.Header.Get(headerLastUpdate))
	res.StatusCode, res.RequestID, res.PushedBack = resp.StatusCode, resp.requestID, resp.pushedBack
	switch resp.StatusCode {
	case http.StatusCreated:
		if err := checkJobPayload(resp); err != nil {
			res.Err = fmt.Errorf("request job: %w", err)
			c.log.Warn("job request answered 201 with an unusable body", "error", res.Err, "request_id", res.RequestID)
			return res
		}
		res.Status, res.Body = JobReceived, resp.Body
		res.TLSCAChain = caChainPEM(resp.Resp.TLS)
	case http.StatusNoContent:
		res.Status = NoJob
	case http.StatusForbidden:
		res.Status, res.Healthy = JobForbidden, false
		res.Err = fmt.Errorf("request job: %w: check the runner token", c.fail(resp))
	case http.StatusServiceUnavailable:
		res.Status = JobUnavailable
		res.Err = fmt.Errorf("request job: GitLab instance currently unavailable: %w", c.fail(resp))
	default:
		res.Err = fmt.Errorf("request job: %w", c.fail(resp))
	}
	return res
}

// checkJobPayload accepts a 201 only with a JSON object body; decoding is
// left to the job package.
func checkJobPayload(resp *apiResponse) error {
	if !isJSON(resp.Header) {
		return fmt.Errorf("%s %s: %s answer has Content-Type %q, expected application/json",
			resp.method, resp.url, resp.Status, resp.Header.Get("Content-Type"))
	}
	trimmed := bytes.TrimSpace(resp.Body)
	if len(trimmed) == 0 || trimmed[0] != '{' || !json.Valid(trimmed) {
		return fmt.Errorf("%s %s: %s answer is not a JSON object", resp.method, resp.url, resp.Status)
	}
	return nil
}

type updateOutput struct {
	Checksum string `json:"checksum,omitempty"`
	Bytesize int64  `json:"bytesize,omitempty"`
}

type updateBody struct {
	Info          Info          `json:"info"`
	Token         string        `json:"token"`
	State         JobState      `json:"state"`
	FailureReason FailureReason `json:"failure_reason,omitempty"`
	Checksum      string        `json:"checksum,omitempty"` // deprecated duplicate of output.checksum
	Output        updateOutput  `json:"output"`
	ExitCode      int           `json:"exit_code,omitempty"`
}

// ConfirmJob is the two-phase job commit: PUT jobs/:id with state running
// and an empty output, right after the job was received.
func (c *Client) ConfirmJob(ctx context.Context, jobID int64, jobToken string) UpdateResult {
	return c.UpdateJob(ctx, jobID, jobToken, UpdateJobRequest{State: StateRunning})
}

// UpdateJob calls PUT jobs/:id with the job token. The result follows
// GitLab Runner's order: Job-Status canceled/failed or 403 → abort, 200,
// 202, 412, 404 → abort, anything else → failed — except that a Job-Status
// equal to the state sent is GitLab confirming it, not ending the job.
func (c *Client) UpdateJob(ctx context.Context, jobID int64, jobToken string, req UpdateJobRequest) UpdateResult {
	res := UpdateResult{State: UpdateFailed}
	src, err := jsonBody(updateBody{
		Info:          c.info,
		Token:         jobToken,
		State:         req.State,
		FailureReason: req.FailureReason,
		Checksum:      req.Checksum,
		Output:        updateOutput{Checksum: req.Checksum, Bytesize: req.Bytesize},
		ExitCode:      req.ExitCode,
	})
	if err != nil {
		res.Err = fmt.Errorf("update job %d: %w", jobID, err)
		return res
	}
	resp, err := c.do(ctx, &apiRequest{
		endpoint:    EndpointUpdateJob,
		method:      http.MethodPut,
		path:        "jobs/" + strconv.FormatInt(jobID, 10),
		authHeader:  headerJobToken,
		token:       jobToken,
		contentType: "application/json",
		body:        src,
	})
	if err != nil {
		res.Err = fmt.Errorf("update job %d: %w", jobID, err)
		return res
	}
	res.StatusCode, res.PushedBack = resp.StatusCode, resp.pushedBack
	st := jobStatus(resp.Header)
	res.CancelRequested = st == "canceling"
	res.UpdateInterval = parseUpdateInterval(resp.Header.Get(headerUpdateInterval))
	switch {
	case abortStatus(st) && st != string(req.State):
		res.State = UpdateAbort
		res.Err = fmt.Errorf("update job %d: GitLab reports the job %s (Job-Status)", jobID, st)
	case resp.StatusCode == http.StatusForbidden:
		res.State = UpdateAbort
		res.Err = fmt.Errorf("update job %d: %w", jobID, c.fail(resp, jobToken))
	case resp.StatusCode == http.StatusOK:
		res.State = UpdateSucceeded
	case resp.StatusCode == http.StatusAccepted:
		res.State = UpdateAcceptedNotComplete
	case resp.StatusCode == http.StatusPreconditionFailed:
		res.State = UpdateTraceValidationFailed
	case resp.StatusCode == http.StatusNotFound:
		res.State = UpdateAbort
		res.Err = fmt.Errorf("update job %d: %w", jobID, c.fail(resp, jobToken))
	default:
		res.Err = fmt.Errorf("update job %d: %w", jobID, c.fail(resp, jobToken))
	}
	return res
}

// PatchTrace sends content as the trace bytes starting at offset. Empty
// content is not sent (success at offset). The result follows GitLab
// Runner's order: Job-Status canceled/failed or 403 → abort, 202, 404,
// 416 (resume from the server's Range), anything else → failed.
func (c *Client) PatchTrace(ctx context.Context, jobID int64, jobToken string, content []byte, offset int64, debugTrace bool) PatchResult {
	if len(content) == 0 {
		return PatchResult{State: PatchSucceeded, NewOffset: offset}
	}
	res := PatchResult{State: PatchFailed, NewOffset: offset}
	if offset < 0 {
		res.Err = fmt.Errorf("patch trace of job %d: negative offset %d", jobID, offset)
		return res
	}
	end := offset + int64(len(content)) - 1
	resp, err := c.do(ctx, &apiRequest{
		endpoint:    EndpointPatchTrace,
		method:      http.MethodPatch,
		path:        "jobs/" + strconv.FormatInt(jobID, 10) + "/trace",
		query:       url.Values{"debug_trace": {strconv.FormatBool(debugTrace)}},
		authHeader:  headerJobToken,
		token:       jobToken,
		contentType: "text/plain",
		body:        bytesBody(content),
		headers:     http.Header{"Content-Range": {fmt.Sprintf("%d-%d", offset, end)}},
	})
	if err != nil {
		res.Err = fmt.Errorf("patch trace of job %d: %w", jobID, err)
		return res
	}
	res.StatusCode, res.PushedBack = resp.StatusCode, resp.pushedBack
	st := jobStatus(resp.Header)
	res.CancelRequested = st == "canceling"
	res.UpdateInterval = parseUpdateInterval(resp.Header.Get(headerUpdateInterval))
	switch {
	case abortStatus(st):
		res.State = PatchAbort
		res.Err = fmt.Errorf("patch trace of job %d: GitLab reports the job %s (Job-Status)", jobID, st)
	case resp.StatusCode == http.StatusForbidden:
		res.State = PatchAbort
		res.Err = fmt.Errorf("patch trace of job %d: %w", jobID, c.fail(resp, jobToken))
	case resp.StatusCode == http.StatusAccepted:
		res.State, res.NewOffset = PatchSucceeded, end+1
	case resp.StatusCode == http.StatusNotFound:
		res.State = PatchNotFound
		res.Err = fmt.Errorf("patch trace of job %d: %w", jobID, c.fail(resp, jobToken))
	case resp.StatusCode == http.StatusRequestedRangeNotSatisfiable:
		res.State = PatchRangeMismatch
		res.NewOffset = parseRangeEnd(resp.Header.Get("Range"))
		c.log.Warn("trace range mismatch; resuming from the server's offset",
			"job", jobID, "sent_range", fmt.Sprintf("%d-%d", offset, end), "server_range", resp.Header.Get("Range"),
			"new_offset", res.NewOffset, "request_id", resp.requestID)
	default:
		res.Err = fmt.Errorf("patch trace of job %d: %w", jobID, c.fail(resp, jobToken))
	}
	return res
}

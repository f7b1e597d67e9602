package agent

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"crypto/tls"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"time"
)

// API limits and defaults.
const (
	// MaxLogChunk is the most bytes one GET /v1/log answers.
	MaxLogChunk = 1 << 20
	// DefaultLogWait is how long GET /v1/log waits for new bytes.
	DefaultLogWait = 10 * time.Second
	// MaxLogWait caps the wait parameter.
	MaxLogWait = 60 * time.Second
)

// Response headers of GET /v1/log.
const (
	HeaderLogSize  = "X-Log-Size"
	HeaderJobState = "X-Job-State"
)

// HoldParam, set on POST /v1/spec, puts the job on hold: the agent may
// fetch the sources but runs no script until POST /v1/start (or the spec
// again without it). The runner of a warm pod sends the spec while it
// still writes the pod's labels and adoption record, so the fetch
// overlaps those writes, and no code of the job runs before the job can
// be adopted.
const HoldParam = "hold"

// ErrUnauthorized is returned when the agent refused the token (401).
var ErrUnauthorized = errors.New("agent API: token refused (401)")

// RangeError is a 416 answer to Log: offset is past the log's end. A runner
// that gets it holds more than the agent has (a different pod, or a bug).
type RangeError struct {
	Offset, Size int64
}

func (e *RangeError) Error() string {
	return fmt.Sprintf("agent API: log offset %d is past the end of the log (%d bytes)", e.Offset, e.Size)
}

// HTTPError is any other unexpected answer.
type HTTPError struct {
	Method, Path string
	StatusCode   int
	Body         string // start of the body
}

func (e *HTTPError) Error() string {
	return fmt.Sprintf("agent API: %s %s: %d %s", e.Method, e.Path, e.StatusCode, e.Body)
}

// Client talks to one agent's API.
type Client struct {
	base  string
	token string
	hc    *http.Client
	// Wait is how long Log lets the agent hold the request while there is
	// nothing new: 0 means the agent's default (DefaultLogWait), negative
	// means answer at once. The http.Client's Timeout must be longer.
	Wait time.Duration
}

// NewClient returns a client of the agent at baseURL (e.g.
// "http://10.1.2.3:8765"). httpClient nil means http.DefaultClient.
func NewClient(baseURL, token string, httpClient *http.Client) *Client {
	if httpClient == nil {
		httpClient = http.DefaultClient
	}
	return &Client{base: strings.TrimSuffix(baseURL, "/"), token: token, hc: httpClient}
}

func (c *Client) do(ctx context.Context, method, path string, query url.Values) (*http.Response, error) {
	u := c.base + path
	if len(query) > 0 {
		u += "?" + query.Encode()
	}
	req, err := http.NewRequestWithContext(ctx, method, u, nil)
	if err != nil {
		return nil, fmt.Errorf("agent API: %s %s: %w", method, path, err)
	}
	req.Header.Set("Authorization", "Bearer "+c.token)
	resp, err := c.hc.Do(req)
	if err != nil {
		// The URL holds no secret; the error may be shown as is.
		return nil, fmt.Errorf("agent API: %w", err)
	}
	if resp.StatusCode == http.StatusUnauthorized {
		drain(resp)
		return nil, ErrUnauthorized
	}
	return resp, nil
}

func drain(resp *http.Response) {
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
	resp.Body.Close()
}

func httpError(method, path string, resp *http.Response) error {
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
	drain(resp)
	return &HTTPError{Method: method, Path: path, StatusCode: resp.StatusCode, Body: strings.TrimSpace(string(b))}
}

// Log returns the log bytes from offset (at most MaxLogChunk), the log's
// total size so far and the job's state (StateRunning or StateDone). While
// the job runs and there is nothing new, the agent holds the request up to
// c.Wait and data is empty. A 416 is a *RangeError.
func (c *Client) Log(ctx context.Context, offset int64) (data []byte, size int64, state string, err error) {
	q := url.Values{"offset": {strconv.FormatInt(offset, 10)}}
	switch {
	case c.Wait > 0:
		q.Set("wait", c.Wait.String())
	case c.Wait < 0:
		q.Set("wait", "0s")
	}
	resp, err := c.do(ctx, http.MethodGet, "/v1/log", q)
	if err != nil {
		return nil, 0, "", err
	}
	size, perr := strconv.ParseInt(resp.Header.Get(HeaderLogSize), 10, 64)
	state = resp.Header.Get(HeaderJobState)
	switch resp.StatusCode {
	case http.StatusOK:
	case http.StatusRequestedRangeNotSatisfiable:
		drain(resp)
		return nil, size, state, &RangeError{Offset: offset, Size: size}
	default:
		return nil, 0, "", httpError(http.MethodGet, "/v1/log", resp)
	}
	defer drain(resp)
	if perr != nil || size < 0 {
		return nil, 0, "", fmt.Errorf("agent API: GET /v1/log: bad %s header %q", HeaderLogSize, resp.Header.Get(HeaderLogSize))
	}
	if state != StateRunning && state != StateDone {
		return nil, 0, "", fmt.Errorf("agent API: GET /v1/log: bad %s header %q", HeaderJobState, state)
	}
	data, err = io.ReadAll(io.LimitReader(resp.Body, MaxLogChunk+1))
	if err != nil {
		return nil, 0, "", fmt.Errorf("agent API: GET /v1/log: read body: %w", err)
	}
	if int64(len(data)) > MaxLogChunk || offset+int64(len(data)) > size {
		return nil, 0, "", fmt.Errorf("agent API: GET /v1/log: %d bytes from offset %d do not fit a log of %d bytes", len(data), offset, size)
	}
	return data, size, state, nil
}

// Status returns the job's state and, once done, its result.
func (c *Client) Status(ctx context.Context) (*Status, error) {
	resp, err := c.do(ctx, http.MethodGet, "/v1/status", nil)
	if err != nil {
		return nil, err
	}
	if resp.StatusCode != http.StatusOK {
		return nil, httpError(http.MethodGet, "/v1/status", resp)
	}
	defer drain(resp)
	var st Status
	if err := json.NewDecoder(io.LimitReader(resp.Body, 1<<20)).Decode(&st); err != nil {
		return nil, fmt.Errorf("agent API: GET /v1/status: decode: %w", err)
	}
	if st.State != StateRunning && st.State != StateDone {
		return nil, fmt.Errorf("agent API: GET /v1/status: unknown state %q", st.State)
	}
	return &st, nil
}

// Cancel asks for a graceful cancel: the running script is stopped and
// after_script runs.
func (c *Client) Cancel(ctx context.Context) error { return c.post(ctx, "/v1/cancel") }

// Abort stops the job at once.
func (c *Client) Abort(ctx context.Context) error { return c.post(ctx, "/v1/abort") }

// Ack tells the agent the runner has the whole log and the result; the
// agent exits soon after.
func (c *Client) Ack(ctx context.Context) error { return c.post(ctx, "/v1/ack") }

func (c *Client) post(ctx context.Context, path string) error {
	resp, err := c.do(ctx, http.MethodPost, path, nil)
	if err != nil {
		return err
	}
	if resp.StatusCode/100 != 2 {
		return httpError(http.MethodPost, path, resp)
	}
	drain(resp)
	return nil
}

// SpecRefusedError is a 400 answer to PutSpec: the agent cannot run the
// spec (another build of podrunner, or an invalid spec); Msg says why.
type SpecRefusedError struct{ Msg string }

func (e *SpecRefusedError) Error() string { return "the agent refused the job spec: " + e.Msg }

// PutSpec hands the job's spec (JSON of Spec) to an agent that waits for
// it (Await). Sending it again is harmless (and starts a held job).
func (c *Client) PutSpec(ctx context.Context, spec []byte) error {
	return c.putSpec(ctx, spec, "/v1/spec")
}

// HoldSpec hands the spec over on hold: the agent may fetch the job's
// sources, but runs no script until Start (or PutSpec).
func (c *Client) HoldSpec(ctx context.Context, spec []byte) error {
	return c.putSpec(ctx, spec, "/v1/spec?"+HoldParam+"=1")
}

// Start lets a job handed over with HoldSpec run its scripts.
func (c *Client) Start(ctx context.Context) error { return c.post(ctx, "/v1/start") }

func (c *Client) putSpec(ctx context.Context, spec []byte, path string) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, c.base+path, bytes.NewReader(spec))
	if err != nil {
		return err
	}
	req.Header.Set("Authorization", "Bearer "+c.token)
	req.Header.Set("Content-Type", "application/json")
	resp, err := c.hc.Do(req)
	if err != nil {
		return fmt.Errorf("agent API: POST %s: %w", path, err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
	switch resp.StatusCode {
	case http.StatusNoContent, http.StatusOK:
		return nil
	case http.StatusUnauthorized:
		return ErrUnauthorized
	case http.StatusBadRequest:
		return &SpecRefusedError{Msg: strings.TrimSpace(string(body))}
	}
	return &HTTPError{Method: http.MethodPost, Path: path, StatusCode: resp.StatusCode, Body: strings.TrimSpace(string(body))}
}

// PinnedTLS is the client TLS configuration for an agent whose certificate
// has the SHA-256 fingerprint (the line Await prints). The pin replaces
// the chain check: the certificate is self-signed and made in the pod.
func PinnedTLS(fingerprint []byte) *tls.Config {
	want := slices.Clone(fingerprint)
	return &tls.Config{
		MinVersion:         tls.VersionTLS13,
		InsecureSkipVerify: true, // verified by VerifyConnection below
		VerifyConnection: func(cs tls.ConnectionState) error {
			if len(cs.PeerCertificates) == 0 {
				return errors.New("agent TLS: no certificate")
			}
			sum := sha256.Sum256(cs.PeerCertificates[0].Raw)
			if subtle.ConstantTimeCompare(sum[:], want) != 1 {
				return fmt.Errorf("agent TLS: certificate %x is not the one the agent printed (%x)", sum, want)
			}
			return nil
		},
	}
}

// ReadFingerprint reads the agent's output (its container log) until the
// line Await prints, and returns the fingerprint.
func ReadFingerprint(r io.Reader) ([]byte, error) {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 0, 4096), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		// Container logs may carry a timestamp before the line.
		_, hexFP, ok := strings.Cut(line, FingerprintPrefix)
		if !ok {
			continue
		}
		fp, err := hex.DecodeString(strings.TrimSpace(hexFP))
		if err != nil || len(fp) != sha256.Size {
			return nil, fmt.Errorf("agent fingerprint line %q is malformed", line)
		}
		return fp, nil
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("read the agent's output: %w", err)
	}
	return nil, errors.New("the agent's output ended without its TLS fingerprint line")
}

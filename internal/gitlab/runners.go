package gitlab

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"time"
)

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
	TokenExpiresAt time.Time // zero: never expires
}

// IsAuthenticationToken tells whether token is a glrt- runner
// authentication token (the modern flow: verify, not POST runners).
func IsAuthenticationToken(token string) bool { return strings.HasPrefix(token, "glrt-") }

type registerBody struct {
	Description     string `json:"description,omitempty"`
	MaintenanceNote string `json:"maintenance_note,omitempty"`
	TagList         string `json:"tag_list,omitempty"`
	RunUntagged     bool   `json:"run_untagged"`
	Locked          bool   `json:"locked"`
	AccessLevel     string `json:"access_level,omitempty"`
	MaximumTimeout  int    `json:"maximum_timeout,omitempty"`
	Paused          bool   `json:"paused"`
	Info            Info   `json:"info"`
	Token           string `json:"token"`
}

type tokenAnswer struct {
	ID             int64           `json:"id"`
	Token          string          `json:"token"`
	TokenExpiresAt json.RawMessage `json:"token_expires_at"`
}

func (a tokenAnswer) runnerToken() (*RunnerToken, error) {
	t := &RunnerToken{ID: a.ID, Token: a.Token}
	if len(a.TokenExpiresAt) == 0 || string(a.TokenExpiresAt) == "null" {
		return t, nil
	}
	var s string
	if err := json.Unmarshal(a.TokenExpiresAt, &s); err != nil {
		return nil, fmt.Errorf("token_expires_at is not a string: %w", err)
	}
	if s == "" {
		return t, nil
	}
	exp, err := time.Parse(time.RFC3339Nano, s)
	if err != nil {
		return nil, fmt.Errorf("token_expires_at %q is not an RFC 3339 time: %w", s, err)
	}
	if !exp.IsZero() {
		t.TokenExpiresAt = exp.UTC()
	}
	return t, nil
}

func (c *Client) runnerCall(ctx context.Context, endpoint, method, path string, body any, acceptJSON bool) (*apiResponse, error) {
	src, err := jsonBody(body)
	if err != nil {
		return nil, err
	}
	return c.do(ctx, &apiRequest{
		endpoint:    endpoint,
		method:      method,
		path:        path,
		authHeader:  headerRunnerToken,
		token:       c.creds.Token,
		contentType: "application/json",
		body:        src,
		acceptJSON:  acceptJSON,
	})
}

// Register calls POST runners with the client's token as registration
// token. A 403 returns an error wrapping ErrForbidden.
func (c *Client) Register(ctx context.Context, req RegisterRequest) (*RunnerToken, error) {
	body := registerBody{
		Description:     req.Description,
		MaintenanceNote: req.MaintenanceNote,
		TagList:         strings.Join(req.Tags, ","),
		RunUntagged:     req.RunUntagged,
		Locked:          req.Locked,
		AccessLevel:     req.AccessLevel,
		MaximumTimeout:  req.MaximumTimeout,
		Paused:          req.Paused,
		Info:            c.info,
		Token:           c.creds.Token,
	}
	resp, err := c.runnerCall(ctx, EndpointRegister, http.MethodPost, "runners", body, true)
	if err != nil {
		return nil, fmt.Errorf("register runner: %w", err)
	}
	switch resp.StatusCode {
	case http.StatusCreated:
		var a tokenAnswer
		if err := decodeJSON(resp, &a); err != nil {
			return nil, fmt.Errorf("register runner: %w", err)
		}
		t, err := a.runnerToken()
		if err != nil {
			return nil, fmt.Errorf("register runner: %s %s: %w", resp.method, resp.url, err)
		}
		if t.Token == "" {
			return nil, fmt.Errorf("register runner: %s %s: answer has no token", resp.method, resp.url)
		}
		return t, nil
	case http.StatusForbidden:
		return nil, fmt.Errorf("register runner: %w: check the registration token", c.fail(resp))
	default:
		return nil, fmt.Errorf("register runner: %w", c.fail(resp))
	}
}

type verifyBody struct {
	Info     Info   `json:"info"`
	Token    string `json:"token"`
	SystemID string `json:"system_id,omitempty"`
}

// Verify calls POST runners/verify. A 403 returns an error wrapping
// ErrForbidden (the runner was removed); other failures are plain errors.
// Old servers answer 200 without JSON: that is success, with ID 0 and the
// client's own token.
func (c *Client) Verify(ctx context.Context, systemID string) (*RunnerToken, error) {
	body := verifyBody{Info: c.info, Token: c.creds.Token, SystemID: systemID}
	resp, err := c.runnerCall(ctx, EndpointVerify, http.MethodPost, "runners/verify", body, true)
	if err != nil {
		return nil, fmt.Errorf("verify runner: %w", err)
	}
	switch resp.StatusCode {
	case http.StatusOK:
		if !isJSON(resp.Header) {
			// Legacy GitLab: alive, but no id/token details.
			return &RunnerToken{Token: c.creds.Token}, nil
		}
		var a tokenAnswer
		if err := decodeJSON(resp, &a); err != nil {
			return nil, fmt.Errorf("verify runner: %w", err)
		}
		t, err := a.runnerToken()
		if err != nil {
			return nil, fmt.Errorf("verify runner: %s %s: %w", resp.method, resp.url, err)
		}
		if t.Token == "" {
			t.Token = c.creds.Token
		}
		return t, nil
	case http.StatusForbidden:
		return nil, fmt.Errorf("verify runner: %w: the token is invalid or the runner was removed", c.fail(resp))
	default:
		return nil, fmt.Errorf("verify runner: %w", c.fail(resp))
	}
}

type unregisterBody struct {
	Token    string `json:"token"`
	SystemID string `json:"system_id,omitempty"`
}

// Unregister deletes the runner (DELETE runners) for legacy tokens, or only
// this runner manager (DELETE runners/managers) for glrt- tokens.
func (c *Client) Unregister(ctx context.Context, systemID string) error {
	path, body := "runners", unregisterBody{Token: c.creds.Token}
	if IsAuthenticationToken(c.creds.Token) {
		path, body.SystemID = "runners/managers", systemID
	}
	resp, err := c.runnerCall(ctx, EndpointUnregister, http.MethodDelete, path, body, false)
	if err != nil {
		return fmt.Errorf("unregister runner: %w", err)
	}
	switch resp.StatusCode {
	case http.StatusNoContent:
		return nil
	case http.StatusForbidden:
		return fmt.Errorf("unregister runner: %w: check the runner token", c.fail(resp))
	default:
		return fmt.Errorf("unregister runner: %w", c.fail(resp))
	}
}

// ResetToken calls POST runners/reset_authentication_token with the
// client's own token. The Client keeps using its old token: build a new
// Client with the returned one.
func (c *Client) ResetToken(ctx context.Context) (*RunnerToken, error) {
	resp, err := c.runnerCall(ctx, EndpointResetToken, http.MethodPost, "runners/reset_authentication_token",
		struct {
			Token string `json:"token"`
		}{c.creds.Token}, true)
	if err != nil {
		return nil, fmt.Errorf("reset runner token: %w", err)
	}
	return c.resetAnswer(resp, 0)
}

// ResetTokenWithPAT calls POST runners/<id>/reset_authentication_token
// authenticated by a personal access token (PRIVATE-TOKEN, no body).
func (c *Client) ResetTokenWithPAT(ctx context.Context, runnerID int64, pat string) (*RunnerToken, error) {
	resp, err := c.do(ctx, &apiRequest{
		endpoint:   EndpointResetToken,
		method:     http.MethodPost,
		path:       "runners/" + strconv.FormatInt(runnerID, 10) + "/reset_authentication_token",
		authHeader: headerPrivateToken,
		token:      pat,
		acceptJSON: true,
	})
	if err != nil {
		return nil, fmt.Errorf("reset runner token: %w", err)
	}
	return c.resetAnswer(resp, runnerID, pat)
}

func (c *Client) resetAnswer(resp *apiResponse, id int64, secrets ...string) (*RunnerToken, error) {
	switch resp.StatusCode {
	case http.StatusCreated:
		var a tokenAnswer
		if err := decodeJSON(resp, &a); err != nil {
			return nil, fmt.Errorf("reset runner token: %w", err)
		}
		t, err := a.runnerToken()
		if err != nil {
			return nil, fmt.Errorf("reset runner token: %s %s: %w", resp.method, resp.url, err)
		}
		if t.Token == "" {
			return nil, fmt.Errorf("reset runner token: %s %s: answer has no token", resp.method, resp.url)
		}
		if t.ID == 0 {
			t.ID = id
		}
		return t, nil
	case http.StatusForbidden:
		return nil, fmt.Errorf("reset runner token: %w: check the token", c.fail(resp, secrets...))
	default:
		return nil, fmt.Errorf("reset runner token: %w", c.fail(resp, secrets...))
	}
}

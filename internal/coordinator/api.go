package coordinator

import (
	"encoding/json"
	"io"
	"net/http"
	"strconv"
	"strings"
	"time"
)

// maxJSONBody bounds API request bodies (GitLab's is larger, but runner
// requests are small).
const maxJSONBody = 10 << 20

func (s *Server) routes() http.Handler {
	mux := http.NewServeMux()
	api := func(pattern, endpoint string, h http.HandlerFunc) {
		mux.HandleFunc(pattern, s.record(endpoint, h))
	}
	api("POST /api/v4/runners", EndpointRegister, s.handleRegister)
	api("DELETE /api/v4/runners", EndpointUnregister, s.handleUnregister)
	api("POST /api/v4/runners/verify", EndpointVerify, s.handleVerify)
	api("DELETE /api/v4/runners/managers", EndpointUnregisterManager, s.handleUnregisterManager)
	api("POST /api/v4/runners/reset_authentication_token", EndpointResetToken, s.handleResetToken)
	api("POST /api/v4/jobs/request", EndpointRequestJob, s.handleRequestJob)
	api("PUT /api/v4/jobs/{id}", EndpointUpdateJob, s.handleUpdateJob)
	api("PATCH /api/v4/jobs/{id}/trace", EndpointPatchTrace, s.handlePatchTrace)
	api("POST /api/v4/jobs/{id}/artifacts", EndpointUploadArtifacts, s.handleUploadArtifacts)
	api("GET /api/v4/jobs/{id}/artifacts", EndpointDownloadArtifacts, s.handleDownloadArtifacts)
	mux.HandleFunc("/api/", s.record(EndpointOther, func(w http.ResponseWriter, r *http.Request) {
		writeMessage(w, http.StatusNotFound, "404 Not Found")
	}))
	mux.HandleFunc("/", s.record(EndpointGit, s.handleGit))
	return mux
}

// runnerRequest is the common body of the runner endpoints.
type runnerRequest struct {
	Token       string          `json:"token"`
	SystemID    string          `json:"system_id"`
	Info        json.RawMessage `json:"info"`
	LastUpdate  string          `json:"last_update"`
	Description string          `json:"description"`
	TagList     string          `json:"tag_list"`
	RunUntagged *bool           `json:"run_untagged"`
	Locked      *bool           `json:"locked"`
	Paused      bool            `json:"paused"`
	MaxTimeout  int             `json:"maximum_timeout"`
	AccessLevel string          `json:"access_level"`
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	_ = json.NewEncoder(w).Encode(v)
}

// writeMessage answers like Grape: {"message": "..."}.
func writeMessage(w http.ResponseWriter, code int, msg string) {
	writeJSON(w, code, map[string]string{"message": msg})
}

func forbidden(w http.ResponseWriter, why string) {
	msg := "403 Forbidden"
	if why != "" {
		msg += " - " + why
	}
	writeMessage(w, http.StatusForbidden, msg)
}

// decodeJSON reads a JSON body (Grape also accepts form bodies; runners
// send JSON). A broken body is a 400 as in Grape.
func decodeJSON(w http.ResponseWriter, r *http.Request, v any) bool {
	data, err := io.ReadAll(io.LimitReader(r.Body, maxJSONBody))
	if err != nil {
		writeJSON(w, http.StatusBadRequest, map[string]string{"error": "could not read body"})
		return false
	}
	if len(strings.TrimSpace(string(data))) == 0 {
		return true
	}
	if err := json.Unmarshal(data, v); err != nil {
		writeJSON(w, http.StatusBadRequest, map[string]string{"error": "body is not valid JSON: " + err.Error()})
		return false
	}
	return true
}

// runnerToken takes the token from the body, else the RUNNER-TOKEN header
// (GitLab ≥ 17.11 accepts both; older runners used PRIVATE-TOKEN).
func runnerToken(r *http.Request, body string) string {
	if body != "" {
		return body
	}
	if t := r.Header.Get("Runner-Token"); t != "" {
		return t
	}
	return r.Header.Get("Private-Token")
}

func tokenMissing(w http.ResponseWriter) {
	writeJSON(w, http.StatusBadRequest, map[string]string{"error": "token is missing"})
}

func tokenExpiry(t time.Time) any {
	if t.IsZero() {
		return nil
	}
	return t.UTC().Format(time.RFC3339)
}

func (s *Server) handleRegister(w http.ResponseWriter, r *http.Request) {
	var req runnerRequest
	if !decodeJSON(w, r, &req) {
		return
	}
	tok := runnerToken(r, req.Token)
	if tok == "" {
		tokenMissing(w)
		return
	}
	if tok != s.opts.RegistrationToken {
		forbidden(w, "")
		return
	}
	switch req.AccessLevel {
	case "", "not_protected", "ref_protected":
	default:
		writeJSON(w, http.StatusBadRequest, map[string]string{"error": "access_level does not have a valid value"})
		return
	}
	o := RunnerOptions{Description: req.Description, Paused: req.Paused, MaximumTimeout: req.MaxTimeout, RunUntagged: true, Locked: true}
	if req.RunUntagged != nil {
		o.RunUntagged = *req.RunUntagged
	}
	if req.Locked != nil {
		o.Locked = *req.Locked
	}
	for _, t := range strings.Split(req.TagList, ",") {
		if t = strings.TrimSpace(t); t != "" {
			o.Tags = append(o.Tags, t)
		}
	}
	if len(o.Tags) == 0 && !o.RunUntagged {
		writeMessage(w, http.StatusBadRequest, "400 Bad request - Tags list can not be empty when runner is not allowed to pick untagged jobs")
		return
	}
	s.mu.Lock()
	rn := s.addRunnerLocked(o, false)
	id, token, exp := rn.id, rn.token, rn.expiresAt
	s.mu.Unlock()
	writeJSON(w, http.StatusCreated, map[string]any{"id": id, "token": token, "token_expires_at": tokenExpiry(exp)})
}

func (s *Server) handleVerify(w http.ResponseWriter, r *http.Request) {
	var req runnerRequest
	if !decodeJSON(w, r, &req) {
		return
	}
	tok := runnerToken(r, req.Token)
	if tok == "" {
		tokenMissing(w)
		return
	}
	s.mu.Lock()
	rn := s.runnerByToken(tok)
	if rn == nil {
		s.mu.Unlock()
		forbidden(w, "")
		return
	}
	s.touchManagerLocked(rn, req.SystemID, req.Info)
	id, token, exp := rn.id, rn.token, rn.expiresAt
	s.mu.Unlock()
	writeJSON(w, http.StatusOK, map[string]any{"id": id, "token": token, "token_expires_at": tokenExpiry(exp)})
}

// touchManagerLocked creates or updates the runner manager of system_id,
// storing the info it reported (GitLab reads runtime features from it).
func (s *Server) touchManagerLocked(rn *runner, systemID string, info json.RawMessage) *manager {
	if systemID == "" {
		systemID = "s_legacy"
	}
	m := rn.managers[systemID]
	if m == nil {
		m = &manager{systemID: systemID, features: map[string]bool{}}
		rn.managers[systemID] = m
	}
	m.contacted = time.Now()
	if len(info) > 0 && string(info) != "null" {
		m.info = append(json.RawMessage(nil), info...)
		var parsed struct {
			Features map[string]bool `json:"features"`
		}
		if json.Unmarshal(info, &parsed) == nil && parsed.Features != nil {
			m.features = parsed.Features
		}
	}
	return m
}

func (s *Server) handleUnregister(w http.ResponseWriter, r *http.Request) {
	var req runnerRequest
	if !decodeJSON(w, r, &req) {
		return
	}
	tok := runnerToken(r, req.Token)
	if tok == "" {
		tokenMissing(w)
		return
	}
	s.mu.Lock()
	rn := s.runnerByToken(tok)
	if rn != nil {
		delete(s.runners, rn.id)
	}
	s.mu.Unlock()
	if rn == nil {
		forbidden(w, "")
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

func (s *Server) handleUnregisterManager(w http.ResponseWriter, r *http.Request) {
	var req runnerRequest
	if !decodeJSON(w, r, &req) {
		return
	}
	tok := runnerToken(r, req.Token)
	if tok == "" {
		tokenMissing(w)
		return
	}
	if req.SystemID == "" {
		writeJSON(w, http.StatusBadRequest, map[string]string{"error": "system_id is missing"})
		return
	}
	s.mu.Lock()
	rn := s.runnerByToken(tok)
	found := rn != nil && rn.managers[req.SystemID] != nil
	if found {
		delete(rn.managers, req.SystemID)
	}
	s.mu.Unlock()
	if rn == nil {
		forbidden(w, "")
		return
	}
	if !found {
		writeMessage(w, http.StatusNotFound, "404 Runner manager Not Found")
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

func (s *Server) handleResetToken(w http.ResponseWriter, r *http.Request) {
	var req runnerRequest
	if !decodeJSON(w, r, &req) {
		return
	}
	tok := req.Token
	if tok == "" {
		tokenMissing(w)
		return
	}
	s.mu.Lock()
	rn := s.runnerByToken(tok)
	if rn == nil {
		s.mu.Unlock()
		forbidden(w, "")
		return
	}
	if rn.createdUI {
		rn.token = "glrt-" + randHex(10)
	} else {
		rn.token = randHex(10)
	}
	if !rn.expiresAt.IsZero() {
		rn.expiresAt = time.Now().Add(30 * 24 * time.Hour)
	}
	token, exp := rn.token, rn.expiresAt
	s.mu.Unlock()
	writeJSON(w, http.StatusCreated, map[string]any{"token": token, "token_expires_at": tokenExpiry(exp)})
}

// pathID reads {id}; GitLab answers 404 for a non-numeric id.
func pathID(w http.ResponseWriter, r *http.Request) (int64, bool) {
	id, err := strconv.ParseInt(r.PathValue("id"), 10, 64)
	if err != nil || id <= 0 {
		writeMessage(w, http.StatusNotFound, "404 Not Found")
		return 0, false
	}
	return id, true
}

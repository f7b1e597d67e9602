package coordinator

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/podrunner/podrunner/internal/gitlab"
)

// handleRequestJob is POST jobs/request: Workhorse's long poll in front of
// Rails' RegisterJobService.
func (s *Server) handleRequestJob(w http.ResponseWriter, r *http.Request) {
	var req runnerRequest
	if !decodeJSON(w, r, &req) {
		return
	}
	tok := runnerToken(r, req.Token)
	if tok == "" {
		tokenMissing(w)
		return
	}
	var timeout <-chan time.Time
	for {
		s.mu.Lock()
		rn := s.runnerByToken(tok)
		if rn == nil {
			s.mu.Unlock()
			forbidden(w, "")
			return
		}
		mgr := s.touchManagerLocked(rn, req.SystemID, req.Info)
		if req.LastUpdate == "" || req.LastUpdate != rn.queue || s.opts.LongPollTimeout < 0 {
			s.assignLocked(w, rn, mgr)
			return // assignLocked unlocked
		}
		// last_update is current: hold the request (Workhorse).
		changed := s.changed
		s.held++
		s.mu.Unlock()
		held := true
		unhold := func() {
			if held {
				s.mu.Lock()
				s.held--
				s.mu.Unlock()
				held = false
			}
		}
		if timeout == nil {
			timeout = time.After(s.opts.LongPollTimeout)
		}
		select {
		case <-changed:
			unhold()
			s.mu.Lock()
			stillCurrent := rn.queue == req.LastUpdate
			s.mu.Unlock()
			if stillCurrent {
				continue // another runner's queue changed
			}
			if s.opts.WorkhorseSeenChange {
				w.WriteHeader(http.StatusNoContent)
				return
			}
			req.LastUpdate = "" // answer like Rails would to the next request
		case <-timeout:
			unhold()
			w.Header().Set("X-GitLab-Last-Update", req.LastUpdate)
			w.WriteHeader(http.StatusNoContent)
			return
		case <-r.Context().Done():
			unhold()
			return
		case <-s.done:
			unhold()
			w.WriteHeader(http.StatusNoContent)
			return
		}
	}
}

// assignLocked is RegisterJobService: give the oldest pending job the
// runner may take, or 204 with the queue version. It unlocks s.mu.
func (s *Server) assignLocked(w http.ResponseWriter, rn *runner, mgr *manager) {
	version := rn.queue
	var pick *jobState
	if !rn.paused {
		for _, id := range s.sortedJobIDsLocked() {
			j := s.jobs[id]
			if j.status == StatusPending && j.runner == nil && s.canPick(rn, j) {
				if !s.validDependenciesLocked(j) {
					// RegisterJobService drops it instead of handing it out.
					s.finishLocked(j, StatusFailed, gitlab.MissingDependencyFailure, 0)
					continue
				}
				pick = j
				break
			}
		}
	}
	if pick == nil {
		s.mu.Unlock()
		w.Header().Set("X-GitLab-Last-Update", version)
		w.WriteHeader(http.StatusNoContent)
		return
	}
	pick.runner, pick.manager = rn, mgr
	pick.payload = s.buildPayloadLocked(pick, rn)
	if mgr.features["two_phase_job_commit"] {
		pick.waitAck = true // stays pending until PUT state=running
	} else {
		s.startJobLocked(pick)
	}
	body, err := json.Marshal(pick.payload)
	if err == nil {
		body = s.faults.mangle(body)
	}
	s.mu.Unlock()
	if err != nil {
		writeMessage(w, http.StatusInternalServerError, "500 Internal Server Error")
		return
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(http.StatusCreated)
	_, _ = w.Write(body)
}

func (s *Server) sortedJobIDsLocked() []int64 {
	ids := make([]int64, 0, len(s.jobs))
	for id := range s.jobs {
		ids = append(ids, id)
	}
	slices.Sort(ids)
	return ids
}

func (s *Server) startJobLocked(j *jobState) {
	j.status = StatusRunning
	j.waitAck = false
	j.startedAt = time.Now()
	j.touched = j.startedAt
	s.updatePipelineStatusLocked(j.pipeline)
	if j.cancelAfterSet {
		j.cancelAfterSet = false
		id, graceful := j.id, j.cancelGraceful
		s.afterFuncLocked(j.cancelAfter, func() { _ = s.Cancel(id, graceful) })
	}
}

// jobToken is the JOB-TOKEN header, else the token body/query parameter.
func jobToken(r *http.Request, body string) string {
	if t := r.Header.Get("Job-Token"); t != "" {
		return t
	}
	if body != "" {
		return body
	}
	return r.URL.Query().Get("token")
}

// authJobLocked is GitLab's authenticate_job!: 403 for an unknown job or
// a wrong token; 403 with Job-Status when the job is not processing on a
// runner (unless running is not required).
func (s *Server) authJobLocked(w http.ResponseWriter, id int64, tok string, requireRunning bool) *jobState {
	j := s.jobs[id]
	if j == nil {
		forbidden(w, "Job not found")
		return nil
	}
	if tok == "" || tok != j.token {
		forbidden(w, "Invalid job token")
		return nil
	}
	if requireRunning && !j.processingOnRunner() {
		w.Header().Set("Job-Status", j.status)
		forbidden(w, "Job is not processing on runner")
		return nil
	}
	return j
}

type updateRequest struct {
	Token         string               `json:"token"`
	State         string               `json:"state"`
	FailureReason gitlab.FailureReason `json:"failure_reason"`
	ExitCode      *int                 `json:"exit_code"`
	Checksum      string               `json:"checksum"`
	Output        struct {
		Checksum string `json:"checksum"`
		Bytesize *int64 `json:"bytesize"`
	} `json:"output"`
	Info json.RawMessage `json:"info"`
}

func (s *Server) handleUpdateJob(w http.ResponseWriter, r *http.Request) {
	id, ok := pathID(w, r)
	if !ok {
		return
	}
	var req updateRequest
	if !decodeJSON(w, r, &req) {
		return
	}
	tok := jobToken(r, req.Token)
	if tok == "" {
		tokenMissing(w)
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	j := s.jobs[id]
	if j != nil && j.waitAck && tok == j.token {
		s.ackLocked(w, j, req)
		return
	}
	j = s.authJobLocked(w, id, tok, true)
	if j == nil {
		return
	}
	j.touched = time.Now()
	switch req.State {
	case "running":
		s.answerUpdate(w, j, http.StatusOK)
	case "success", "failed":
		checksum := req.Output.Checksum
		if checksum == "" {
			checksum = req.Checksum
		}
		if s.faults.take(&s.faults.f412) || !s.traceMatches(j, checksum, req.Output.Bytesize) {
			s.answerUpdate(w, j, http.StatusPreconditionFailed)
			return
		}
		if s.faults.take(&s.faults.f202) {
			w.Header().Set("X-GitLab-Trace-Update-Interval", strconv.Itoa(int(s.opts.AcceptBackoff.Seconds())))
			s.answerUpdate(w, j, http.StatusAccepted)
			return
		}
		j.checksum = checksum
		if req.Output.Bytesize != nil {
			j.bytesize = *req.Output.Bytesize
		}
		switch {
		case j.status == StatusCanceling:
			s.finishLocked(j, StatusCanceled, "", 0)
		case req.State == "success":
			s.finishLocked(j, StatusSuccess, "", 0)
		default:
			code := 0
			if req.ExitCode != nil {
				code = *req.ExitCode
			}
			s.finishLocked(j, StatusFailed, knownReason(req.FailureReason), code)
		}
		s.answerUpdate(w, j, http.StatusOK)
	default:
		writeJSON(w, http.StatusBadRequest, map[string]string{"error": "state does not have a valid value"})
	}
}

// ackLocked is the two-phase commit: the job was handed out and waits for
// the runner's PUT state=running.
func (s *Server) ackLocked(w http.ResponseWriter, j *jobState, req updateRequest) {
	switch req.State {
	case "pending":
		j.touched = time.Now()
		s.answerUpdate(w, j, http.StatusOK)
	case "running":
		s.startJobLocked(j)
		s.answerUpdate(w, j, http.StatusOK)
	default:
		s.answerUpdate(w, j, http.StatusBadRequest)
	}
}

func (s *Server) answerUpdate(w http.ResponseWriter, j *jobState, code int) {
	w.Header().Set("Job-Status", j.status)
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	fmt.Fprintf(w, "%d", code)
}

// traceMatches checks the final update's checksum and bytesize against
// the trace received. Unlike GitLab, which only logs a mismatch, this
// answers 412 so the runner's trace reset path is exercised.
func (s *Server) traceMatches(j *jobState, checksum string, size *int64) bool {
	if checksum != "" && !strings.EqualFold(checksum, crcString(j.raw)) {
		return false
	}
	if size != nil && *size != int64(len(j.raw)) {
		return false
	}
	return true
}

func knownReason(r gitlab.FailureReason) gitlab.FailureReason {
	if r == "" {
		return ""
	}
	if slices.Contains(failureReasons, r) {
		return r
	}
	return gitlab.UnknownFailure
}

func (s *Server) handlePatchTrace(w http.ResponseWriter, r *http.Request) {
	id, ok := pathID(w, r)
	if !ok {
		return
	}
	tok := jobToken(r, "")
	s.mu.Lock()
	j := s.authJobLocked(w, id, tok, true)
	if j == nil {
		s.mu.Unlock()
		return
	}
	rng := r.Header.Get("Content-Range")
	if rng == "" {
		s.mu.Unlock()
		writeMessage(w, http.StatusBadRequest, "400 Missing header Content-Range")
		return
	}
	s.mu.Unlock()

	// Read the body outside the lock; a slow client must not stall others.
	data, err := io.ReadAll(io.LimitReader(r.Body, s.opts.MaxTraceSize+1))
	if err != nil {
		writeMessage(w, http.StatusBadRequest, "400 Bad Request")
		return
	}

	s.mu.Lock()
	defer s.mu.Unlock()
	if !j.processingOnRunner() { // canceled meanwhile
		w.Header().Set("Job-Status", j.status)
		forbidden(w, "Job is not processing on runner")
		return
	}
	start := rubyToI(strings.SplitN(rng, "-", 2)[0])
	size := len(j.raw)
	if s.faults.take(&s.faults.f416) || start != int64(size) {
		w.Header().Set("Range", fmt.Sprintf("0-%d", size))
		writeMessage(w, http.StatusRequestedRangeNotSatisfiable, "416 Range Not Satisfiable")
		return
	}
	if int64(size+len(data)) > s.opts.MaxTraceSize {
		s.finishLocked(j, StatusFailed, "trace_size_exceeded", 0)
		forbidden(w, "Unable to access job trace")
		return
	}
	j.raw = append(j.raw, data...)
	j.masked = append(j.masked, data...)
	hideToken(j.masked, j.token)
	j.touched = time.Now()
	if j.cancelAfterBytes > 0 && int64(len(j.raw)) >= j.cancelAfterBytes {
		j.cancelAfterBytes = 0
		s.cancelLocked(j, j.cancelGraceful)
	}
	w.Header().Set("Job-Status", j.status)
	w.Header().Set("Range", fmt.Sprintf("0-%d", len(j.raw)))
	w.Header().Set("X-GitLab-Trace-Update-Interval", strconv.Itoa(int(s.opts.TraceUpdateInterval.Seconds())))
	w.WriteHeader(http.StatusAccepted)
}

// rubyToI reads leading digits like Ruby's String#to_i (garbage → 0).
func rubyToI(s string) int64 {
	s = strings.TrimSpace(s)
	end := 0
	for end < len(s) && s[end] >= '0' && s[end] <= '9' {
		end++
	}
	n, _ := strconv.ParseInt(s[:end], 10, 64)
	return n
}

// hideToken replaces the job token with x of the same length, as GitLab's
// Ci::Build#hide_secrets does before storing the log. Offsets stay valid.
func hideToken(b []byte, tok string) {
	if tok == "" {
		return
	}
	t := []byte(tok)
	for i := 0; ; {
		k := bytes.Index(b[i:], t)
		if k < 0 {
			return
		}
		for n := range t {
			b[i+k+n] = 'x'
		}
		i += k + len(t)
	}
}

// Cancel cancels a job as the UI does. A graceful cancel of a job whose
// runner manager reported cancel_gracefully moves it to canceling (the
// runner runs after_script, then its final update ends it canceled);
// otherwise, and for hard cancels, the job is canceled at once.
func (s *Server) Cancel(id int64, graceful bool) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	j := s.jobs[id]
	if j == nil {
		return fmt.Errorf("job %d not found", id)
	}
	if j.finished() {
		return fmt.Errorf("job %d already %s", id, j.status)
	}
	s.cancelLocked(j, graceful)
	return nil
}

func (s *Server) cancelLocked(j *jobState, graceful bool) {
	switch {
	case j.finished():
	case graceful && j.status == StatusRunning && j.manager != nil && j.manager.features["cancel_gracefully"]:
		j.status = StatusCanceling
	default:
		s.finishLocked(j, StatusCanceled, "", 0)
	}
}

// failureReasons is the failure_reason enum GitLab accepts and sends in
// features.failure_reasons; image_pull_failure too, as the reference
// payload (gitlab-runner-behaviour.md) shows it.
var failureReasons = append(slices.Clip(gitlab.KnownFailureReasons), gitlab.ImagePullFailure)

// tokenMaskPrefixes are the token prefixes GitLab asks runners to mask.
var tokenMaskPrefixes = []string{
	"glpat-", "gloas-", "gldt-", "glrt-", "glcbt-", "glptt-", "glft-", "glimt-",
	"glagent-", "glsoat-", "glffct-", "glrtr-",
}

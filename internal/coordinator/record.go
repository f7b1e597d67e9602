package coordinator

import (
	"bytes"
	"fmt"
	"io"
	"net/http"
	"slices"
	"time"
)

// Endpoint names, used by the recorder and fault injection.
const (
	EndpointRegister          = "register"
	EndpointVerify            = "verify"
	EndpointUnregister        = "unregister"
	EndpointUnregisterManager = "unregister_manager"
	EndpointResetToken        = "reset_token"
	EndpointRequestJob        = "request_job"
	EndpointUpdateJob         = "update_job"
	EndpointPatchTrace        = "patch_trace"
	EndpointUploadArtifacts   = "upload_artifacts"
	EndpointDownloadArtifacts = "download_artifacts"
	EndpointGit               = "git"
	EndpointOther             = "other"
)

// bodyPrefixLen is how much of each request body the recorder keeps.
const bodyPrefixLen = 4096

// Request is one recorded HTTP request. Header keeps the tokens
// (RUNNER-TOKEN, JOB-TOKEN, Authorization) so tests can assert on them:
// print a Request with String, which redacts them.
type Request struct {
	Time       time.Time
	Endpoint   string
	Method     string
	Path       string
	Query      string
	Header     http.Header
	BodySize   int64
	BodyPrefix []byte
	Status     int
	// RespHeader holds the response headers (no secrets are sent back).
	RespHeader http.Header
	// Faulted is true when fault injection answered the request.
	Faulted  bool
	Duration time.Duration
}

var secretHeaders = []string{"Runner-Token", "Job-Token", "Private-Token", "Authorization"}

// RedactedHeader is Header with token values replaced by [REDACTED].
func (r Request) RedactedHeader() http.Header {
	h := r.Header.Clone()
	for _, k := range secretHeaders {
		if h.Get(k) != "" {
			h.Set(k, "[REDACTED]")
		}
	}
	return h
}

// String prints the request without secrets.
func (r Request) String() string {
	f := ""
	if r.Faulted {
		f = " (fault)"
	}
	q := ""
	if r.Query != "" {
		q = "?" + r.Query
	}
	return fmt.Sprintf("%s %s%s -> %d%s (%d bytes)", r.Method, r.Path, q, r.Status, f, r.BodySize)
}

// Requests returns every request recorded so far, in completion order.
func (s *Server) Requests() []Request {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.recs)
}

// RequestsTo returns the recorded requests of one endpoint.
func (s *Server) RequestsTo(endpoint string) []Request {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []Request
	for _, r := range s.recs {
		if r.Endpoint == endpoint {
			out = append(out, r)
		}
	}
	return out
}

// ResetRequests forgets the recorded requests.
func (s *Server) ResetRequests() {
	s.mu.Lock()
	s.recs = nil
	s.mu.Unlock()
}

type countingBody struct {
	io.ReadCloser
	n      int64
	prefix bytes.Buffer
}

func (c *countingBody) Read(p []byte) (int, error) {
	n, err := c.ReadCloser.Read(p)
	c.n += int64(n)
	if room := bodyPrefixLen - c.prefix.Len(); room > 0 {
		c.prefix.Write(p[:min(n, room)])
	}
	return n, err
}

type statusWriter struct {
	http.ResponseWriter
	status int
}

func (w *statusWriter) WriteHeader(code int) {
	if w.status == 0 {
		w.status = code
	}
	w.ResponseWriter.WriteHeader(code)
}

func (w *statusWriter) Write(b []byte) (int, error) {
	if w.status == 0 {
		w.status = http.StatusOK
	}
	return w.ResponseWriter.Write(b)
}

func (w *statusWriter) Flush() {
	if f, ok := w.ResponseWriter.(http.Flusher); ok {
		f.Flush()
	}
}

// record wraps h: it counts the body, applies faults and latency, and
// stores the request when it completes.
func (s *Server) record(endpoint string, h http.HandlerFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		start := time.Now()
		body := &countingBody{ReadCloser: r.Body}
		r.Body = body
		sw := &statusWriter{ResponseWriter: w}
		faultCode, latency := s.faults.decide(endpoint)
		if latency > 0 {
			select {
			case <-time.After(latency):
			case <-r.Context().Done():
			case <-s.done:
			}
		}
		if faultCode != 0 {
			// Before any state change, like a proxy in front of GitLab
			// failing: the request never reached the application.
			_, _ = io.Copy(io.Discard, r.Body)
			http.Error(sw, http.StatusText(faultCode), faultCode)
		} else {
			h(sw, r)
		}
		if sw.status == 0 {
			sw.status = http.StatusOK
		}
		rec := Request{
			Time: start, Endpoint: endpoint, Method: r.Method, Path: r.URL.Path, Query: r.URL.RawQuery,
			Header: r.Header.Clone(), BodySize: body.n, BodyPrefix: slices.Clone(body.prefix.Bytes()),
			Status: sw.status, RespHeader: w.Header().Clone(), Faulted: faultCode != 0, Duration: time.Since(start),
		}
		s.mu.Lock()
		s.recs = append(s.recs, rec)
		s.mu.Unlock()
		s.log.Debug("request", "method", r.Method, "path", r.URL.Path, "status", sw.status, "faulted", rec.Faulted)
	}
}

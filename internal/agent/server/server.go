// Package server is the podrunner agent that runs a job inside its pod:
// it fetches the sources with go-git, runs the job's stages with the
// image's shell, keeps the (masked) log on the pod's disk and serves it,
// with the result, to the runner over HTTP (the protocol is package
// agent). podrunner-helper links it, the manager does not. See
// docs/kubernetes-executor.md.
package server

import (
	"crypto/subtle"
	"encoding/json"
	"fmt"
	"log/slog"
	"math"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/podrunner/podrunner/internal/agent"
)

// controls are the actions the API triggers; each is idempotent.
type controls struct {
	cancelOnce, abortOnce, ackOnce, startOnce sync.Once
	canceled                                  chan struct{} // graceful cancel
	aborted                                   chan struct{}
	acked                                     chan struct{}
	// started is closed when the job's scripts may run: at once, or for
	// a spec sent on hold (HoldSpec) when the runner says start.
	started chan struct{}
}

func newControls() *controls {
	return &controls{canceled: make(chan struct{}), aborted: make(chan struct{}), acked: make(chan struct{}), started: make(chan struct{})}
}

func (c *controls) cancel() { c.cancelOnce.Do(func() { close(c.canceled) }) }
func (c *controls) abort()  { c.abortOnce.Do(func() { close(c.aborted) }) }
func (c *controls) ack()    { c.ackOnce.Do(func() { close(c.acked) }) }
func (c *controls) start()  { c.startOnce.Do(func() { close(c.started) }) }

type server struct {
	token []byte
	log   *jobLog
	ctl   *controls
	slog  *slog.Logger
}

func (s *server) handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /v1/log", s.getLog)
	mux.HandleFunc("GET /v1/status", s.getStatus)
	mux.HandleFunc("POST /v1/cancel", s.action("cancel", s.ctl.cancel))
	mux.HandleFunc("POST /v1/abort", s.action("abort", s.ctl.abort))
	mux.HandleFunc("POST /v1/ack", s.action("ack", s.ctl.ack))
	mux.HandleFunc("POST /v1/start", s.action("start", s.ctl.start))
	// The spec came already (Await): a runner that sends it again (it
	// adopted the job, or lost the first answer) is told it arrived. Sent
	// without hold, it also starts a job held so far: an adopting runner
	// need not know whether the first one got to say start.
	mux.HandleFunc("POST /v1/spec", func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Query().Get(agent.HoldParam) == "" {
			s.ctl.start()
		}
		w.WriteHeader(http.StatusNoContent)
	})
	return s.auth(mux)
}

// auth requires "Authorization: Bearer <token>" on every request.
func (s *server) auth(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		got, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
		if !ok || subtle.ConstantTimeCompare([]byte(got), s.token) != 1 {
			w.Header().Set("WWW-Authenticate", `Bearer realm="podrunner-agent"`)
			http.Error(w, "missing or wrong bearer token", http.StatusUnauthorized)
			return
		}
		next.ServeHTTP(w, r)
	})
}

func (s *server) action(name string, do func()) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		s.slog.Info("agent API request", "action", name)
		do()
		w.WriteHeader(http.StatusNoContent)
	}
}

func state(done bool) string {
	if done {
		return agent.StateDone
	}
	return agent.StateRunning
}

func (s *server) getStatus(w http.ResponseWriter, r *http.Request) {
	size, done, res, _ := s.log.snapshot()
	st := agent.Status{State: state(done), Result: res, LogSize: size}
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(st)
}

func (s *server) getLog(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	off, err := strconv.ParseInt(q.Get("offset"), 10, 64)
	if q.Get("offset") == "" {
		off, err = 0, nil
	}
	if err != nil || off < 0 {
		http.Error(w, fmt.Sprintf("offset %q is not a non-negative number", q.Get("offset")), http.StatusBadRequest)
		return
	}
	wait := agent.DefaultLogWait
	if v := q.Get("wait"); v != "" {
		wait, err = parseWait(v)
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
	}
	timer := time.NewTimer(wait)
	defer timer.Stop()
	for {
		size, done, _, changed := s.log.snapshot()
		h := w.Header()
		h.Set(agent.HeaderLogSize, strconv.FormatInt(size, 10))
		h.Set(agent.HeaderJobState, state(done))
		if off > size {
			http.Error(w, fmt.Sprintf("offset %d is past the end of the log (%d bytes)", off, size), http.StatusRequestedRangeNotSatisfiable)
			return
		}
		if off < size || done {
			data, err := s.log.readAt(off, size, agent.MaxLogChunk)
			if err != nil {
				s.slog.Error("agent API: read log", "err", err)
				http.Error(w, err.Error(), http.StatusInternalServerError)
				return
			}
			h.Set("Content-Type", "application/octet-stream")
			h.Set("Content-Length", strconv.Itoa(len(data)))
			_, _ = w.Write(data)
			return
		}
		select {
		case <-changed:
		case <-timer.C:
			h.Set("Content-Length", "0")
			w.WriteHeader(http.StatusOK)
			return
		case <-r.Context().Done():
			return
		}
	}
}

// parseWait reads a Go duration ("10s") or plain seconds, capped at
// MaxLogWait.
func parseWait(v string) (time.Duration, error) {
	d, err := time.ParseDuration(v)
	if err != nil {
		secs, err2 := strconv.ParseFloat(v, 64)
		if err2 != nil || math.IsNaN(secs) || math.IsInf(secs, 0) {
			return 0, fmt.Errorf("wait %q is not a duration (e.g. 10s)", v)
		}
		d = time.Duration(min(secs, agent.MaxLogWait.Seconds()) * float64(time.Second))
	}
	if d < 0 {
		return 0, fmt.Errorf("wait %q is negative", v)
	}
	return min(d, agent.MaxLogWait), nil
}

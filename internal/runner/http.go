package runner

import (
	"encoding/json"
	"net/http"
	"sort"

	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// Handler serves /metrics, /health/live, /health/ready and
// /debug/jobs/list on listen_address. ready reports whether the runner
// passed its start-up checks.
func (m *Manager) Handler(ready func() bool) http.Handler {
	mux := http.NewServeMux()
	if m.opts.Metrics != nil {
		metrics := promhttp.HandlerFor(m.opts.Metrics.Registry, promhttp.HandlerOpts{})
		mux.Handle("GET /metrics", metrics)
		mux.Handle("HEAD /metrics", metrics)
	}
	mux.HandleFunc("GET /health/live", func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-m.stopped:
			http.Error(w, "stopped", http.StatusServiceUnavailable)
		default:
			w.Write([]byte("ok\n"))
		}
	})
	mux.HandleFunc("GET /health/ready", func(w http.ResponseWriter, r *http.Request) {
		if ready != nil && !ready() {
			http.Error(w, "not ready", http.StatusServiceUnavailable)
			return
		}
		if m.pollCtx.Err() != nil {
			http.Error(w, "stopping", http.StatusServiceUnavailable)
			return
		}
		w.Write([]byte("ok\n"))
	})
	mux.HandleFunc("GET /debug/jobs/list", func(w http.ResponseWriter, r *http.Request) {
		jobs := m.Jobs()
		sort.Slice(jobs, func(i, j int) bool { return jobs[i].ID < jobs[j].ID })
		w.Header().Set("Content-Type", "application/json")
		json.NewEncoder(w).Encode(jobs)
	})
	return mux
}

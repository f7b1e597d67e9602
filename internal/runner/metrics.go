package runner

import (
	"context"
	"errors"
	"log/slog"
	"strconv"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
)

// Metrics are the runner's Prometheus metrics, named as GitLab Runner names
// them so existing dashboards keep working.
type Metrics struct {
	Registry *prometheus.Registry

	jobs          *prometheus.GaugeVec
	jobsTotal     *prometheus.CounterVec
	failedJobs    *prometheus.CounterVec
	jobDuration   *prometheus.HistogramVec
	queueDuration *prometheus.HistogramVec
	concurrent    prometheus.Gauge
	limit         *prometheus.GaugeVec
	requestConc   *prometheus.GaugeVec
	slotsNumber   prometheus.Gauge
	apiStatuses   *prometheus.CounterVec
	errors        *prometheus.CounterVec
	configLoaded  prometheus.Counter
	configErrors  prometheus.Counter
}

// NewMetrics registers the runner's metrics plus the Go and process
// collectors in a new registry.
func NewMetrics(version, revision string) *Metrics {
	r := prometheus.NewRegistry()
	m := &Metrics{
		Registry: r,
		jobs: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "gitlab_runner_jobs", Help: "The current number of running builds.",
		}, []string{"runner", "runner_name", "system_id", "state", "stage", "executor_stage"}),
		jobsTotal: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "gitlab_runner_jobs_total", Help: "Total number of handled jobs.",
		}, []string{"runner", "runner_name", "system_id"}),
		failedJobs: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "gitlab_runner_failed_jobs_total", Help: "Total number of failed jobs.",
		}, []string{"runner", "runner_name", "failure_reason", "mode"}),
		jobDuration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "gitlab_runner_job_duration_seconds", Help: "Histogram of job durations.",
			Buckets: []float64{30, 60, 300, 600, 1800, 3600, 7200, 10800, 18000, 36000},
		}, []string{"runner", "runner_name", "system_id"}),
		queueDuration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "gitlab_runner_job_queue_duration_seconds", Help: "Time jobs spent in GitLab's queue.",
			Buckets: []float64{1, 3, 10, 30, 60, 120, 300, 900, 1800, 3600},
		}, []string{"runner", "runner_name", "system_id"}),
		concurrent: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "gitlab_runner_concurrent", Help: "The current value of concurrent setting.",
		}),
		limit: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "gitlab_runner_limit", Help: "The current value of limit setting.",
		}, []string{"runner", "runner_name", "system_id"}),
		requestConc: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "gitlab_runner_request_concurrency", Help: "The current number of concurrent requests for a new job.",
		}, []string{"runner", "runner_name", "system_id"}),
		slotsNumber: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "gitlab_runner_worker_slots_number", Help: "Number of worker slots in use.",
		}),
		apiStatuses: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "gitlab_runner_api_request_statuses_total", Help: "The total number of API requests, partitioned by runner, endpoint and status.",
		}, []string{"runner", "system_id", "endpoint", "status", "method"}),
		errors: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "gitlab_runner_errors_total", Help: "The number of caught errors.",
		}, []string{"level"}),
		configLoaded: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "gitlab_runner_configuration_loaded_total", Help: "Total number of times the configuration file was loaded.",
		}),
		configErrors: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "gitlab_runner_configuration_loading_error_total", Help: "Total number of times the configuration file was not loaded.",
		}),
	}
	versionInfo := prometheus.NewGauge(prometheus.GaugeOpts{
		Name: "gitlab_runner_version_info", Help: "A metric with a constant '1' value labeled by version.",
		ConstLabels: prometheus.Labels{"name": "podrunner", "version": version, "revision": revision},
	})
	versionInfo.Set(1)
	r.MustRegister(m.jobs, m.jobsTotal, m.failedJobs, m.jobDuration, m.queueDuration,
		m.concurrent, m.limit, m.requestConc, m.slotsNumber, m.apiStatuses, m.errors,
		m.configLoaded, m.configErrors, versionInfo,
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return m
}

// Executor registers an executor's own metrics (the Kubernetes executor's
// warm pods). An executor kept across a reload stays registered; one that
// replaced another (same metrics) takes its place.
func (m *Metrics) Executor(c prometheus.Collector) {
	err := m.Registry.Register(c)
	var dup prometheus.AlreadyRegisteredError
	if errors.As(err, &dup) && dup.ExistingCollector != c {
		m.Registry.Unregister(dup.ExistingCollector)
		err = m.Registry.Register(c)
	}
	if err != nil && !errors.As(err, &dup) {
		slog.Default().Warn("executor metrics not registered", "err", err)
	}
}

// ConfigLoaded counts a configuration load; ok=false counts a refused one.
func (m *Metrics) ConfigLoaded(ok bool) {
	if m == nil {
		return
	}
	if ok {
		m.configLoaded.Inc()
	} else {
		m.configErrors.Inc()
	}
}

// APIRequest counts one GitLab API answer.
func (m *Metrics) APIRequest(runner, systemID, endpoint, method string, status int) {
	if m == nil {
		return
	}
	m.apiStatuses.WithLabelValues(runner, systemID, endpoint, strconv.Itoa(status), method).Inc()
}

// LogHandler wraps h so that the warning and error records it handles are
// counted in gitlab_runner_errors_total, as GitLab Runner counts its log.
func (m *Metrics) LogHandler(h slog.Handler) slog.Handler {
	if m == nil {
		return h
	}
	return &countingHandler{Handler: h, errors: m.errors}
}

type countingHandler struct {
	slog.Handler
	errors *prometheus.CounterVec
}

func (c *countingHandler) Handle(ctx context.Context, r slog.Record) error {
	switch {
	case r.Level >= slog.LevelError:
		c.errors.WithLabelValues("error").Inc()
	case r.Level >= slog.LevelWarn:
		c.errors.WithLabelValues("warning").Inc()
	}
	return c.Handler.Handle(ctx, r)
}

func (c *countingHandler) WithAttrs(attrs []slog.Attr) slog.Handler {
	return &countingHandler{Handler: c.Handler.WithAttrs(attrs), errors: c.errors}
}

func (c *countingHandler) WithGroup(name string) slog.Handler {
	return &countingHandler{Handler: c.Handler.WithGroup(name), errors: c.errors}
}

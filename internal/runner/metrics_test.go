package runner

import (
	"context"
	"io"
	"log/slog"
	"testing"

	dto "github.com/prometheus/client_model/go"

	"github.com/podrunner/podrunner/internal/executor"
)

// metric finds the one series of name in m's registry.
func metric(t *testing.T, m *Metrics, name string) *dto.Metric {
	t.Helper()
	families, err := m.Registry.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range families {
		if f.GetName() == name && len(f.Metric) == 1 {
			return f.Metric[0]
		}
	}
	t.Fatalf("no single series %s", name)
	return nil
}

// The time GitLab says a job waited in its queue is observed once per job.
func TestMetricsQueueDuration(t *testing.T) {
	api := newFakeAPI([]byte(`{"id":9,"token":"glcbt-job9","job_info":{"project_id":7,"time_in_queue_seconds":2.5},
		"steps":[{"name":"script","script":["true"],"when":"on_success"}]}`))
	ex := fakeExec{run: func(ctx context.Context, j *executor.Job) (executor.Result, error) {
		return executor.Result{Success: true}, nil
	}}
	mt := NewMetrics("v1", "r1")
	m := newTestManager(t, api, ex, Options{Metrics: mt})
	runUntil(t, m, func() bool { _, ok := api.final(9); return ok })
	h := metric(t, mt, "gitlab_runner_job_queue_duration_seconds").GetHistogram()
	if h.GetSampleCount() != 1 || h.GetSampleSum() != 2.5 {
		t.Fatalf("queue duration: %d samples, sum %v; want 1 and 2.5", h.GetSampleCount(), h.GetSampleSum())
	}
}

// Warning and error log records are counted by level, whatever the
// logger's attributes or groups; info records are not.
func TestMetricsLogErrors(t *testing.T) {
	mt := NewMetrics("v1", "r1")
	log := slog.New(mt.LogHandler(slog.NewTextHandler(io.Discard, nil))).With("runner", "abc").WithGroup("g")
	log.Info("fine")
	log.Warn("careful")
	log.Warn("careful again")
	log.Error("broken")
	families, err := mt.Registry.Gather()
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]float64{}
	for _, f := range families {
		if f.GetName() != "gitlab_runner_errors_total" {
			continue
		}
		for _, s := range f.Metric {
			got[s.Label[0].GetValue()] = s.GetCounter().GetValue()
		}
	}
	if len(got) != 2 || got["warning"] != 2 || got["error"] != 1 {
		t.Fatalf("gitlab_runner_errors_total = %v; want warning 2, error 1", got)
	}
	if (*Metrics)(nil).LogHandler(slog.DiscardHandler) != slog.DiscardHandler {
		t.Fatal("a nil Metrics must leave the handler as it is")
	}
}

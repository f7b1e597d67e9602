package kubernetes

import "github.com/prometheus/client_golang/prometheus"

// warmDescs are the warm pool's metrics (podrunner's own;
// docs/kubernetes-executor.md), labelled with the runner's short token.
type warmDescs struct{ pods, hits, misses, refill *prometheus.Desc }

func newWarmDescs(short string) warmDescs {
	l := prometheus.Labels{"runner": short}
	return warmDescs{
		pods: prometheus.NewDesc("podrunner_warm_pods",
			"Warm pods of the pool by state (ready: the agent waits for a job; starting).", []string{"state"}, l),
		hits: prometheus.NewDesc("podrunner_warm_pod_hits_total", "Jobs handed to a warm pod.", nil, l),
		misses: prometheus.NewDesc("podrunner_warm_pod_misses_total",
			"Jobs that took the usual path although warm pods are configured, by reason (no_match, lost).", []string{"reason"}, l),
		refill: prometheus.NewDesc("podrunner_warm_pod_refill_seconds",
			"Time from creating a warm pod to its build container running.", nil, l),
	}
}

// Describe and Collect make the executor a prometheus.Collector of its
// warm pool (nothing without one).
func (e *Executor) Describe(ch chan<- *prometheus.Desc) {
	d := newWarmDescs(e.short)
	for _, x := range []*prometheus.Desc{d.pods, d.hits, d.misses, d.refill} {
		ch <- x
	}
}

func (e *Executor) Collect(ch chan<- prometheus.Metric) {
	if e.pool == nil {
		return
	}
	d := newWarmDescs(e.short)
	s := e.WarmStats()
	ch <- prometheus.MustNewConstMetric(d.pods, prometheus.GaugeValue, float64(s.Ready), "ready")
	ch <- prometheus.MustNewConstMetric(d.pods, prometheus.GaugeValue, float64(s.Starting), "starting")
	ch <- prometheus.MustNewConstMetric(d.hits, prometheus.CounterValue, float64(s.Hits))
	for _, r := range []string{missNoMatch, missLost} {
		ch <- prometheus.MustNewConstMetric(d.misses, prometheus.CounterValue, float64(s.Misses[r]), r)
	}
	ch <- prometheus.MustNewConstSummary(d.refill, uint64(s.Refills), s.RefillSeconds, nil)
}

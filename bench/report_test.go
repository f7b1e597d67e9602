package main

import (
	"bytes"
	"encoding/json"
	"strings"
	"testing"
	"time"
)

func TestQuantile(t *testing.T) {
	xs := []float64{10, 1, 9, 2, 8, 3, 7, 4, 6, 5} // 1..10 shuffled
	for _, c := range []struct {
		q    float64
		want float64
	}{
		{.5, 5}, {.95, 10}, {.9, 9}, {.1, 1}, {.01, 1}, {1, 10},
	} {
		if got := Quantile(xs, c.q); got != c.want {
			t.Errorf("Quantile(1..10, %v) = %v, want %v", c.q, got, c.want)
		}
	}
	if xs[0] != 10 {
		t.Error("Quantile sorted its input in place")
	}
	if got := Quantile(nil, .5); got != 0 {
		t.Errorf("Quantile(nil) = %v, want 0", got)
	}
	// 100 samples 1..100: nearest rank p50 = 50, p95 = 95.
	var h []float64
	for i := 100; i >= 1; i-- {
		h = append(h, float64(i))
	}
	if p50, p95 := Quantile(h, .5), Quantile(h, .95); p50 != 50 || p95 != 95 {
		t.Errorf("1..100: p50 %v p95 %v, want 50 95", p50, p95)
	}
}

func TestDistMS(t *testing.T) {
	c := DistMS([]time.Duration{3 * time.Millisecond, time.Millisecond, 2500 * time.Microsecond})
	if c.N != 3 || *c.P50 != 2.5 || *c.P95 != 3 {
		t.Errorf("DistMS = n %d p50 %v p95 %v", c.N, *c.P50, *c.P95)
	}
	if c := DistMS(nil); c.P50 != nil || c.Text == "" {
		t.Errorf("DistMS(nil) = %+v, want a text cell", c)
	}
}

func sampleReport() *Report {
	r := &Report{Runners: []string{"podrunner", "other"}}
	r.Add("podrunner", "1 pickup", "queued -> handed", msDist, &Target{Below: 50}, Dist([]float64{10, 20, 30}))
	r.Add("other", "1 pickup", "queued -> handed", msDist, &Target{Below: 50}, Dist([]float64{40, 60, 80}))
	r.Add("podrunner", "5 footprint", "RSS idle", "MiB", &Target{Below: 30}, Val(42.5))
	r.Add("podrunner", "4 trace", "CRC", "", nil, Text("match"))
	r.Add("other", "4 trace", "CRC", "", nil, Text("MISMATCH"))
	return r
}

func TestReportAddMergesRunners(t *testing.T) {
	r := sampleReport()
	if len(r.Rows) != 3 {
		t.Fatalf("%d rows, want 3 (one per figure): %+v", len(r.Rows), r.Rows)
	}
	if len(r.Rows[0].Cells) != 2 {
		t.Errorf("pickup row has %d cells, want 2", len(r.Rows[0].Cells))
	}
}

func TestWriteTable(t *testing.T) {
	var b bytes.Buffer
	if err := sampleReport().WriteTable(&b); err != nil {
		t.Fatal(err)
	}
	out := b.String()
	lines := strings.Split(strings.TrimSpace(out), "\n")
	if len(lines) != 5 {
		t.Fatalf("%d lines, want header, rule and 3 rows:\n%s", len(lines), out)
	}
	for _, want := range []string{
		"| other / podrunner |",
		"20.0 / 30.0",           // podrunner p50 / p95
		"60.0 / 80.0",           // other
		"3.00x",                 // 60 / 20
		"< 50.0 met",            // pickup target
		"< 30.0 MISSED by 12.5", // footprint target
		"match", "MISMATCH",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("table lacks %q:\n%s", want, out)
		}
	}
	// Columns line up: every line has the same length.
	for _, l := range lines {
		if len(l) != len(lines[0]) {
			t.Errorf("ragged table:\n%s", out)
			break
		}
	}
	// A row the other runner has no cell for shows "-".
	if !strings.Contains(lines[3], "| -") {
		t.Errorf("missing cell not shown as -: %q", lines[3])
	}
}

func TestWriteJSON(t *testing.T) {
	var b bytes.Buffer
	if err := sampleReport().WriteJSON(&b); err != nil {
		t.Fatal(err)
	}
	var back Report
	if err := json.Unmarshal(b.Bytes(), &back); err != nil {
		t.Fatalf("%v:\n%s", err, b.String())
	}
	c := back.Rows[0].Cells["other"]
	if c.N != 3 || c.P50 == nil || *c.P50 != 60 || *c.P95 != 80 || back.Rows[0].Target.Below != 50 {
		t.Errorf("round trip lost figures: %+v", back.Rows[0])
	}
	// Zero is a figure, not an absent one.
	r := &Report{Runners: []string{"podrunner"}}
	r.Add("podrunner", "s", "f", "", nil, Val(0))
	b.Reset()
	r.WriteJSON(&b)
	if !strings.Contains(b.String(), `"value": 0`) {
		t.Errorf("a zero value vanished from the JSON:\n%s", b.String())
	}
}

func TestParseStatus(t *testing.T) {
	status := "Name:\tpodrunner\nVmPeak:\t  900000 kB\nVmHWM:\t   25600 kB\nVmRSS:\t   20480 kB\nThreads:\t8\n"
	rss, hwm, err := parseStatus([]byte(status))
	if err != nil || rss != 20480 || hwm != 25600 {
		t.Errorf("parseStatus = %d, %d, %v; want 20480, 25600", rss, hwm, err)
	}
	for _, bad := range []string{"Name:\tx\n", "VmRSS:\t12 MB\nVmHWM:\t1 kB\n", "VmRSS:\tx kB\nVmHWM:\t1 kB\n"} {
		if _, _, err := parseStatus([]byte(bad)); err == nil {
			t.Errorf("parseStatus(%q) accepted", bad)
		}
	}
}

func TestParseRequestTotals(t *testing.T) {
	m := `# HELP apiserver_request_total Counter
# TYPE apiserver_request_total counter
apiserver_request_total{code="201",component="apiserver",dry_run="",group="",resource="pods",scope="resource",subresource="",verb="POST",version="v1"} 7
apiserver_request_total{code="409",component="apiserver",dry_run="",group="",resource="pods",scope="resource",subresource="",verb="POST",version="v1"} 1
apiserver_request_total{code="200",component="apiserver",dry_run="",group="",resource="pods",scope="namespace",subresource="log",verb="GET",version="v1"} 2.5e+01
apiserver_request_total{code="200",component="apiserver",dry_run="",group="coordination.k8s.io",resource="leases",scope="resource",subresource="",verb="PUT",version="v1"} 100
apiserver_request_duration_seconds_bucket{verb="POST",le="0.1"} 99
`
	got, err := parseRequestTotals([]byte(m))
	if err != nil {
		t.Fatal(err)
	}
	if got["POST pods"] != 8 || got["GET pods/log"] != 25 || got["PUT leases"] != 100 || len(got) != 3 {
		t.Errorf("parseRequestTotals = %v", got)
	}
	if _, err := parseRequestTotals([]byte(`apiserver_request_total{verb="GET" 1`)); err == nil {
		t.Error("a line without closing brace was accepted")
	}
	if _, err := parseRequestTotals([]byte(`apiserver_request_total{verb="GET} 1`)); err == nil {
		t.Error("an unterminated label value was accepted")
	}
	d := reqCounts{"POST pods": 10, "GET pods": 4}.sub(reqCounts{"POST pods": 3, "GET pods": 4})
	if d["POST pods"] != 7 || len(d) != 1 {
		t.Errorf("sub = %v, want only POST pods 7", d)
	}
	if !podRelated("GET pods/log") || podRelated("PUT leases") {
		t.Error("podRelated misclassifies")
	}
}

func TestStamps(t *testing.T) {
	log := []byte("\x1b[32;1m$ echo \"BENCH_T0 $(date +%s%N)\"\x1b[0;m\nBENCH_T0 1700000000000000000\n$ true\nBENCH_T1 1700000000002500000\n")
	t0, t1, err := shellStamps(log)
	if err != nil || t1.Sub(t0) != 2500*time.Microsecond {
		t.Errorf("shellStamps = %v, %v, %v", t0, t1, err)
	}
	if _, _, err := shellStamps([]byte("BENCH_T0 1700000000000000000\n")); err == nil {
		t.Error("a log with one stamp was accepted")
	}
}

func TestShellQuote(t *testing.T) {
	if got := shellQuote("/a b/it's"); got != `'/a b/it'\''s'` {
		t.Errorf("shellQuote = %s", got)
	}
}

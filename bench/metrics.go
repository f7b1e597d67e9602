package main

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"maps"
	"slices"
	"strconv"
	"strings"

	"k8s.io/client-go/kubernetes"
)

// reqCounts is apiserver_request_total summed by "VERB resource[/sub]".
type reqCounts map[string]float64

// scrapeRequests reads kube-apiserver's /metrics (the admin kubeconfig
// may) and sums apiserver_request_total by verb and resource.
func scrapeRequests(ctx context.Context, cs *kubernetes.Clientset) (reqCounts, error) {
	b, err := cs.CoreV1().RESTClient().Get().AbsPath("/metrics").DoRaw(ctx)
	if err != nil {
		return nil, fmt.Errorf("read kube-apiserver /metrics: %w", err)
	}
	return parseRequestTotals(b)
}

// parseRequestTotals sums the apiserver_request_total samples of a
// Prometheus text exposition by verb and resource (with its subresource).
func parseRequestTotals(b []byte) (reqCounts, error) {
	out := reqCounts{}
	sc := bufio.NewScanner(bytes.NewReader(b))
	sc.Buffer(make([]byte, 0, 64<<10), 1<<20)
	for n := 1; sc.Scan(); n++ {
		line := sc.Text()
		rest, ok := strings.CutPrefix(line, "apiserver_request_total{")
		if !ok {
			continue
		}
		end := strings.LastIndexByte(rest, '}')
		if end < 0 {
			return nil, fmt.Errorf("metrics line %d: no closing brace: %q", n, line)
		}
		labels, err := parseLabels(rest[:end])
		if err != nil {
			return nil, fmt.Errorf("metrics line %d: %w", n, err)
		}
		f := strings.Fields(rest[end+1:])
		if len(f) == 0 {
			return nil, fmt.Errorf("metrics line %d: no value: %q", n, line)
		}
		v, err := strconv.ParseFloat(f[0], 64)
		if err != nil {
			return nil, fmt.Errorf("metrics line %d: value %q: %w", n, f[0], err)
		}
		res := labels["resource"]
		if s := labels["subresource"]; s != "" {
			res += "/" + s
		}
		out[labels["verb"]+" "+res] += v
	}
	return out, sc.Err()
}

// parseLabels parses `a="x",b="y\"z"` (Prometheus label set, escapes \\ \" \n).
func parseLabels(s string) (map[string]string, error) {
	out := map[string]string{}
	for s != "" {
		name, rest, ok := strings.Cut(s, "=")
		if !ok || len(rest) == 0 || rest[0] != '"' {
			return nil, fmt.Errorf("label set %q: want name=\"value\"", s)
		}
		var val strings.Builder
		i := 1
		for ; i < len(rest) && rest[i] != '"'; i++ {
			if rest[i] == '\\' && i+1 < len(rest) {
				i++
				if rest[i] == 'n' {
					val.WriteByte('\n')
					continue
				}
			}
			val.WriteByte(rest[i])
		}
		if i >= len(rest) {
			return nil, fmt.Errorf("label %s: unterminated value", name)
		}
		out[strings.TrimSpace(name)] = val.String()
		s = strings.TrimPrefix(rest[i+1:], ",")
	}
	return out, nil
}

func (a reqCounts) sub(b reqCounts) reqCounts {
	out := reqCounts{}
	for k, v := range a {
		if d := v - b[k]; d > 0 {
			out[k] = d
		}
	}
	return out
}

func (a reqCounts) add(b reqCounts) reqCounts {
	out := maps.Clone(a)
	if out == nil {
		out = reqCounts{}
	}
	for k, v := range b {
		out[k] += v
	}
	return out
}

// podRelated keeps the requests a job pod can cause (the runner's, the
// scheduler's, the kubelet's): the cluster's steady background (leases,
// nodes, endpoints, …) is left out.
func podRelated(key string) bool {
	_, res, _ := strings.Cut(key, " ")
	res, _, _ = strings.Cut(res, "/")
	switch res {
	case "pods", "secrets", "configmaps", "events", "serviceaccounts", "services":
		return true
	}
	return false
}

// addAPIRows adds one row per verb and resource: requests per job.
func (b *bench) addAPIRows(runner, what string, d reqCounts, jobs int) {
	keys := slices.Sorted(maps.Keys(d))
	var sum float64
	for _, k := range keys {
		if !podRelated(k) {
			continue
		}
		sum += d[k]
		b.rep.Add(runner, scAPI+", "+what, k, "req", nil, Val(d[k]/float64(jobs)))
	}
	b.rep.Add(runner, scAPI+", "+what, "total (pods, secrets, configmaps, events, serviceaccounts, services)", "req", nil, Val(sum/float64(jobs)))
	// Each job or bare pod is one pod creation: more means someone else
	// used the cluster meanwhile and is counted too.
	if extra := d["POST pods"] - float64(jobs); extra > 0 {
		b.note("%s, %s: %.0f pods were created by other clients meanwhile; their requests are in these counts", runner, what, extra)
	}
}

package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"math"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/watch"

	"github.com/podrunner/podrunner/internal/adjtimex"
	"github.com/podrunner/podrunner/internal/coordinator"
	"github.com/podrunner/podrunner/internal/executor/kubernetes"
	"github.com/podrunner/podrunner/internal/gitlab"
	"github.com/podrunner/podrunner/internal/job"
	"github.com/podrunner/podrunner/internal/runner"
	"github.com/podrunner/podrunner/internal/testcluster"
)

// Overhead benchmark of the Kubernetes executor (issue 4): where the time
// of a trivial `echo` job goes, next to a bare pod doing the same on the
// same cluster. It prints a table and asserts nothing about time; it runs
// only with PODRUNNER_BENCH=1:
//
//	hack/cluster/with-cluster env PODRUNNER_BENCH=1 go test -count=1 -run KubernetesOverhead -v ./test/e2e/
//
// Every moment is read on the one host clock (the cluster is this
// machine): the coordinator's QueuedAt/StartedAt/FinishedAt, the moment a
// watch of the test (not the executor's) sees the pod and its build
// container running, and wall-clock microseconds printed by the job itself
// with busybox `adjtimex` (busybox date has no %N): by the runner's
// pre_get_sources_script (the agent's first stage) and by the script at
// its start and end. The runner's own log records (JSON, nanoseconds)
// split the runner's side further.
//
// PODRUNNER_BENCH_JOBS (default 20) and PODRUNNER_BENCH_CONCURRENT_JOBS
// (default 30, 0 skips the concurrent = 5 round) size the runs;
// PODRUNNER_BENCH_FLOORS=all adds bare pods with only an init container
// and with the init container and the emptyDirs (no Secret volume).

const benchCI = `
echo:
  script:
    - ` + adjtimex.Script + `
    - echo hi
    - ` + adjtimex.Script + `
`

// podTimes is what the test's own pod watch saw, on arrival of each event.
type podTimes struct {
	added, ip, initDone, running, ended, deleted time.Time
}

// benchWatch records when pods of a namespace are seen to change.
type benchWatch struct {
	mu    sync.Mutex
	pods  map[string]*podTimes
	jobOf map[string]string // job id → pod name
	wake  chan struct{}
}

func newBenchWatch(t *testing.T, c *testcluster.Cluster, ns string, mainContainer func(pod *corev1.Pod) string) *benchWatch {
	ctx, cancel := context.WithCancel(context.Background())
	w, err := c.Clientset.CoreV1().Pods(ns).Watch(ctx, metav1.ListOptions{})
	if err != nil {
		cancel()
		t.Fatal(err)
	}
	bw := &benchWatch{pods: map[string]*podTimes{}, jobOf: map[string]string{}, wake: make(chan struct{}, 1)}
	done := make(chan struct{})
	go func() {
		defer close(done)
		for ev := range w.ResultChan() {
			now := time.Now()
			pod, ok := ev.Object.(*corev1.Pod)
			if !ok || ev.Type == watch.Error {
				continue
			}
			bw.mu.Lock()
			pt := bw.pods[pod.Name]
			if pt == nil {
				pt = &podTimes{added: now}
				bw.pods[pod.Name] = pt
			}
			if id := pod.Labels[kubernetes.LabelJobID]; id != "" {
				bw.jobOf[id] = pod.Name
			}
			if pt.ip.IsZero() && pod.Status.PodIP != "" {
				pt.ip = now
			}
			for _, s := range pod.Status.InitContainerStatuses {
				if pt.initDone.IsZero() && s.State.Terminated != nil {
					pt.initDone = now
				}
			}
			for _, s := range pod.Status.ContainerStatuses {
				if s.Name != mainContainer(pod) {
					continue
				}
				if pt.running.IsZero() && (s.State.Running != nil || s.State.Terminated != nil) {
					pt.running = now
				}
			}
			if pt.ended.IsZero() && (pod.Status.Phase == corev1.PodSucceeded || pod.Status.Phase == corev1.PodFailed) {
				pt.ended = now
			}
			if ev.Type == watch.Deleted && pt.deleted.IsZero() {
				pt.deleted = now
			}
			bw.mu.Unlock()
			select {
			case bw.wake <- struct{}{}:
			default:
			}
		}
	}()
	t.Cleanup(func() { cancel(); w.Stop(); <-done })
	return bw
}

func (bw *benchWatch) get(name string) podTimes {
	bw.mu.Lock()
	defer bw.mu.Unlock()
	if pt := bw.pods[name]; pt != nil {
		return *pt
	}
	return podTimes{}
}

func (bw *benchWatch) podOfJob(id int64) string {
	bw.mu.Lock()
	defer bw.mu.Unlock()
	return bw.jobOf[strconv.FormatInt(id, 10)]
}

// waitEnded waits until the pod is seen Succeeded or Failed.
func (bw *benchWatch) waitEnded(t *testing.T, name string, timeout time.Duration) podTimes {
	t.Helper()
	deadline := time.After(timeout)
	for {
		if pt := bw.get(name); !pt.ended.IsZero() {
			return pt
		}
		select {
		case <-bw.wake:
		case <-time.After(100 * time.Millisecond):
		case <-deadline:
			t.Fatalf("pod %s did not end within %v", name, timeout)
		}
	}
}

// benchLog keeps the moment of the runner's log records per job: the
// manager and the executor log as JSON into it.
type benchLog struct {
	t    *testing.T
	mu   sync.Mutex
	seen map[int64]map[string]time.Time // job → msg → first time
}

func (l *benchLog) Write(p []byte) (int, error) {
	var rec struct {
		Time  time.Time `json:"time"`
		Level string    `json:"level"`
		Msg   string    `json:"msg"`
		Job   int64     `json:"job"`
	}
	if err := json.Unmarshal(p, &rec); err != nil {
		l.t.Logf("runner log line not JSON: %v: %s", err, p)
		return len(p), nil
	}
	if rec.Level == "WARN" || rec.Level == "ERROR" {
		l.t.Log(strings.TrimSpace(string(p)))
	}
	if rec.Job != 0 {
		l.mu.Lock()
		if l.seen[rec.Job] == nil {
			l.seen[rec.Job] = map[string]time.Time{}
		}
		if _, ok := l.seen[rec.Job][rec.Msg]; !ok {
			l.seen[rec.Job][rec.Msg] = rec.Time
		}
		l.mu.Unlock()
	}
	return len(p), nil
}

func (l *benchLog) at(job int64, msg string) time.Time {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.seen[job][msg]
}

// benchRunner starts a runner manager with the Kubernetes executor for an
// external env, as newK8sEnv does, but logging into a benchLog and with
// the stamping pre_get_sources_script.
func benchRunner(t *testing.T, e *k8sEnv, concurrent int) *benchLog {
	bl := &benchLog{t: t, seen: map[int64]map[string]time.Time{}}
	log := slog.New(slog.NewJSONHandler(bl, &slog.HandlerOptions{Level: slog.LevelDebug}))
	ex, err := kubernetes.New(kubernetes.Options{
		Config: e.kube, RunnerToken: e.token, RunnerName: "e2e-k8s", Logger: log, RESTConfig: e.rest,
		PreGetSourcesScript: adjtimex.Script,
	})
	if err != nil {
		t.Fatal(err)
	}
	api, err := gitlab.NewClient(gitlab.Credentials{URL: e.coord.URL(), Token: e.token},
		gitlab.Options{Executor: "kubernetes", Logger: log, MinBackoff: 50 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	m, err := runner.New(runner.Settings{
		Concurrent:      concurrent,
		CheckInterval:   time.Second,
		ShutdownTimeout: 10 * time.Second,
		Runners: []*runner.Runner{{
			Name: "e2e-k8s", ShortToken: job.ShortToken(e.token), Key: e.coord.URL() + e.token,
			API: api, Executor: ex, ExecutorName: "kubernetes", RequestConcurrency: concurrent,
		}},
	}, runner.Options{Logger: log, SystemID: "s_e2ek8s00001", TraceDir: e.dir, TraceUpdateInterval: 500 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); _ = m.Run(ctx) }()
	t.Cleanup(func() {
		m.Abort()
		cancel()
		select {
		case <-done:
		case <-time.After(30 * time.Second):
			t.Error("runner manager did not stop")
		}
		ex.Close()
	})
	return bl
}

// jobSample is one job's moments.
type jobSample struct {
	queued, picked, podCreated, initDone, buildRunning time.Time
	hook, scriptStart, scriptEnd, finished             time.Time
	podDeleted                                         time.Time
	// From the runner's log.
	execPodCreated, execRunning, execResult, runReturned time.Time
}

func (e *k8sEnv) benchSample(t *testing.T, bw *benchWatch, bl *benchLog, j coordinator.JobView) jobSample {
	t.Helper()
	tr := string(e.coord.Trace(j.ID))
	if j.Status != coordinator.StatusSuccess {
		t.Fatalf("job %d %s:\n%s", j.ID, j.Status, tr)
	}
	st := adjtimex.Stamps([]byte(tr))
	if len(st) != 3 {
		t.Fatalf("job %d: %d adjtimex stamps in the trace, want 3 (pre_get_sources_script, script start, script end):\n%s", j.ID, len(st), tr)
	}
	pod := bw.podOfJob(j.ID)
	if pod == "" {
		t.Fatalf("job %d: no pod seen", j.ID)
	}
	pt := bw.get(pod)
	return jobSample{
		queued: j.QueuedAt, picked: j.StartedAt, podCreated: pt.added, initDone: pt.initDone, buildRunning: pt.running,
		hook: st[0], scriptStart: st[1], scriptEnd: st[2], finished: j.FinishedAt, podDeleted: pt.deleted,
		execPodCreated: bl.at(j.ID, "pod created"), execRunning: bl.at(j.ID, "pod running"),
		execResult: bl.at(j.ID, "job finished"), runReturned: bl.at(j.ID, "Job succeeded"),
	}
}

// bareSample is one bare pod's moments.
type bareSample struct {
	create, added, initDone, running, start, end, ended time.Time
}

// Floors: bare pods doing what the job's script does, on the same cluster.
const (
	floorBare   = "bare pod"
	floorInit   = "bare pod + helper container"
	floorLayout = "bare pod, job pod layout"
	floorDirs   = "bare pod + helper container + 2 emptyDirs"
)

// barePod runs `echo hi` in a busybox pod (restartPolicy Never, no
// service account token, no service links, as the job pods) and returns
// its moments once it is seen Succeeded. floorInit adds a second container
// (busybox `true`, as the helper container); floorLayout has the job pod's
// layout without the agent: that container, two emptyDirs and a Secret volume;
// floorDirs the same without the Secret volume.
func barePod(t *testing.T, c *testcluster.Cluster, ns string, bw *benchWatch, i int, kind string) bareSample {
	t.Helper()
	no := false
	grace := int64(0)
	name := fmt.Sprintf("%s-%03d", map[string]string{floorBare: "bare", floorInit: "bare-init", floorLayout: "bare-layout", floorDirs: "bare-dirs"}[kind], i)
	spec := corev1.PodSpec{
		RestartPolicy:                 corev1.RestartPolicyNever,
		AutomountServiceAccountToken:  &no,
		EnableServiceLinks:            &no,
		TerminationGracePeriodSeconds: &grace,
		Containers: []corev1.Container{{
			Name: "echo", Image: testcluster.BusyboxImage, ImagePullPolicy: corev1.PullIfNotPresent,
			Command: []string{"sh", "-c", adjtimex.Script + "; echo hi; " + adjtimex.Script},
		}},
	}
	if kind != floorBare {
		spec.Containers = append(spec.Containers, corev1.Container{Name: "helper", Image: testcluster.BusyboxImage, ImagePullPolicy: corev1.PullIfNotPresent,
			Command: []string{"true"}})
	}
	if kind == floorLayout || kind == floorDirs {
		spec.Volumes = []corev1.Volume{
			{Name: "bin", VolumeSource: corev1.VolumeSource{EmptyDir: &corev1.EmptyDirVolumeSource{}}},
			{Name: "builds", VolumeSource: corev1.VolumeSource{EmptyDir: &corev1.EmptyDirVolumeSource{}}},
		}
		spec.Containers[1].VolumeMounts = []corev1.VolumeMount{{Name: "bin", MountPath: "/podrunner"}}
		spec.Containers[0].VolumeMounts = []corev1.VolumeMount{{Name: "bin", MountPath: "/podrunner"}, {Name: "builds", MountPath: "/builds"}}
	}
	if kind == floorLayout {
		// The Secret exists before the pod, as the executor does it.
		_, err := c.Clientset.CoreV1().Secrets(ns).Create(context.Background(), &corev1.Secret{
			ObjectMeta: metav1.ObjectMeta{Name: name}, Immutable: &[]bool{true}[0],
			Data: map[string][]byte{"job.json": []byte("{}")},
		}, metav1.CreateOptions{})
		if err != nil {
			t.Fatalf("create secret: %v", err)
		}
		spec.Volumes = append(spec.Volumes, corev1.Volume{Name: "spec", VolumeSource: corev1.VolumeSource{Secret: &corev1.SecretVolumeSource{SecretName: name}}})
		spec.Containers[0].VolumeMounts = append(spec.Containers[0].VolumeMounts, corev1.VolumeMount{Name: "spec", MountPath: "/podrunner-spec", ReadOnly: true})
	}
	create := time.Now()
	_, err := c.Clientset.CoreV1().Pods(ns).Create(context.Background(), &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: name}, Spec: spec,
	}, metav1.CreateOptions{})
	if err != nil {
		t.Fatalf("create bare pod: %v", err)
	}
	pt := bw.waitEnded(t, name, time.Minute)
	st := adjtimex.Stamps([]byte(c.PodLogs(t, ns, name, "echo")))
	if len(st) != 2 {
		t.Fatalf("bare pod %s: %d adjtimex stamps, want 2", name, len(st))
	}
	policy := metav1.DeletePropagationBackground
	_ = c.Clientset.CoreV1().Pods(ns).Delete(context.Background(), name, metav1.DeleteOptions{GracePeriodSeconds: &grace, PropagationPolicy: &policy})
	if kind == floorLayout {
		_ = c.Clientset.CoreV1().Secrets(ns).Delete(context.Background(), name, metav1.DeleteOptions{})
	}
	return bareSample{create: create, added: pt.added, initDone: pt.initDone, running: pt.running, start: st[0], end: st[1], ended: pt.ended}
}

// benchRow is one line of the table: a name and one duration per sample.
type benchRow struct {
	name string
	ds   []time.Duration
}

// quantile is the nearest-rank quantile of ds.
func quantile(ds []time.Duration, q float64) time.Duration {
	if len(ds) == 0 {
		return 0
	}
	s := slices.Clone(ds)
	slices.Sort(s)
	i := int(math.Ceil(q*float64(len(s)))) - 1
	return s[max(0, min(i, len(s)-1))]
}

func ms(d time.Duration) string { return fmt.Sprintf("%7.0f", float64(d)/float64(time.Millisecond)) }

func printTable(t *testing.T, title string, rows []benchRow) {
	var b strings.Builder
	fmt.Fprintf(&b, "\n%s\n", title)
	fmt.Fprintf(&b, "| %-72s | %7s | %7s | %7s | %7s |\n", "interval", "p50 ms", "p95 ms", "min ms", "max ms")
	fmt.Fprintf(&b, "|%s|---------|---------|---------|---------|\n", strings.Repeat("-", 74))
	for _, r := range rows {
		if len(r.ds) == 0 {
			continue
		}
		fmt.Fprintf(&b, "| %-72s | %s | %s | %s | %s |\n", r.name, ms(quantile(r.ds, .5)), ms(quantile(r.ds, .95)),
			ms(slices.Min(r.ds)), ms(slices.Max(r.ds)))
	}
	t.Log(b.String())
}

func jobRows(js []jobSample) []benchRow {
	col := func(name string, f func(s jobSample) time.Duration) benchRow {
		r := benchRow{name: name}
		for _, s := range js {
			r.ds = append(r.ds, f(s))
		}
		return r
	}
	return []benchRow{
		col("job queued -> picked up (coordinator)", func(s jobSample) time.Duration { return s.picked.Sub(s.queued) }),
		col("picked up -> pod created (watch ADDED)", func(s jobSample) time.Duration { return s.podCreated.Sub(s.picked) }),
		col("pod created -> init container ended (kubelet status)", func(s jobSample) time.Duration { return s.initDone.Sub(s.podCreated) }),
		col("pod created -> build container running (kubelet status)", func(s jobSample) time.Duration { return s.buildRunning.Sub(s.podCreated) }),
		col("pod created -> agent runs first stage (pre_get_sources hook)", func(s jobSample) time.Duration { return s.hook.Sub(s.podCreated) }),
		col("first stage -> script started (get_sources clone)", func(s jobSample) time.Duration { return s.scriptStart.Sub(s.hook) }),
		col("pod created -> script started", func(s jobSample) time.Duration { return s.scriptStart.Sub(s.podCreated) }),
		col("script started -> script exited (echo hi)", func(s jobSample) time.Duration { return s.scriptEnd.Sub(s.scriptStart) }),
		col("script exited -> final state accepted (FinishedAt)", func(s jobSample) time.Duration { return s.finished.Sub(s.scriptEnd) }),
		col("  runner: pod created -> executor sees build running (informer)", func(s jobSample) time.Duration { return s.execRunning.Sub(s.execPodCreated) }),
		col("  runner: script exited -> executor has the result (agent API)", func(s jobSample) time.Duration { return s.execResult.Sub(s.scriptEnd) }),
		col("  runner: result -> executor returned (ack, pod delete call)", func(s jobSample) time.Duration { return s.runReturned.Sub(s.execResult) }),
		col("  runner: executor returned -> final state accepted", func(s jobSample) time.Duration { return s.finished.Sub(s.runReturned) }),
		col("final state accepted -> pod deleted (watch DELETED)", func(s jobSample) time.Duration {
			if s.podDeleted.IsZero() {
				return 0
			}
			return s.podDeleted.Sub(s.finished)
		}),
		col("whole job: picked up -> final state accepted", func(s jobSample) time.Duration { return s.finished.Sub(s.picked) }),
		col("whole job: queued -> final state accepted", func(s jobSample) time.Duration { return s.finished.Sub(s.queued) }),
	}
}

func bareRows(prefix string, bs []bareSample) []benchRow {
	col := func(name string, f func(s bareSample) time.Duration) benchRow {
		r := benchRow{name: name}
		for _, s := range bs {
			r.ds = append(r.ds, f(s))
		}
		return r
	}
	rows := []benchRow{
		col(prefix+": create call -> watch ADDED", func(s bareSample) time.Duration { return s.added.Sub(s.create) }),
		col(prefix+": created -> init container ended (kubelet status)", func(s bareSample) time.Duration {
			if s.initDone.IsZero() {
				return -1
			}
			return s.initDone.Sub(s.added)
		}),
		col(prefix+": created -> container running (kubelet status)", func(s bareSample) time.Duration { return s.running.Sub(s.added) }),
		col(prefix+": created -> script started", func(s bareSample) time.Duration { return s.start.Sub(s.added) }),
		col(prefix+": script exited -> Succeeded seen", func(s bareSample) time.Duration { return s.ended.Sub(s.end) }),
		col(prefix+": whole: create call -> Succeeded seen", func(s bareSample) time.Duration { return s.ended.Sub(s.create) }),
	}
	if bs[0].initDone.IsZero() {
		rows = slices.Delete(rows, 1, 2)
	}
	return rows
}

func benchEnvInt(name string, def int) int {
	if v, err := strconv.Atoi(os.Getenv(name)); err == nil && v >= 0 {
		return v
	}
	return def
}

func jobContainer(pod *corev1.Pod) string {
	if pod.Labels[kubernetes.LabelJobID] != "" {
		return kubernetes.ContainerBuild
	}
	return "echo"
}

func TestKubernetesOverhead(t *testing.T) {
	if os.Getenv("PODRUNNER_BENCH") != "1" {
		t.Skip("benchmark: set PODRUNNER_BENCH=1 (and run it through hack/cluster/with-cluster)")
	}
	n := benchEnvInt("PODRUNNER_BENCH_JOBS", 20)
	t.Run("sequential", func(t *testing.T) {
		e := newK8sEnv(t, benchCI, k8sOptions{external: true})
		bw := newBenchWatch(t, e.c, e.ns, jobContainer)
		bl := benchRunner(t, e, 1)
		// One unmeasured round warms the informers, connections, the
		// page cache and the image layers.
		e.pipeline(coordinator.PipelineOptions{}, 2*time.Minute)
		floors := []string{floorBare, floorLayout}
		if os.Getenv("PODRUNNER_BENCH_FLOORS") == "all" {
			floors = []string{floorBare, floorInit, floorDirs, floorLayout}
		}
		for _, f := range floors {
			barePod(t, e.c, e.ns, bw, 0, f)
		}
		var js []jobSample
		bs := map[string][]bareSample{}
		// Jobs and bare pods alternate, so both see the same machine
		// load (the machine is shared).
		for i := 1; i <= n; i++ {
			v := e.pipeline(coordinator.PipelineOptions{}, 2*time.Minute)
			js = append(js, e.benchSample(t, bw, bl, v.Jobs[0]))
			for _, f := range floors {
				bs[f] = append(bs[f], barePod(t, e.c, e.ns, bw, i, f))
			}
		}
		rows := jobRows(js)
		for _, f := range floors {
			rows = append(rows, bareRows(f, bs[f])...)
		}
		printTable(t, fmt.Sprintf("Kubernetes executor, concurrent = 1, %d echo jobs in sequence (bare pods interleaved)", n), rows)
	})
	m := benchEnvInt("PODRUNNER_BENCH_CONCURRENT_JOBS", 30)
	if m == 0 {
		return
	}
	t.Run("concurrent5", func(t *testing.T) {
		var ci strings.Builder
		body := strings.TrimPrefix(benchCI, "\necho:")
		for i := 1; i <= m; i++ {
			fmt.Fprintf(&ci, "echo-%02d:%s", i, body)
		}
		e := newK8sEnv(t, ci.String(), k8sOptions{external: true})
		bw := newBenchWatch(t, e.c, e.ns, jobContainer)
		bl := benchRunner(t, e, 5)
		e.pipeline(coordinator.PipelineOptions{CIConfig: []byte(benchCI)}, 2*time.Minute)
		start := time.Now()
		v := e.pipeline(coordinator.PipelineOptions{}, 4*time.Minute)
		var js []jobSample
		var last time.Time
		for _, j := range v.Jobs {
			s := e.benchSample(t, bw, bl, j)
			js = append(js, s)
			if s.finished.After(last) {
				last = s.finished
			}
		}
		printTable(t, fmt.Sprintf("Kubernetes executor, concurrent = 5, one pipeline of %d echo jobs: all done %.1f s after it was created (%.1f jobs/min)",
			m, last.Sub(start).Seconds(), float64(m)/last.Sub(start).Minutes()), jobRows(js))
	})
}

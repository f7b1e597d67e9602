package kubernetes

import (
	"context"
	"encoding/json"
	"errors"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	k8stesting "k8s.io/client-go/testing"

	"github.com/podrunner/podrunner/internal/agent"
	"github.com/podrunner/podrunner/internal/config"
	"github.com/podrunner/podrunner/internal/executor"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

func waitWarmReady(t *testing.T, ex *Executor, n int) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for ex.WarmStats().Ready < n {
		if time.Now().After(deadline) {
			t.Fatalf("warm pods ready: %+v, want %d", ex.WarmStats(), n)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// A job of the runner's default image runs in a warm pod: the pod gets the
// job's labels, annotations and deadline, its Secret, and its spec with
// the job's environment; no pod is created for it.
func TestWarmPodServesMatchingJob(t *testing.T) {
	h := newHarnessWith(t, func(c *config.Kubernetes) { c.WarmPods = 1 })
	if _, err := h.ex.podWatch(context.Background()); err != nil {
		t.Fatal(err)
	}
	waitWarmReady(t, h.ex, 1)
	warm := h.onlyPod()
	if !strings.HasPrefix(warm.Name, "runner-"+h.ex.short+"-warm-") || warm.Labels[LabelWarm] != "true" || warm.Labels[LabelJobID] != "" {
		t.Fatalf("warm pod %s labels %v", warm.Name, warm.Labels)
	}
	if warm.Spec.ActiveDeadlineSeconds != nil || len(warm.Spec.Containers[0].Env) != 0 {
		t.Fatalf("warm pod has a job's deadline or environment: %+v", warm.Spec)
	}

	p := testPayload()
	tr := &syncBuffer{}
	ch := h.start(context.Background(), &executor.Job{Payload: p, Trace: tr})
	h.waitAction("update", "pods")
	h.agent.write("job output\n")
	h.agent.finish(agent.Result{Success: true})
	if o := wait(t, ch); o.err != nil || !o.res.Success {
		t.Fatalf("result %+v, err %v\n%s", o.res, o.err, tr.String())
	}
	if !strings.Contains(tr.String(), "Using warm pod "+testNS+"/"+warm.Name) || !strings.Contains(tr.String(), "job output") {
		t.Errorf("trace:\n%s", tr.String())
	}
	var updated *corev1.Pod
	var secret *corev1.Secret
	creates := 0
	for _, a := range h.cs.Actions() {
		switch a.GetVerb() {
		case "update":
			if pod, ok := a.(k8stesting.UpdateAction).GetObject().(*corev1.Pod); ok && a.GetSubresource() == "" && updated == nil {
				updated = pod // the hand-over (a later update marks the final update)
			}
		case "create":
			obj := a.(k8stesting.CreateAction).GetObject()
			if _, ok := obj.(*corev1.Pod); ok {
				creates++
			}
			if s, ok := obj.(*corev1.Secret); ok {
				secret = s
			}
		}
	}
	if updated == nil || updated.Name != warm.Name || updated.Labels[LabelJobID] != "42" || updated.Labels[LabelWarm] != "" ||
		updated.Spec.ActiveDeadlineSeconds == nil || *updated.Spec.ActiveDeadlineSeconds < 600 {
		t.Fatalf("hand-over update %+v", updated)
	}
	if secret == nil || secret.Name != warm.Name || len(secret.OwnerReferences) != 1 || secret.OwnerReferences[0].Name != warm.Name {
		t.Fatalf("secret %+v", secret)
	}
	var spec agent.Spec
	if err := json.Unmarshal(secret.Data[agent.SpecKey], &spec); err != nil {
		t.Fatal(err)
	}
	if !slices.Contains(spec.Env, "PUBLIC_ONE=visible") || slices.ContainsFunc(spec.Env, func(e string) bool { return strings.Contains(e, "hunter2") }) {
		t.Errorf("spec env %v: want the public variables only", spec.Env)
	}
	if st := h.ex.WarmStats(); st.Hits != 1 {
		t.Errorf("stats %+v, want 1 hit", st)
	}
	// The pool refills: a second warm pod is created after the first was used.
	deadline := time.Now().Add(10 * time.Second)
	for creates < 2 {
		if time.Now().After(deadline) {
			t.Fatalf("pool not refilled: %d pod creates", creates)
		}
		time.Sleep(20 * time.Millisecond)
		creates = 0
		for _, a := range h.cs.Actions() {
			if a.GetVerb() == "create" {
				if _, ok := a.(k8stesting.CreateAction).GetObject().(*corev1.Pod); ok {
					creates++
				}
			}
		}
	}
}

// A job whose pod differs (another image) takes the cold path and leaves
// the warm pod to the pool; Close deletes idle warm pods.
func TestWarmPodNotUsedForAnotherShape(t *testing.T) {
	h := newHarnessWith(t, func(c *config.Kubernetes) { c.WarmPods = 1 })
	if _, err := h.ex.podWatch(context.Background()); err != nil {
		t.Fatal(err)
	}
	waitWarmReady(t, h.ex, 1)
	warm := h.onlyPod()
	p := testPayload()
	p.Image.Name = "golang:1.26"
	ch := h.start(context.Background(), &executor.Job{Payload: p, Trace: &syncBuffer{}})
	h.waitAction("create", "secrets")
	h.agent.finish(agent.Result{Success: true})
	if o := wait(t, ch); o.err != nil || !o.res.Success {
		t.Fatalf("result %+v, err %v", o.res, o.err)
	}
	if st := h.ex.WarmStats(); st.Hits != 0 || st.Misses[missNoMatch] != 1 {
		t.Errorf("stats %+v, want one no_match miss", st)
	}
	if _, err := h.cs.CoreV1().Pods(testNS).Get(context.Background(), warm.Name, metav1.GetOptions{}); err != nil {
		t.Fatalf("warm pod gone after a cold job: %v", err)
	}
	h.ex.Close()
	if _, err := h.cs.CoreV1().Pods(testNS).Get(context.Background(), warm.Name, metav1.GetOptions{}); err == nil {
		t.Error("idle warm pod left after Close")
	}
}

func TestPodShapeKeyIgnoresTheJobsOwnParts(t *testing.T) {
	a := &corev1.Pod{Spec: corev1.PodSpec{ActiveDeadlineSeconds: ptrTo(int64(60)), Containers: []corev1.Container{
		{Name: ContainerBuild, Image: "x", Env: []corev1.EnvVar{{Name: "A", Value: "1"}}, Command: []string{"a"}}}}}
	b := a.DeepCopy()
	b.Spec.ActiveDeadlineSeconds = nil
	b.Spec.Containers[0].Env = nil
	b.Spec.Containers[0].Command = []string{"b"}
	if podShapeKey(a) != podShapeKey(b) {
		t.Error("environment, command and deadline change the key")
	}
	b.Spec.Containers[0].Image = "y"
	if podShapeKey(a) == podShapeKey(b) {
		t.Error("another image, same key")
	}
}

// The pool's figures are metrics of the executor, one set per runner.
func TestWarmMetrics(t *testing.T) {
	h := newHarnessWith(t, func(c *config.Kubernetes) { c.WarmPods = 1 })
	if _, err := h.ex.podWatch(context.Background()); err != nil {
		t.Fatal(err)
	}
	waitWarmReady(t, h.ex, 1)
	reg := prometheus.NewRegistry()
	if err := reg.Register(h.ex); err != nil {
		t.Fatal(err)
	}
	got, err := testutil.GatherAndCount(reg, "podrunner_warm_pods", "podrunner_warm_pod_misses_total")
	if err != nil || got != 4 {
		t.Fatalf("metrics: %d series, %v; want 2 states and 2 miss reasons", got, err)
	}
	want := `
# HELP podrunner_warm_pods Warm pods of the pool by state (ready: the agent waits for a job; starting).
# TYPE podrunner_warm_pods gauge
podrunner_warm_pods{runner="` + h.ex.short + `",state="ready"} 1
podrunner_warm_pods{runner="` + h.ex.short + `",state="starting"} 0
`
	if err := testutil.GatherAndCompare(reg, strings.NewReader(want), "podrunner_warm_pods"); err != nil {
		t.Error(err)
	}
}

// poolPinned reports whether every idle warm pod's fingerprint was read.
func poolPinned(p *warmPool) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, wp := range p.pods {
		if wp.fp == nil {
			return false
		}
	}
	return len(p.pods) > 0
}

// heldAgent is a fakeAgent that takes the spec on hold and records what
// the cluster held when the runner said start.
type heldAgent struct {
	*fakeAgent
	h            *harness
	mu           sync.Mutex
	holds        int
	starts       int
	pings        int  // Status calls: the pool opening the connection
	writtenFirst bool // the hand-over update and the Secret existed at start
}

func (a *heldAgent) HoldSpec(context.Context, []byte) error {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.holds++
	return nil
}

func (a *heldAgent) Status(ctx context.Context) (*agent.Status, error) {
	a.mu.Lock()
	a.pings++
	a.mu.Unlock()
	return a.fakeAgent.Status(ctx)
}

func (a *heldAgent) Start(context.Context) error {
	var updated, secret bool
	for _, act := range a.h.cs.Actions() {
		switch {
		case act.GetVerb() == "update" && act.GetResource().Resource == "pods":
			updated = true
		case act.GetVerb() == "create" && act.GetResource().Resource == "secrets":
			secret = true
		}
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	a.starts++
	a.writtenFirst = updated && secret
	return nil
}

// A warm pod's agent gets the spec on hold before the hand-over is
// written (its fetch overlaps the writes) and is started only once the
// pod carries the job and the adoption record exists; a hand-over that
// fails never starts it, and the job takes the cold path. A conflict (the
// kubelet wrote the status) is read again and retried. The spec goes over
// the client the pool connected while the pod waited.
func TestWarmSpecHeldUntilHandOverWritten(t *testing.T) {
	for _, tc := range []struct {
		name      string
		conflicts int // hand-over updates answered 409; -1: all
	}{{"written", 0}, {"written after a conflict", 1}, {"hand-over refused", -1}} {
		t.Run(tc.name, func(t *testing.T) {
			fail := tc.conflicts < 0
			h := newHarnessWith(t, func(c *config.Kubernetes) { c.WarmPods = 1 })
			ha := &heldAgent{fakeAgent: h.agent, h: h}
			var clients atomic.Int32
			h.ex.newAgent = func(string, string, []byte) agentAPI { clients.Add(1); return ha }
			var conflicts atomic.Int32
			h.cs.PrependReactor("update", "pods", func(a k8stesting.Action) (bool, runtime.Object, error) {
				if a.GetSubresource() == "" && a.(k8stesting.UpdateAction).GetObject().(*corev1.Pod).Labels[LabelJobID] != "" &&
					(fail || int(conflicts.Load()) < tc.conflicts) {
					conflicts.Add(1)
					return true, nil, apierrors.NewConflict(corev1.Resource("pods"), "warm", errors.New("changed"))
				}
				return false, nil, nil
			})
			if _, err := h.ex.podWatch(context.Background()); err != nil {
				t.Fatal(err)
			}
			waitWarmReady(t, h.ex, 1)
			deadline := time.Now().Add(10 * time.Second)
			for !poolPinned(h.ex.pool) { // read while idle
				if time.Now().After(deadline) {
					t.Fatal("warm pod's fingerprint never read")
				}
				time.Sleep(10 * time.Millisecond)
			}
			ha.mu.Lock()
			pings := ha.pings
			ha.mu.Unlock()
			if n := clients.Load(); n != 1 || pings != 1 {
				t.Fatalf("while idle: %d agent clients, %d connecting requests; want 1 and 1", n, pings)
			}
			tr := &syncBuffer{}
			ch := h.start(context.Background(), &executor.Job{Payload: testPayload(), Trace: tr})
			h.waitAction("create", "secrets")
			h.agent.write("job output\n")
			h.agent.finish(agent.Result{Success: true})
			if o := wait(t, ch); o.err != nil || !o.res.Success {
				t.Fatalf("result %+v, err %v\n%s", o.res, o.err, tr.String())
			}
			ha.mu.Lock()
			defer ha.mu.Unlock()
			switch {
			case fail && (ha.starts != 0 || strings.Contains(tr.String(), "Using warm pod")):
				t.Errorf("refused hand-over: %d starts, trace:\n%s", ha.starts, tr.String())
			case fail && ha.holds != 1:
				t.Errorf("refused hand-over: %d specs on hold, want 1 (sent before the update)", ha.holds)
			case !fail && (ha.holds != 1 || ha.starts != 1 || !ha.writtenFirst || !strings.Contains(tr.String(), "Using warm pod")):
				t.Errorf("holds %d, starts %d, written before start %v; want 1, 1, true; trace:\n%s", ha.holds, ha.starts, ha.writtenFirst, tr.String())
			case !fail && clients.Load() != 1:
				t.Errorf("%d agent clients made, want 1: the spec must go over the pool's connection", clients.Load())
			}
		})
	}
}

// A hand-over holds the refill for refillSettle while a pod of the same
// shape is left, and wakes the pool then; the last pod of a shape is
// replaced at once.
func TestWarmRefillSettles(t *testing.T) {
	for _, tc := range []struct {
		name   string
		left   map[string]string // pod name -> shape key, after the take
		settle bool
	}{
		{"another pod of the shape left", map[string]string{"a": "k"}, true},
		{"only other shapes left", map[string]string{"b": "other"}, false},
		{"pool empty", map[string]string{}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := &warmPool{pods: map[string]*warmPod{}, wake: make(chan struct{}, 1), settle: time.Now().Add(time.Hour)}
			for name, key := range tc.left {
				p.pods[name] = &warmPod{name: name, key: key}
			}
			p.settleRefill("k")
			settling := time.Now().Before(p.settle)
			if settling != tc.settle {
				t.Fatalf("refill held: %v, want %v", settling, tc.settle)
			}
			if !tc.settle {
				return
			}
			if d := time.Until(p.settle); d > refillSettle || d < refillSettle/2 {
				t.Errorf("refill held for %s, want %s", d, refillSettle)
			}
			select {
			case <-p.wake:
			case <-time.After(10 * refillSettle):
				t.Error("the pool was not woken when the refill was due")
			}
		})
	}
}

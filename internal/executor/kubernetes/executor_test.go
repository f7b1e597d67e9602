package kubernetes

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/kubernetes/fake"
	k8stesting "k8s.io/client-go/testing"

	"github.com/podrunner/podrunner/internal/agent"
	"github.com/podrunner/podrunner/internal/config"
	"github.com/podrunner/podrunner/internal/executor"
	"github.com/podrunner/podrunner/internal/gitlab"
	"github.com/podrunner/podrunner/internal/job"
)

const (
	testNS    = "ci"
	testToken = "glrt-abcdefghijklmnop"
	testIP    = "10.1.2.3"
)

// fakeAgent is the in-pod agent's API held in memory. Log hands out at
// most chunk bytes per call and fails every failEvery-th call, so the pump
// must resume at the right offset.
type fakeAgent struct {
	mu        sync.Mutex
	log       []byte
	state     string
	result    *agent.Result
	changed   chan struct{}
	chunk     int
	failEvery int
	calls     int
	cancels   int
	aborts    int
	acks      int
	specs     int
	onAck     func()
	onCancel  func()
}

func newFakeAgent() *fakeAgent {
	return &fakeAgent{state: agent.StateRunning, changed: make(chan struct{}), chunk: 7}
}

func (f *fakeAgent) PutSpec(context.Context, []byte) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.specs++
	return nil
}

func (f *fakeAgent) bump() { close(f.changed); f.changed = make(chan struct{}) }

func (f *fakeAgent) write(s string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.log = append(f.log, s...)
	f.bump()
}

func (f *fakeAgent) finish(r agent.Result) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.state, f.result = agent.StateDone, &r
	f.bump()
}

func (f *fakeAgent) Log(ctx context.Context, off int64) ([]byte, int64, string, error) {
	for {
		f.mu.Lock()
		f.calls++
		if f.failEvery > 0 && f.calls%f.failEvery == 0 {
			f.mu.Unlock()
			return nil, 0, "", errors.New("connection reset by peer")
		}
		size := int64(len(f.log))
		if off > size {
			f.mu.Unlock()
			return nil, 0, "", &agent.RangeError{}
		}
		if off < size || f.state == agent.StateDone {
			end := min(off+int64(f.chunk), size)
			data := append([]byte(nil), f.log[off:end]...)
			st := f.state
			f.mu.Unlock()
			return data, size, st, nil
		}
		ch := f.changed
		f.mu.Unlock()
		select {
		case <-ch:
		case <-ctx.Done():
			return nil, 0, "", ctx.Err()
		}
	}
}

func (f *fakeAgent) Status(context.Context) (*agent.Status, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return &agent.Status{State: f.state, Result: f.result, LogSize: int64(len(f.log))}, nil
}

func (f *fakeAgent) Cancel(context.Context) error {
	f.mu.Lock()
	f.cancels++
	fn := f.onCancel
	f.mu.Unlock()
	if fn != nil {
		fn()
	}
	return nil
}

func (f *fakeAgent) Abort(context.Context) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.aborts++
	return nil
}

func (f *fakeAgent) Ack(context.Context) error {
	f.mu.Lock()
	f.acks++
	fn := f.onAck
	f.mu.Unlock()
	if fn != nil {
		fn()
	}
	return nil
}

func (f *fakeAgent) counts() (cancels, aborts, acks int) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.cancels, f.aborts, f.acks
}

// harness is an executor on a fake clientset with a fake kubelet that
// applies status to every created pod.
type harness struct {
	t     *testing.T
	cs    *fake.Clientset
	ex    *Executor
	agent *fakeAgent
	// status is what the fake kubelet sets on a new pod.
	status func(*corev1.Pod) corev1.PodStatus
	mu     sync.Mutex
	urls   []string
}

func newHarness(t *testing.T) *harness { t.Helper(); return newHarnessWith(t, nil) }

// newHarnessWith is newHarness with edit applied to the runner's config.
func newHarnessWith(t *testing.T, edit func(*config.Kubernetes)) *harness {
	t.Helper()
	h := &harness{t: t, cs: fake.NewClientset(), agent: newFakeAgent()}
	h.status = func(*corev1.Pod) corev1.PodStatus { return runningStatus() }
	cfg := &config.Kubernetes{Namespace: testNS, Image: "podrunner.local/busybox:1", PollTimeout: 30}
	if edit != nil {
		edit(cfg)
	}
	ex, err := New(Options{
		Config:         cfg,
		RunnerToken:    testToken,
		api:            fakeAPI{h.cs},
		TransientGrace: 200 * time.Millisecond,
	})
	if err != nil {
		t.Fatal(err)
	}
	ex.fingerprint = func(context.Context, string) ([]byte, error) { return []byte("fingerprint"), nil }
	ex.newAgent = func(base, _ string, _ []byte) agentAPI {
		h.mu.Lock()
		h.urls = append(h.urls, base)
		h.mu.Unlock()
		return h.agent
	}
	h.ex = ex
	t.Cleanup(func() { ex.Close() })

	ctx, cancel := context.WithCancel(context.Background())
	w, err := h.cs.CoreV1().Pods(testNS).Watch(ctx, metav1.ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		for ev := range w.ResultChan() {
			if ev.Type != watch.Added {
				continue
			}
			pod := ev.Object.(*corev1.Pod).DeepCopy()
			pod.Status = h.status(pod)
			if _, err := h.cs.CoreV1().Pods(testNS).UpdateStatus(ctx, pod, metav1.UpdateOptions{}); err != nil && ctx.Err() == nil {
				t.Errorf("fake kubelet: %v", err)
			}
		}
	}()
	t.Cleanup(func() { cancel(); w.Stop(); <-done })
	return h
}

func runningStatus() corev1.PodStatus {
	return corev1.PodStatus{Phase: corev1.PodRunning, PodIP: testIP, ContainerStatuses: []corev1.ContainerStatus{
		{Name: ContainerBuild, State: corev1.ContainerState{Running: &corev1.ContainerStateRunning{}}},
	}}
}

// setBuildState changes the build container's state of the only pod.
func (h *harness) setPodStatus(mut func(*corev1.PodStatus)) {
	h.t.Helper()
	pod := h.onlyPod()
	mut(&pod.Status)
	if _, err := h.cs.CoreV1().Pods(testNS).UpdateStatus(context.Background(), pod, metav1.UpdateOptions{}); err != nil {
		h.t.Error(err) // also called from goroutines: no Fatal
	}
}

func (h *harness) onlyPod() *corev1.Pod {
	h.t.Helper()
	pods, err := h.cs.CoreV1().Pods(testNS).List(context.Background(), metav1.ListOptions{})
	if err != nil || len(pods.Items) != 1 {
		h.t.Fatalf("pods: %v, %d", err, len(pods.Items))
	}
	return &pods.Items[0]
}

// waitAction waits until the fake clientset recorded a verb on a resource.
func (h *harness) waitAction(verb, resource string) {
	h.t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !h.hasAction(verb, resource) {
		if time.Now().After(deadline) {
			h.t.Fatalf("no %s %s", verb, resource)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func (h *harness) hasAction(verb, resource string) bool {
	for _, a := range h.cs.Actions() {
		if a.GetVerb() == verb && a.GetResource().Resource == resource {
			return true
		}
	}
	return false
}

func testPayload() *job.Payload {
	return &job.Payload{
		ID: 42, Token: "glcbt-jobtokensecret", RunnerInfo: job.RunnerInfo{Timeout: 600},
		JobInfo: job.JobInfo{Name: "test", ProjectID: 7, ProjectFullPath: "group/demo", PipelineID: 9},
		GitInfo: job.GitInfo{RepoURL: "http://gitlab-ci-token:glcbt-jobtokensecret@gitlab.example/group/demo.git",
			Ref: "main", Sha: "0123456789abcdef0123456789abcdef01234567", RefType: "branch"},
		Variables: job.Variables{
			{Key: "PUBLIC_ONE", Value: "visible", Public: true},
			{Key: "SECRET_ONE", Value: "hunter2-very-secret", Masked: true},
			{Key: "A_FILE", Value: "file content", File: true},
		},
		Steps: []job.Step{{Name: "script", Script: []string{"echo hi"}, Timeout: 600, When: "on_success"}},
	}
}

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

type runOut struct {
	res executor.Result
	err error
}

func (h *harness) start(ctx context.Context, j *executor.Job) <-chan runOut {
	ch := make(chan runOut, 1)
	go func() {
		res, err := h.ex.Run(ctx, j)
		ch <- runOut{res, err}
	}()
	return ch
}

func wait(t *testing.T, ch <-chan runOut) runOut {
	t.Helper()
	select {
	case o := <-ch:
		return o
	case <-time.After(20 * time.Second):
		t.Fatal("Run did not return")
		return runOut{}
	}
}

func TestRunSuccessStreamsLogAndCleansUp(t *testing.T) {
	h := newHarness(t)
	h.agent.failEvery = 3
	tr := &syncBuffer{}
	ch := h.start(context.Background(), &executor.Job{Payload: testPayload(), Slot: 3, Trace: tr})

	h.waitAction("create", "pods")
	const body = "Running on the pod\n$ echo hi\nhi\n한국어 ✅ line\nJob succeeded\n"
	for _, part := range strings.SplitAfter(body, "\n") {
		h.agent.write(part)
	}
	h.agent.finish(agent.Result{Success: true})
	o := wait(t, ch)
	if o.err != nil || !o.res.Success {
		t.Fatalf("result %+v, err %v", o.res, o.err)
	}
	got := tr.String()
	if !strings.HasSuffix(got, body) || strings.Count(got, "Running on the pod") != 1 {
		t.Fatalf("trace does not end with the agent log exactly once:\n%q", got)
	}
	for _, want := range []string{`Preparing the "kubernetes" executor`, "Using Kubernetes namespace: ci", "Waiting for pod ci/runner-"} {
		if !strings.Contains(got, want) {
			t.Errorf("trace lacks %q", want)
		}
	}
	if _, _, acks := h.agent.counts(); acks != 1 {
		t.Errorf("acks = %d, want 1", acks)
	}
	h.agent.mu.Lock()
	specs := h.agent.specs
	h.agent.mu.Unlock()
	if specs != 1 {
		t.Errorf("spec handed to the agent %d times, want 1", specs)
	}
	if h.urls[0] != "https://"+testIP+":8765" {
		t.Errorf("agent url %q", h.urls[0])
	}

	// The pod was created with the trace prefix annotation, then the
	// Secret owned by it; the pod was deleted in the background after the
	// job (the garbage collector takes the Secret).
	var created *corev1.Pod
	var secret *corev1.Secret
	var deleted, secretDeleted bool
	for _, a := range h.cs.Actions() {
		switch a := a.(type) {
		case k8stesting.CreateAction:
			if p, ok := a.GetObject().(*corev1.Pod); ok {
				created = p
			}
			if s, ok := a.GetObject().(*corev1.Secret); ok {
				secret = s
			}
		case k8stesting.DeleteAction:
			if a.GetResource().Resource == "secrets" && secret != nil && a.GetName() == secret.Name {
				secretDeleted = true
			}
			if a.GetResource().Resource == "pods" {
				deleted = true
				opts := a.GetDeleteOptions()
				if opts.PropagationPolicy == nil || *opts.PropagationPolicy != metav1.DeletePropagationBackground {
					t.Errorf("pod deleted with propagation %v, want Background", opts.PropagationPolicy)
				}
			}
		}
	}
	if created == nil || !deleted {
		t.Fatalf("pod created %v, deleted %v", created != nil, deleted)
	}
	prefix, err := base64.StdEncoding.DecodeString(created.Annotations[AnnotationTracePrefix])
	if err != nil || !strings.HasPrefix(got, string(prefix)) || got[len(prefix):] != body {
		t.Fatalf("trace prefix annotation %q is not the trace before the agent log (%v)", prefix, err)
	}
	if secret == nil || secret.Name != created.Name || secretDeleted {
		t.Fatalf("secret %v (want one named as the pod, left to the garbage collector) deleted %v", secret, secretDeleted)
	}
	if len(secret.OwnerReferences) != 1 || secret.OwnerReferences[0].Name != created.Name || secret.OwnerReferences[0].Kind != "Pod" {
		t.Fatalf("secret owner %+v, want the pod", secret.OwnerReferences)
	}
	if len(secret.Data[PayloadKey]) == 0 {
		t.Error("secret lacks the job payload")
	}
	if strings.Contains(fmt.Sprint(created.Spec), "hunter2-very-secret") || strings.Contains(fmt.Sprint(created.Annotations), "hunter2-very-secret") {
		t.Error("masked variable in the pod spec")
	}
}

func TestRunScriptFailureKeepsExitCode(t *testing.T) {
	h := newHarness(t)
	tr := &syncBuffer{}
	ch := h.start(context.Background(), &executor.Job{Payload: testPayload(), Trace: tr})
	h.waitAction("create", "pods")
	h.agent.write("ERROR: Job failed: exit code 3\n")
	h.agent.finish(agent.Result{FailureReason: gitlab.ScriptFailure, ExitCode: 3})
	o := wait(t, ch)
	if o.err != nil || o.res.Success || o.res.FailureReason != gitlab.ScriptFailure || o.res.ExitCode != 3 {
		t.Fatalf("result %+v, err %v", o.res, o.err)
	}
}

func TestRunImagePullFailsFastAndDeletesPod(t *testing.T) {
	h := newHarness(t)
	h.status = func(*corev1.Pod) corev1.PodStatus {
		return corev1.PodStatus{Phase: corev1.PodPending, ContainerStatuses: []corev1.ContainerStatus{{
			Name: ContainerBuild, Image: "registry.invalid/nope:1",
			State: corev1.ContainerState{Waiting: &corev1.ContainerStateWaiting{
				Reason: "ImagePullBackOff", Message: `Back-off pulling image "registry.invalid/nope:1"`}},
		}}}
	}
	tr := &syncBuffer{}
	start := time.Now()
	o := wait(t, h.start(context.Background(), &executor.Job{Payload: testPayload(), Trace: tr}))
	if o.err != nil || o.res.Success || o.res.FailureReason == "" {
		t.Fatalf("result %+v, err %v", o.res, o.err)
	}
	if !strings.Contains(tr.String(), "registry.invalid/nope:1") {
		t.Errorf("trace does not name the image:\n%s", tr.String())
	}
	if d := time.Since(start); d > 10*time.Second {
		t.Errorf("took %v", d)
	}
	if !h.hasAction("delete", "pods") {
		t.Error("pod not deleted")
	}
}

func TestRunPodDeletedIsFailure(t *testing.T) {
	h := newHarness(t)
	tr := &syncBuffer{}
	ch := h.start(context.Background(), &executor.Job{Payload: testPayload(), Trace: tr})
	h.waitAction("create", "pods")
	h.agent.write("working\n")
	waitFor(t, func() bool { return h.agentCalls() > 0 })
	if err := h.cs.CoreV1().Pods(testNS).Delete(context.Background(), h.onlyPod().Name, metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	o := wait(t, ch)
	if o.err != nil || o.res.Success || o.res.FailureReason == "" {
		t.Fatalf("a deleted pod must fail the job: %+v, %v", o.res, o.err)
	}
	if !strings.Contains(tr.String(), "deleted") {
		t.Errorf("trace does not say the pod was deleted:\n%s", tr.String())
	}
}

func (h *harness) agentCalls() int {
	h.agent.mu.Lock()
	defer h.agent.mu.Unlock()
	return h.agent.calls
}

func waitFor(t *testing.T, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatal("condition not met")
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// The container's end overrides what the agent reported: a script the
// OOM killer ended (exit 137) says OOMKilled; an agent stopped from
// outside (its container stopped) fails the job with runner_system_failure
// naming what happened to the container, not with its own abort.
func TestRunContainerEndOverridesAgentResult(t *testing.T) {
	for _, tc := range []struct {
		name       string
		terminated corev1.ContainerStateTerminated
		result     agent.Result
		want       executor.Result
		trace      []string
	}{
		{"oom", corev1.ContainerStateTerminated{Reason: "OOMKilled"}, agent.Result{FailureReason: gitlab.ScriptFailure, ExitCode: 137},
			executor.Result{FailureReason: gitlab.ScriptFailure, ExitCode: 137}, []string{"OOMKilled"}},
		{"stopped", corev1.ContainerStateTerminated{Reason: "Error", ExitCode: 143}, agent.Result{FailureReason: gitlab.JobCanceled, Stopped: true},
			executor.Result{FailureReason: gitlab.RunnerSystemFailure}, []string{"the build container of pod", "stopped"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := newHarness(t)
			h.agent.onAck = func() {
				// The agent exits after the ack; the kubelet reports how.
				go h.setPodStatus(func(s *corev1.PodStatus) {
					s.ContainerStatuses[0].State = corev1.ContainerState{Terminated: &tc.terminated}
				})
			}
			tr := &syncBuffer{}
			ch := h.start(context.Background(), &executor.Job{Payload: testPayload(), Trace: tr})
			h.waitAction("create", "pods")
			h.agent.write("started\n")
			h.agent.finish(tc.result)
			o := wait(t, ch)
			if o.err != nil || o.res.Success || o.res.FailureReason != tc.want.FailureReason || o.res.ExitCode != tc.want.ExitCode {
				t.Fatalf("result %+v, err %v, want %+v", o.res, o.err, tc.want)
			}
			for _, w := range tc.trace {
				if !strings.Contains(tr.String(), w) {
					t.Errorf("trace lacks %q:\n%s", w, tr.String())
				}
			}
		})
	}
}

func TestRunGracefulCancelAsksAgent(t *testing.T) {
	h := newHarness(t)
	cancel := make(chan struct{})
	h.agent.onCancel = func() {
		go func() {
			h.agent.write("Running after_script\n")
			h.agent.finish(agent.Result{FailureReason: gitlab.JobCanceled})
		}()
	}
	tr := &syncBuffer{}
	ch := h.start(context.Background(), &executor.Job{Payload: testPayload(), Trace: tr, GracefulCancel: cancel})
	h.waitAction("create", "pods")
	h.agent.write("started\n")
	waitFor(t, func() bool { return strings.Contains(tr.String(), "started") })
	close(cancel)
	o := wait(t, ch)
	if o.err != nil || o.res.FailureReason != gitlab.JobCanceled {
		t.Fatalf("result %+v, err %v", o.res, o.err)
	}
	if c, _, _ := h.agent.counts(); c != 1 {
		t.Errorf("cancels = %d", c)
	}
	if !strings.Contains(tr.String(), "Running after_script") {
		t.Error("after_script output missing")
	}
}

func TestRunAbortAbortsAgentAndDeletesPod(t *testing.T) {
	h := newHarness(t)
	ctx, cancel := context.WithCancel(context.Background())
	tr := &syncBuffer{}
	ch := h.start(ctx, &executor.Job{Payload: testPayload(), Trace: tr})
	h.waitAction("create", "pods")
	h.agent.write("started\n")
	waitFor(t, func() bool { return strings.Contains(tr.String(), "started") })
	cancel()
	o := wait(t, ch)
	if o.err != nil || o.res.Success || o.res.FailureReason != gitlab.JobCanceled {
		t.Fatalf("result %+v, err %v", o.res, o.err)
	}
	if _, a, _ := h.agent.counts(); a != 1 {
		t.Errorf("aborts = %d", a)
	}
	if !h.hasAction("delete", "pods") {
		t.Error("pod not deleted")
	}
}

func TestRunQuotaExceededIsRetried(t *testing.T) {
	h := newHarness(t)
	refusals := 2
	var mu sync.Mutex
	h.cs.PrependReactor("create", "pods", func(k8stesting.Action) (bool, runtime.Object, error) {
		mu.Lock()
		defer mu.Unlock()
		if refusals == 0 {
			return false, nil, nil
		}
		refusals--
		return true, nil, apierrors.NewForbidden(schema.GroupResource{Resource: "pods"}, "x",
			errors.New("exceeded quota: compute, requested: pods=1, used: pods=10, limited: pods=10"))
	})
	tr := &syncBuffer{}
	ch := h.start(context.Background(), &executor.Job{Payload: testPayload(), Trace: tr})
	waitFor(t, func() bool {
		pods, _ := h.cs.CoreV1().Pods(testNS).List(context.Background(), metav1.ListOptions{})
		return len(pods.Items) == 1
	})
	h.agent.finish(agent.Result{Success: true})
	o := wait(t, ch)
	if o.err != nil || !o.res.Success {
		t.Fatalf("result %+v, err %v", o.res, o.err)
	}
	if !strings.Contains(tr.String(), "quota") {
		t.Errorf("trace does not mention the quota wait:\n%s", tr.String())
	}
}

// The stage scripts call podrunner-helper (artifacts, caches) where the
// pod has it: the shared emptyDir, or the helper image volume.
func TestStageScriptsCallTheAgentWhereThePodHasIt(t *testing.T) {
	for _, c := range []struct {
		volume    bool
		want, not string
	}{
		{false, agent.Binary + " ", agent.ImageVolumeBinary},
		{true, agent.ImageVolumeBinary + " ", agent.Binary + " "},
	} {
		h := newHarnessWith(t, func(k *config.Kubernetes) { k.HelperImageVolume = c.volume })
		p := testPayload()
		p.Artifacts = []job.Artifact{{Name: "out", Paths: []string{"out/"}, When: "on_success", Type: "archive", Format: "zip"}}
		req, err := h.ex.podRequest(t.Context(), &executor.Job{Payload: p})
		if err != nil {
			t.Fatal(err)
		}
		plan, err := json.Marshal(req.Plan)
		if err != nil {
			t.Fatal(err)
		}
		if !strings.Contains(string(plan), c.want) || strings.Contains(string(plan), c.not) {
			t.Errorf("helper_image_volume=%v: the plan does not call %q only:\n%s", c.volume, c.want, plan)
		}
	}
}

func TestAdoptResumeAndCleanup(t *testing.T) {
	h := newHarness(t)
	// What a runner killed mid-job leaves behind: the Secret and the pod,
	// running, with part of the log in the agent.
	req, err := h.ex.podRequest(t.Context(), &executor.Job{Payload: testPayload(), Slot: 2})
	if err != nil {
		t.Fatal(err)
	}
	req.TracePrefix = []byte("prefix line\n")
	pod, sec, err := BuildPod(req)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	if _, err := h.cs.CoreV1().Secrets(testNS).Create(ctx, sec, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	if _, err := h.cs.CoreV1().Pods(testNS).Create(ctx, pod, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	h.agent.write("first part\n")

	// The restarted manager: the same system id.
	ex2, err := New(Options{Config: h.ex.cfg, RunnerToken: testToken, SystemID: h.ex.systemID, api: fakeAPI{h.cs}})
	if err != nil {
		t.Fatal(err)
	}
	defer ex2.Close()
	ex2.fingerprint = h.ex.fingerprint
	ex2.newAgent = func(string, string, []byte) agentAPI { return h.agent }
	list, err := ex2.Adopt(context.Background())
	if err != nil || len(list) != 1 {
		t.Fatalf("adopt: %v, %d pods", err, len(list))
	}
	a := list[0]
	if a.JobID != 42 || a.Slot != 2 || a.Payload.Token != "glcbt-jobtokensecret" {
		t.Fatalf("adoptable %+v", a)
	}
	if string(a.TracePrefix) != "prefix line\n" {
		t.Fatalf("trace prefix %q", a.TracePrefix)
	}
	// Cleanup keeps the kept job's pod.
	if del, err := ex2.Cleanup(context.Background(), func(id int64) bool { return id == 42 }); err != nil || len(del) != 0 {
		t.Fatalf("cleanup deleted %v (%v)", del, err)
	}

	if err := ex2.Claim(context.Background(), &a); err != nil {
		t.Fatal(err)
	}
	tr2 := &syncBuffer{}
	ch2 := make(chan runOut, 1)
	go func() {
		res, err := ex2.ResumeJob(context.Background(), a, &executor.Job{Payload: a.Payload, Trace: tr2})
		ch2 <- runOut{res, err}
	}()
	h.agent.write("second part\n")
	h.agent.finish(agent.Result{Success: true})
	o := wait(t, ch2)
	if o.err != nil || !o.res.Success {
		t.Fatalf("resume: %+v %v\n%s", o.res, o.err, tr2)
	}
	if want := "prefix line\nfirst part\nsecond part\n"; tr2.String() != want {
		t.Fatalf("resumed trace\n%q\nwant\n%q", tr2.String(), want)
	}
}

func TestCleanupDeletesUnwantedPods(t *testing.T) {
	cs := fake.NewClientset()
	ex, err := New(Options{Config: &config.Kubernetes{Namespace: testNS}, RunnerToken: testToken, SystemID: "s_aaaaaaaaaaaa", api: fakeAPI{cs}})
	if err != nil {
		t.Fatal(err)
	}
	defer ex.Close()
	short := job.ShortToken(testToken)
	for i, id := range []string{"1", "2"} {
		_, err := cs.CoreV1().Pods(testNS).Create(context.Background(), &corev1.Pod{ObjectMeta: metav1.ObjectMeta{
			Name: fmt.Sprintf("runner-%s-project-1-concurrent-%d-x", short, i), Namespace: testNS,
			Labels: map[string]string{LabelManaged: "true", LabelRunner: short, LabelJobID: id, LabelSystemID: "s_aaaaaaaaaaaa"},
		}}, metav1.CreateOptions{})
		if err != nil {
			t.Fatal(err)
		}
	}
	// Another manager's pod of the same token is not touched either.
	_, _ = cs.CoreV1().Pods(testNS).Create(context.Background(), &corev1.Pod{ObjectMeta: metav1.ObjectMeta{
		Name: "other-manager", Namespace: testNS,
		Labels: map[string]string{LabelManaged: "true", LabelRunner: short, LabelJobID: "4", LabelSystemID: "s_bbbbbbbbbbbb"},
	}}, metav1.CreateOptions{})
	// Another runner's pod is never touched.
	_, _ = cs.CoreV1().Pods(testNS).Create(context.Background(), &corev1.Pod{ObjectMeta: metav1.ObjectMeta{
		Name: "other", Namespace: testNS, Labels: map[string]string{LabelManaged: "true", LabelRunner: "someone", LabelJobID: "3"},
	}}, metav1.CreateOptions{})
	del, err := ex.Cleanup(context.Background(), func(id int64) bool { return id == 2 })
	if err != nil || len(del) != 1 || !strings.HasSuffix(del[0], "concurrent-0-x") {
		t.Fatalf("deleted %v, %v", del, err)
	}
}

func TestLogPumpResumesWithoutLossOrDuplicates(t *testing.T) {
	a := newFakeAgent()
	a.failEvery = 2
	a.chunk = 3
	var want strings.Builder
	for i := range 200 {
		fmt.Fprintf(&want, "line %d\n", i)
	}
	a.write(want.String())
	a.finish(agent.Result{Success: true})
	var got bytes.Buffer
	p := &logPump{api: a, trace: &got, log: testLogger(), minBackoff: time.Millisecond}
	if err := p.run(context.Background()); err != nil {
		t.Fatal(err)
	}
	if got.String() != want.String() {
		t.Fatalf("log differs: %d bytes, want %d", got.Len(), want.Len())
	}
}

func TestIsTransient(t *testing.T) {
	gr := schema.GroupResource{Resource: "pods"}
	for _, tc := range []struct {
		err  error
		want bool
	}{
		{apierrors.NewTooManyRequests("slow down", 1), true},
		{apierrors.NewServerTimeout(gr, "create", 1), true},
		{apierrors.NewInternalError(errors.New("etcdserver: leader changed")), true},
		{apierrors.NewServiceUnavailable("down"), true},
		{errors.New("dial tcp 10.0.0.1:6443: connect: connection refused"), true},
		{apierrors.NewForbidden(gr, "x", errors.New("exceeded quota")), false},
		{apierrors.NewAlreadyExists(gr, "x"), false},
		{apierrors.NewInvalid(schema.GroupKind{Kind: "Pod"}, "x", nil), false},
		{context.Canceled, false},
		{nil, false},
	} {
		if got := isTransient(tc.err); got != tc.want {
			t.Errorf("isTransient(%v) = %v, want %v", tc.err, got, tc.want)
		}
	}
}

func testLogger() *slog.Logger { return slog.New(slog.DiscardHandler) }

func TestRunRegistryCredentialsBecomeAnImagePullSecret(t *testing.T) {
	h := newHarness(t)
	p := testPayload()
	p.Credentials = []job.Credential{{Type: "registry", URL: "registry.example.com", Username: "gitlab-ci-token", Password: "glcbt-registry-pass"}}
	ch := h.start(context.Background(), &executor.Job{Payload: p, Trace: &syncBuffer{}})
	h.waitAction("create", "pods")
	h.agent.finish(agent.Result{Success: true})
	if o := wait(t, ch); o.err != nil || !o.res.Success {
		t.Fatalf("result %+v, err %v", o.res, o.err)
	}
	var created *corev1.Pod
	for _, a := range h.cs.Actions() {
		if c, ok := a.(k8stesting.CreateAction); ok {
			if pod, ok := c.GetObject().(*corev1.Pod); ok {
				created = pod
			}
		}
	}
	if created == nil {
		t.Fatal("no pod created")
	}
	name := created.Name + RegistrySecretSuffix
	if !slices.Contains(created.Spec.ImagePullSecrets, corev1.LocalObjectReference{Name: name}) {
		t.Fatalf("pod imagePullSecrets %v lack %s", created.Spec.ImagePullSecrets, name)
	}
	if strings.Contains(fmt.Sprint(created.Spec), "glcbt-registry-pass") {
		t.Fatal("registry password in the pod spec")
	}
	var s *corev1.Secret
	deleted := false
	for _, a := range h.cs.Actions() {
		if c, ok := a.(k8stesting.CreateAction); ok {
			if sec, ok := c.GetObject().(*corev1.Secret); ok && sec.Name == name {
				s = sec
			}
		}
		if d, ok := a.(k8stesting.DeleteAction); ok && d.GetResource().Resource == "secrets" && d.GetName() == name {
			deleted = true
		}
	}
	if s == nil || s.Type != corev1.SecretTypeDockerConfigJson || !strings.Contains(string(s.Data[corev1.DockerConfigJsonKey]), `"registry.example.com"`) {
		t.Fatalf("registry secret %+v", s)
	}
	if !deleted {
		t.Fatal("registry secret not deleted after the job")
	}
}

func TestBuildRegistrySecretWithoutCredentials(t *testing.T) {
	pod := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "p", Namespace: "ci"}}
	s, err := BuildRegistrySecret(pod, []job.Credential{{Type: "other", URL: "x"}})
	if err != nil || s != nil {
		t.Fatalf("got %v, %v; want no Secret", s, err)
	}
}

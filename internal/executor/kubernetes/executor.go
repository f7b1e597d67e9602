// Package kubernetes is the executor that runs each job as one pod, with
// the podrunner agent inside instead of exec/attach. The design contract
// is docs/kubernetes-executor.md.
package kubernetes

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"path"
	"strconv"
	"strings"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/rest"

	"github.com/podrunner/podrunner/internal/agent"
	"github.com/podrunner/podrunner/internal/config"
	"github.com/podrunner/podrunner/internal/executor"
	"github.com/podrunner/podrunner/internal/gitlab"
	"github.com/podrunner/podrunner/internal/job"
	"github.com/podrunner/podrunner/internal/trace"
)

// Defaults.
const (
	DefaultAgentImage  = "podrunner.local/podrunner:dev"
	DefaultPollTimeout = 180 * time.Second // GitLab Runner's poll_timeout default
	buildsDir          = "/builds"
)

// Options configure the executor; they are the [[runners]] and
// [runners.kubernetes] keys.
type Options struct {
	Config *config.Kubernetes
	// RunnerToken is the runner's token; only its short form is used
	// (labels, pod names, CI_RUNNER_SHORT_TOKEN).
	RunnerToken string
	RunnerName  string
	// SystemID is this manager's system_id: the owner of the pods it
	// creates or claims. When empty, one is made as for a runner without
	// a config file (config.NewSystemID).
	SystemID string
	Logger   *slog.Logger
	// RESTConfig overrides the connection settings of Config (tests).
	RESTConfig *rest.Config
	// Kubeconfig is a kubeconfig file to use instead of $KUBECONFIG or
	// ~/.kube/config when no host is configured (exec --kubeconfig).
	Kubeconfig string
	// api overrides RESTConfig (unit tests: client-go's fake clientset).
	api kubeAPI
	// AgentImage is the image the agent is copied from; Config.HelperImage,
	// else DefaultAgentImage.
	AgentImage string
	// AgentPort is the agent API port; default agent.DefaultPort.
	AgentPort int

	// The [[runners]] keys that shape the job's scripts and variables.
	Shell                string // "sh" (default) or "bash": the scripts' shebang
	Environment          []string
	PreGetSourcesScript  string
	PostGetSourcesScript string
	PreBuildScript       string
	PostBuildScript      string
	CloneURL             string
	// TLSCAFile is the CA bundle the runner trusts for GitLab: the agent
	// trusts it for the clone, jobs get it as CI_SERVER_TLS_CA_FILE.
	TLSCAFile      string
	RunnerVersion  string
	RunnerRevision string

	// CacheDir is cache_dir as seen in the pod (a PVC or host path mounted
	// through [runners.kubernetes.volumes]); CacheStore the remote cache.
	CacheDir   string
	CacheStore *job.CacheStore

	// TransientGrace is how long a failure Kubernetes may still recover
	// from (an image pull retry, a pod not yet scheduled) may last before
	// the job fails with it; default 5 s.
	TransientGrace time.Duration
	// HTTPClient talks to the agents; a client with sane timeouts when nil.
	HTTPClient *http.Client
}

// Executor runs jobs as pods. It is safe for concurrent Run calls; all jobs
// share one pod informer and one event informer, started by the first Run
// (or Adopt) and stopped by Close.
type Executor struct {
	opts      Options
	cfg       *config.Kubernetes
	cs        kubeAPI
	ns        string
	short     string
	log       *slog.Logger
	image     string
	port      int
	grace     time.Duration
	pollLimit time.Duration
	// newAgent is a client of the agent at baseURL whose TLS certificate
	// has the SHA-256 fingerprint; fingerprint reads it from the pod.
	newAgent    func(baseURL, token string, fingerprint []byte) agentAPI
	fingerprint func(ctx context.Context, pod string) ([]byte, error)
	systemID    string
	leases      *leaseObserver
	// afterClaimRead runs between a claim's read and its update (tests).
	afterClaimRead func()
	// pool keeps warm pods (warm_pods > 0), started with the pod watch.
	pool *warmPool

	// ending runs the deletes that wait for a finished job's pod to end
	// by itself (deleteWhenEnded); closing makes them delete at once.
	ending    sync.WaitGroup
	closing   chan struct{}
	closeOnce sync.Once

	mu     sync.Mutex
	watch  *podWatch
	stop   chan struct{}
	keeper *leaseKeeper
	closed bool
	active map[string]bool // pods this executor is running or resuming
}

var _ executor.Executor = (*Executor)(nil)

// New builds the executor and its client; nothing is contacted until the
// first Run.
func New(opts Options) (*Executor, error) {
	cfg := opts.Config
	if cfg == nil {
		cfg = &config.Kubernetes{}
	}
	log := opts.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	short := job.ShortToken(opts.RunnerToken)
	if short == "" {
		return nil, errors.New("kubernetes executor: the runner token is empty; register the runner first")
	}
	cs := opts.api
	if cs == nil {
		rc := opts.RESTConfig
		if rc == nil {
			var err error
			if rc, err = restConfig(cfg, opts.Kubeconfig); err != nil {
				return nil, err
			}
		}
		var err error
		if cs, err = newClient(rc); err != nil {
			return nil, err
		}
	}
	ns := cfg.Namespace
	if ns == "" {
		ns = "default"
	}
	systemID := opts.SystemID
	if systemID == "" {
		var err error
		if systemID, err = config.NewSystemID(); err != nil {
			return nil, err
		}
	}
	if LabelValue(systemID) != systemID {
		return nil, fmt.Errorf("kubernetes executor: system id %q is not a valid label value", systemID)
	}
	image := opts.AgentImage
	if image == "" {
		image = cfg.HelperImage
	}
	if image == "" {
		image = DefaultAgentImage
	}
	port := opts.AgentPort
	if port == 0 {
		port = agent.DefaultPort
	}
	grace := opts.TransientGrace
	if grace <= 0 {
		grace = 5 * time.Second
	}
	poll := DefaultPollTimeout
	if cfg.PollTimeout > 0 {
		poll = time.Duration(cfg.PollTimeout) * time.Second
	}
	hc := opts.HTTPClient
	if hc == nil {
		hc = &http.Client{Transport: &http.Transport{
			DialContext:           (&net.Dialer{Timeout: 5 * time.Second, KeepAlive: 30 * time.Second}).DialContext,
			ResponseHeaderTimeout: 60 * time.Second, // above the agent's long poll
			IdleConnTimeout:       90 * time.Second,
			MaxIdleConnsPerHost:   2,
		}}
	}
	e := &Executor{
		opts: opts, cfg: cfg, cs: cs, ns: ns, short: short, log: log.With("executor", "kubernetes", "namespace", ns),
		image: image, port: port, grace: grace, pollLimit: poll, active: map[string]bool{},
		systemID: systemID, leases: newLeaseObserver(cs, ns, short), closing: make(chan struct{}),
	}
	e.newAgent = func(baseURL, token string, fingerprint []byte) agentAPI {
		return newAgentClient(baseURL, token, pinnedClient(hc, fingerprint))
	}
	e.fingerprint = e.readFingerprint
	e.pool = newWarmPool(e, cfg)
	return e, nil
}

// Close deletes at once the pods of finished jobs still waiting to end,
// stops renewing the lease (deleting it when no pod of this manager is
// left) and stops the informers and waits for them. Jobs still running
// lose their pod updates: call it after the last Run returned.
func (e *Executor) Close() error {
	e.mu.Lock()
	started := e.watch != nil
	e.mu.Unlock()
	e.closeOnce.Do(func() { close(e.closing) })
	e.ending.Wait()
	if started && e.pool != nil {
		e.pool.close() // its idle pods are deleted
	}
	e.mu.Lock()
	w, stop, keeper := e.watch, e.stop, e.keeper
	e.watch, e.stop, e.keeper, e.closed = nil, nil, nil, true
	e.mu.Unlock()
	if stop != nil {
		left := 0
		for _, pod := range w.listPods() {
			if podOwner(pod) == e.systemID && pod.DeletionTimestamp == nil {
				left++
			}
		}
		keeper.close(left == 0)
		close(stop)
		w.shutdown()
	}
	return nil
}

// podWatch starts the shared informers on first use.
func (e *Executor) podWatch(ctx context.Context) (*podWatch, error) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.closed {
		return nil, errors.New("kubernetes executor is closed")
	}
	if e.watch != nil {
		return e.watch, nil
	}
	w, err := newPodWatch(e.cs, e.ns, e.short)
	if err != nil {
		return nil, err
	}
	stop := make(chan struct{})
	sctx, cancel := context.WithTimeout(ctx, 60*time.Second)
	defer cancel()
	if err := w.start(sctx, stop); err != nil {
		close(stop)
		w.shutdown()
		return nil, fmt.Errorf("watch pods in namespace %s: %w", e.ns, err)
	}
	// The lease exists before this manager claims or creates a pod.
	e.keeper = newLeaseKeeper(e.cs, e.ns, e.short, e.systemID, e.log)
	e.keeper.start(sctx)
	e.watch, e.stop = w, stop
	if e.pool != nil {
		e.pool.start()
	}
	return w, nil
}

// currentWatch is the pod watch once started, else nil.
func (e *Executor) currentWatch() *podWatch {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.watch
}

func (e *Executor) setActive(name string, on bool) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if on {
		e.active[name] = true
	} else {
		delete(e.active, name)
	}
}

func (e *Executor) isActive(name string) bool {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.active[name]
}

// jobRun is one job's pod and the means to follow it.
type jobRun struct {
	e       *Executor
	log     *slog.Logger
	trace   io.Writer
	sub     *podSub
	watch   *podWatch
	pod     string
	token   string // agent API token
	port    int
	cancel  <-chan struct{}
	started time.Time
	// spec is the agent spec (JSON) handed to the agent.
	spec []byte
	// fingerprint is the agent's certificate fingerprint when known
	// already (a warm pod's, read while it was idle).
	fingerprint []byte
	// agent, when set, is a client connected already that handed the
	// spec over (a warm pod's).
	agent agentAPI
	// claims is the pod's claim count under which this manager owns it.
	claims int64
	// registryName is the job's image pull Secret, if it has one.
	registryName string
	// agentExits is set once the agent acknowledged the result: it exits,
	// and a pod with nothing else running ends by itself.
	agentExits bool
}

// Run runs one job in a pod; see executor.Executor.
func (e *Executor) Run(ctx context.Context, j *executor.Job) (executor.Result, error) {
	started := time.Now()
	p := j.Payload
	tr := j.Trace
	if tr == nil {
		tr = io.Discard
	}
	log := e.log.With("job", p.ID)
	w, err := e.podWatch(ctx)
	if err != nil {
		return executor.Result{}, err
	}
	if err := w.watchEvents(ctx); err != nil {
		return executor.Result{}, err
	}

	// Everything the runner writes before the agent's log is also kept in
	// prefix: it goes into the pod's trace-prefix annotation for adoption.
	var prefix bytes.Buffer
	prefix.Write(j.Preamble) // the runner's header, already in the trace
	out := io.MultiWriter(tr, &prefix)

	req, err := e.podRequest(ctx, j)
	if err != nil {
		trace.Errorf(tr, "Job failed: %v", err)
		return executor.Result{FailureReason: gitlab.ScriptFailure}, nil
	}
	image := p.Image.Name
	if image == "" {
		image = e.cfg.Image
	}
	trace.Section(out, "prepare_executor", `Preparing the "kubernetes" executor`, func() {
		fmt.Fprintf(out, "Using Kubernetes namespace: %s\n", e.ns)
		fmt.Fprintf(out, "Using Kubernetes executor with image %s ...\n", image)
		fmt.Fprintf(out, "Using the podrunner agent (%s) to execute scripts...\n", e.image)
	})
	req.TracePrefix = maskBytes(prefix.Bytes(), req.Mask)
	pod, secret, err := BuildPod(req)
	if err != nil {
		if IsConfigError(err) {
			trace.Errorf(tr, "Job failed: %v", err)
			return executor.Result{FailureReason: gitlab.RunnerConfigurationError}, nil
		}
		return executor.Result{}, fmt.Errorf("build pod: %w", err)
	}
	if pod.Namespace != e.ns {
		trace.Errorf(tr, "Job failed: the job asks for namespace %s (KUBERNETES_NAMESPACE_OVERWRITE) but this runner watches only %s: "+
			"remove the overwrite or run a runner for that namespace", pod.Namespace, e.ns)
		return executor.Result{FailureReason: gitlab.RunnerConfigurationError}, nil
	}
	if e.pool != nil {
		// Before the registry Secret: a warm pod's image is there already.
		if wp, reason := e.pool.take(pod); wp != nil {
			if res, ok, err := e.runWarm(ctx, j, req, pod, wp, w, &prefix, started); ok {
				return res, err
			}
			if ctx.Err() != nil {
				return abortResult(ctx), nil
			}
			e.pool.missed(missLost)
		} else {
			log.Debug("no warm pod for the job; starting a pod", "reason", reason)
		}
	}
	registry, err := BuildRegistrySecret(pod, req.Payload.Credentials)
	if err != nil {
		return executor.Result{}, err
	}
	if registry != nil {
		pod.Spec.ImagePullSecrets = append(pod.Spec.ImagePullSecrets, corev1.LocalObjectReference{Name: registry.Name})
	}
	log = log.With("pod", pod.Name)
	r := &jobRun{
		e: e, log: log, trace: tr, watch: w, pod: pod.Name, token: req.AgentToken, port: req.AgentPort,
		cancel: j.GracefulCancel, started: started, spec: secret.Data[agent.SpecKey],
	}
	sub, unsubscribe := w.subscribe(pod.Name)
	defer unsubscribe()
	r.sub = sub
	sub.own(0)
	e.setActive(pod.Name, true)
	defer e.setActive(pod.Name, false)

	deadline := started.Add(e.pollLimit)
	if registry != nil {
		r.registryName = registry.Name
		if err := e.createWithQuotaRetry(ctx, out, deadline, "secret "+registry.Name, func(ctx context.Context) error {
			_, err := e.cs.Secrets(e.ns).Create(ctx, registry, metav1.CreateOptions{})
			if apierrors.IsAlreadyExists(err) {
				return nil
			}
			return err
		}); err != nil {
			return r.startFailed(ctx, err, false)
		}
	}
	fmt.Fprint(out, trace.SectionStart(time.Now(), "prepare_script", "Preparing environment", trace.SectionOptions{}))
	fmt.Fprintf(out, "Waiting for pod %s/%s to be running, status is Pending\n", e.ns, pod.Name)
	fmt.Fprint(out, trace.SectionEnd(time.Now(), "prepare_script"))

	var created *corev1.Pod
	err = e.createWithQuotaRetry(ctx, out, deadline, "pod "+pod.Name, func(ctx context.Context) error {
		if pod.Annotations == nil {
			pod.Annotations = map[string]string{}
		}
		pod.Annotations[AnnotationTracePrefix] = base64.StdEncoding.EncodeToString(maskBytes(prefix.Bytes(), req.Mask))
		c, err := e.cs.Pods(e.ns).Create(ctx, pod, metav1.CreateOptions{})
		if apierrors.IsAlreadyExists(err) {
			c, err = e.cs.Pods(e.ns).Get(ctx, pod.Name, metav1.GetOptions{})
		}
		created = c
		return err
	})
	if err != nil {
		return r.startFailed(ctx, err, false)
	}
	defer r.cleanup()
	// The Secret (the adoption record; nothing mounts it) comes after the
	// pod, owned by it: the garbage collector deletes it with the pod, so
	// the runner spends one request on it, not three.
	secret.OwnerReferences = []metav1.OwnerReference{OwnerReference(created)}
	if err := e.createWithQuotaRetry(ctx, out, deadline, "secret "+secret.Name, func(ctx context.Context) error {
		_, err := e.cs.Secrets(e.ns).Create(ctx, secret, metav1.CreateOptions{})
		if apierrors.IsAlreadyExists(err) {
			return nil // an earlier attempt got through
		}
		return err
	}); err != nil {
		return r.startFailed(ctx, err, true)
	}
	log.Info("pod created", "after", time.Since(started))
	return r.followOwned(ctx)
}

// podRequest gathers what BuildPod needs: variables and plan for a job
// whose sources live under /builds in the pod.
func (e *Executor) podRequest(ctx context.Context, j *executor.Job) (PodRequest, error) {
	p := j.Payload
	full := strings.Trim(p.JobInfo.ProjectFullPath, "/")
	if full == "" {
		full = fmt.Sprintf("project-%d", p.JobInfo.ProjectID)
	}
	clean := path.Clean(full)
	if clean == "." || clean == ".." || strings.HasPrefix(clean, "../") || path.IsAbs(clean) {
		return PodRequest{}, fmt.Errorf("job_info.project_full_path %q is not a relative project path", p.JobInfo.ProjectFullPath)
	}
	sh := e.opts.Shell
	if sh == "" {
		sh = "sh"
	}
	prep, err := job.Prepare(ctx, p, job.RunnerEnv{
		BuildsDir:           buildsDir,
		ProjectDir:          path.Join(buildsDir, clean),
		ConcurrentID:        j.Slot,
		ConcurrentProjectID: j.ProjectSlot,
		RunnerToken:         e.opts.RunnerToken,
		RunnerVersion:       e.opts.RunnerVersion,
		RunnerRevision:      e.opts.RunnerRevision,
		Environment:         e.opts.Environment,
		TLSCAFile:           e.opts.TLSCAFile,
	}, job.ScriptOptions{
		Shell:                sh,
		PreGetSourcesScript:  e.opts.PreGetSourcesScript,
		PostGetSourcesScript: e.opts.PostGetSourcesScript,
		PreBuildScript:       e.opts.PreBuildScript,
		PostBuildScript:      e.opts.PostBuildScript,
		CloneURL:             e.opts.CloneURL,
		HelperPath:           agentBinary(e.cfg),
		CacheDir:             e.opts.CacheDir,
		CacheStore:           e.opts.CacheStore,
	})
	if err != nil {
		return PodRequest{}, err
	}
	tok := make([]byte, 24)
	if _, err := rand.Read(tok); err != nil {
		return PodRequest{}, fmt.Errorf("agent token: %w", err)
	}
	return PodRequest{
		Config: e.cfg, Payload: p, Prepared: prep,
		RunnerShortToken: e.short, RunnerName: e.opts.RunnerName, SystemID: e.systemID, Slot: j.Slot, Namespace: e.ns,
		AgentImage: e.image, AgentPort: e.port, AgentToken: hex.EncodeToString(tok),
	}, nil
}

// createWithQuotaRetry creates an object, retrying transient API errors
// and, until deadline, quota refusals (another job may free its share).
func (e *Executor) createWithQuotaRetry(ctx context.Context, out io.Writer, deadline time.Time, what string, create func(context.Context) error) error {
	bo := newBackoff(time.Second, 15*time.Second)
	warned := false
	for {
		err := retryTransient(ctx, "create "+what, create)
		if err == nil {
			return nil
		}
		quota, msg := QuotaExceeded(err)
		if !quota {
			return err
		}
		if time.Now().After(deadline) {
			return &quotaError{msg: msg, err: err}
		}
		if !warned {
			trace.Warningf(out, "Namespace %s is over its resource quota, waiting for room (up to poll_timeout): %s", e.ns, msg)
			warned = true
		}
		dctx, cancel := context.WithDeadline(ctx, deadline)
		werr := bo.wait(dctx)
		cancel()
		if ctx.Err() != nil {
			return ctx.Err()
		}
		_ = werr // the deadline passed: one last try
	}
}

// quotaError is a creation refused by a ResourceQuota until poll_timeout.
type quotaError struct {
	msg string
	err error
}

func (q *quotaError) Error() string { return q.msg }
func (q *quotaError) Unwrap() error { return q.err }

// startFailed reports a job whose Secret or pod could not be created.
func (r *jobRun) startFailed(ctx context.Context, err error, podCreated bool) (executor.Result, error) {
	e := r.e
	if !podCreated && r.registryName != "" {
		e.deleteSecret(r.registryName)
	}
	if ctx.Err() != nil {
		return abortResult(ctx), nil
	}
	var q *quotaError
	if errors.As(err, &q) {
		trace.Errorf(r.trace, "Job failed: namespace %s has no quota left for the job's pod after waiting %s: %s. "+
			"Free resources in the namespace, raise its ResourceQuota, or raise poll_timeout.", e.ns, e.pollLimit, q.msg)
		return executor.Result{FailureReason: gitlab.RunnerSystemFailure}, nil
	}
	if apierrors.IsForbidden(err) || apierrors.IsInvalid(err) {
		trace.Errorf(r.trace, "Job failed: %v", err)
		return executor.Result{FailureReason: gitlab.RunnerSystemFailure}, nil
	}
	return executor.Result{}, err
}

// cleanup deletes the pod (its Secret goes with it) and the registry
// Secret. It runs on a fresh context:
// an aborted job must still be cleaned up.
func (r *jobRun) cleanup() {
	if r.sub != nil && r.sub.handedOver() {
		r.log.Info("another manager took the job over; its pod stays")
		return
	}
	if r.agentExits && r.e.deleteWhenEnded(r.watch, r.pod, r.registryName) {
		return
	}
	r.e.deletePod(r.pod)
	if r.registryName != "" {
		r.e.deleteSecret(r.registryName)
	}
}

// endWait bounds how long a finished job's pod may take to end by itself
// before it is deleted anyway: the kubelet notices an exited container at
// its next relist (1 s) and then writes the pod's phase.
const endWait = 10 * time.Second

// deleteWhenEnded deletes the pod of a finished job, and its registry
// Secret, once the pod has ended by itself (Succeeded or Failed), in the
// background: the API server removes an ended pod at once, while one
// deleted as it runs costs the cluster the kubelet's kill (Killing events,
// status updates, its own final delete; bench/README.md, session 10). It
// waits up to endWait, or until Close. It reports false, deleting
// nothing, when the pod cannot end by itself: another container (a
// service) still runs, or it is not in the cache.
func (e *Executor) deleteWhenEnded(w *podWatch, name, registry string) bool {
	sub, unsubscribe := w.subscribe(name)
	if pod, deleted := sub.snapshot(); pod == nil || deleted || !onlyBuildLeft(pod) {
		unsubscribe()
		return false
	}
	e.ending.Go(func() {
		defer unsubscribe()
		t := time.NewTimer(endWait)
		defer t.Stop()
	wait:
		for {
			if pod, deleted := sub.snapshot(); deleted || pod == nil || pod.DeletionTimestamp != nil ||
				pod.Status.Phase == corev1.PodSucceeded || pod.Status.Phase == corev1.PodFailed {
				break
			}
			select {
			case <-sub.notify:
			case <-t.C:
				break wait
			case <-e.closing:
				break wait
			}
		}
		e.deletePod(name)
		if registry != "" {
			e.deleteSecret(registry)
		}
	})
	return true
}

// onlyBuildLeft reports whether every container of the pod but the build
// container (the agent's) has ended.
func onlyBuildLeft(pod *corev1.Pod) bool {
	if len(pod.Status.ContainerStatuses) != len(pod.Spec.Containers) {
		return false
	}
	for _, cs := range pod.Status.ContainerStatuses {
		if cs.Name != ContainerBuild && cs.State.Terminated == nil {
			return false
		}
	}
	return true
}

func (e *Executor) deletePod(name string) {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	policy := metav1.DeletePropagationBackground
	opts := metav1.DeleteOptions{PropagationPolicy: &policy, GracePeriodSeconds: e.cfg.CleanupGracePeriodSeconds}
	err := retryTransient(ctx, "delete pod "+name, func(ctx context.Context) error {
		err := e.cs.Pods(e.ns).Delete(ctx, name, opts)
		if apierrors.IsNotFound(err) {
			return nil
		}
		return err
	})
	if err != nil {
		e.log.Error("pod left behind; it is deleted by the next cleanup", "pod", name, "err", err)
	}
}

func (e *Executor) deleteSecret(name string) {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	err := retryTransient(ctx, "delete secret "+name, func(ctx context.Context) error {
		err := e.cs.Secrets(e.ns).Delete(ctx, name, metav1.DeleteOptions{})
		if apierrors.IsNotFound(err) {
			return nil
		}
		return err
	})
	if err != nil {
		e.log.Error("secret left behind", "secret", name, "err", err)
	}
}

// abortResult is the result of a job whose ctx ended (the runner may
// override the reason).
func abortResult(ctx context.Context) executor.Result {
	if errors.Is(context.Cause(ctx), context.DeadlineExceeded) || errors.Is(ctx.Err(), context.DeadlineExceeded) {
		return executor.Result{FailureReason: gitlab.JobExecutionTimeout}
	}
	return executor.Result{FailureReason: gitlab.JobCanceled}
}

// failed writes a Kubernetes failure to the trace and turns it into a
// result.
func (r *jobRun) failed(f *Failure) executor.Result {
	trace.Errorf(r.trace, "Job failed: %s", f.Message)
	reason := f.Reason
	if reason == "" {
		reason = gitlab.RunnerSystemFailure
	}
	r.log.Info("job failed in kubernetes", "reason", reason, "exit_code", f.ExitCode, "message", f.Message)
	return executor.Result{FailureReason: reason, ExitCode: f.ExitCode}
}

// classify checks the pod as the informer last saw it.
func (r *jobRun) classify() (*corev1.Pod, *Failure) {
	pod, deleted := r.sub.snapshot()
	if deleted {
		return pod, DeletedFailure(r.pod)
	}
	if pod == nil {
		return nil, nil
	}
	return pod, Classify(pod, r.watch.podEvents(pod.Name, pod.UID))
}

// followOwned is follow while this manager owns the pod: when another
// manager takes it over, following stops (without touching the agent or
// the pod) and the error is executor.ErrHandedOver.
func (r *jobRun) followOwned(ctx context.Context) (executor.Result, error) {
	fctx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() {
		defer close(done)
		select {
		case <-r.sub.lost:
			cancel()
		case <-fctx.Done():
		}
	}()
	defer func() { cancel(); <-done }()
	res, err := r.follow(fctx)
	if r.sub.handedOver() {
		r.log.Warn("another manager took the job over; this manager stops following it")
		return executor.Result{}, fmt.Errorf("pod %s: %w", r.pod, executor.ErrHandedOver)
	}
	return res, err
}

// follow waits for the pod to run, streams the agent's log and returns
// the job's result.
func (r *jobRun) follow(ctx context.Context) (executor.Result, error) {
	ip, res, done := r.waitRunning(ctx)
	if done {
		return res, nil
	}
	r.log.Debug("pod running", "ip", ip, "after", time.Since(r.started))
	return r.stream(ctx, ip)
}

// waitRunning waits until the build container runs and the pod has an IP.
// done is true when the job ended before (failure, cancel, abort).
func (r *jobRun) waitRunning(ctx context.Context) (ip string, res executor.Result, done bool) {
	deadline := time.NewTimer(time.Until(r.started.Add(r.e.pollLimit)))
	defer deadline.Stop()
	var recheck *time.Timer
	var recheckC <-chan time.Time
	defer func() {
		if recheck != nil {
			recheck.Stop()
		}
	}()
	var transientSince time.Time
	var lastTransient *Failure
	note := waitNotes{w: r.trace, pod: r.e.ns + "/" + r.pod, started: r.started}
	for {
		pod, f := r.classify()
		switch {
		case f != nil && !f.Transient:
			return "", r.failed(f), true
		case f != nil && f.Waits:
			// Named at poll_timeout if it never clears.
			lastTransient = f
			note.say(f.Progress)
		case f != nil:
			lastTransient = f
			if transientSince.IsZero() {
				transientSince = time.Now()
			}
			if wait := r.e.grace - time.Since(transientSince); wait <= 0 {
				return "", r.failed(f), true
			} else if recheck == nil {
				recheck = time.NewTimer(wait)
				recheckC = recheck.C
			}
		default:
			transientSince, lastTransient = time.Time{}, nil
			note.say("")
		}
		if pod != nil {
			if ip, ok := buildRunning(pod); ok {
				return ip, executor.Result{}, false
			}
			if msg, ok := buildEnded(pod); ok {
				return "", r.failed(&Failure{Reason: gitlab.RunnerSystemFailure, Message: msg}), true
			}
		}
		select {
		case <-r.sub.notify:
		case <-recheckC:
			recheck, recheckC = nil, nil
		case <-deadline.C:
			msg := fmt.Sprintf("timed out after %s waiting for pod %s/%s to start", r.e.pollLimit, r.e.ns, r.pod)
			if lastTransient != nil {
				msg += ": " + lastTransient.Message
			} else if pod != nil {
				msg += " (" + describePod(pod) + ")"
			}
			if pod != nil && unschedulable(pod) != nil {
				msg += ". " + r.e.capacity(ctx, pod)
			}
			msg += "; check the pod's events, or raise poll_timeout if pods are slow to start here"
			reason := gitlab.RunnerSystemFailure
			if lastTransient != nil && lastTransient.Reason != "" {
				reason = lastTransient.Reason // e.g. image_pull_failure
			}
			return "", r.failed(&Failure{Reason: reason, Message: msg}), true
		case <-r.cancel:
			trace.Errorf(r.trace, "Job canceled before its pod was running")
			return "", executor.Result{FailureReason: gitlab.JobCanceled}, true
		case <-ctx.Done():
			return "", abortResult(ctx), true
		}
	}
}

// buildRunning reports whether the build container runs and the pod has
// an address the agent listens on.
func buildRunning(pod *corev1.Pod) (string, bool) {
	if pod.Status.PodIP == "" {
		return "", false
	}
	for _, s := range pod.Status.ContainerStatuses {
		if s.Name == ContainerBuild && s.State.Running != nil {
			return pod.Status.PodIP, true
		}
	}
	return "", false
}

// buildEnded reports a build container (or pod) that ended before the
// job could be followed, for failures Classify does not name.
func buildEnded(pod *corev1.Pod) (string, bool) {
	if pod.Status.Phase == corev1.PodSucceeded || pod.Status.Phase == corev1.PodFailed {
		return fmt.Sprintf("pod %s ended (phase %s) before the job started: %s", pod.Name, pod.Status.Phase, describePod(pod)), true
	}
	for _, s := range pod.Status.ContainerStatuses {
		if s.Name == ContainerBuild && s.State.Terminated != nil {
			t := s.State.Terminated
			return fmt.Sprintf("container %s of pod %s exited with code %d (%s %s) before the job started: "+
				"check that helper_image is a podrunner image and the job image can run it", ContainerBuild, pod.Name, t.ExitCode, t.Reason, t.Message), true
		}
	}
	return "", false
}

// describePod summarises a pod's state for messages.
func describePod(p *corev1.Pod) string {
	var b strings.Builder
	fmt.Fprintf(&b, "phase %s", p.Status.Phase)
	if p.Status.Reason != "" {
		fmt.Fprintf(&b, ", reason %s", p.Status.Reason)
	}
	for _, s := range append(append([]corev1.ContainerStatus{}, p.Status.InitContainerStatuses...), p.Status.ContainerStatuses...) {
		switch {
		case s.State.Waiting != nil:
			fmt.Fprintf(&b, ", %s waiting (%s)", s.Name, s.State.Waiting.Reason)
		case s.State.Terminated != nil:
			fmt.Fprintf(&b, ", %s terminated (%s, exit %d)", s.Name, s.State.Terminated.Reason, s.State.Terminated.ExitCode)
		case s.State.Running != nil:
			fmt.Fprintf(&b, ", %s running", s.Name)
		}
	}
	return b.String()
}

// stream pulls the agent's log until the job is done, watching the pod
// meanwhile, and returns the result.
func (r *jobRun) stream(ctx context.Context, ip string) (executor.Result, error) {
	api := &pinnedAgent{connect: func(ctx context.Context, fp []byte) (agentAPI, error) {
		api := r.e.newAgent("https://"+net.JoinHostPort(ip, strconv.Itoa(r.port)), r.token, fp)
		if err := api.PutSpec(ctx, r.spec); err != nil {
			return nil, err
		}
		return api, nil
	}, fingerprint: func(ctx context.Context) ([]byte, error) { return r.e.fingerprint(ctx, r.pod) }, fp: r.fingerprint}
	if a := r.agent; a != nil {
		api.api.Store(&a)
	}
	pumpCtx, stopPump := context.WithCancel(context.WithoutCancel(ctx))
	defer stopPump()
	pump := &logPump{api: api, trace: r.trace, log: r.log}
	pumpDone := make(chan error, 1)
	go func() { pumpDone <- pump.run(pumpCtx) }()
	// waitPump stops the pump (at once or after a short drain) and waits.
	pumpStopped := false
	waitPump := func(drain time.Duration) error {
		if pumpStopped {
			return nil
		}
		pumpStopped = true
		t := time.NewTimer(drain)
		defer t.Stop()
		select {
		case err := <-pumpDone:
			return err
		case <-t.C:
		}
		stopPump()
		return <-pumpDone
	}
	defer waitPump(0) //nolint:errcheck // only on early returns

	cancel := r.cancel
	var transientSince time.Time
	var recheckC <-chan time.Time
	for {
		select {
		case err := <-pumpDone:
			pumpStopped = true
			if err != nil {
				return executor.Result{}, fmt.Errorf("job log of pod %s: %w", r.pod, err)
			}
			return r.finish(ctx, api)
		case <-r.sub.notify:
		case <-recheckC:
			recheckC = nil
		case <-cancel:
			cancel = nil
			r.log.Info("graceful cancel: asking the agent to stop the script")
			if err := callAgent(ctx, "cancel", api.Cancel); err != nil {
				r.log.Warn("agent cancel failed", "err", err)
			}
			continue
		case <-ctx.Done():
			if r.sub.handedOver() {
				// The new owner follows the agent now: leave it alone.
				_ = waitPump(0)
				return abortResult(ctx), nil
			}
			actx, acancel := context.WithTimeout(context.WithoutCancel(ctx), 3*time.Second)
			if err := api.Abort(actx); err != nil {
				r.log.Debug("agent abort failed", "err", err)
			}
			acancel()
			_ = waitPump(0)
			return abortResult(ctx), nil
		}
		pod, f := r.classify()
		if f == nil {
			transientSince = time.Time{}
			continue
		}
		if f.Transient {
			if transientSince.IsZero() {
				transientSince = time.Now()
				recheckC = time.After(r.e.grace)
			}
			if time.Since(transientSince) < r.e.grace {
				continue
			}
		}
		// The pod failed under the job. If the agent still answers, stop
		// it and take the rest of its log; otherwise do not wait for it.
		drain := time.Duration(0)
		if pod != nil && !buildTerminated(pod) {
			actx, acancel := context.WithTimeout(context.WithoutCancel(ctx), 2*time.Second)
			_ = api.Abort(actx)
			acancel()
			drain = 3 * time.Second
		}
		_ = waitPump(drain)
		return r.failed(f), nil
	}
}

// agentGone explains an agent that stopped answering before it reported
// the result: its pod was deleted, or its (build) container stopped.
func (r *jobRun) agentGone(ctx context.Context) *Failure {
	pod, deleted := r.sub.snapshot()
	if deleted {
		return DeletedFailure(r.pod)
	}
	if pod == nil {
		p, err := r.e.cs.Pods(r.e.ns).Get(ctx, r.pod, metav1.GetOptions{})
		if apierrors.IsNotFound(err) {
			return DeletedFailure(r.pod)
		}
		if err != nil {
			return nil
		}
		pod = p
	}
	if pod.DeletionTimestamp != nil {
		return DeletedFailure(r.pod)
	}
	// Kubernetes' own reason for ending the pod: evicted, past its deadline.
	// The kubelet's Evicted event comes before the pod's status says so.
	events := r.watch.podEvents(pod.Name, pod.UID)
	if pod.Status.Reason != "" {
		if f := Classify(pod, events); f != nil && f.Reason != "" && !f.Transient {
			return f
		}
	}
	if e := lastEvent(events, "Evicted", ""); e != nil {
		return evictedFailure(pod.Namespace+"/"+pod.Name, e.Message)
	}
	for _, cs := range pod.Status.ContainerStatuses {
		if t := cs.State.Terminated; cs.Name == ContainerBuild && t != nil {
			return StoppedFailure(r.pod, t)
		}
	}
	return nil
}

func buildTerminated(pod *corev1.Pod) bool {
	for _, s := range pod.Status.ContainerStatuses {
		if s.Name == ContainerBuild && s.State.Terminated != nil {
			return true
		}
	}
	return false
}

// callAgent retries a short agent request a few times.
func callAgent(ctx context.Context, what string, fn func(context.Context) error) error {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
	defer cancel()
	bo := newBackoff(100*time.Millisecond, time.Second)
	for {
		err := fn(ctx)
		if err == nil {
			return nil
		}
		if werr := bo.wait(ctx); werr != nil {
			return fmt.Errorf("agent %s: %w", what, err)
		}
	}
}

// oomExitCode is a script killed by SIGKILL, what the OOM killer sends.
const oomExitCode = 128 + 9

// finish reads the agent's result, acknowledges it and cross-checks it
// with the containers' termination states.
func (r *jobRun) finish(ctx context.Context, api agentAPI) (executor.Result, error) {
	var st *agent.Status
	err := callAgent(ctx, "status", func(ctx context.Context) error {
		var err error
		st, err = api.Status(ctx)
		return err
	})
	if err != nil || st == nil || st.Result == nil {
		if err == nil {
			err = errors.New("the agent reported no result")
		}
		// The agent is gone with its pod or its container: say what
		// happened to them rather than how the call failed.
		if f := r.agentGone(ctx); f != nil {
			r.log.Warn("the agent is gone before reporting the result", "err", err, "reason", f.Message)
			return r.failed(f), nil
		}
		return executor.Result{}, fmt.Errorf("result of pod %s: %w", r.pod, err)
	}
	res := executor.Result{Success: st.Result.Success, FailureReason: st.Result.FailureReason, ExitCode: st.Result.ExitCode}
	// The agent stopped the script because its pod is being deleted (the
	// kubelet's SIGTERM): that deletion is the cause, not the script.
	if pod, deleted := r.sub.snapshot(); !res.Success && (deleted || pod != nil && pod.DeletionTimestamp != nil) {
		return r.failed(DeletedFailure(r.pod)), nil
	}
	// The agent was stopped from outside (evicted, its container stopped):
	// the pod says why, once the container has ended (the ack lets the
	// agent exit at once).
	if st.Result.Stopped {
		if err := callAgent(ctx, "ack", api.Ack); err != nil {
			r.log.Debug("agent ack failed", "err", err)
		}
		if f := r.waitOOM(ctx, 10*time.Second); f != nil {
			return r.failed(f), nil
		}
		if f := r.agentGone(ctx); f != nil {
			return r.failed(f), nil
		}
		return r.failed(&Failure{Reason: gitlab.RunnerSystemFailure, Message: fmt.Sprintf("the agent in pod %s was stopped before the job ended", r.pod)}), nil
	}
	// Only the manager that marks the pod final reports the job.
	if err := r.e.fence(ctx, r.pod, r.claims); errors.Is(err, executor.ErrHandedOver) {
		r.sub.markLost()
		return executor.Result{}, err
	} else if err != nil {
		r.log.Warn("cannot mark the pod final; reporting the job anyway", "err", err)
	}
	if err := callAgent(ctx, "ack", api.Ack); err != nil {
		r.log.Warn("agent ack failed; the agent exits after its grace period", "err", err)
	} else {
		r.agentExits = true
	}
	// A script killed by SIGKILL may have met the OOM killer: the
	// container's termination state (set when the agent exits after the
	// ack) says so. Other results need no wait.
	if !res.Success && res.ExitCode == oomExitCode {
		if f := r.waitOOM(ctx, 10*time.Second); f != nil {
			return r.failed(f), nil
		}
	}
	if pod, _ := r.sub.snapshot(); pod != nil {
		if f := oomFailure(pod); f != nil {
			return r.failed(f), nil
		}
	}
	r.log.Info("job finished", "success", res.Success, "failure_reason", res.FailureReason, "exit_code", res.ExitCode,
		"duration", time.Since(r.started))
	return res, nil
}

// waitOOM waits up to d for the build container to terminate and returns
// an OOM failure if any container was OOM-killed.
func (r *jobRun) waitOOM(ctx context.Context, d time.Duration) *Failure {
	t := time.NewTimer(d)
	defer t.Stop()
	for {
		pod, deleted := r.sub.snapshot()
		if pod != nil {
			if f := oomFailure(pod); f != nil {
				return f
			}
			if deleted || buildTerminated(pod) {
				return nil
			}
		}
		select {
		case <-r.sub.notify:
		case <-t.C:
			return nil
		case <-ctx.Done():
			return nil
		}
	}
}

// oomFailure is Classify's failure for a pod with an OOM-killed container.
func oomFailure(pod *corev1.Pod) *Failure {
	for _, s := range append(append([]corev1.ContainerStatus{}, pod.Status.InitContainerStatuses...), pod.Status.ContainerStatuses...) {
		if t := s.State.Terminated; t != nil && t.Reason == "OOMKilled" {
			if f := Classify(pod, nil); f != nil {
				return f
			}
			return &Failure{Reason: gitlab.ScriptFailure, ExitCode: oomExitCode, Message: fmt.Sprintf("container %s was OOMKilled", s.Name)}
		}
	}
	return nil
}

// maskBytes masks b as the job trace would (the annotation is readable by
// whoever can get pods).
func maskBytes(b []byte, m job.Mask) []byte {
	var out bytes.Buffer
	w := trace.NewMasker(&out, m.Values, m.Prefixes)
	_, _ = w.Write(b)
	_ = w.Flush()
	return out.Bytes()
}

package kubernetes

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"math"
	"net"
	"slices"
	"strconv"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/util/retry"

	"github.com/podrunner/podrunner/internal/agent"
	"github.com/podrunner/podrunner/internal/config"
	"github.com/podrunner/podrunner/internal/executor"
	"github.com/podrunner/podrunner/internal/job"
)

// Warm pods (docs/kubernetes-executor.md, "Warm pods"): with
// [runners.kubernetes] warm_pods = N the executor keeps N pods of the
// runner's default image started, their agent waiting for a spec. A job
// whose pod would be the same pod (the same spec once the job's own
// environment, command and deadline are left out) is handed to one: the
// pod gets the job's labels, annotations and deadline, its Secret, and its
// spec over the agent's TLS channel. Each warm pod runs one job and is
// deleted after it, as any job pod; the pool refills in the background.

// LabelWarm marks a pod of the pool that has no job yet.
const LabelWarm = "podrunner.io/warm"

// Defaults of the pool's settings.
const (
	DefaultWarmPodsIdleTimeout     = 10 * time.Minute
	DefaultWarmPodsRefillPerMinute = 30
)

// refillSettle is how long a refill waits after a hand-over: a new pod's
// start (sandbox, network, containers) takes the node's CPU just when the
// job handed over fetches its sources and starts its first script.
const refillSettle = 300 * time.Millisecond

// Reasons a job did not get a warm pod (the misses metric's label).
const (
	missNoMatch = "no_match" // the job's pod differs (image, resources, services…), or the pool is empty
	missLost    = "lost"     // the warm pod taken went away or did not start
)

type warmPod struct {
	name    string
	token   string
	key     string
	created time.Time
	// fp is the agent's fingerprint, read once the pod runs (guarded by
	// the pool's mu): a job then needs no pods/log request.
	fp []byte
	// api is a client of the pod's agent with its TLS connection already
	// open (guarded like fp): the spec then goes without a handshake. The
	// agent closes an idle connection after 2 minutes; the client then
	// dials again.
	api agentAPI
}

// warmPool keeps the executor's warm pods. One goroutine (run) creates and
// deletes them; take hands one to a job.
type warmPool struct {
	e       *Executor
	target  int
	idleTTL time.Duration
	every   time.Duration // between two creations
	log     *slog.Logger

	closeOnce sync.Once

	mu      sync.Mutex
	started bool
	pods    map[string]*warmPod // created, not handed over
	lastUse time.Time
	settle  time.Time // no refill before (refillSettle after a hand-over)
	stats   WarmStats

	wake chan struct{}
	stop chan struct{}
	done chan struct{}
	// ctx ends with stop (for requests made while waiting).
	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup // the timeReady goroutines
}

// WarmStats are the pool's counters.
type WarmStats struct {
	Ready, Starting int
	Hits            int64
	Misses          map[string]int64
	// Refills counts warm pods that became ready; RefillSeconds is the sum
	// of their create → running times.
	Refills       int64
	RefillSeconds float64
}

func newWarmPool(e *Executor, cfg *config.Kubernetes) *warmPool {
	if cfg == nil || cfg.WarmPods <= 0 {
		return nil
	}
	idle := DefaultWarmPodsIdleTimeout
	if cfg.WarmPodsIdleTimeout > 0 {
		idle = time.Duration(cfg.WarmPodsIdleTimeout) * time.Second
	}
	rate := DefaultWarmPodsRefillPerMinute
	if cfg.WarmPodsRefillPerMinute > 0 {
		rate = cfg.WarmPodsRefillPerMinute
	}
	ctx, cancel := context.WithCancel(context.Background())
	return &warmPool{
		ctx: ctx, cancel: cancel,
		e: e, target: cfg.WarmPods, idleTTL: idle, every: time.Minute / time.Duration(rate),
		log:  e.log.With("component", "warm-pods"),
		pods: map[string]*warmPod{}, lastUse: time.Now(), stats: WarmStats{Misses: map[string]int64{}},
		wake: make(chan struct{}, 1), stop: make(chan struct{}), done: make(chan struct{}),
	}
}

// start runs the pool; close stops it and deletes its idle pods.
func (p *warmPool) start() {
	p.mu.Lock()
	defer p.mu.Unlock()
	select {
	case <-p.stop:
		return // closed before it started
	default:
	}
	p.started = true
	go p.run()
}

// Retire stops the warm pool (its idle pods are deleted) of an executor a
// config reload replaced; jobs it runs go on.
func (e *Executor) Retire() {
	if e.pool != nil {
		e.pool.close()
	}
}

func (p *warmPool) close() {
	p.closeOnce.Do(func() { close(p.stop); p.cancel() })
	p.mu.Lock()
	started := p.started
	p.mu.Unlock()
	if started {
		<-p.done
	}
	p.wg.Wait()
	p.mu.Lock()
	idle := make([]string, 0, len(p.pods))
	for name := range p.pods {
		idle = append(idle, name)
	}
	p.pods = map[string]*warmPod{}
	p.mu.Unlock()
	for _, name := range idle {
		p.e.deletePod(name)
		p.e.setActive(name, false)
	}
}

func (p *warmPool) run() {
	defer close(p.done)
	tick := time.NewTicker(250 * time.Millisecond)
	defer tick.Stop()
	var lastCreate time.Time
	for {
		select {
		case <-p.stop:
			return
		case <-tick.C:
		case <-p.wake:
		}
		p.forgetGone()
		p.mu.Lock()
		idleFor := time.Since(p.lastUse)
		n := len(p.pods)
		settling := time.Now().Before(p.settle)
		p.mu.Unlock()
		if idleFor > p.idleTTL {
			// Unused for long: no cost until the next job asks.
			if n > 0 {
				p.log.Info("warm pods unused for the idle timeout; deleting them", "pods", n, "idle_timeout", p.idleTTL)
				p.deleteIdle()
			}
			continue
		}
		if n < p.target && time.Since(lastCreate) >= p.every && !settling {
			lastCreate = time.Now()
			if err := p.create(); err != nil {
				p.log.Warn("cannot start a warm pod", "err", err)
			}
		}
	}
}

// forgetGone drops pods that were deleted (or ended) while idle, and
// records the refill time of pods that became ready.
func (p *warmPool) forgetGone() {
	w := p.e.currentWatch()
	if w == nil {
		return
	}
	var gone []string
	defer func() { // outside p.mu: setActive takes the executor's lock
		for _, name := range gone {
			p.e.setActive(name, false)
		}
	}()
	p.mu.Lock()
	defer p.mu.Unlock()
	ready, starting := 0, 0
	for name, wp := range p.pods {
		pod := w.pod(name)
		switch {
		case pod == nil && time.Since(wp.created) < 30*time.Second:
			starting++ // not in the cache yet
		case pod == nil, pod.DeletionTimestamp != nil, pod.Status.Phase == corev1.PodSucceeded, pod.Status.Phase == corev1.PodFailed:
			p.log.Info("warm pod gone while idle; refilling", "pod", name)
			delete(p.pods, name)
			gone = append(gone, name)
			if pod != nil && pod.DeletionTimestamp == nil {
				go p.e.deletePod(name)
			}
		default:
			if _, ok := buildRunning(pod); ok {
				ready++
			} else {
				starting++
			}
		}
	}
	p.stats.Ready, p.stats.Starting = ready, starting
}

func (p *warmPool) deleteIdle() {
	p.mu.Lock()
	var names []string
	for name := range p.pods {
		names = append(names, name)
	}
	p.pods = map[string]*warmPod{}
	p.mu.Unlock()
	for _, name := range names {
		p.e.deletePod(name)
		p.e.setActive(name, false)
	}
}

// create starts one warm pod of the runner's default image.
func (p *warmPool) create() error {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	pod, token, err := p.e.warmTemplate(ctx)
	if err != nil {
		return err
	}
	wp := &warmPod{name: pod.Name, token: token, key: podShapeKey(pod), created: time.Now()}
	p.e.setActive(pod.Name, true) // not Cleanup's
	p.mu.Lock()
	p.pods[pod.Name] = wp
	p.mu.Unlock()
	if _, err := p.e.cs.Pods(p.e.ns).Create(ctx, pod, metav1.CreateOptions{}); err != nil {
		p.mu.Lock()
		delete(p.pods, pod.Name)
		p.mu.Unlock()
		p.e.setActive(pod.Name, false)
		return fmt.Errorf("create warm pod %s: %w", pod.Name, err)
	}
	p.log.Info("warm pod started", "pod", pod.Name)
	p.wg.Add(1)
	go func() { defer p.wg.Done(); p.timeReady(wp) }()
	return nil
}

// timeReady records how long the pod took to run (the refill time).
func (p *warmPool) timeReady(wp *warmPod) {
	for {
		select {
		case <-p.stop:
			return
		case <-time.After(50 * time.Millisecond):
		}
		w := p.e.currentWatch()
		if w == nil {
			return
		}
		pod := w.pod(wp.name)
		if pod == nil {
			if time.Since(wp.created) > time.Minute {
				return
			}
			continue
		}
		if ip, ok := buildRunning(pod); ok {
			p.mu.Lock()
			p.stats.Refills++
			p.stats.RefillSeconds += time.Since(wp.created).Seconds()
			p.mu.Unlock()
			// Pin the agent now, while the pod waits, and open the
			// connection the spec will take: the waiting agent answers
			// anything but the spec with 503, over a connection kept.
			ctx, cancel := context.WithTimeout(p.ctx, 30*time.Second)
			defer cancel()
			fp, err := p.e.fingerprint(ctx, wp.name)
			if err != nil {
				return
			}
			var api agentAPI
			if ip != "" {
				api = p.e.newAgent("https://"+net.JoinHostPort(ip, strconv.Itoa(p.e.port)), wp.token, fp)
				_, _ = api.Status(ctx)
			}
			p.mu.Lock()
			wp.fp, wp.api = fp, api
			p.mu.Unlock()
			return
		}
		if pod.DeletionTimestamp != nil || pod.Status.Phase == corev1.PodFailed || pod.Status.Phase == corev1.PodSucceeded {
			return
		}
	}
}

// take hands a ready warm pod of the job pod's shape to the caller (it is
// no longer the pool's), or names why there is none.
func (p *warmPool) take(jobPod *corev1.Pod) (*warmPod, string) {
	key := podShapeKey(jobPod)
	w := p.e.currentWatch()
	p.mu.Lock()
	defer p.mu.Unlock()
	select {
	case <-p.stop:
		return nil, missNoMatch // retired
	default:
	}
	p.lastUse = time.Now()
	p.wakeUp() // start filling again after an idle time; see settleRefill for a hit
	// A ready pod, else the oldest starting one: a pod already starting is
	// running sooner than a pod created now.
	var starting *warmPod
	for name, wp := range p.pods {
		if wp.key != key || w == nil {
			continue
		}
		pod := w.pod(name)
		if pod == nil || pod.DeletionTimestamp != nil || pod.Status.Phase == corev1.PodFailed || pod.Status.Phase == corev1.PodSucceeded {
			continue
		}
		if _, ok := buildRunning(pod); ok {
			delete(p.pods, name)
			p.stats.Hits++
			p.settleRefill(key)
			c := *wp // the job's copy, read under p.mu
			return &c, ""
		}
		if starting == nil || wp.created.Before(starting.created) {
			starting = wp
		}
	}
	if starting != nil {
		delete(p.pods, starting.name)
		p.stats.Hits++
		p.settleRefill(key)
		// A copy: timeReady may still write the pool's one once the pod
		// runs; without the fingerprint the job reads the pod's log.
		c := *starting
		return &c, ""
	}
	p.stats.Misses[missNoMatch]++
	return nil, missNoMatch
}

// wakeUp makes run look at the pool now.
func (p *warmPool) wakeUp() {
	select {
	case p.wake <- struct{}{}:
	default:
	}
}

// settleRefill holds refills for refillSettle after a hand-over of a pod
// of shape key and wakes run then (p.mu held). When no pod of that shape
// is left the refill starts at once: the next job must not find the pool
// empty.
func (p *warmPool) settleRefill(key string) {
	for _, wp := range p.pods {
		if wp.key == key {
			p.settle = time.Now().Add(refillSettle)
			time.AfterFunc(refillSettle, p.wakeUp)
			return
		}
	}
	p.settle = time.Time{}
}

func (p *warmPool) missed(reason string) {
	p.mu.Lock()
	p.stats.Misses[reason]++
	p.stats.Hits--
	p.mu.Unlock()
}

// Stats returns the pool's counters (zero without a pool).
func (e *Executor) WarmStats() WarmStats {
	if e.pool == nil {
		return WarmStats{}
	}
	e.pool.mu.Lock()
	defer e.pool.mu.Unlock()
	s := e.pool.stats
	s.Misses = map[string]int64{}
	for k, v := range e.pool.stats.Misses {
		s.Misses[k] = v
	}
	return s
}

// warmTemplate is the pod of a job of the runner's default image, with
// nothing of a job: no job labels or annotations, no environment, no
// deadline, and its own agent token.
func (e *Executor) warmTemplate(ctx context.Context) (*corev1.Pod, string, error) {
	p := &job.Payload{
		ID: 0, Token: "warm",
		JobInfo:    job.JobInfo{Name: "warm", ProjectID: 0, ProjectFullPath: "warm/pod"},
		Variables:  job.Variables{{Key: "GIT_STRATEGY", Value: "none", Public: true}},
		Steps:      []job.Step{{Name: job.StepScript, Script: []string{"true"}, When: "on_success", Timeout: 3600}},
		RunnerInfo: job.RunnerInfo{Timeout: 3600},
	}
	req, err := e.podRequest(ctx, &executor.Job{Payload: p})
	if err != nil {
		return nil, "", fmt.Errorf("warm pod: %w", err)
	}
	pod, _, err := BuildPod(req)
	if err != nil {
		return nil, "", fmt.Errorf("warm pod: %w", err)
	}
	suffix, err := randomString(rand.Reader, nameSuffixLen)
	if err != nil {
		return nil, "", err
	}
	pod.Name = makeRFC1123(fmt.Sprintf("runner-%s-warm", e.short)) + "-" + suffix
	pod.Labels = map[string]string{
		LabelManaged: "true", LabelRunner: e.short, LabelSystemID: e.systemID, LabelWarm: "true",
	}
	pod.Annotations = map[string]string{AnnotationClaim: "0"}
	pod.Spec.Containers[0].Env = nil
	pod.Spec.ActiveDeadlineSeconds = nil
	return pod, req.AgentToken, nil
}

// podShapeKey is what a job pod and a warm pod must share: the spec
// without the build container's environment (the spec carries it to a
// warm pod) and command (its agent token) and the deadline (set at
// hand-over).
func podShapeKey(pod *corev1.Pod) string {
	s := pod.Spec.DeepCopy()
	s.ActiveDeadlineSeconds = nil
	for i := range s.Containers {
		if s.Containers[i].Name == ContainerBuild {
			s.Containers[i].Env = nil
			s.Containers[i].Command = nil
		}
	}
	b, _ := json.Marshal(s)
	sum := sha256.Sum256(b)
	return hex.EncodeToString(sum[:])
}

// handOver makes the warm pod cur the job's pod: its labels, annotations
// and deadline (counted from the pod's start) become the job pod's. The
// update is conditioned on the resourceVersion; a conflict (the kubelet
// wrote the status meanwhile) is read again and retried while the pod is
// still an idle warm pod. An error means the pod is not the job's: the job
// takes the cold path.
func (e *Executor) handOver(ctx context.Context, cur, jobPod *corev1.Pod) error {
	pods := e.cs.Pods(e.ns)
	pod := cur
	err := retry.RetryOnConflict(claimRetries, func() error {
		if pod == nil {
			fresh, err := pods.Get(ctx, cur.Name, metav1.GetOptions{})
			if err != nil {
				return err
			}
			if fresh.DeletionTimestamp != nil || !isWarm(fresh) {
				return fmt.Errorf("warm pod %s is being deleted or was taken", cur.Name)
			}
			pod = fresh
		}
		upd := pod.DeepCopy()
		upd.Labels = jobPod.Labels
		upd.Annotations = jobPod.Annotations
		if d := jobPod.Spec.ActiveDeadlineSeconds; d != nil {
			started := pod.CreationTimestamp.Time
			if pod.Status.StartTime != nil {
				started = pod.Status.StartTime.Time
			}
			since := int64(math.Ceil(time.Since(started).Seconds()))
			upd.Spec.ActiveDeadlineSeconds = ptrTo(*d + max(since, 0))
		}
		_, err := pods.Update(ctx, upd, metav1.UpdateOptions{})
		if apierrors.IsConflict(err) {
			pod = nil // read it again
		}
		return err
	})
	switch {
	case err == nil:
		return nil
	case apierrors.IsNotFound(err), apierrors.IsConflict(err):
		return fmt.Errorf("warm pod %s changed or went away: %w", cur.Name, err)
	}
	return fmt.Errorf("hand warm pod %s over: %w", cur.Name, err)
}

// isWarm reports an idle pool pod (no job yet).
func isWarm(pod *corev1.Pod) bool { return pod.Labels[LabelWarm] == "true" }

// runWarm runs the job in the warm pod wp instead of jobPod. ok is false
// when the pod could not be handed over (it went away): nothing of the
// job happened yet and the caller takes the cold path.
func (e *Executor) runWarm(ctx context.Context, j *executor.Job, req PodRequest, jobPod *corev1.Pod, wp *warmPod, w *podWatch, prefix *bytes.Buffer, started time.Time) (res executor.Result, ok bool, err error) {
	log := e.log.With("job", j.Payload.ID, "pod", wp.name, "warm", true)
	tr := j.Trace
	if tr == nil {
		tr = io.Discard
	}
	line := fmt.Sprintf("Using warm pod %s/%s\n", e.ns, wp.name)
	req.AgentToken, req.EnvInSpec = wp.token, true
	named := jobPod.DeepCopy()
	named.Name = wp.name
	named.Annotations[AnnotationTracePrefix] = base64.StdEncoding.EncodeToString(maskBytes(append(slices.Clone(prefix.Bytes()), line...), req.Mask))
	secret, err := BuildSecret(req, named, req.AgentPort)
	if err != nil {
		log.Warn("warm pod not used", "err", err)
		return executor.Result{}, false, nil
	}
	r := &jobRun{
		e: e, log: log, trace: tr, watch: w, pod: wp.name, token: wp.token, port: req.AgentPort,
		cancel: j.GracefulCancel, started: started, spec: secret.Data[agent.SpecKey], fingerprint: wp.fp, // take's copy
	}
	sub, unsubscribe := w.subscribe(wp.name)
	defer unsubscribe()
	r.sub = sub
	sub.own(0)
	defer e.setActive(wp.name, false) // the pool made it active
	if err := waitWarmRunning(ctx, w, sub, wp.name, e.pollLimit); err != nil {
		log.Warn("warm pod did not start; starting a pod", "err", err)
		e.deletePod(wp.name)
		return executor.Result{}, false, nil
	}
	cur := w.pod(wp.name)
	if cur == nil || cur.DeletionTimestamp != nil {
		log.Warn("warm pod gone at hand-over; starting a pod")
		return executor.Result{}, false, nil
	}
	// The spec goes to the agent on hold at once: it fetches the job's
	// sources while the hand-over is written, and runs no script before
	// the runner says start, so no code of the job runs before the job can
	// be adopted (docs/kubernetes-executor.md, "Warm pods").
	hctx, stopHold := context.WithCancel(ctx)
	defer stopHold()
	ip, _ := buildRunning(cur)
	held := r.holdSpec(hctx, ip, wp.api)
	notes, herr, serr := e.writeHandOver(ctx, cur, named, secret, started)
	if herr != nil {
		stopHold()
		<-held
		log.Warn("warm pod lost at hand-over; starting a pod", "err", herr)
		// The Secret, if written, goes with the pod (its owner).
		e.deletePod(wp.name)
		return executor.Result{}, false, nil
	}
	fmt.Fprint(tr, line)
	tr.Write(notes)
	defer r.cleanup()
	if serr != nil {
		stopHold()
		<-held
		res, err := r.startFailed(ctx, serr, true)
		return res, true, err
	}
	if api := <-held; api != nil {
		if err := api.(heldStarter).Start(ctx); err != nil {
			// The spec sent again (the log pump's connect) starts it too.
			log.Debug("agent start failed; sending the spec again", "err", err)
		} else {
			r.agent = api
		}
	}
	log.Info("warm pod handed over", "after", time.Since(started))
	res, err = r.followOwned(ctx)
	return res, true, err
}

// writeHandOver writes a warm pod's hand-over (its job labels and
// annotations) and the job's adoption record at once: the two writes are
// independent (the Secret's owner reference needs only the pod's UID,
// which the update keeps). notes are the Secret's quota retry lines.
func (e *Executor) writeHandOver(ctx context.Context, cur, jobPod *corev1.Pod, secret *corev1.Secret, started time.Time) (notes []byte, handErr, secretErr error) {
	secret.OwnerReferences = []metav1.OwnerReference{OwnerReference(cur)}
	var buf bytes.Buffer
	done := make(chan error, 1)
	sctx, stop := context.WithCancel(ctx)
	defer stop()
	go func() {
		done <- e.createWithQuotaRetry(sctx, &buf, started.Add(e.pollLimit), "secret "+secret.Name, func(ctx context.Context) error {
			_, err := e.cs.Secrets(e.ns).Create(ctx, secret, metav1.CreateOptions{})
			if apierrors.IsAlreadyExists(err) {
				return nil
			}
			return err
		})
	}()
	handErr = e.handOver(ctx, cur, jobPod)
	if handErr != nil {
		stop() // no job for the Secret: do not wait out a quota
	}
	secretErr = <-done
	return buf.Bytes(), handErr, secretErr
}

// heldStarter is what the warm hand-over needs of an agent client beyond
// agentAPI (internal/agent's Client has it).
type heldStarter interface {
	HoldSpec(ctx context.Context, spec []byte) error
	Start(ctx context.Context) error
}

// holdSpec sends the job's spec on hold to the warm pod's agent at ip (its
// fingerprint read while it was idle), with api when the pool connected
// one. The channel yields the connected client, or nil when the spec did
// not get there (it then goes the usual way, after the hand-over); the
// caller always receives from it.
func (r *jobRun) holdSpec(ctx context.Context, ip string, api agentAPI) <-chan agentAPI {
	out := make(chan agentAPI, 1)
	if ip == "" || r.fingerprint == nil {
		out <- nil
		return out
	}
	if api == nil {
		api = r.e.newAgent("https://"+net.JoinHostPort(ip, strconv.Itoa(r.port)), r.token, r.fingerprint)
	}
	h, ok := api.(heldStarter)
	if !ok {
		out <- nil
		return out
	}
	go func() {
		if err := h.HoldSpec(ctx, r.spec); err != nil {
			r.log.Debug("spec on hold not delivered; it goes after the hand-over", "err", err)
			out <- nil
			return
		}
		out <- api
	}()
	return out
}

// waitWarmRunning waits until the warm pod's build container runs (the
// pool may hand over a pod that is still starting).
func waitWarmRunning(ctx context.Context, w *podWatch, sub *podSub, name string, limit time.Duration) error {
	deadline := time.NewTimer(limit)
	defer deadline.Stop()
	for {
		pod := w.pod(name)
		switch {
		case pod == nil, pod.DeletionTimestamp != nil, pod.Status.Phase == corev1.PodFailed, pod.Status.Phase == corev1.PodSucceeded:
			return fmt.Errorf("warm pod %s went away", name)
		}
		if _, ok := buildRunning(pod); ok {
			return nil
		}
		select {
		case <-sub.notify:
		case <-time.After(100 * time.Millisecond):
		case <-deadline.C:
			return fmt.Errorf("warm pod %s not running after %s", name, limit)
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

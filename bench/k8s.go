package main

import (
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"

	authenticationv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/kubernetes/scheme"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"

	"github.com/podrunner/podrunner/internal/adjtimex"
	"github.com/podrunner/podrunner/internal/coordinator"
)

const (
	scKube    = "3 kubernetes overhead"
	scKubeRSS = "3 kubernetes runner memory"
	scAPI     = "6 api-server requests"

	busyboxImage = "podrunner.local/busybox:1"
	// The label GitLab Runner (and podrunner, for compatibility) puts on
	// a job's pod.
	labelJobID = "job.runner.gitlab.com/id"
	// The job container of both runners.
	buildContainer = "build"
)

// kubeTarget is the cluster the Kubernetes scenarios run on: a namespace
// of the bench's, ServiceAccounts for the runners, and a watch of its pods.
type kubeTarget struct {
	cs     *kubernetes.Clientset
	nodeIP string
	ns     string
	host   string
	caFile string
	// token is the bearer token of the ServiceAccount the current runner
	// runs as (see useServiceAccount).
	token string
	// tokens: ServiceAccount name → bearer token.
	tokens map[string]string
	watch  *podWatch
	stop   func()
}

// connectCluster loads the kubeconfig and checks the API server answers;
// an error means "no cluster" and the Kubernetes rows are skipped.
func connectCluster(ctx context.Context, kubeconfig string) (*kubernetes.Clientset, *rest.Config, error) {
	if kubeconfig == "" {
		kubeconfig = os.Getenv("KUBECONFIG")
	}
	if kubeconfig == "" {
		return nil, nil, fmt.Errorf("KUBECONFIG is not set and no --kubeconfig given")
	}
	cfg, err := clientcmd.BuildConfigFromFlags("", kubeconfig)
	if err != nil {
		return nil, nil, fmt.Errorf("kubeconfig %s: %w", kubeconfig, err)
	}
	cfg.QPS, cfg.Burst = 100, 200
	cs, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		return nil, nil, err
	}
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	if _, err := cs.Discovery().RESTClient().Get().AbsPath("/version").DoRaw(ctx); err != nil {
		return nil, nil, fmt.Errorf("API server %s: %w", cfg.Host, err)
	}
	return cs, cfg, nil
}

// setupCluster creates the bench namespace, the Role of
// deploy/rbac/role.yaml bound to ServiceAccount "podrunner", the built-in
// ClusterRole "edit" bound to ServiceAccount "other-runner" (GitLab Runner
// needs pods/exec and pods/attach, which podrunner's Role leaves out), and
// starts the pod watch.
func setupCluster(ctx context.Context, cs *kubernetes.Clientset, cfg *rest.Config, nodeIP, dir, roleFile string) (*kubeTarget, error) {
	if nodeIP == "" {
		nodeIP = os.Getenv("PODRUNNER_NODE_IP")
	}
	if nodeIP == "" {
		nodes, err := cs.CoreV1().Nodes().List(ctx, metav1.ListOptions{})
		if err != nil {
			return nil, fmt.Errorf("list nodes for the node IP (or pass --node-ip): %w", err)
		}
		for _, n := range nodes.Items {
			for _, a := range n.Status.Addresses {
				if a.Type == corev1.NodeInternalIP && nodeIP == "" {
					nodeIP = a.Address
				}
			}
		}
		if nodeIP == "" {
			return nil, fmt.Errorf("no node has an InternalIP: pass --node-ip (an address of this machine pods can reach)")
		}
	}
	ns, err := cs.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{
		ObjectMeta: metav1.ObjectMeta{GenerateName: "podrunner-bench-", Labels: map[string]string{"podrunner.bench": "true"}},
	}, metav1.CreateOptions{})
	if err != nil {
		return nil, fmt.Errorf("create namespace: %w", err)
	}
	k := &kubeTarget{cs: cs, nodeIP: nodeIP, ns: ns.Name, host: cfg.Host, tokens: map[string]string{}}
	k.stop = func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		policy := metav1.DeletePropagationBackground
		_ = cs.CoreV1().Namespaces().Delete(ctx, k.ns, metav1.DeleteOptions{PropagationPolicy: &policy})
	}
	fail := func(err error) (*kubeTarget, error) { k.Close(); return nil, err }
	role, err := readRole(roleFile)
	if err != nil {
		return fail(err)
	}
	if _, err := cs.RbacV1().Roles(k.ns).Create(ctx, role, metav1.CreateOptions{}); err != nil {
		return fail(fmt.Errorf("create role: %w", err))
	}
	for sa, ref := range map[string]rbacv1.RoleRef{
		"podrunner":    {APIGroup: "rbac.authorization.k8s.io", Kind: "Role", Name: role.Name},
		"other-runner": {APIGroup: "rbac.authorization.k8s.io", Kind: "ClusterRole", Name: "edit"},
	} {
		if _, err := cs.CoreV1().ServiceAccounts(k.ns).Create(ctx, &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: sa}}, metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
			return fail(fmt.Errorf("create serviceaccount %s: %w", sa, err))
		}
		_, err = cs.RbacV1().RoleBindings(k.ns).Create(ctx, &rbacv1.RoleBinding{
			ObjectMeta: metav1.ObjectMeta{Name: sa},
			RoleRef:    ref,
			Subjects:   []rbacv1.Subject{{Kind: "ServiceAccount", Name: sa, Namespace: k.ns}},
		}, metav1.CreateOptions{})
		if err != nil {
			return fail(fmt.Errorf("bind %s: %w", sa, err))
		}
		exp := int64(3 * 3600)
		tr, err := cs.CoreV1().ServiceAccounts(k.ns).CreateToken(ctx, sa, &authenticationv1.TokenRequest{
			Spec: authenticationv1.TokenRequestSpec{ExpirationSeconds: &exp}}, metav1.CreateOptions{})
		if err != nil {
			return fail(fmt.Errorf("token for serviceaccount %s: %w", sa, err))
		}
		k.tokens[sa] = tr.Status.Token
	}
	ca := cfg.TLSClientConfig.CAData
	if len(ca) == 0 && cfg.TLSClientConfig.CAFile != "" {
		if ca, err = os.ReadFile(cfg.TLSClientConfig.CAFile); err != nil {
			return fail(err)
		}
	}
	k.caFile = filepath.Join(dir, "kube-ca.crt")
	if err := os.WriteFile(k.caFile, ca, 0o600); err != nil {
		return fail(err)
	}
	// The namespace's default ServiceAccount must exist before pods.
	err = wait.PollUntilContextCancel(ctx, 50*time.Millisecond, true, func(ctx context.Context) (bool, error) {
		_, err := cs.CoreV1().ServiceAccounts(k.ns).Get(ctx, "default", metav1.GetOptions{})
		return err == nil, nil
	})
	if err != nil {
		return fail(err)
	}
	if k.watch, err = newPodWatch(cs, k.ns); err != nil {
		return fail(err)
	}
	return k, nil
}

func (k *kubeTarget) Close() {
	if k.watch != nil {
		k.watch.Close()
	}
	k.stop()
}

// listen is where Kubernetes scenarios' coordinators listen: the node
// address, so pods clone from them.
func (k *kubeTarget) listen() string { return net.JoinHostPort(k.nodeIP, "0") }

func readRole(path string) (*rbacv1.Role, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read the documented Role (run the bench from the repository root or pass --role): %w", err)
	}
	obj, _, err := scheme.Codecs.UniversalDeserializer().Decode(data, nil, nil)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	role, ok := obj.(*rbacv1.Role)
	if !ok {
		return nil, fmt.Errorf("%s holds a %T, want a Role", path, obj)
	}
	return role, nil
}

// importHelper builds podrunner.local/podrunner:dev and
// podrunner.local/podrunner-helper:dev from bin and the podrunner-helper
// next to it with hack/cluster/images (needs root), so the helper image
// is this build.
func importHelper(bin string) error {
	out, err := exec.Command("hack/cluster/images", "podrunner", bin).CombinedOutput()
	if err != nil {
		return fmt.Errorf("hack/cluster/images podrunner %s: %v\n%s", bin, err, out)
	}
	return nil
}

// podTimes is when the bench's own watch saw a pod change (arrival time
// of the event, on this machine's clock, which is the cluster's).
type podTimes struct {
	job                   string // the job id of its label or annotation
	added, running, ended time.Time
	gone                  bool // deleted
}

// podWatch records pod moments of one namespace.
type podWatch struct {
	mu    sync.Mutex
	pods  map[string]*podTimes
	jobOf map[string]string
	wake  chan struct{}
	stop  func()
	done  chan struct{}
}

func newPodWatch(cs *kubernetes.Clientset, ns string) (*podWatch, error) {
	ctx, cancel := context.WithCancel(context.Background())
	w, err := cs.CoreV1().Pods(ns).Watch(ctx, metav1.ListOptions{})
	if err != nil {
		cancel()
		return nil, fmt.Errorf("watch pods of %s: %w", ns, err)
	}
	pw := &podWatch{pods: map[string]*podTimes{}, jobOf: map[string]string{}, wake: make(chan struct{}, 1), done: make(chan struct{})}
	pw.stop = func() { cancel(); w.Stop() }
	go func() {
		defer close(pw.done)
		for ev := range w.ResultChan() {
			now := time.Now()
			pod, ok := ev.Object.(*corev1.Pod)
			if !ok || ev.Type == watch.Error {
				continue
			}
			pw.observe(now, pod, ev.Type == watch.Deleted)
		}
	}()
	return pw, nil
}

func (pw *podWatch) observe(now time.Time, pod *corev1.Pod, deleted bool) {
	pw.mu.Lock()
	pt := pw.pods[pod.Name]
	if pt == nil {
		pt = &podTimes{added: now}
		pw.pods[pod.Name] = pt
	}
	pt.gone = pt.gone || deleted
	main := buildContainer
	// podrunner labels its pods with the job id; GitLab Runner puts it in
	// an annotation of the same key. Runners measured one after another
	// reuse job ids in this namespace: the latest pod of an id is the
	// current runner's (forget drops the older ones).
	id := pod.Labels[labelJobID]
	if id == "" {
		id = pod.Annotations[labelJobID]
	}
	if id != "" && pt.job == "" {
		pt.job = id
		pw.jobOf[id] = pod.Name
	}
	if len(pod.Spec.Containers) > 0 && !slices.ContainsFunc(pod.Spec.Containers, func(c corev1.Container) bool { return c.Name == buildContainer }) {
		main = pod.Spec.Containers[0].Name
	}
	for _, s := range pod.Status.ContainerStatuses {
		if s.Name == main && pt.running.IsZero() && (s.State.Running != nil || s.State.Terminated != nil) {
			pt.running = now
		}
	}
	if pt.ended.IsZero() && (pod.Status.Phase == corev1.PodSucceeded || pod.Status.Phase == corev1.PodFailed) {
		pt.ended = now
	}
	pw.mu.Unlock()
	select {
	case pw.wake <- struct{}{}:
	default:
	}
}

func (pw *podWatch) Close() { pw.stop(); <-pw.done }

func (pw *podWatch) get(name string) podTimes {
	pw.mu.Lock()
	defer pw.mu.Unlock()
	if pt := pw.pods[name]; pt != nil {
		return *pt
	}
	return podTimes{}
}

// forget drops what the watch knows of jobs, before another runner's
// jobs (whose ids start over) run.
func (pw *podWatch) forget() {
	pw.mu.Lock()
	defer pw.mu.Unlock()
	clear(pw.jobOf)
}

func (pw *podWatch) podOfJob(id int64) string {
	pw.mu.Lock()
	defer pw.mu.Unlock()
	return pw.jobOf[fmt.Sprint(id)]
}

func (pw *podWatch) waitEnded(ctx context.Context, name string, timeout time.Duration) (podTimes, error) {
	deadline := time.After(timeout)
	for {
		if pt := pw.get(name); !pt.ended.IsZero() {
			return pt, nil
		}
		select {
		case <-pw.wake:
		case <-time.After(100 * time.Millisecond):
		case <-ctx.Done():
			return podTimes{}, ctx.Err()
		case <-deadline:
			return podTimes{}, fmt.Errorf("pod %s did not end within %v", name, timeout)
		}
	}
}

// waitJobPodsGone waits until every job pod seen is deleted, then settle
// more for what the cluster does after (the garbage collector's delete of
// the pod's Secret): request counts scraped then hold whole jobs, however
// late a runner deletes its pods.
func (pw *podWatch) waitJobPodsGone(ctx context.Context, timeout, settle time.Duration) error {
	deadline := time.After(timeout)
	for {
		pw.mu.Lock()
		left := ""
		for name, pt := range pw.pods {
			if pt.job != "" && !pt.gone {
				left = name
				break
			}
		}
		pw.mu.Unlock()
		if left == "" {
			break
		}
		select {
		case <-pw.wake:
		case <-time.After(100 * time.Millisecond):
		case <-ctx.Done():
			return ctx.Err()
		case <-deadline:
			return fmt.Errorf("job pod %s was not deleted within %v", left, timeout)
		}
	}
	select {
	case <-time.After(settle):
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// settleIdle is how long the idle runner is left before its memory is
// read again: past the Go runtime's forced collection (2 minutes).
const settleIdle = 150 * time.Second

const kubeScript = `  script:
    - ` + adjtimex.Script + `
    - echo hi
    - ` + adjtimex.Script + `
`

// bareSample is one bare pod's moments.
type bareSample struct {
	create, added, running, start, end, ended time.Time
}

// barePod runs the job's script in a plain busybox pod (restartPolicy
// Never, image pull policy Never, no token, no service links) and returns
// its moments once it is seen Succeeded: the floor a runner builds on.
// With emptyDir the pod mounts one: the floor of any pod with a volume,
// since the kubelet starts its containers only once a poll of the volume
// manager (every 300 ms, podAttachAndMountRetryInterval) finds the
// volumes mounted, and a bare pod has none.
func (b *bench) barePod(ctx context.Context, i int, emptyDir bool) (bareSample, error) {
	k := b.kube
	no, grace := false, int64(0)
	name := fmt.Sprintf("bare-%03d", i)
	c := corev1.Container{Name: "echo", Image: busyboxImage, ImagePullPolicy: corev1.PullNever,
		Command: []string{"sh", "-c", adjtimex.Script + "; echo hi; " + adjtimex.Script}}
	pod := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: name}, Spec: corev1.PodSpec{
		RestartPolicy: corev1.RestartPolicyNever, AutomountServiceAccountToken: &no, EnableServiceLinks: &no,
		TerminationGracePeriodSeconds: &grace,
	}}
	if emptyDir {
		pod.Name = fmt.Sprintf("bare-dir-%03d", i)
		pod.Spec.Volumes = []corev1.Volume{{Name: "dir", VolumeSource: corev1.VolumeSource{EmptyDir: &corev1.EmptyDirVolumeSource{}}}}
		c.VolumeMounts = []corev1.VolumeMount{{Name: "dir", MountPath: "/dir"}}
	}
	name = pod.Name
	pod.Spec.Containers = []corev1.Container{c}
	create := time.Now()
	if _, err := k.cs.CoreV1().Pods(k.ns).Create(ctx, pod, metav1.CreateOptions{}); err != nil {
		return bareSample{}, fmt.Errorf("create bare pod: %w", err)
	}
	pt, err := k.watch.waitEnded(ctx, name, 2*time.Minute)
	if err != nil {
		return bareSample{}, err
	}
	logs, err := k.cs.CoreV1().Pods(k.ns).GetLogs(name, &corev1.PodLogOptions{Container: "echo"}).DoRaw(ctx)
	if err != nil {
		return bareSample{}, fmt.Errorf("logs of bare pod %s: %w", name, err)
	}
	st := adjtimex.Stamps(logs)
	if len(st) != 2 {
		return bareSample{}, fmt.Errorf("bare pod %s: %d adjtimex stamps in its log, want 2:\n%s", name, len(st), logs)
	}
	policy := metav1.DeletePropagationBackground
	_ = k.cs.CoreV1().Pods(k.ns).Delete(ctx, name, metav1.DeleteOptions{GracePeriodSeconds: &grace, PropagationPolicy: &policy})
	return bareSample{create: create, added: pt.added, running: pt.running, start: st[0], end: st[1], ended: pt.ended}, nil
}

func (s bareSample) createdToRunning() time.Duration { return s.running.Sub(s.added) }

// jobSample is one Kubernetes job's moments.
type jobSample struct {
	queued, picked, podAdded, running, start, end, finished time.Time
}

func (b *bench) jobSample(w *world, j coordinator.JobView) (jobSample, error) {
	st := adjtimex.Stamps(w.coord.Trace(j.ID))
	if len(st) != 2 {
		return jobSample{}, fmt.Errorf("job %d: %d adjtimex stamps in its log, want 2:\n%s", j.ID, len(st), tail(w.coord.Trace(j.ID), 2000))
	}
	pod := b.kube.watch.podOfJob(j.ID)
	if pod == "" {
		return jobSample{}, fmt.Errorf("job %d: the watch saw no pod labelled %s=%d", j.ID, labelJobID, j.ID)
	}
	pt := b.kube.watch.get(pod)
	return jobSample{queued: j.QueuedAt, picked: j.StartedAt, podAdded: pt.added, running: pt.running,
		start: st[0], end: st[1], finished: j.FinishedAt}, nil
}

type step[T any] struct {
	name string
	f    func(T) time.Duration
}

var jobSteps = []step[jobSample]{
	{"queued -> handed to the runner", func(s jobSample) time.Duration { return s.picked.Sub(s.queued) }},
	{"handed -> pod created (watch ADDED)", func(s jobSample) time.Duration { return s.podAdded.Sub(s.picked) }},
	{"pod created -> build container running", func(s jobSample) time.Duration { return s.running.Sub(s.podAdded) }},
	{"container running -> script started", func(s jobSample) time.Duration { return s.start.Sub(s.running) }},
	{"script started -> script exited", func(s jobSample) time.Duration { return s.end.Sub(s.start) }},
	{"script exited -> final state accepted", func(s jobSample) time.Duration { return s.finished.Sub(s.end) }},
	{"whole: handed -> final state accepted", func(s jobSample) time.Duration { return s.finished.Sub(s.picked) }},
}

var bareSteps = []step[bareSample]{
	{"bare pod: create call -> watch ADDED", func(s bareSample) time.Duration { return s.added.Sub(s.create) }},
	{"bare pod: created -> container running", bareSample.createdToRunning},
	{"bare pod: container running -> script started", func(s bareSample) time.Duration { return s.start.Sub(s.running) }},
	{"bare pod: script started -> exited", func(s bareSample) time.Duration { return s.end.Sub(s.start) }},
	{"bare pod: script exited -> Succeeded seen", func(s bareSample) time.Duration { return s.ended.Sub(s.end) }},
	{"bare pod whole: create call -> Succeeded seen", func(s bareSample) time.Duration { return s.ended.Sub(s.create) }},
}

func column[T any](xs []T, f func(T) time.Duration) []time.Duration {
	out := make([]time.Duration, len(xs))
	for i, x := range xs {
		out[i] = f(x)
	}
	return out
}

// barePods runs n bare pods one after another.
func (b *bench) barePods(ctx context.Context, emptyDir bool) ([]bareSample, error) {
	var out []bareSample
	for i := 1; i <= b.n(20); i++ {
		s, err := b.barePod(ctx, i, emptyDir)
		if err != nil {
			return nil, err
		}
		out = append(out, s)
	}
	return out, nil
}

// bare runs the floor: n bare pods one after another, between two scrapes
// of the API server's metrics. It is the same for every runner, so it
// fills the cells of all of them.
func (b *bench) bare(ctx context.Context) ([]bareSample, error) {
	if _, err := b.barePod(ctx, 0, false); err != nil { // warm
		return nil, err
	}
	before, berr := scrapeRequests(ctx, b.kube.cs)
	bs, err := b.barePods(ctx, false)
	if err != nil {
		return nil, err
	}
	after, aerr := scrapeRequests(ctx, b.kube.cs)
	dirs, err := b.barePods(ctx, true)
	if err != nil {
		return nil, err
	}
	sc := fmt.Sprintf("%s, floor (%d bare pods in sequence)", scKube, len(bs))
	for _, st := range bareSteps {
		for _, r := range b.runners {
			b.rep.Add(r.Label, sc, st.name, msDist, nil, DistMS(column(bs, st.f)))
		}
	}
	for _, r := range b.runners {
		b.rep.Add(r.Label, sc, "bare pod + 1 emptyDir (the kubelet's volume wait): created -> container running", msDist, nil, DistMS(column(dirs, bareSample.createdToRunning)))
	}
	if berr == nil && aerr == nil {
		for _, r := range b.runners {
			b.addAPIRows(r.Label, "per bare pod (cluster's own cost of a pod)", after.sub(before), len(bs))
		}
	} else {
		b.note("api-server metrics: %v %v", berr, aerr)
	}
	return bs, nil
}

// kubeJobs runs the Kubernetes scenario for one runner: a warm-up job,
// then n echo jobs in sequence at concurrent = 1 and m in one pipeline
// at concurrent = 5, with the API server's request counters scraped
// around both.
func (b *bench) kubeJobs(ctx context.Context, spec runnerSpec, bare []bareSample) error {
	k := b.kube
	k.token = k.tokens["other-runner"]
	if spec.Label == labelPodrunner {
		k.token = k.tokens["podrunner"]
	}
	n, m := b.n(20), b.n(30)
	var total int
	// The runner's RSS in KiB once it holds its first poll, and after the
	// warm-up job (informers and connections up), in its first run.
	var idleRSS, settledRSS, jobRSS int64
	var delta reqCounts
	// extra is appended to [runners.kubernetes]; a run with extra settings
	// is left out of the API request figures.
	runWith := func(concurrent int, extra, ci string, body func(w *world) ([]jobSample, error)) ([]jobSample, error) {
		k.watch.forget() // each coordinator numbers its jobs from 1
		w, err := newWorld(ctx, b.tmpDir(fmt.Sprintf("k8s%d-%s%s", concurrent, spec.Label, map[bool]string{true: "-warm"}[extra != ""])), k.listen(), ci, coordinator.Options{})
		if err != nil {
			return nil, err
		}
		defer w.Close()
		rdir := filepath.Join(w.dir, "runner-"+spec.Label)
		p, err := startRunner(spec, rdir, kubeConfig(w, concurrent, k, spec)+extra)
		if err != nil {
			return nil, err
		}
		defer p.Stop()
		if err := b.waitHeld(ctx, w, p); err != nil {
			return nil, err
		}
		measureRSS := idleRSS == 0
		if measureRSS {
			time.Sleep(time.Second) // past start-up's garbage
			if idleRSS, _, err = memKiB(p.Pid()); err != nil {
				return nil, err
			}
			// Idle on, past the runtime's forced collection: the heap of
			// an idle process fills up to its goal between collections.
			time.Sleep(settleIdle)
			if settledRSS, _, err = memKiB(p.Pid()); err != nil {
				return nil, err
			}
		}
		// Warm-up: informers, connections, first pod on the node.
		pl, err := w.pipeline("warm:\n" + kubeScript)
		if err == nil {
			_, err = w.wait(ctx, pl.ID, 3*time.Minute)
		}
		if err != nil {
			return nil, fmt.Errorf("warm-up job: %w; end of the runner's log:\n%s", err, p.logTail(2000))
		}
		if measureRSS {
			if jobRSS, _, err = memKiB(p.Pid()); err != nil {
				return nil, err
			}
		}
		if err := k.watch.waitJobPodsGone(ctx, time.Minute, time.Second); err != nil {
			return nil, err
		}
		before, berr := scrapeRequests(ctx, k.cs)
		js, err := body(w)
		if err != nil {
			return nil, fmt.Errorf("%w; end of the runner's log:\n%s", err, p.logTail(2000))
		}
		if err := k.watch.waitJobPodsGone(ctx, time.Minute, time.Second); err != nil {
			return nil, err
		}
		after, aerr := scrapeRequests(ctx, k.cs)
		if berr == nil && aerr == nil && extra == "" {
			delta = delta.add(after.sub(before))
			total += len(js)
		}
		return js, nil
	}
	run := func(concurrent int, ci string, body func(w *world) ([]jobSample, error)) ([]jobSample, error) {
		return runWith(concurrent, "", ci, body)
	}
	seq, err := run(1, "echo:\n"+kubeScript, func(w *world) ([]jobSample, error) {
		return b.jobsInSequence(ctx, w, n, nil)
	})
	if err != nil {
		return err
	}
	var ci strings.Builder
	for i := 1; i <= m; i++ {
		fmt.Fprintf(&ci, "echo-%02d:\n%s", i, kubeScript)
	}
	var conc []jobSample
	var rate float64
	conc, err = run(5, ci.String(), func(w *world) ([]jobSample, error) {
		pl, err := w.pipeline("")
		if err != nil {
			return nil, err
		}
		v, err := w.wait(ctx, pl.ID, 5*time.Minute)
		if err != nil {
			return nil, err
		}
		var js []jobSample
		var first, last time.Time
		for _, j := range v.Jobs {
			s, err := b.jobSample(w, j)
			if err != nil {
				return nil, err
			}
			js = append(js, s)
			if first.IsZero() || s.queued.Before(first) {
				first = s.queued
			}
			if s.finished.After(last) {
				last = s.finished
			}
		}
		rate = float64(len(js)) / last.Sub(first).Minutes()
		return js, nil
	})
	if err != nil {
		return err
	}
	floor := column(bare, bareSteps[len(bareSteps)-1].f)
	for i, r := range []struct {
		sc string
		js []jobSample
	}{
		{fmt.Sprintf("%s, concurrent=1 (%d jobs in sequence)", scKube, len(seq)), seq},
		{fmt.Sprintf("%s, concurrent=5 (%d jobs in one pipeline)", scKube, len(conc)), conc},
	} {
		for _, st := range jobSteps {
			b.rep.Add(spec.Label, r.sc, st.name, msDist, nil, DistMS(column(r.js, st.f)))
		}
		whole := column(r.js, jobSteps[len(jobSteps)-1].f)
		var target *Target
		if i == 0 { // the target is about one job on an idle runner
			target = &Target{Below: 200}
		}
		b.rep.Add(spec.Label, r.sc, "runner overhead: whole job - bare pod whole (p50-p50 / p95-p95)", msDist, target, diffCell(whole, floor))
	}
	b.rep.Add(spec.Label, fmt.Sprintf("%s, concurrent=5 (%d jobs in one pipeline)", scKube, len(conc)), "throughput: first queued -> last final state", "jobs/min", nil, Val(rate))
	b.rep.Add(spec.Label, scKubeRSS, "RSS idle (Kubernetes runner configured, holding its first poll)", "MiB", &Target{Below: 30}, Val(float64(idleRSS)/1024))
	b.rep.Add(spec.Label, scKubeRSS, fmt.Sprintf("RSS idle %v later (after Go's forced collection)", settleIdle), "MiB", nil, Val(float64(settledRSS)/1024))
	b.rep.Add(spec.Label, scKubeRSS, "RSS after the first job (informers and connections up)", "MiB", nil, Val(float64(jobRSS)/1024))
	if spec.Label == labelPodrunner {
		if err := b.kubeWarm(ctx, n, runWith); err != nil {
			return err
		}
	}
	if total > 0 {
		b.addAPIRows(spec.Label, fmt.Sprintf("per job (%d jobs)", total), delta, total)
	} else {
		b.note("api-server metrics could not be scraped for %s", spec.Label)
	}
	return nil
}

// diffCell is the cell of p50(a)-p50(b) and p95(a)-p95(b), in ms.
func diffCell(a, b []time.Duration) Cell {
	ca, cb := DistMS(a), DistMS(b)
	if ca.P50 == nil || cb.P50 == nil {
		return Text("no samples")
	}
	p50, p95 := *ca.P50-*cb.P50, *ca.P95-*cb.P95
	return Cell{N: ca.N, P50: &p50, P95: &p95}
}

// jobsInSequence runs the world's pipeline n times, one at a time, each
// once the runner holds its long poll (and before, when set, says so).
func (b *bench) jobsInSequence(ctx context.Context, w *world, n int, before func() error) ([]jobSample, error) {
	var js []jobSample
	for range n {
		if before != nil {
			if err := before(); err != nil {
				return nil, err
			}
		}
		if err := w.waitHeld(ctx, time.Minute); err != nil {
			return nil, err
		}
		pl, err := w.pipeline("")
		if err != nil {
			return nil, err
		}
		v, err := w.wait(ctx, pl.ID, 3*time.Minute)
		if err != nil {
			return nil, err
		}
		s, err := b.jobSample(w, v.Jobs[0])
		if err != nil {
			return nil, err
		}
		js = append(js, s)
	}
	return js, nil
}

// kubeWarm runs n echo jobs in sequence on podrunner with warm_pods = 2,
// each once two warm pods run: the issue's "with 2 warm pods of the job
// image" (docs/kubernetes-executor.md, "Warm pods").
func (b *bench) kubeWarm(ctx context.Context, n int, runWith func(int, string, string, func(*world) ([]jobSample, error)) ([]jobSample, error)) error {
	k := b.kube
	const extra = "    warm_pods = 2\n    warm_pods_refill_per_minute = 120\n"
	js, err := runWith(1, extra, "echo:\n"+kubeScript, func(w *world) ([]jobSample, error) {
		return b.jobsInSequence(ctx, w, n, func() error { return k.waitWarm(ctx, 2) })
	})
	if err != nil {
		return fmt.Errorf("warm pods: %w", err)
	}
	sc := fmt.Sprintf("%s, warm_pods=2 (%d jobs in sequence)", scKube, len(js))
	rows := []struct {
		name   string
		f      func(jobSample) time.Duration
		target *Target
	}{
		{"handed -> script started", func(s jobSample) time.Duration { return s.start.Sub(s.picked) }, &Target{Below: 100}},
		{"script started -> script exited", func(s jobSample) time.Duration { return s.end.Sub(s.start) }, nil},
		{"script exited -> final state accepted", func(s jobSample) time.Duration { return s.finished.Sub(s.end) }, nil},
		{"whole: handed -> final state accepted", func(s jobSample) time.Duration { return s.finished.Sub(s.picked) }, &Target{Below: 300}},
	}
	for _, r := range rows {
		b.rep.Add(labelPodrunner, sc, r.name, msDist, r.target, DistMS(column(js, r.f)))
	}
	return nil
}

// waitWarm waits until n warm pods of the namespace run.
func (k *kubeTarget) waitWarm(ctx context.Context, n int) error {
	deadline := time.Now().Add(2 * time.Minute)
	for {
		list, err := k.cs.CoreV1().Pods(k.ns).List(ctx, metav1.ListOptions{LabelSelector: "podrunner.io/warm=true"})
		if err != nil {
			return err
		}
		running := 0
		for _, p := range list.Items {
			for _, s := range p.Status.ContainerStatuses {
				if p.DeletionTimestamp == nil && s.Name == buildContainer && s.State.Running != nil {
					running++
				}
			}
		}
		if running >= n {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%d warm pods running after 2 min, want %d", running, n)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
	}
}

package e2e

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/kubernetes/scheme"

	"github.com/podrunner/podrunner/internal/coordinator"
	"github.com/podrunner/podrunner/internal/helmchart"
	"github.com/podrunner/podrunner/internal/testcluster"
)

// helmEnv is one chart walk-through: a namespace, a coordinator reachable
// from pods, the project's helm binary, a watch on the namespace's pods and
// the logs of every manager pod.
type helmEnv struct {
	t       *testing.T
	c       *testcluster.Cluster
	ns      string
	release string
	root    string
	helm    string
	helmEnv []string
	coord   *coordinator.Server
	project string

	mu     sync.Mutex
	events []podEvent               // every pod event, in order
	logs   map[string]*lockedBuffer // manager pod → its log, followed
}

type podEvent struct {
	typ  watch.EventType
	at   time.Time
	pod  *corev1.Pod
	name string
}

// helmOptions change the walk-through's setup.
type helmOptions struct {
	// tls: the coordinator serves HTTPS with a certificate of a private CA
	// (coord.CACertPEM).
	tls bool
}

func newHelmEnv(t *testing.T, opts ...helmOptions) *helmEnv {
	t.Helper()
	var o helmOptions
	for _, x := range opts {
		o = x
	}
	c := testcluster.Get(t)
	bin, root := helmBinary(t)
	k8sPodrunnerImage(t)

	suffix := make([]byte, 3)
	rand.Read(suffix)
	dir := t.TempDir()
	e := &helmEnv{
		t: t, c: c, ns: c.Namespace(t), root: root, helm: bin,
		release: "gitlab-runner-" + hex.EncodeToString(suffix),
		helmEnv: append(os.Environ(), helmHome(dir)...),
		project: "group/demo",
		logs:    map[string]*lockedBuffer{},
	}
	e.watchPods()

	repo := filepath.Join(dir, "repo")
	k8sGit(t, "", "init", "-q", "-b", "main", repo)
	if err := os.WriteFile(filepath.Join(repo, ".gitlab-ci.yml"), []byte(readSeed(t, "runner-test.gitlab-ci.yml")), 0o644); err != nil {
		t.Fatal(err)
	}
	k8sGit(t, repo, "add", "-A")
	k8sGit(t, repo, "-c", "user.name=t", "-c", "user.email=t@example.com", "commit", "-q", "-m", "ci")
	coord, err := coordinator.New(coordinator.Options{
		ListenAddr:          c.NodeIP + ":0",
		TraceUpdateInterval: time.Second,
		DataDir:             filepath.Join(dir, "coordinator"),
		TLS:                 o.tls,
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := coord.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { coord.Close() })
	if _, err := coord.AddProject(e.project, repo); err != nil {
		t.Fatal(err)
	}
	e.coord = coord
	// Whatever happens, the release goes (the namespace is deleted after).
	t.Cleanup(func() {
		if t.Failed() {
			e.dumpLogs()
		}
		out, err := e.helmCmd("uninstall", e.release, "--namespace", e.ns, "--ignore-not-found", "--wait", "--timeout", "2m")
		if err != nil {
			t.Logf("cleanup: helm uninstall: %v\n%s", err, out)
		}
	})
	return e
}

var (
	helmOnce sync.Once
	helmBin  string
	helmRoot string
	helmErr  error
)

// helmBinary returns the project's helm (hack/helm/install; the first
// build takes minutes) and the repository root.
func helmBinary(t *testing.T) (bin, root string) {
	t.Helper()
	helmOnce.Do(func() {
		if helmRoot, helmErr = helmchart.RepoRoot(); helmErr != nil {
			return
		}
		ctx, cancel := context.WithTimeout(context.Background(), 25*time.Minute)
		defer cancel()
		helmBin, helmErr = helmchart.Install(ctx, helmRoot)
	})
	if helmErr != nil {
		t.Fatal(helmErr)
	}
	return helmBin, helmRoot
}

// helmTemplate renders the chart (release "gitlab-runner") with args.
func helmTemplate(t *testing.T, bin, root string, args ...string) []helmchart.Doc {
	t.Helper()
	dir := t.TempDir()
	cmd := exec.Command(bin, append([]string{"template", "gitlab-runner", helmchart.ChartPath}, args...)...)
	cmd.Dir = root
	cmd.Env = append(os.Environ(), "HELM_CACHE_HOME="+dir, "HELM_CONFIG_HOME="+dir, "HELM_DATA_HOME="+dir)
	var stderr strings.Builder
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("helm template: %v\n%s", err, stderr.String())
	}
	docs, err := helmchart.Split(out)
	if err != nil {
		t.Fatal(err)
	}
	return docs
}

// oneDoc decodes the only rendered object of kind.
func oneDoc[T runtime.Object](t *testing.T, docs []helmchart.Doc, kind string) T {
	t.Helper()
	found := helmchart.Find(docs, kind, "")
	if len(found) != 1 {
		t.Fatalf("%d objects of kind %s rendered, want 1", len(found), kind)
	}
	obj, _, err := scheme.Codecs.UniversalDeserializer().Decode(found[0].YAML, nil, nil)
	if err != nil {
		t.Fatalf("decode %s: %v", kind, err)
	}
	v, ok := obj.(T)
	if !ok {
		t.Fatalf("%s decodes to %T", kind, obj)
	}
	return v
}

// helmCmd runs the project's helm against the cluster.
func (e *helmEnv) helmCmd(args ...string) (string, error) {
	cmd := exec.Command(e.helm, args...)
	cmd.Dir = e.root
	cmd.Env = e.helmEnv
	out, err := cmd.CombinedOutput()
	return string(out), err
}

func (e *helmEnv) mustHelm(args ...string) string {
	e.t.Helper()
	out, err := e.helmCmd(args...)
	if err != nil {
		e.t.Fatalf("helm %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return out
}

func kubectl(t *testing.T, args ...string) string {
	t.Helper()
	out, err := exec.Command("kubectl", args...).CombinedOutput()
	if err != nil {
		t.Fatalf("kubectl %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return string(out)
}

// watchPods records every pod event of the namespace (kubectl get pods -w)
// and follows the log of every manager pod from its start.
func (e *helmEnv) watchPods() {
	ctx, cancel := context.WithCancel(context.Background())
	w, err := e.c.Clientset.CoreV1().Pods(e.ns).Watch(ctx, metav1.ListOptions{})
	if err != nil {
		e.t.Fatal(err)
	}
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for ev := range w.ResultChan() {
			pod, ok := ev.Object.(*corev1.Pod)
			if !ok || ev.Type == watch.Error {
				continue
			}
			e.mu.Lock()
			e.events = append(e.events, podEvent{typ: ev.Type, at: time.Now(), pod: pod, name: pod.Name})
			_, following := e.logs[pod.Name]
			manager := pod.Labels["app.kubernetes.io/component"] == "runner-manager"
			running := len(pod.Status.ContainerStatuses) > 0 && pod.Status.ContainerStatuses[0].State.Running != nil
			if manager && running && !following {
				buf := &lockedBuffer{}
				e.logs[pod.Name] = buf
				wg.Add(1)
				go func(name string) {
					defer wg.Done()
					e.followLog(ctx, name, buf)
				}(pod.Name)
			}
			e.mu.Unlock()
		}
	}()
	e.t.Cleanup(func() { cancel(); w.Stop(); wg.Wait() })
}

// followLog streams a pod's log until the pod ends or ctx is done.
func (e *helmEnv) followLog(ctx context.Context, pod string, buf *lockedBuffer) {
	req := e.c.Clientset.CoreV1().Pods(e.ns).GetLogs(pod, &corev1.PodLogOptions{Follow: true})
	rc, err := req.Stream(ctx)
	if err != nil {
		fmt.Fprintf(buf, "[test: log stream: %v]\n", err)
		return
	}
	defer rc.Close()
	var b [4096]byte
	for {
		n, err := rc.Read(b[:])
		buf.Write(b[:n])
		if err != nil {
			return
		}
	}
}

// managerLog is the followed log of a manager pod.
func (e *helmEnv) managerLog(pod string) string {
	e.mu.Lock()
	buf := e.logs[pod]
	e.mu.Unlock()
	if buf == nil {
		return ""
	}
	return buf.String()
}

func (e *helmEnv) dumpLogs() {
	e.mu.Lock()
	defer e.mu.Unlock()
	for name, buf := range e.logs {
		e.t.Logf("log of manager pod %s:\n%s", name, tail([]byte(buf.String()), 20000))
	}
}

// podsSeen are the names of the pods seen by the watch whose name
// matches keep, in order of appearance.
func (e *helmEnv) podsSeen(keep func(*corev1.Pod) bool) []string {
	e.mu.Lock()
	defer e.mu.Unlock()
	seen := map[string]bool{}
	var out []string
	for _, ev := range e.events {
		if !seen[ev.name] && keep(ev.pod) {
			seen[ev.name] = true
			out = append(out, ev.name)
		}
	}
	return out
}

func (e *helmEnv) deleted(name string) bool {
	e.mu.Lock()
	defer e.mu.Unlock()
	for _, ev := range e.events {
		if ev.name == name && ev.typ == watch.Deleted {
			return true
		}
	}
	return false
}

func isManager(p *corev1.Pod) bool {
	return p.Labels["app.kubernetes.io/component"] == "runner-manager"
}

// waitManagersReady waits until exactly n manager pods exist, all Running
// and Ready, and returns them.
func (e *helmEnv) waitManagersReady(n int, timeout time.Duration) []corev1.Pod {
	e.t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		pods, err := e.c.Clientset.CoreV1().Pods(e.ns).List(context.Background(), metav1.ListOptions{
			LabelSelector: "app.kubernetes.io/instance=" + e.release + ",app.kubernetes.io/component=runner-manager",
		})
		if err != nil {
			e.t.Fatal(err)
		}
		ready := 0
		for _, p := range pods.Items {
			if p.Status.Phase == corev1.PodRunning && p.DeletionTimestamp == nil && podReady(&p) {
				ready++
			}
		}
		if ready == n && len(pods.Items) == n {
			return pods.Items
		}
		if time.Now().After(deadline) {
			for _, p := range pods.Items {
				e.t.Logf("%s", testcluster.DescribePod(&p))
			}
			e.t.Fatalf("%d of %d manager pods ready after %v, want %d", ready, len(pods.Items), timeout, n)
		}
		time.Sleep(250 * time.Millisecond)
	}
}

func podReady(p *corev1.Pod) bool {
	for _, c := range p.Status.Conditions {
		if c.Type == corev1.PodReady {
			return c.Status == corev1.ConditionTrue
		}
	}
	return false
}

// waitFor polls cond every 250 ms until it holds or timeout passes.
func waitFor(t *testing.T, what string, timeout time.Duration, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", timeout, what)
		}
		time.Sleep(250 * time.Millisecond)
	}
}

// pipeline runs a pipeline with the given .gitlab-ci.yml and waits for it.
func (e *helmEnv) pipeline(ci string, timeout time.Duration) coordinator.PipelineView {
	e.t.Helper()
	pl, err := e.coord.CreatePipelineWith(e.project, coordinator.PipelineOptions{CIConfig: []byte(ci)})
	if err != nil {
		e.t.Fatal(err)
	}
	return e.waitPipeline(pl.ID, timeout)
}

func (e *helmEnv) waitPipeline(id int64, timeout time.Duration) coordinator.PipelineView {
	e.t.Helper()
	return waitPipeline(e.t, e.coord, id, timeout)
}

// leftovers lists what of the release is still in the namespace.
func (e *helmEnv) leftovers() []string {
	e.t.Helper()
	ctx := context.Background()
	var out []string
	core := e.c.Clientset.CoreV1()
	pods, err := core.Pods(e.ns).List(ctx, metav1.ListOptions{})
	if err != nil {
		e.t.Fatal(err)
	}
	for _, p := range pods.Items {
		out = append(out, "pod/"+p.Name)
	}
	secrets, err := core.Secrets(e.ns).List(ctx, metav1.ListOptions{})
	if err != nil {
		e.t.Fatal(err)
	}
	for _, s := range secrets.Items {
		out = append(out, "secret/"+s.Name)
	}
	roles, err := e.c.Clientset.RbacV1().Roles(e.ns).List(ctx, metav1.ListOptions{})
	if err != nil {
		e.t.Fatal(err)
	}
	for _, r := range roles.Items {
		out = append(out, "role/"+r.Name)
	}
	rbs, err := e.c.Clientset.RbacV1().RoleBindings(e.ns).List(ctx, metav1.ListOptions{})
	if err != nil {
		e.t.Fatal(err)
	}
	for _, r := range rbs.Items {
		out = append(out, "rolebinding/"+r.Name)
	}
	sel := metav1.ListOptions{LabelSelector: "app.kubernetes.io/instance=" + e.release}
	cms, err := core.ConfigMaps(e.ns).List(ctx, sel)
	if err != nil {
		e.t.Fatal(err)
	}
	for _, c := range cms.Items {
		out = append(out, "configmap/"+c.Name)
	}
	sas, err := core.ServiceAccounts(e.ns).List(ctx, sel)
	if err != nil {
		e.t.Fatal(err)
	}
	for _, s := range sas.Items {
		out = append(out, "serviceaccount/"+s.Name)
	}
	deps, err := e.c.Clientset.AppsV1().Deployments(e.ns).List(ctx, metav1.ListOptions{})
	if err != nil {
		e.t.Fatal(err)
	}
	for _, d := range deps.Items {
		out = append(out, "deployment/"+d.Name)
	}
	return out
}

// missingFrom reports the wanted substrings missing from s.
func missingFrom(s string, want ...string) []string {
	var out []string
	for _, w := range want {
		if !strings.Contains(s, w) {
			out = append(out, w)
		}
	}
	return out
}

// podWatch renders the recorded pod events like `kubectl get pods -w`.
func (e *helmEnv) podWatch() string {
	e.mu.Lock()
	defer e.mu.Unlock()
	var b strings.Builder
	for _, ev := range e.events {
		ready, total := 0, len(ev.pod.Status.ContainerStatuses)
		for _, c := range ev.pod.Status.ContainerStatuses {
			if c.Ready {
				ready++
			}
		}
		status := string(ev.pod.Status.Phase)
		if ev.pod.DeletionTimestamp != nil {
			status = "Terminating"
		}
		fmt.Fprintf(&b, "%s  %-8s %-60s %d/%d %s\n", ev.at.Format("15:04:05.000"), ev.typ, ev.name, ready, total, status)
	}
	return b.String()
}

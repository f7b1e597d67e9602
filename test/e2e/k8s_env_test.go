package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/kubernetes/scheme"
	"k8s.io/client-go/rest"

	"github.com/podrunner/podrunner/internal/config"
	"github.com/podrunner/podrunner/internal/coordinator"
	"github.com/podrunner/podrunner/internal/executor/kubernetes"
	"github.com/podrunner/podrunner/internal/gitlab"
	"github.com/podrunner/podrunner/internal/job"
	"github.com/podrunner/podrunner/internal/runner"
	"github.com/podrunner/podrunner/internal/testcluster"
)

var (
	k8sImageOnce sync.Once
	k8sImageErr  error
)

// k8sPodrunnerImage builds static podrunner and podrunner-helper binaries
// and imports them as podrunner.local/podrunner:dev (both) and
// podrunner.local/podrunner-helper:dev (the helper alone), once per test
// binary.
func k8sPodrunnerImage(t *testing.T) {
	t.Helper()
	k8sImageOnce.Do(func() {
		dir, err := os.MkdirTemp("", "podrunner-e2e-image-")
		if err != nil {
			k8sImageErr = err
			return
		}
		defer os.RemoveAll(dir)
		bin := filepath.Join(dir, "podrunner")
		// Stripped, both binaries (-o DIR names each after its command).
		build := exec.Command("go", "build", "-trimpath", "-ldflags", "-s -w", "-o", dir+"/", "../../cmd/podrunner", "../../cmd/podrunner-helper")
		build.Env = append(os.Environ(), "CGO_ENABLED=0")
		if out, err := build.CombinedOutput(); err != nil {
			k8sImageErr = fmt.Errorf("build podrunner: %v\n%s", err, out)
			return
		}
		imp := exec.Command("../../hack/cluster/images", "podrunner", bin)
		if out, err := imp.CombinedOutput(); err != nil {
			k8sImageErr = fmt.Errorf("import podrunner image: %v\n%s", err, out)
		}
	})
	if k8sImageErr != nil {
		t.Fatal(k8sImageErr)
	}
}

// k8sEnv is one test's world: a namespace with the documented Role bound
// to a ServiceAccount, a coordinator on the node address (pods clone from
// it), and a runner manager whose Kubernetes executor runs as that
// ServiceAccount.
type k8sEnv struct {
	t       *testing.T
	c       *testcluster.Cluster
	ns      string
	dir     string
	coord   *coordinator.Server
	token   string
	ex      *kubernetes.Executor
	project string
	kube    *config.Kubernetes
	rest    *rest.Config

	mu   sync.Mutex
	pods map[string][]byte // pod name → JSON of every version seen
}

type k8sOptions struct {
	concurrent int
	kube       func(*config.Kubernetes)
	// external leaves out the in-process runner: the test runs the
	// podrunner binary itself (kube and rest then describe its settings).
	external bool
	// maxTraceSize is the coordinator's trace size limit in bytes (0: its
	// default, 100 MiB).
	maxTraceSize int64
	// tls makes the coordinator serve HTTPS with a private CA.
	tls bool
	// registry is the coordinator's container registry (CI_REGISTRY and the
	// job's registry credential); none when nil.
	registry *coordinator.Registry
}

func newK8sEnv(t *testing.T, ciYAML string, o k8sOptions) *k8sEnv {
	t.Helper()
	c := testcluster.Get(t)
	k8sPodrunnerImage(t)
	ns := c.Namespace(t)
	e := &k8sEnv{t: t, c: c, ns: ns, dir: t.TempDir(), pods: map[string][]byte{}, project: "group/demo"}
	e.bindRole()
	e.watchPods()

	repo := filepath.Join(e.dir, "repo")
	k8sGit(t, "", "init", "-q", "-b", "main", repo)
	if err := os.WriteFile(filepath.Join(repo, ".gitlab-ci.yml"), []byte(ciYAML), 0o644); err != nil {
		t.Fatal(err)
	}
	k8sGit(t, repo, "add", "-A")
	k8sGit(t, repo, "-c", "user.name=t", "-c", "user.email=t@example.com", "commit", "-q", "-m", "ci")
	coord, err := coordinator.New(coordinator.Options{
		ListenAddr:          c.NodeIP + ":0",
		TraceUpdateInterval: time.Second,
		DataDir:             filepath.Join(e.dir, "coordinator"),
		MaxTraceSize:        o.maxTraceSize,
		TLS:                 o.tls,
		Registry:            o.registry,
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
	_, e.token = coord.CreateRunner(coordinator.RunnerOptions{Description: "e2e-k8s", Tags: []string{"aks"}, RunUntagged: true})
	e.coord = coord

	if o.concurrent == 0 {
		o.concurrent = 1
	}
	grace := int64(0)
	kc := &config.Kubernetes{
		Namespace:   ns,
		Image:       testcluster.BusyboxImage,
		HelperImage: testcluster.HelperImage,
		// The cluster's containerd mounts image volumes: the agent runs
		// from the helper image, no helper container (the chart and exec
		// tests keep the default, the helper container).
		HelperImageVolume:         true,
		PullPolicy:                config.StringOrList{"if-not-present"},
		PollTimeout:               60,
		CleanupGracePeriodSeconds: &grace,
	}
	if o.kube != nil {
		o.kube(kc)
	}
	e.kube, e.rest = kc, c.ServiceAccountConfig(t, ns, "podrunner")
	if o.external {
		return e
	}
	log := slog.New(slog.NewTextHandler(testWriter{t}, &slog.HandlerOptions{Level: slog.LevelInfo}))
	ex, err := kubernetes.New(kubernetes.Options{
		Config:      kc,
		RunnerToken: e.token,
		RunnerName:  "e2e-k8s",
		SystemID:    "s_e2ek8s00001",
		Logger:      log,
		RESTConfig:  e.rest,
	})
	if err != nil {
		t.Fatal(err)
	}
	e.ex = ex
	api, err := gitlab.NewClient(gitlab.Credentials{URL: coord.URL(), Token: e.token},
		gitlab.Options{Executor: "kubernetes", Logger: log, MinBackoff: 50 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	m, err := runner.New(runner.Settings{
		Concurrent:      o.concurrent,
		CheckInterval:   time.Second,
		ShutdownTimeout: 10 * time.Second,
		Runners: []*runner.Runner{{
			Name: "e2e-k8s", ShortToken: job.ShortToken(e.token), Key: coord.URL() + e.token,
			API: api, Executor: ex, ExecutorName: "kubernetes", RequestConcurrency: o.concurrent,
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
	return e
}

// testWriter sends runner logs to the test log.
type testWriter struct{ t *testing.T }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}

func k8sGit(t *testing.T, dir string, args ...string) {
	t.Helper()
	c := exec.Command("git", args...)
	c.Dir = dir
	if out, err := c.CombinedOutput(); err != nil {
		t.Fatalf("git %v: %v\n%s", args, err, out)
	}
}

// bindRole creates the Role of deploy/rbac/role.yaml in the namespace and
// binds it to the ServiceAccount the executor runs as.
func (e *k8sEnv) bindRole() {
	e.t.Helper()
	data, err := os.ReadFile("../../deploy/rbac/role.yaml")
	if err != nil {
		e.t.Fatal(err)
	}
	obj, _, err := scheme.Codecs.UniversalDeserializer().Decode(data, nil, nil)
	if err != nil {
		e.t.Fatalf("deploy/rbac/role.yaml: %v", err)
	}
	role, ok := obj.(*rbacv1.Role)
	if !ok {
		e.t.Fatalf("deploy/rbac/role.yaml holds a %T, want a Role", obj)
	}
	for _, r := range role.Rules {
		for _, res := range r.Resources {
			if res == "pods/exec" || res == "pods/attach" || res == "*" {
				e.t.Fatalf("the documented Role grants %s", res)
			}
		}
	}
	ctx := testcluster.Context(e.t)
	rbac := e.c.Clientset.RbacV1()
	if _, err := rbac.Roles(e.ns).Create(ctx, role, metav1.CreateOptions{}); err != nil {
		e.t.Fatal(err)
	}
	_, err = rbac.RoleBindings(e.ns).Create(ctx, &rbacv1.RoleBinding{
		ObjectMeta: metav1.ObjectMeta{Name: "podrunner"},
		RoleRef:    rbacv1.RoleRef{APIGroup: "rbac.authorization.k8s.io", Kind: "Role", Name: role.Name},
		Subjects:   []rbacv1.Subject{{Kind: "ServiceAccount", Name: "podrunner", Namespace: e.ns}},
	}, metav1.CreateOptions{})
	if err != nil {
		e.t.Fatal(err)
	}
}

// watchPods records every version of every pod in the namespace (as the
// admin sees them), to check names and that no secret is in a pod object.
func (e *k8sEnv) watchPods() {
	ctx, cancel := context.WithCancel(context.Background())
	w, err := e.c.Clientset.CoreV1().Pods(e.ns).Watch(ctx, metav1.ListOptions{})
	if err != nil {
		e.t.Fatal(err)
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		for ev := range w.ResultChan() {
			pod, ok := ev.Object.(*corev1.Pod)
			if !ok || ev.Type == watch.Error {
				continue
			}
			b, _ := json.Marshal(pod)
			e.mu.Lock()
			e.pods[pod.Name] = append(e.pods[pod.Name], b...)
			e.mu.Unlock()
		}
	}()
	e.t.Cleanup(func() { cancel(); w.Stop(); <-done })
}

func (e *k8sEnv) podNames() []string {
	e.mu.Lock()
	defer e.mu.Unlock()
	var out []string
	for n := range e.pods {
		out = append(out, n)
	}
	return out
}

func (e *k8sEnv) podJSON(name string) string {
	e.mu.Lock()
	defer e.mu.Unlock()
	return string(e.pods[name])
}

// pipeline creates a pipeline and waits for it to end.
func (e *k8sEnv) pipeline(opts coordinator.PipelineOptions, timeout time.Duration) coordinator.PipelineView {
	e.t.Helper()
	pl, err := e.coord.CreatePipelineWith(e.project, opts)
	if err != nil {
		e.t.Fatal(err)
	}
	return e.waitPipeline(pl.ID, timeout)
}

func (e *k8sEnv) waitPipeline(id int64, timeout time.Duration) coordinator.PipelineView {
	e.t.Helper()
	return waitPipeline(e.t, e.coord, id, timeout)
}

// waitPipeline waits for a pipeline to end; on timeout it logs every
// job's trace and fails the test.
func waitPipeline(t *testing.T, coord *coordinator.Server, id int64, timeout time.Duration) coordinator.PipelineView {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	v, err := coord.WaitPipeline(ctx, id)
	if err != nil {
		for _, j := range v.Jobs {
			t.Logf("job %d %s: %s\n%s", j.ID, j.Name, j.Status, coord.Trace(j.ID))
		}
		t.Fatalf("pipeline %d: %v (status %q)", id, err, v.Status)
	}
	return v
}

// waitNoPods waits until the namespace has no pods left.
func (e *k8sEnv) waitNoPods() {
	e.t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for {
		pods, err := e.c.Clientset.CoreV1().Pods(e.ns).List(context.Background(), metav1.ListOptions{})
		if err != nil {
			e.t.Fatal(err)
		}
		if len(pods.Items) == 0 {
			return
		}
		if time.Now().After(deadline) {
			e.t.Fatalf("%d pods left after the jobs, e.g. %s", len(pods.Items), pods.Items[0].Name)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// runnerProcessConfig builds the podrunner binary and writes a config.toml
// for the env's runner (executor kubernetes, as the env's ServiceAccount),
// for tests that run the runner as a process of its own.
func (e *k8sEnv) runnerProcessConfig(name string, concurrent, outputLimitKiB int) (bin, cfg string) {
	t := e.t
	t.Helper()
	bin = filepath.Join(e.dir, "podrunner")
	build := exec.Command("go", "build", "-trimpath", "-o", bin, "../../cmd/podrunner")
	build.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("build podrunner: %v\n%s", err, out)
	}
	ca := filepath.Join(e.dir, "ca.crt")
	if err := os.WriteFile(ca, e.rest.TLSClientConfig.CAData, 0o600); err != nil {
		t.Fatal(err)
	}
	cfg = filepath.Join(e.dir, "config.toml")
	toml := fmt.Sprintf(`concurrent = %d
check_interval = 1
shutdown_timeout = 10

[[runners]]
  name = %q
  url = %q
  token = %q
  executor = "kubernetes"
  output_limit = %d
  [runners.kubernetes]
    host = %q
    bearer_token = %q
    ca_file = %q
    namespace = %q
    image = %q
    helper_image = %q
    helper_image_volume = %t
    pull_policy = "if-not-present"
    poll_timeout = 60
    cleanup_grace_period_seconds = 0
`, concurrent, name, e.coord.URL(), e.token, outputLimitKiB, e.rest.Host, e.rest.BearerToken, ca, e.ns, e.kube.Image, e.kube.HelperImage, e.kube.HelperImageVolume)
	if err := os.WriteFile(cfg, []byte(toml), 0o600); err != nil {
		t.Fatal(err)
	}
	return bin, cfg
}

// startRunnerProcess runs `bin run -c cfg`; it is killed at the end of the
// test, and its output logged if the test failed.
func (e *k8sEnv) startRunnerProcess(bin, cfg string) (*exec.Cmd, *lockedBuffer) {
	t := e.t
	t.Helper()
	out := &lockedBuffer{}
	cmd := exec.Command(bin, "run", "-c", cfg)
	cmd.Dir = e.dir
	cmd.Stdout, cmd.Stderr = out, out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
		if t.Failed() {
			t.Logf("runner output (end):\n%s", tail([]byte(out.String()), 20000))
		}
	})
	return cmd, out
}

package e2e

import (
	"context"
	"fmt"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/podrunner/podrunner/internal/config"
	"github.com/podrunner/podrunner/internal/coordinator"
	"github.com/podrunner/podrunner/internal/testcluster"
)

// TestKubernetesDefaultImageThroughMirror: a job without `image:` runs the
// runner's default image, alpine:latest as the seed configures it, pulled
// (pull_policy always) through containerd's docker.io mirror, the cluster's
// registry, which holds the stand-in.
func TestKubernetesDefaultImageThroughMirror(t *testing.T) {
	t.Parallel()
	e := newK8sEnv(t, `
plain:
  script: [cat /etc/os-release]
`, k8sOptions{kube: func(k *config.Kubernetes) {
		k.Image = "alpine:latest"
		k.PullPolicy = config.StringOrList{"always"}
	}})
	v := e.pipeline(coordinator.PipelineOptions{}, 2*time.Minute)
	tr := string(e.coord.Trace(v.Jobs[0].ID))
	if v.Status != coordinator.StatusSuccess || !strings.Contains(tr, "ID=podrunner-standin") {
		t.Fatalf("pipeline %s, want success running the alpine stand-in:\n%s", v.Status, tr)
	}
	e.waitNoPods()
}

// TestKubernetesPrivateImage: a job's image in the project's registry
// pulls with the credentials the coordinator puts in the payload (the
// executor turns them into the pod's image pull Secret); wrong credentials
// fail naming `unauthorized` and the image; a missing tag names `not found`.
func TestKubernetesPrivateImage(t *testing.T) {
	t.Parallel()
	c := testcluster.Get(t)
	img := c.Registry + "/" + testcluster.PrivateImage
	missing := strings.TrimSuffix(img, ":1") + ":no-such-tag"
	for _, tc := range []struct {
		name, image, password, policy string
		want                          []string // in the trace; nil: success
	}{
		{name: "right credentials always", image: img, password: c.RegistryPassword, policy: "always"},
		{name: "right credentials if-not-present", image: img, password: c.RegistryPassword, policy: "if-not-present"},
		{name: "wrong credentials", image: img, password: "wrong", policy: "always", want: []string{"unauthorized", img}},
		{name: "missing tag", image: missing, password: c.RegistryPassword, policy: "always", want: []string{"not found", missing}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			e := newK8sEnv(t, fmt.Sprintf(`
private:
  image: %s
  script: [echo pulled-$((6*7))]
`, tc.image), k8sOptions{
				registry: &coordinator.Registry{Host: c.Registry, Username: c.RegistryUser, Password: tc.password},
				kube:     func(k *config.Kubernetes) { k.PullPolicy = config.StringOrList{tc.policy} },
			})
			v := e.pipeline(coordinator.PipelineOptions{}, 3*time.Minute)
			j := v.Jobs[0]
			tr := string(e.coord.Trace(j.ID))
			if tc.want == nil {
				if j.Status != coordinator.StatusSuccess || !strings.Contains(tr, "pulled-42") {
					t.Fatalf("job %s (%s), want success:\n%s", j.Status, j.FailureReason, tr)
				}
			} else {
				low := strings.ToLower(tr)
				for _, w := range tc.want {
					if j.Status != coordinator.StatusFailed || !strings.Contains(low, strings.ToLower(w)) {
						t.Fatalf("job %s (%s), want failed naming %q:\n%s", j.Status, j.FailureReason, w, tr)
					}
				}
				t.Logf("%s: failed after %v with %s", tc.name, j.FinishedAt.Sub(j.StartedAt), j.FailureReason)
			}
			e.waitNoPods()
		})
	}
}

// TestKubernetesPullPolicyNever: with pull_policy never an image the node
// does not have fails naming it, and one it has runs.
func TestKubernetesPullPolicyNever(t *testing.T) {
	t.Parallel()
	c := testcluster.Get(t)
	// Never pushed, never pulled: with pull_policy never the kubelet must
	// not even ask the registry.
	img := c.Registry + "/group/demo/never-pulled:1"
	for _, tc := range []struct {
		name, image string
		ok          bool
	}{
		{name: "present", image: testcluster.BusyboxImage, ok: true},
		{name: "absent", image: img},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			e := newK8sEnv(t, fmt.Sprintf(`
never:
  image: %s
  script: [echo ran-$((6*7))]
`, tc.image), k8sOptions{
				registry: &coordinator.Registry{Host: c.Registry, Username: c.RegistryUser, Password: c.RegistryPassword},
				kube:     func(k *config.Kubernetes) { k.PullPolicy = config.StringOrList{"never"} },
			})
			v := e.pipeline(coordinator.PipelineOptions{}, 3*time.Minute)
			j := v.Jobs[0]
			tr := string(e.coord.Trace(j.ID))
			if tc.ok != (j.Status == coordinator.StatusSuccess) || (tc.ok && !strings.Contains(tr, "ran-42")) || (!tc.ok && !strings.Contains(tr, tc.image)) {
				t.Fatalf("job %s (%s), want success=%v (and the image named on failure):\n%s", j.Status, j.FailureReason, tc.ok, tr)
			}
			e.waitNoPods()
		})
	}
}

// TestKubernetesRegistryOutageDuringPull: the registry is down for 20 s
// when the job's pod pulls its image (pull_policy always). The kubelet's
// pull fails with connection refused; the job waits, saying so, and
// succeeds once the registry is back (the kubelet retries with back-off).
// Not parallel: the other tests pull from the same registry.
func TestKubernetesRegistryOutageDuringPull(t *testing.T) {
	e := newK8sEnv(t, `
outage:
  image: alpine:3.20
  script: [echo pulled-$((6*7))]
`, k8sOptions{kube: func(k *config.Kubernetes) { k.PullPolicy = config.StringOrList{"always"} }})
	restart, err := filepath.Abs("../../hack/cluster/restart")
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(restart, "registry", "20")
	var out lockedBuffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	waitFor(t, "the registry to stop", time.Minute, func() bool { return strings.Contains(out.String(), "registry stopped") })
	down := time.Now()
	v := e.pipeline(coordinator.PipelineOptions{}, 4*time.Minute)
	if err := <-done; err != nil {
		t.Fatalf("restart registry: %v\n%s", err, out.String())
	}
	j := v.Jobs[0]
	tr := string(e.coord.Trace(j.ID))
	t.Logf("registry down at %v for 20 s; the job ended %v after that, %s\n%s", down.Format("15:04:05"), j.FinishedAt.Sub(down).Round(100*time.Millisecond), j.Status, out.String())
	if j.Status != coordinator.StatusSuccess || !strings.Contains(tr, "pulled-42") {
		t.Fatalf("job %s (%s), want success after the outage:\n%s", j.Status, j.FailureReason, tr)
	}
	if !strings.Contains(tr, `cannot pull image "alpine:3.20" yet, the kubelet retries with back-off`) {
		t.Errorf("the trace does not say that the job waits for its image:\n%s", tr)
	}
	e.waitNoPods()
}

// TestKubernetesImagePullSecretsFromConfig: a private image pulled with
// the Secret named by image_pull_secrets in config.toml (made by the
// cluster's admin; GitLab sends no registry credential here). The right
// login pulls; a wrong one fails naming unauthorized, so the Secret, not
// the node's own login, is what the pull used.
func TestKubernetesImagePullSecretsFromConfig(t *testing.T) {
	t.Parallel()
	c := testcluster.Get(t)
	img := c.Registry + "/" + testcluster.PrivateImage
	for _, tc := range []struct {
		name, password string
		ok             bool
	}{
		{name: "right login", password: c.RegistryPassword, ok: true},
		{name: "wrong login", password: "wrong"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			e := newK8sEnv(t, fmt.Sprintf("private:\n  image: %s\n  script: [echo pulled-$((6*7))]\n", img), k8sOptions{
				kube: func(k *config.Kubernetes) {
					k.PullPolicy = config.StringOrList{"always"}
					k.ImagePullSecrets = []string{"regcred"}
				},
			})
			if _, err := c.Clientset.CoreV1().Secrets(e.ns).Create(context.Background(), &corev1.Secret{
				ObjectMeta: metav1.ObjectMeta{Name: "regcred"},
				Type:       corev1.SecretTypeDockerConfigJson,
				Data:       map[string][]byte{corev1.DockerConfigJsonKey: dockerConfigJSON(c.Registry, c.RegistryUser, tc.password)},
			}, metav1.CreateOptions{}); err != nil {
				t.Fatal(err)
			}
			v := e.pipeline(coordinator.PipelineOptions{}, 3*time.Minute)
			j := v.Jobs[0]
			tr := string(e.coord.Trace(j.ID))
			if tc.ok && (j.Status != coordinator.StatusSuccess || !strings.Contains(tr, "pulled-42")) ||
				!tc.ok && (j.Status != coordinator.StatusFailed || !strings.Contains(strings.ToLower(tr), "unauthorized")) {
				t.Fatalf("job %s (%s), want success=%v (unauthorized named on failure):\n%s", j.Status, j.FailureReason, tc.ok, tr)
			}
			e.waitNoPods()
		})
	}
}

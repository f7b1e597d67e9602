package e2e

import (
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/podrunner/podrunner/internal/config"
	"github.com/podrunner/podrunner/internal/gitlabtest"
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
	v := e.pipeline(gitlabtest.PipelineOptions{}, 2*time.Minute)
	tr := string(e.coord.Trace(v.Jobs[0].ID))
	if v.Status != gitlabtest.StatusSuccess || !strings.Contains(tr, "ID=podrunner-standin") {
		t.Fatalf("pipeline %s, want success running the alpine stand-in:\n%s", v.Status, tr)
	}
	e.waitNoPods()
}

var (
	privateImageOnce sync.Once
	privateImage     string
)

// pushPrivateImage puts the busybox image into a project repository of the
// cluster's registry (every repository there needs a login) once per run.
func pushPrivateImage(t *testing.T) string {
	t.Helper()
	c := testcluster.Get(t)
	privateImageOnce.Do(func() { privateImage = c.PushImage(t, testcluster.BusyboxImage, "group/demo/private:1") })
	if privateImage == "" {
		t.Fatal("pushing the private image failed (see the first test that tried)")
	}
	return privateImage
}

// TestKubernetesPrivateImage: a job's image in the project's registry
// pulls with the credentials the coordinator puts in the payload (the
// executor turns them into the pod's image pull Secret); wrong credentials
// fail naming `unauthorized` and the image; a missing tag names `not found`.
func TestKubernetesPrivateImage(t *testing.T) {
	t.Parallel()
	c := testcluster.Get(t)
	img := pushPrivateImage(t)
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
				registry: &gitlabtest.Registry{Host: c.Registry, Username: c.RegistryUser, Password: tc.password},
				kube:     func(k *config.Kubernetes) { k.PullPolicy = config.StringOrList{tc.policy} },
			})
			v := e.pipeline(gitlabtest.PipelineOptions{}, 3*time.Minute)
			j := v.Jobs[0]
			tr := string(e.coord.Trace(j.ID))
			if tc.want == nil {
				if j.Status != gitlabtest.StatusSuccess || !strings.Contains(tr, "pulled-42") {
					t.Fatalf("job %s (%s), want success:\n%s", j.Status, j.FailureReason, tr)
				}
			} else {
				low := strings.ToLower(tr)
				for _, w := range tc.want {
					if j.Status != gitlabtest.StatusFailed || !strings.Contains(low, strings.ToLower(w)) {
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
	// Its own repository: no other test pulls it onto the node.
	img := c.PushImage(t, testcluster.BusyboxImage, "group/demo/never-pulled:1")
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
				registry: &gitlabtest.Registry{Host: c.Registry, Username: c.RegistryUser, Password: c.RegistryPassword},
				kube:     func(k *config.Kubernetes) { k.PullPolicy = config.StringOrList{"never"} },
			})
			v := e.pipeline(gitlabtest.PipelineOptions{}, 3*time.Minute)
			j := v.Jobs[0]
			tr := string(e.coord.Trace(j.ID))
			if tc.ok != (j.Status == gitlabtest.StatusSuccess) || (tc.ok && !strings.Contains(tr, "ran-42")) || (!tc.ok && !strings.Contains(tr, tc.image)) {
				t.Fatalf("job %s (%s), want success=%v (and the image named on failure):\n%s", j.Status, j.FailureReason, tc.ok, tr)
			}
			e.waitNoPods()
		})
	}
}

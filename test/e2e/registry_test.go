package e2e

import (
	"testing"

	corev1 "k8s.io/api/core/v1"

	"github.com/podrunner/podrunner/internal/testcluster"
)

// TestRegistryMirrorServesDockerHubNames pulls public names (no registry
// host) with imagePullPolicy Always: containerd must resolve them through
// the cluster's registry (hosts.toml mirror of docker.io, the node's
// credentials), which holds the stand-ins hack/cluster/images pushed.
func TestRegistryMirrorServesDockerHubNames(t *testing.T) {
	t.Parallel()
	c := testcluster.Get(t)
	ns := c.Namespace(t)
	var ctrs []corev1.Container
	for i, image := range []string{"alpine:latest", "alpine:3.20", "busybox:1", "docker.io/library/busybox:latest"} {
		ctrs = append(ctrs, corev1.Container{
			Name:            []string{"alpine", "alpine320", "busybox1", "busyboxlatest"}[i],
			Image:           image,
			ImagePullPolicy: corev1.PullAlways,
			Command:         []string{"sh", "-c", "cat /etc/os-release 2>/dev/null || echo no-os-release"},
		})
	}
	name := createSmokePod(t, c, ns, corev1.PodSpec{Containers: ctrs})
	p := c.WaitForPod(t, ns, name, testcluster.PodPhaseIs(corev1.PodSucceeded))
	for _, s := range p.Status.ContainerStatuses {
		// The image ID names the digest it was pulled by: the pull happened.
		if s.ImageID == "" {
			t.Errorf("container %s (%s): no image ID", s.Name, s.Image)
		}
	}
	if got := c.PodLogs(t, ns, name, "alpine"); got == "no-os-release\n" {
		t.Errorf("alpine:latest is not the stand-in (no /etc/os-release): %q", got)
	}
}

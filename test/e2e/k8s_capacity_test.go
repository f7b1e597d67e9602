package e2e

import (
	"context"
	"os"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes/scheme"

	"github.com/podrunner/podrunner/internal/config"
	"github.com/podrunner/podrunner/internal/coordinator"
	"github.com/podrunner/podrunner/internal/testcluster"
)

// Capacity that arrives late (issue 17): a pod that cannot be scheduled
// yet waits up to poll_timeout, saying so in the trace.

// setCordoned marks the cluster's only node (un)schedulable.
func setCordoned(t *testing.T, c *testcluster.Cluster, on bool) error {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	nodes, err := c.Clientset.CoreV1().Nodes().List(ctx, metav1.ListOptions{})
	if err != nil {
		return err
	}
	for i := range nodes.Items {
		n := &nodes.Items[i]
		n.Spec.Unschedulable = on
		if _, err := c.Clientset.CoreV1().Nodes().Update(ctx, n, metav1.UpdateOptions{}); err != nil {
			return err
		}
	}
	t.Logf("nodes cordoned=%v", on)
	return nil
}

// onlyPod waits until the env's namespace holds one pod and returns it.
func (e *k8sEnv) waitOnePod(cond func(*corev1.Pod) bool) *corev1.Pod {
	e.t.Helper()
	deadline := time.Now().Add(2 * time.Minute)
	for {
		pods, err := e.c.Clientset.CoreV1().Pods(e.ns).List(context.Background(), metav1.ListOptions{})
		if err != nil {
			e.t.Fatal(err)
		}
		if len(pods.Items) == 1 && cond(&pods.Items[0]) {
			return &pods.Items[0]
		}
		if time.Now().After(deadline) {
			e.t.Fatalf("no pod as wanted in %s (%d pods)", e.ns, len(pods.Items))
		}
		time.Sleep(200 * time.Millisecond)
	}
}

func isUnschedulable(p *corev1.Pod) bool {
	for _, c := range p.Status.Conditions {
		if c.Type == corev1.PodScheduled && c.Status == corev1.ConditionFalse && c.Reason == corev1.PodReasonUnschedulable {
			return true
		}
	}
	return false
}

// Not parallel: cordoning the only node would stall every other test's
// pods (Go runs sequential top-level tests before the parallel ones).
func TestKubernetesWaitsForCordonedNode(t *testing.T) {
	e := newK8sEnv(t, `
later:
  script: [echo scheduled-at-last]
`, k8sOptions{kube: func(k *config.Kubernetes) { k.PollTimeout = 120 }})
	t.Cleanup(func() {
		if err := setCordoned(t, e.c, false); err != nil {
			t.Errorf("uncordon the node: %v (run kubectl uncordon)", err)
		}
	})
	if err := setCordoned(t, e.c, true); err != nil {
		t.Fatal(err)
	}
	pl, err := e.coord.CreatePipelineWith(e.project, coordinator.PipelineOptions{})
	if err != nil {
		t.Fatal(err)
	}
	e.waitOnePod(isUnschedulable)
	time.Sleep(25 * time.Second)
	if err := setCordoned(t, e.c, false); err != nil {
		t.Fatal(err)
	}
	v := e.waitPipeline(pl.ID, 3*time.Minute)
	j := v.Jobs[0]
	tr := string(e.coord.Trace(j.ID))
	if j.Status != coordinator.StatusSuccess || !strings.Contains(tr, "scheduled-at-last") {
		t.Fatalf("job %s (%s), want success after the node came back:\n%s", j.Status, j.FailureReason, tr)
	}
	if !strings.Contains(tr, "Waiting for pod "+e.ns+"/") || !strings.Contains(tr, "unschedulable: 0/1 nodes are available") {
		t.Errorf("the trace does not show the wait:\n%s", tr)
	}
	for _, l := range strings.Split(tr, "\n") {
		if strings.Contains(l, "Waiting for pod ") {
			t.Logf("trace: %s", l)
		}
	}
	t.Logf("job took %v", j.FinishedAt.Sub(j.StartedAt))
	if n := strings.Count(tr, "Waiting for pod "+e.ns+"/"); n > 3 {
		t.Errorf("%d wait lines for one unchanged state:\n%s", n, tr)
	}
	e.waitNoPods()
}

// bindNodesRole binds deploy/rbac/clusterrole-nodes.yaml (under a name of
// the test's own) to the env's ServiceAccount.
func (e *k8sEnv) bindNodesRole() {
	t := e.t
	t.Helper()
	data, err := os.ReadFile("../../deploy/rbac/clusterrole-nodes.yaml")
	if err != nil {
		t.Fatal(err)
	}
	obj, _, err := scheme.Codecs.UniversalDeserializer().Decode(data, nil, nil)
	if err != nil {
		t.Fatalf("deploy/rbac/clusterrole-nodes.yaml: %v", err)
	}
	role, ok := obj.(*rbacv1.ClusterRole)
	if !ok {
		t.Fatalf("deploy/rbac/clusterrole-nodes.yaml holds a %T, want a ClusterRole", obj)
	}
	role.Name = "podrunner-nodes-" + e.ns
	ctx := testcluster.Context(t)
	rbac := e.c.Clientset.RbacV1()
	if _, err := rbac.ClusterRoles().Create(ctx, role, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	_, err = rbac.ClusterRoleBindings().Create(ctx, &rbacv1.ClusterRoleBinding{
		ObjectMeta: metav1.ObjectMeta{Name: role.Name},
		RoleRef:    rbacv1.RoleRef{APIGroup: "rbac.authorization.k8s.io", Kind: "ClusterRole", Name: role.Name},
		Subjects:   []rbacv1.Subject{{Kind: "ServiceAccount", Name: "podrunner", Namespace: e.ns}},
	}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		_ = rbac.ClusterRoleBindings().Delete(ctx, role.Name, metav1.DeleteOptions{})
		_ = rbac.ClusterRoles().Delete(ctx, role.Name, metav1.DeleteOptions{})
	})
}

const tooBigJob = `
big:
  script: [echo never]
`

func TestKubernetesTooBigForAnyNodeFailsAtPollTimeout(t *testing.T) {
	t.Parallel()
	e := newK8sEnv(t, tooBigJob, k8sOptions{kube: func(k *config.Kubernetes) {
		k.CPURequest = "64"
		k.PollTimeout = 20
	}})
	e.bindNodesRole()
	nodes, err := e.c.Clientset.CoreV1().Nodes().List(context.Background(), metav1.ListOptions{})
	if err != nil || len(nodes.Items) != 1 {
		t.Fatalf("nodes: %v (%d)", err, len(nodes.Items))
	}
	n := nodes.Items[0]
	alloc := n.Status.Allocatable[corev1.ResourceCPU]
	v := e.pipeline(coordinator.PipelineOptions{}, 2*time.Minute)
	j := v.Jobs[0]
	tr := string(e.coord.Trace(j.ID))
	t.Logf("failed after %v", j.FinishedAt.Sub(j.StartedAt))
	for _, want := range []string{
		"timed out after 20s", "cannot be scheduled", "Insufficient cpu",
		"The pod requests cpu 64", "the largest allocatable of the 1 node(s): cpu " + alloc.String() + " (node " + n.Name + ")",
		"Waiting for pod " + e.ns + "/",
	} {
		if !strings.Contains(tr, want) {
			t.Errorf("trace lacks %q", want)
		}
	}
	if j.Status != coordinator.StatusFailed || j.FailureReason != "runner_system_failure" || t.Failed() {
		t.Fatalf("job %s (%s):\n%s", j.Status, j.FailureReason, tr)
	}
	e.waitNoPods()
}

func TestKubernetesNotTriggerScaleUpFailsAtOnce(t *testing.T) {
	t.Parallel()
	// poll_timeout far beyond the pipeline's wait: only the event can end
	// the job in time.
	e := newK8sEnv(t, tooBigJob, k8sOptions{kube: func(k *config.Kubernetes) {
		k.CPURequest = "64"
		k.PollTimeout = 600
	}})
	pl, err := e.coord.CreatePipelineWith(e.project, coordinator.PipelineOptions{})
	if err != nil {
		t.Fatal(err)
	}
	pod := e.waitOnePod(isUnschedulable)
	const msg = "pod didn't trigger scale-up: 1 Insufficient cpu"
	now := metav1.Now()
	// As cluster-autoscaler records it.
	_, err = e.c.Clientset.CoreV1().Events(e.ns).Create(context.Background(), &corev1.Event{
		ObjectMeta:     metav1.ObjectMeta{GenerateName: pod.Name + ".", Namespace: e.ns},
		InvolvedObject: corev1.ObjectReference{Kind: "Pod", APIVersion: "v1", Name: pod.Name, Namespace: e.ns, UID: pod.UID, ResourceVersion: pod.ResourceVersion},
		Reason:         "NotTriggerScaleUp", Message: msg, Type: corev1.EventTypeNormal, Count: 1,
		Source:         corev1.EventSource{Component: "cluster-autoscaler"},
		FirstTimestamp: now, LastTimestamp: now,
	}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	v := e.waitPipeline(pl.ID, 2*time.Minute)
	j := v.Jobs[0]
	tr := string(e.coord.Trace(j.ID))
	if j.Status != coordinator.StatusFailed || j.FailureReason != "runner_system_failure" ||
		!strings.Contains(tr, "cluster-autoscaler will not add a node for it: "+msg) || strings.Contains(tr, "timed out") {
		t.Fatalf("job %s (%s), want failed naming the autoscaler's refusal:\n%s", j.Status, j.FailureReason, tr)
	}
	e.waitNoPods()
}

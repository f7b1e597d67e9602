package kubernetes

import (
	"context"
	"fmt"
	"io"
	"slices"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// waitNotes writes what a pending pod waits for to the job trace, one line
// per change of state: nothing while the state stays the same.
type waitNotes struct {
	w       io.Writer
	pod     string
	started time.Time
	last    string
	now     func() time.Time // time.Now when nil (tests)
}

// say notes the current state; "" means nothing is waited for any more.
func (n *waitNotes) say(state string) {
	if state == n.last {
		return
	}
	n.last = state
	if state == "" {
		return
	}
	now := time.Now
	if n.now != nil {
		now = n.now
	}
	fmt.Fprintf(n.w, "Waiting for pod %s (%s): %s\n", n.pod, now().Sub(n.started).Round(time.Second), state)
}

// podRequests is what the scheduler needs free on a node for the pod: the
// containers' and sidecars' requests summed, at least any one regular init
// container's, plus the pod overhead; pod-level requests win when set.
func podRequests(pod *corev1.Pod) corev1.ResourceList {
	if r := pod.Spec.Resources; r != nil && len(r.Requests) > 0 {
		return r.Requests.DeepCopy()
	}
	sum := corev1.ResourceList{}
	add := func(to corev1.ResourceList, l corev1.ResourceList) {
		for k, q := range l {
			cur := to[k]
			cur.Add(q)
			to[k] = cur
		}
	}
	for _, c := range pod.Spec.Containers {
		add(sum, c.Resources.Requests)
	}
	sidecars := corev1.ResourceList{}
	initMax := corev1.ResourceList{}
	for _, c := range pod.Spec.InitContainers {
		if c.RestartPolicy != nil && *c.RestartPolicy == corev1.ContainerRestartPolicyAlways {
			add(sum, c.Resources.Requests)
			add(sidecars, c.Resources.Requests)
			continue
		}
		// A regular init container runs next to the sidecars started
		// before it.
		need := sidecars.DeepCopy()
		add(need, c.Resources.Requests)
		for k, q := range need {
			if cur, ok := initMax[k]; !ok || q.Cmp(cur) > 0 {
				initMax[k] = q
			}
		}
	}
	for k, q := range initMax {
		if cur, ok := sum[k]; !ok || q.Cmp(cur) > 0 {
			sum[k] = q
		}
	}
	add(sum, pod.Spec.Overhead)
	return sum
}

// capacity says what the pod requests and the largest allocatable of the
// nodes for each of those resources, for the message of a pod that was
// never scheduled. Nodes are cluster-scoped: without the optional
// ClusterRole (deploy/rbac/clusterrole-nodes.yaml) it says so.
func (e *Executor) capacity(ctx context.Context, pod *corev1.Pod) string {
	req := podRequests(pod)
	names := make([]string, 0, len(req))
	for k := range req {
		names = append(names, string(k))
	}
	slices.Sort(names)
	var parts []string
	for _, n := range names {
		q := req[corev1.ResourceName(n)]
		parts = append(parts, n+" "+q.String())
	}
	out := "The pod requests " + orDefault(strings.Join(parts, ", "), "no resources")
	lctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
	defer cancel()
	nodes, err := e.cs.Nodes().List(lctx, metav1.ListOptions{})
	switch {
	case apierrors.IsForbidden(err):
		return out + "; allocatable unknown: no permission to list nodes (bind the ClusterRole of deploy/rbac/clusterrole-nodes.yaml to see it here)"
	case err != nil:
		return out + fmt.Sprintf("; allocatable unknown: list nodes: %v", err)
	case len(nodes.Items) == 0:
		return out + "; the cluster has no nodes"
	}
	if len(names) == 0 {
		names = []string{string(corev1.ResourceCPU), string(corev1.ResourceMemory)}
	}
	var most []string
	for _, n := range names {
		var best resource.Quantity
		node := ""
		for _, nd := range nodes.Items {
			if q, ok := nd.Status.Allocatable[corev1.ResourceName(n)]; ok && (node == "" || q.Cmp(best) > 0) {
				best, node = q, nd.Name
			}
		}
		if node == "" {
			most = append(most, n+" none on any node")
			continue
		}
		most = append(most, fmt.Sprintf("%s %s (node %s)", n, best.String(), node))
	}
	return out + "; the largest allocatable of the " + fmt.Sprint(len(nodes.Items)) + " node(s): " + strings.Join(most, ", ")
}

package kubernetes

// Adoption: a runner that restarts finds the pods of its jobs and carries
// on with them instead of failing them; a manager also takes over the
// pods of another manager of the same token whose Lease expired (owner.go).
//
// What the runner must do (internal/runner):
//
//  1. At start, before asking GitLab for new jobs, and then periodically,
//     call Adopt. For each Adoptable whose job the runner does not run,
//     ask GitLab whether the job still runs (PUT /jobs/:id with state
//     "running" and the payload's job token: 200 = still running,
//     403 = canceled or gone).
//  2. For each running one: take a concurrency slot (a.Slot when free),
//     Claim it (skip it when another manager won), open the job's trace
//     as for a new job (masking from a.Payload), and run
//     ResumeJob(ctx, a, j) in the job goroutine exactly as Run would be
//     run. For an ended one, Claim it so that Cleanup deletes it. ResumeJob writes the whole trace again from byte 0
//     (a.TracePrefix, then the agent's log from offset 0), so the trace
//     sender must resume at GitLab's offset (the first PATCH gets a 416
//     with the Range GitLab holds, or the runner sends from offset 0 and
//     GitLab ignores the overlap); the bytes are identical, so the CRC of
//     the final update matches.
//  3. Call Cleanup(ctx, keep) with keep returning true only for jobs being
//     resumed or run: every other pod this manager owns is deleted (its job
//     ended in GitLab or cannot be continued). Call Cleanup again
//     periodically (e.g. every few minutes) to catch leftovers.

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"regexp"
	"strconv"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/podrunner/podrunner/internal/agent"
	"github.com/podrunner/podrunner/internal/executor"
	"github.com/podrunner/podrunner/internal/job"
)

// podHandle is the Kubernetes executor's state of an executor.Adoptable:
// what it needs to claim and follow the pod.
type podHandle struct {
	claims  int64
	claimed bool

	created    time.Time
	agentToken string
	agentPort  int
	spec       []byte // the agent spec, sent again (the agent may not have it yet)
}

// handleOf is a's podHandle, or an error when a does not come from Adopt.
func handleOf(a *executor.Adoptable) (*podHandle, error) {
	h, ok := a.Handle.(*podHandle)
	if !ok || h == nil || h.agentToken == "" {
		return nil, fmt.Errorf("job %d: the Adoptable does not come from this executor's Adopt", a.JobID)
	}
	return h, nil
}

var slotInName = regexp.MustCompile(`-concurrent-(\d+)-[a-z0-9]+$`)

// Adopt lists the job pods of this runner token that this manager may
// continue: its own (not the ones this executor runs right now) and those
// of managers whose Lease expired, with what is needed to continue them.
// Pods being finished (AnnotationFinal) are left out. Pods that cannot be
// continued (no Secret, unreadable payload) are left out and logged;
// Cleanup deletes them.
func (e *Executor) Adopt(ctx context.Context) ([]executor.Adoptable, error) {
	w, err := e.podWatch(ctx)
	if err != nil {
		return nil, err
	}
	var out []executor.Adoptable
	dead := map[string]bool{}
	for _, pod := range w.listPods() {
		if e.isActive(pod.Name) || pod.DeletionTimestamp != nil || pod.Annotations[AnnotationFinal] != "" || isWarm(pod) {
			continue // warm pods have no job; Cleanup deletes a dead pool's
		}
		if owner := podOwner(pod); owner != e.systemID {
			d, ok := dead[owner]
			if !ok {
				if d, err = e.leases.expired(ctx, owner); err != nil {
					e.log.Warn("cannot tell whether a manager is alive; its pods stay with it", "manager", owner, "err", err)
				}
				dead[owner] = d
			}
			if !d {
				continue
			}
		}
		a, err := e.adoptable(ctx, pod)
		if err != nil {
			e.log.Warn("pod cannot be adopted; cleanup deletes it", "pod", pod.Name, "err", err)
			continue
		}
		out = append(out, a)
	}
	return out, nil
}

func (e *Executor) adoptable(ctx context.Context, pod *corev1.Pod) (executor.Adoptable, error) {
	var sec *corev1.Secret
	err := retryTransient(ctx, "get secret "+pod.Name, func(ctx context.Context) error {
		var err error
		sec, err = e.cs.Secrets(e.ns).Get(ctx, pod.Name, metav1.GetOptions{})
		return err
	})
	if err != nil {
		return executor.Adoptable{}, err
	}
	var p job.Payload
	if err := json.Unmarshal(sec.Data[PayloadKey], &p); err != nil {
		return executor.Adoptable{}, fmt.Errorf("secret %s key %s: %w", sec.Name, PayloadKey, err)
	}
	var spec agent.Spec
	if err := json.Unmarshal(sec.Data[agent.SpecKey], &spec); err != nil {
		return executor.Adoptable{}, fmt.Errorf("secret %s key %s: %w", sec.Name, agent.SpecKey, err)
	}
	if spec.Token == "" {
		return executor.Adoptable{}, fmt.Errorf("secret %s: the agent spec has no token", sec.Name)
	}
	port := e.port
	if _, ps, err := net.SplitHostPort(spec.Listen); err == nil {
		if n, err := strconv.Atoi(ps); err == nil && n > 0 {
			port = n
		}
	}
	prefix, err := base64.StdEncoding.DecodeString(pod.Annotations[AnnotationTracePrefix])
	if err != nil {
		return executor.Adoptable{}, fmt.Errorf("pod annotation %s: %w", AnnotationTracePrefix, err)
	}
	slot := 0
	if m := slotInName.FindStringSubmatch(pod.Name); m != nil {
		slot, _ = strconv.Atoi(m[1])
	}
	return executor.Adoptable{
		Where: pod.Name, JobID: p.ID, Payload: &p, TracePrefix: prefix, Slot: slot, Owner: podOwner(pod),
		Handle: &podHandle{
			claims: claimCount(pod), created: pod.CreationTimestamp.Time,
			agentToken: spec.Token, agentPort: port, spec: sec.Data[agent.SpecKey],
		},
	}, nil
}

// ResumeJob continues an adopted job as Run would have: it writes the
// whole trace again (prefix, then the agent's log from offset 0), follows
// the pod to the end, returns the result and deletes the pod.
func (e *Executor) ResumeJob(ctx context.Context, a executor.Adoptable, j *executor.Job) (executor.Result, error) {
	h, err := handleOf(&a)
	if err != nil {
		return executor.Result{}, fmt.Errorf("resume job: %w", err)
	}
	if !h.claimed {
		return executor.Result{}, errors.New("resume job: the pod was not claimed (Claim)")
	}
	w, err := e.podWatch(ctx)
	if err != nil {
		return executor.Result{}, err
	}
	if err := w.watchEvents(ctx); err != nil {
		return executor.Result{}, err
	}
	tr := j.Trace
	if tr == nil {
		tr = io.Discard
	}
	if _, err := tr.Write(a.TracePrefix); err != nil {
		return executor.Result{}, fmt.Errorf("write trace prefix: %w", err)
	}
	started := h.created
	if started.IsZero() {
		started = time.Now()
	}
	r := &jobRun{
		e: e, log: e.log.With("job", a.JobID, "pod", a.Where, "adopted", true), trace: tr, watch: w,
		pod: a.Where, token: h.agentToken, port: h.agentPort, cancel: j.GracefulCancel, started: started,
		claims: h.claims, spec: h.spec,
	}
	sub, unsubscribe := w.subscribe(a.Where)
	defer unsubscribe()
	r.sub = sub
	sub.own(h.claims)
	e.setActive(a.Where, true)
	defer e.setActive(a.Where, false)
	defer r.cleanup()
	if pod, _ := sub.snapshot(); pod == nil {
		// Not in the cache: gone since Adopt (or never ours).
		if _, err := e.cs.Pods(e.ns).Get(ctx, a.Where, metav1.GetOptions{}); apierrors.IsNotFound(err) {
			return r.failed(DeletedFailure(a.Where)), nil
		}
	}
	r.log.Info("resuming job", "previous_owner", a.Owner)
	return r.followOwned(ctx)
}

// Cleanup deletes the pods this manager owns whose job is not kept (keep
// gets the job id from the pod's label), except the ones this executor is
// running, pods a dead manager left while sending their final update, and
// Secrets of this runner whose pod is gone (this manager's, or a dead
// manager's). Other managers' pods are never touched. It returns the
// names of the deleted pods.
func (e *Executor) Cleanup(ctx context.Context, keep func(jobID int64) bool) ([]string, error) {
	w, err := e.podWatch(ctx)
	if err != nil {
		return nil, err
	}
	var deleted []string
	pods := map[string]bool{}
	for _, pod := range w.listPods() {
		pods[pod.Name] = true
		if e.isActive(pod.Name) || pod.DeletionTimestamp != nil {
			continue
		}
		if owner := podOwner(pod); owner != e.systemID {
			// Nobody claims a pod marked final: its dead owner's
			// leftover is removed here.
			if pod.Annotations[AnnotationFinal] == "" || !e.ownerDead(ctx, owner) {
				continue
			}
		}
		id, _ := strconv.ParseInt(pod.Labels[LabelJobID], 10, 64)
		if id != 0 && keep != nil && keep(id) {
			continue
		}
		e.log.Info("deleting pod of a job this runner no longer runs", "pod", pod.Name, "job", id)
		e.deletePod(pod.Name)
		deleted = append(deleted, pod.Name)
	}
	// Secrets whose pod never came or is gone (ownerless, so not collected
	// by Kubernetes). A grace period spares the Secret of a job whose pod
	// is being created right now.
	var secrets *corev1.SecretList
	err = retryTransient(ctx, "list secrets", func(ctx context.Context) error {
		var err error
		secrets, err = e.cs.Secrets(e.ns).List(ctx, metav1.ListOptions{LabelSelector: runnerSelector(e.short)})
		return err
	})
	if err != nil {
		return deleted, err
	}
	for _, s := range secrets.Items {
		owner := strings.TrimSuffix(s.Name, RegistrySecretSuffix)
		if pods[owner] || e.isActive(owner) || time.Since(s.CreationTimestamp.Time) < 5*time.Minute {
			continue
		}
		if m := s.Labels[LabelSystemID]; m != e.systemID && !e.ownerDead(ctx, m) {
			continue
		}
		e.log.Info("deleting leftover secret", "secret", s.Name)
		e.deleteSecret(s.Name)
	}
	return deleted, nil
}

// ownerDead reports whether manager systemID's Lease expired (errors
// count as alive).
func (e *Executor) ownerDead(ctx context.Context, systemID string) bool {
	dead, err := e.leases.expired(ctx, systemID)
	if err != nil {
		e.log.Debug("cannot tell whether a manager is alive", "manager", systemID, "err", err)
	}
	return dead
}

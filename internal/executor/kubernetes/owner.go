package kubernetes

// Ownership of job pods among the managers (system ids) that share one
// runner token, and take-over of a dead manager's pods. The protocol is
// docs/kubernetes-executor.md, "Several managers on one token".

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"sync"
	"time"

	coordinationv1 "k8s.io/api/coordination/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	utilwait "k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/util/retry"

	"github.com/podrunner/podrunner/internal/executor"
)

const (
	// LabelSystemID is the owner of a job's pod: the system_id of the
	// manager that streams and reports it (GitLab Runner's key).
	LabelSystemID = gitlabManagerPrefix + "system-id"
	// AnnotationClaim counts the claims of a pod. Every claim sets the
	// owner label and increments it in one update conditioned on the
	// pod's resourceVersion, so of two claimers exactly one wins.
	AnnotationClaim = "podrunner.io/claim"
	// AnnotationFinal marks a pod whose owner has the job's result and is
	// sending the final update: nobody may claim it any more.
	AnnotationFinal = "podrunner.io/final-update"

	// LeaseDuration is how long a manager's Lease must stay unchanged
	// (or missing) before other managers take its pods over;
	// LeaseRenewInterval is how often the manager renews it.
	LeaseDuration      = 15 * time.Second
	LeaseRenewInterval = 5 * time.Second
)

// errClaimLost is a claim that found the pod claimed (or being finished)
// by someone else first.
var errClaimLost = fmt.Errorf("pod: %w", executor.ErrClaimLost)

// podOwner is the system id owning pod ("" for pods of a podrunner that
// did not record owners: they belong to whoever claims them).
func podOwner(pod *corev1.Pod) string { return pod.Labels[LabelSystemID] }

// claimCount is the pod's claim counter (0 for a pod never claimed).
func claimCount(pod *corev1.Pod) int64 {
	n, _ := strconv.ParseInt(pod.Annotations[AnnotationClaim], 10, 64)
	return n
}

// LeaseName is the Lease of one manager of a runner token.
func LeaseName(shortToken, systemID string) string {
	return makeRFC1123("runner-" + shortToken + "-" + systemID)
}

// leaseKeeper creates and renews this manager's Lease from one goroutine
// (started by start, stopped and waited for by close).
type leaseKeeper struct {
	cs        kubeAPI
	ns, name  string
	holder    string
	labels    map[string]string
	log       *slog.Logger
	lease     *coordinationv1.Lease // last written
	stop      chan struct{}
	done      chan struct{}
	failing   bool
	renewEach time.Duration
}

func newLeaseKeeper(cs kubeAPI, ns, short, systemID string, log *slog.Logger) *leaseKeeper {
	return &leaseKeeper{
		cs: cs, ns: ns, name: LeaseName(short, systemID), holder: systemID,
		labels:    map[string]string{LabelManaged: "true", LabelRunner: short, LabelSystemID: LabelValue(systemID)},
		log:       log.With("lease", ns+"/"+LeaseName(short, systemID)),
		renewEach: LeaseRenewInterval,
	}
}

// start renews the Lease once (so it exists before this manager claims
// anything) and then every renewEach until close.
func (k *leaseKeeper) start(ctx context.Context) {
	k.renewLogged(ctx)
	k.stop, k.done = make(chan struct{}), make(chan struct{})
	go func() {
		defer close(k.done)
		t := time.NewTicker(k.renewEach)
		defer t.Stop()
		for {
			select {
			case <-k.stop:
				return
			case <-t.C:
				ctx, cancel := context.WithTimeout(context.Background(), k.renewEach)
				k.renewLogged(ctx)
				cancel()
			}
		}
	}()
}

func (k *leaseKeeper) renewLogged(ctx context.Context) {
	err := k.renew(ctx)
	switch {
	case err != nil && !k.failing:
		k.failing = true
		hint := ""
		if apierrors.IsForbidden(err) {
			hint = "; add leases (coordination.k8s.io) get, create, update, delete to the runner's Role (deploy/rbac/role.yaml)"
		}
		k.log.Warn("cannot renew this manager's lease; other managers of the token may take its jobs over"+hint, "err", err)
	case err == nil && k.failing:
		k.failing = false
		k.log.Info("lease renewed again")
	}
}

func (k *leaseKeeper) renew(ctx context.Context) error {
	now := metav1.NewMicroTime(time.Now())
	secs := int32(LeaseDuration / time.Second)
	err := retry.OnError(leaseRetries, func(err error) bool { return errors.Is(err, errLeaseChanged) }, func() error {
		if k.lease == nil {
			l, err := k.cs.Leases(k.ns).Get(ctx, k.name, metav1.GetOptions{})
			if apierrors.IsNotFound(err) {
				l = &coordinationv1.Lease{
					ObjectMeta: metav1.ObjectMeta{Name: k.name, Namespace: k.ns, Labels: k.labels},
					Spec: coordinationv1.LeaseSpec{
						HolderIdentity: &k.holder, LeaseDurationSeconds: &secs, AcquireTime: &now, RenewTime: &now,
					},
				}
				created, err := k.cs.Leases(k.ns).Create(ctx, l, metav1.CreateOptions{})
				if apierrors.IsAlreadyExists(err) {
					return errLeaseChanged
				}
				if err != nil {
					return fmt.Errorf("create lease %s: %w", k.name, err)
				}
				k.lease = created
				return nil
			}
			if err != nil {
				return fmt.Errorf("get lease %s: %w", k.name, err)
			}
			k.lease = l
		}
		l := k.lease.DeepCopy()
		l.Spec.HolderIdentity, l.Spec.LeaseDurationSeconds, l.Spec.RenewTime = &k.holder, &secs, &now
		updated, err := k.cs.Leases(k.ns).Update(ctx, l, metav1.UpdateOptions{})
		if apierrors.IsConflict(err) || apierrors.IsNotFound(err) {
			k.lease = nil
			return errLeaseChanged
		}
		if err != nil {
			return fmt.Errorf("renew lease %s: %w", k.name, err)
		}
		k.lease = updated
		return nil
	})
	if errors.Is(err, errLeaseChanged) {
		return fmt.Errorf("renew lease %s: it keeps changing under this manager", k.name)
	}
	return err
}

// errLeaseChanged: the Lease was created, changed or deleted by someone
// else between reading and writing it; read it again.
var errLeaseChanged = errors.New("lease changed")

// leaseRetries tries a lease renewal 3 times, at once: a conflict is
// resolved by reading again, not by waiting.
var leaseRetries = utilwait.Backoff{Steps: 3}

// claimRetries is the same for pod claims and fences, which race with
// the kubelet's status writes.
var claimRetries = utilwait.Backoff{Steps: 10}

// close stops renewing; with remove the Lease is deleted (a clean stop
// that leaves no pods to take over).
func (k *leaseKeeper) close(remove bool) {
	if k.stop == nil {
		return
	}
	close(k.stop)
	<-k.done
	k.stop = nil
	if !remove {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := k.cs.Leases(k.ns).Delete(ctx, k.name, metav1.DeleteOptions{}); err != nil && !apierrors.IsNotFound(err) {
		k.log.Warn("lease left behind; it expires by itself", "err", err)
	}
}

// leaseObserver tells whether another manager is dead: its Lease has not
// changed (or has been missing) for longer than its duration, measured
// on this manager's clock from when this manager first saw that version,
// so clocks of different hosts are never compared.
type leaseObserver struct {
	cs       kubeAPI
	ns       string
	short    string
	duration time.Duration
	now      func() time.Time

	mu   sync.Mutex
	seen map[string]leaseSeen // by system id
}

type leaseSeen struct {
	version string // the Lease's resourceVersion and renew time; "" while it is missing
	since   time.Time
}

func newLeaseObserver(cs kubeAPI, ns, short string) *leaseObserver {
	return &leaseObserver{cs: cs, ns: ns, short: short, duration: LeaseDuration, now: time.Now, seen: map[string]leaseSeen{}}
}

// expired reports whether the manager systemID showed no sign of life for
// longer than the lease duration. An owner "" (pods from before owners
// were recorded) has no Lease: it counts as missing. Errors other than
// "not found" count as alive: without certainty nothing is taken over.
func (o *leaseObserver) expired(ctx context.Context, systemID string) (bool, error) {
	version := ""
	dur := o.duration
	if systemID != "" {
		l, err := o.cs.Leases(o.ns).Get(ctx, LeaseName(o.short, systemID), metav1.GetOptions{})
		switch {
		case apierrors.IsNotFound(err):
		case err != nil:
			return false, fmt.Errorf("get lease of manager %s: %w", systemID, err)
		default:
			// Any write changes the resourceVersion; the renew time
			// too (also where resourceVersions are not kept, as in tests).
			version = l.ResourceVersion + "@"
			if l.Spec.RenewTime != nil {
				version += l.Spec.RenewTime.UTC().Format(time.RFC3339Nano)
			}
			if s := l.Spec.LeaseDurationSeconds; s != nil && *s > 0 {
				dur = max(dur, time.Duration(*s)*time.Second)
			}
		}
	}
	now := o.now()
	o.mu.Lock()
	defer o.mu.Unlock()
	s, ok := o.seen[systemID]
	if !ok || s.version != version {
		o.seen[systemID] = leaseSeen{version: version, since: now}
		return false, nil
	}
	return now.Sub(s.since) > dur, nil
}

// claim makes this manager the owner of pod name, provided it is still
// owned by owner with claim count count and nobody is finishing it. The
// update is conditioned on the resourceVersion read; a conflict is read
// again: a changed owner or count means another manager won, anything
// else (the kubelet wrote the status) is retried. It returns the new
// claim count.
func (e *Executor) claim(ctx context.Context, name, owner string, count int64) (int64, error) {
	pods := e.cs.Pods(e.ns)
	err := retry.RetryOnConflict(claimRetries, func() error {
		var pod *corev1.Pod
		err := retryTransient(ctx, "get pod "+name, func(ctx context.Context) error {
			var err error
			pod, err = pods.Get(ctx, name, metav1.GetOptions{})
			return err
		})
		if apierrors.IsNotFound(err) {
			return errClaimLost
		}
		if err != nil {
			return err
		}
		if podOwner(pod) != owner || claimCount(pod) != count || pod.Annotations[AnnotationFinal] != "" || pod.DeletionTimestamp != nil {
			return errClaimLost
		}
		if e.afterClaimRead != nil {
			e.afterClaimRead()
		}
		pod = pod.DeepCopy()
		if pod.Labels == nil {
			pod.Labels = map[string]string{}
		}
		if pod.Annotations == nil {
			pod.Annotations = map[string]string{}
		}
		pod.Labels[LabelSystemID] = e.systemID
		pod.Annotations[AnnotationClaim] = strconv.FormatInt(count+1, 10)
		_, err = pods.Update(ctx, pod, metav1.UpdateOptions{})
		switch {
		case err == nil, apierrors.IsConflict(err):
			return err
		case apierrors.IsNotFound(err):
			return errClaimLost
		default:
			return fmt.Errorf("claim pod %s: %w", name, err)
		}
	})
	switch {
	case err == nil:
		return count + 1, nil
	case apierrors.IsConflict(err):
		return 0, fmt.Errorf("claim pod %s: it kept changing", name)
	}
	return 0, err
}

// fence marks pod name as being finished by this manager (claim count
// count). It fails with executor.ErrHandedOver when another manager
// claimed the pod meanwhile. Other API errors are returned as they are:
// with the API unreachable nobody can claim the pod either.
func (e *Executor) fence(ctx context.Context, name string, count int64) error {
	pods := e.cs.Pods(e.ns)
	// The first try updates the pod as the informer last saw it, saving a
	// read: the update carries that resourceVersion, so a claim written
	// since (or any other change) is a conflict, and the next try reads.
	cached := e.cachedPod(name)
	err := retry.RetryOnConflict(claimRetries, func() error {
		pod := cached
		cached = nil
		if pod != nil && (claimCount(pod) != count || podOwner(pod) != e.systemID) {
			pod = nil // the cache may lag behind this manager's own claim: read
		}
		if pod == nil {
			var err error
			pod, err = pods.Get(ctx, name, metav1.GetOptions{})
			if apierrors.IsNotFound(err) {
				return nil // deleted by hand: nobody can take it over
			}
			if err != nil {
				return fmt.Errorf("get pod %s: %w", name, err)
			}
		}
		if claimCount(pod) != count || podOwner(pod) != e.systemID {
			return fmt.Errorf("pod %s is now owned by manager %q: %w", name, podOwner(pod), executor.ErrHandedOver)
		}
		if pod.Annotations[AnnotationFinal] == e.systemID {
			return nil
		}
		pod = pod.DeepCopy()
		if pod.Annotations == nil {
			pod.Annotations = map[string]string{}
		}
		pod.Annotations[AnnotationFinal] = e.systemID
		_, err := pods.Update(ctx, pod, metav1.UpdateOptions{})
		if err != nil && !apierrors.IsConflict(err) {
			return fmt.Errorf("mark pod %s final: %w", name, err)
		}
		return err
	})
	if apierrors.IsConflict(err) {
		return fmt.Errorf("mark pod %s final: it kept changing", name)
	}
	return err
}

// cachedPod is the pod as the informer last saw it (nil before the
// watch started or when it has not seen the pod).
func (e *Executor) cachedPod(name string) *corev1.Pod {
	e.mu.Lock()
	w := e.watch
	e.mu.Unlock()
	if w == nil {
		return nil
	}
	return w.pod(name)
}

// Claim makes this manager the owner of an Adoptable's pod (see claim).
// It fails (executor.ErrClaimLost) when another manager claimed it first;
// ResumeJob needs it.
func (e *Executor) Claim(ctx context.Context, a *executor.Adoptable) error {
	h, err := handleOf(a)
	if err != nil {
		return fmt.Errorf("claim: %w", err)
	}
	n, err := e.claim(ctx, a.Where, a.Owner, h.claims)
	if err != nil {
		return fmt.Errorf("claim pod %s of manager %q: %w", a.Where, a.Owner, err)
	}
	h.claims, h.claimed = n, true
	return nil
}

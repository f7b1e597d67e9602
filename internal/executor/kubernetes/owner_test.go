package kubernetes

import (
	"context"
	"errors"
	"strconv"
	"sync"
	"testing"
	"time"

	coordinationv1 "k8s.io/api/coordination/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/kubernetes/fake"
	k8stesting "k8s.io/client-go/testing"

	"github.com/podrunner/podrunner/internal/config"
	"github.com/podrunner/podrunner/internal/executor"
	"github.com/podrunner/podrunner/internal/job"
)

var podsGVR = schema.GroupVersionResource{Version: "v1", Resource: "pods"}

// optimisticPods makes pod updates of the fake clientset behave like the
// API server's: an update must carry the stored resourceVersion (else
// 409 Conflict) and bumps it.
func optimisticPods(cs *fake.Clientset) {
	var mu sync.Mutex
	cs.PrependReactor("update", "pods", func(a k8stesting.Action) (bool, runtime.Object, error) {
		mu.Lock()
		defer mu.Unlock()
		pod := a.(k8stesting.UpdateAction).GetObject().(*corev1.Pod).DeepCopy()
		cur, err := cs.Tracker().Get(podsGVR, pod.Namespace, pod.Name)
		if err != nil {
			return true, nil, err
		}
		rv := cur.(*corev1.Pod).ResourceVersion
		if pod.ResourceVersion != rv {
			return true, nil, apierrors.NewConflict(podsGVR.GroupResource(), pod.Name, errors.New("the object has been modified"))
		}
		n, _ := strconv.Atoi(rv)
		pod.ResourceVersion = strconv.Itoa(n + 1)
		if err := cs.Tracker().Update(podsGVR, pod, pod.Namespace); err != nil {
			return true, nil, err
		}
		return true, pod, nil
	})
}

func ownedPod(name, owner string, claims int64) *corev1.Pod {
	short := job.ShortToken(testToken)
	p := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{
		Name: name, Namespace: testNS, ResourceVersion: "1",
		Labels:      map[string]string{LabelManaged: "true", LabelRunner: short, LabelJobID: "42"},
		Annotations: map[string]string{},
	}}
	if owner != "" {
		p.Labels[LabelSystemID] = owner
	}
	if claims > 0 {
		p.Annotations[AnnotationClaim] = strconv.FormatInt(claims, 10)
	}
	return p
}

func managerOn(t *testing.T, cs *fake.Clientset, systemID string) *Executor {
	t.Helper()
	ex, err := New(Options{Config: &config.Kubernetes{Namespace: testNS}, RunnerToken: testToken, SystemID: systemID, api: fakeAPI{cs}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ex.Close() })
	return ex
}

// Two managers claim a dead manager's pod at the same time, both having
// read it before either writes: exactly one wins, the other learns it lost.
func TestClaimRaceExactlyOneWins(t *testing.T) {
	cs := fake.NewClientset(ownedPod("p", "s_deaddeaddead", 0))
	optimisticPods(cs)
	a, b := managerOn(t, cs, "s_aaaaaaaaaaaa"), managerOn(t, cs, "s_bbbbbbbbbbbb")
	var both sync.WaitGroup
	both.Add(2)
	barrier := func() { both.Done(); both.Wait() } // both read the same version before either updates
	a.afterClaimRead, b.afterClaimRead = barrier, barrier
	errs := make([]error, 2)
	var wg sync.WaitGroup
	for i, ex := range []*Executor{a, b} {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, errs[i] = ex.claim(context.Background(), "p", "s_deaddeaddead", 0)
		}()
	}
	wg.Wait()
	won := -1
	for i, err := range errs {
		switch {
		case err == nil && won == -1:
			won = i
		case err == nil:
			t.Fatalf("both managers won the claim")
		case !errors.Is(err, executor.ErrClaimLost):
			t.Fatalf("manager %d: %v, want a lost claim", i, err)
		}
	}
	if won == -1 {
		t.Fatalf("nobody won: %v", errs)
	}
	pod, _ := cs.CoreV1().Pods(testNS).Get(context.Background(), "p", metav1.GetOptions{})
	winner := []string{"s_aaaaaaaaaaaa", "s_bbbbbbbbbbbb"}[won]
	if podOwner(pod) != winner || claimCount(pod) != 1 {
		t.Fatalf("pod owner %q claims %d, want %s and 1", podOwner(pod), claimCount(pod), winner)
	}
}

func TestClaimConditions(t *testing.T) {
	for _, tc := range []struct {
		name   string
		pod    *corev1.Pod
		owner  string
		claims int64
		// between runs after the claimer read the pod, before it updates.
		between func(*fake.Clientset)
		lost    bool
	}{
		{name: "dead owner", pod: ownedPod("p", "s_deaddeaddead", 0), owner: "s_deaddeaddead"},
		{name: "no owner recorded", pod: ownedPod("p", "", 0), owner: ""},
		{name: "own pod after a restart", pod: ownedPod("p", "s_aaaaaaaaaaaa", 2), owner: "s_aaaaaaaaaaaa", claims: 2},
		{name: "claimed since it was listed", pod: ownedPod("p", "s_cccccccccccc", 1), owner: "s_deaddeaddead", lost: true},
		{name: "count moved on", pod: ownedPod("p", "s_deaddeaddead", 3), owner: "s_deaddeaddead", claims: 2, lost: true},
		{name: "being finished", pod: func() *corev1.Pod {
			p := ownedPod("p", "s_deaddeaddead", 0)
			p.Annotations[AnnotationFinal] = "s_deaddeaddead"
			return p
		}(), owner: "s_deaddeaddead", lost: true},
		{name: "status written meanwhile is retried", pod: ownedPod("p", "s_deaddeaddead", 0), owner: "s_deaddeaddead",
			between: func(cs *fake.Clientset) {
				pod, _ := cs.CoreV1().Pods(testNS).Get(context.Background(), "p", metav1.GetOptions{})
				pod.Status.Phase = corev1.PodRunning
				if _, err := cs.CoreV1().Pods(testNS).UpdateStatus(context.Background(), pod, metav1.UpdateOptions{}); err != nil {
					panic(err)
				}
			}},
		{name: "another manager claims meanwhile", pod: ownedPod("p", "s_deaddeaddead", 0), owner: "s_deaddeaddead", lost: true,
			between: func(cs *fake.Clientset) {
				pod, _ := cs.CoreV1().Pods(testNS).Get(context.Background(), "p", metav1.GetOptions{})
				pod.Labels[LabelSystemID] = "s_cccccccccccc"
				pod.Annotations[AnnotationClaim] = "1"
				if _, err := cs.CoreV1().Pods(testNS).Update(context.Background(), pod, metav1.UpdateOptions{}); err != nil {
					panic(err)
				}
			}},
		{name: "gone", pod: ownedPod("other", "s_deaddeaddead", 0), owner: "s_deaddeaddead", lost: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cs := fake.NewClientset(tc.pod)
			optimisticPods(cs)
			ex := managerOn(t, cs, "s_aaaaaaaaaaaa")
			if tc.between != nil {
				once := sync.Once{}
				ex.afterClaimRead = func() { once.Do(func() { tc.between(cs) }) }
			}
			n, err := ex.claim(context.Background(), "p", tc.owner, tc.claims)
			if tc.lost {
				if !errors.Is(err, executor.ErrClaimLost) {
					t.Fatalf("claim: %v, want lost", err)
				}
				return
			}
			if err != nil || n != tc.claims+1 {
				t.Fatalf("claim: %d, %v; want %d", n, err, tc.claims+1)
			}
			pod, _ := cs.CoreV1().Pods(testNS).Get(context.Background(), "p", metav1.GetOptions{})
			if podOwner(pod) != "s_aaaaaaaaaaaa" || claimCount(pod) != n {
				t.Fatalf("pod owner %q claims %d", podOwner(pod), claimCount(pod))
			}
		})
	}
}

// A paused owner comes back after its pod was taken over: it may not mark
// the pod final (so it sends no final update); the new owner may, and
// nobody can claim the pod after that.
func TestFenceAfterTakeOver(t *testing.T) {
	cs := fake.NewClientset(ownedPod("p", "s_aaaaaaaaaaaa", 0))
	optimisticPods(cs)
	a, b := managerOn(t, cs, "s_aaaaaaaaaaaa"), managerOn(t, cs, "s_bbbbbbbbbbbb")
	n, err := b.claim(context.Background(), "p", "s_aaaaaaaaaaaa", 0)
	if err != nil {
		t.Fatal(err)
	}
	if err := a.fence(context.Background(), "p", 0); !errors.Is(err, executor.ErrHandedOver) {
		t.Fatalf("old owner's fence: %v, want ErrHandedOver", err)
	}
	if err := b.fence(context.Background(), "p", n); err != nil {
		t.Fatalf("new owner's fence: %v", err)
	}
	if _, err := a.claim(context.Background(), "p", "s_bbbbbbbbbbbb", n); !errors.Is(err, executor.ErrClaimLost) {
		t.Fatalf("claim of a pod being finished: %v, want lost", err)
	}
}

// The mark is written from the informer's copy of the pod when that copy
// shows this manager's claim: no read. A stale copy costs a conflict and a
// read, never a wrong answer.
func TestFenceFromCache(t *testing.T) {
	ctx := t.Context()
	podGets := func(cs *fake.Clientset) int {
		n := 0
		for _, a := range cs.Actions() {
			if a.GetVerb() == "get" && a.GetResource().Resource == "pods" {
				n++
			}
		}
		return n
	}
	cached := func(t *testing.T, ex *Executor, claims int64) *podWatch {
		t.Helper()
		w, err := ex.podWatch(ctx)
		if err != nil {
			t.Fatal(err)
		}
		deadline := time.Now().Add(10 * time.Second)
		for p := w.pod("p"); p == nil || claimCount(p) != claims; p = w.pod("p") {
			if time.Now().After(deadline) {
				t.Fatalf("the informer never saw claim %d", claims)
			}
			time.Sleep(5 * time.Millisecond)
		}
		return w
	}

	t.Run("up to date", func(t *testing.T) {
		cs := fake.NewClientset(ownedPod("p", "s_aaaaaaaaaaaa", 1))
		optimisticPods(cs)
		a := managerOn(t, cs, "s_aaaaaaaaaaaa")
		cached(t, a, 1)
		before := podGets(cs)
		if err := a.fence(ctx, "p", 1); err != nil {
			t.Fatal(err)
		}
		if n := podGets(cs) - before; n != 0 {
			t.Errorf("%d pod reads, want 0", n)
		}
		if pod, _ := cs.CoreV1().Pods(testNS).Get(ctx, "p", metav1.GetOptions{}); pod.Annotations[AnnotationFinal] != "s_aaaaaaaaaaaa" {
			t.Errorf("final mark %q", pod.Annotations[AnnotationFinal])
		}
	})
	t.Run("stale: taken over since", func(t *testing.T) {
		cs := fake.NewClientset(ownedPod("p", "s_aaaaaaaaaaaa", 1))
		optimisticPods(cs)
		a, b := managerOn(t, cs, "s_aaaaaaaaaaaa"), managerOn(t, cs, "s_bbbbbbbbbbbb")
		w := cached(t, a, 1)
		stale := w.pod("p").DeepCopy()
		if _, err := b.claim(ctx, "p", "s_aaaaaaaaaaaa", 1); err != nil {
			t.Fatal(err)
		}
		cached(t, a, 2)
		if err := w.pods.GetIndexer().Update(stale); err != nil { // as if the watch lagged
			t.Fatal(err)
		}
		if err := a.fence(ctx, "p", 1); !errors.Is(err, executor.ErrHandedOver) {
			t.Fatalf("fence from a stale copy: %v, want ErrHandedOver", err)
		}
	})
	t.Run("stale: before this manager's own claim", func(t *testing.T) {
		cs := fake.NewClientset(ownedPod("p", "s_deaddeaddead", 0))
		optimisticPods(cs)
		a := managerOn(t, cs, "s_aaaaaaaaaaaa")
		w := cached(t, a, 0)
		stale := w.pod("p").DeepCopy()
		n, err := a.claim(ctx, "p", "s_deaddeaddead", 0)
		if err != nil {
			t.Fatal(err)
		}
		cached(t, a, n)
		if err := w.pods.GetIndexer().Update(stale); err != nil {
			t.Fatal(err)
		}
		if err := a.fence(ctx, "p", n); err != nil {
			t.Fatalf("fence after the own claim, cache behind: %v", err)
		}
	})
}

// Another manager is dead once its Lease stayed unchanged (or missing)
// for longer than its duration on the observer's own clock.
func TestLeaseObserverExpiry(t *testing.T) {
	short := job.ShortToken(testToken)
	secs := int32(15)
	lease := &coordinationv1.Lease{
		ObjectMeta: metav1.ObjectMeta{Name: LeaseName(short, "s_aaaaaaaaaaaa"), Namespace: testNS, ResourceVersion: "5"},
		Spec:       coordinationv1.LeaseSpec{LeaseDurationSeconds: &secs},
	}
	cs := fake.NewClientset(lease)
	o := newLeaseObserver(fakeAPI{cs}, testNS, short)
	now := time.Unix(1000, 0)
	o.now = func() time.Time { return now }
	ctx := context.Background()
	check := func(at time.Duration, id string, want bool) {
		t.Helper()
		now = time.Unix(1000, 0).Add(at)
		got, err := o.expired(ctx, id)
		if err != nil || got != want {
			t.Fatalf("at +%s, %q expired = %v (%v), want %v", at, id, got, err, want)
		}
	}
	check(0, "s_aaaaaaaaaaaa", false)
	check(15*time.Second, "s_aaaaaaaaaaaa", false)
	check(15*time.Second+time.Millisecond, "s_aaaaaaaaaaaa", true)
	// A renewal (new resourceVersion) makes it alive again.
	lease.ResourceVersion = "6"
	if _, err := cs.CoordinationV1().Leases(testNS).Update(ctx, lease, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	check(16*time.Second, "s_aaaaaaaaaaaa", false)
	check(31*time.Second, "s_aaaaaaaaaaaa", false)
	check(32*time.Second, "s_aaaaaaaaaaaa", true)
	// Missing, and no owner recorded: dead after one duration.
	check(0, "s_bbbbbbbbbbbb", false)
	check(16*time.Second, "s_bbbbbbbbbbbb", true)
	check(0, "", false)
	check(16*time.Second, "", true)
	// A Lease that cannot be read counts as alive.
	cs.PrependReactor("get", "leases", func(k8stesting.Action) (bool, runtime.Object, error) {
		return true, nil, apierrors.NewForbidden(schema.GroupResource{Resource: "leases"}, "x", errors.New("no"))
	})
	if dead, err := o.expired(ctx, "s_bbbbbbbbbbbb"); dead || err == nil {
		t.Fatalf("forbidden lease: dead %v, err %v", dead, err)
	}
}

func TestLeaseKeeperRenewsAndDeletes(t *testing.T) {
	cs := fake.NewClientset()
	k := newLeaseKeeper(fakeAPI{cs}, testNS, job.ShortToken(testToken), "s_aaaaaaaaaaaa", testLogger())
	k.renewEach = 10 * time.Millisecond
	ctx := context.Background()
	k.start(ctx)
	name := LeaseName(job.ShortToken(testToken), "s_aaaaaaaaaaaa")
	l, err := cs.CoordinationV1().Leases(testNS).Get(ctx, name, metav1.GetOptions{})
	if err != nil {
		t.Fatalf("lease after start: %v", err)
	}
	if *l.Spec.HolderIdentity != "s_aaaaaaaaaaaa" || *l.Spec.LeaseDurationSeconds != 15 || l.Labels[LabelSystemID] != "s_aaaaaaaaaaaa" {
		t.Fatalf("lease %+v", l)
	}
	// Renewals are updates of the same Lease.
	for updates := 0; updates < 2; {
		updates = 0
		for _, a := range cs.Actions() {
			if a.GetVerb() == "update" && a.GetResource().Resource == "leases" {
				updates++
			}
		}
		time.Sleep(5 * time.Millisecond)
	}
	k.close(true)
	if _, err := cs.CoordinationV1().Leases(testNS).Get(ctx, name, metav1.GetOptions{}); !apierrors.IsNotFound(err) {
		t.Fatalf("lease after a clean close: %v", err)
	}
}

// Cleanup and Adopt leave a live manager's pods alone; Adopt offers a
// dead manager's pod once its Lease expired.
func TestAdoptAndCleanupRespectOwners(t *testing.T) {
	h := newHarness(t)
	req, err := h.ex.podRequest(t.Context(), &executor.Job{Payload: testPayload(), Slot: 1})
	if err != nil {
		t.Fatal(err)
	}
	req.SystemID = "s_otherother1"
	pod, sec, err := BuildPod(req)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	if _, err := h.cs.CoreV1().Secrets(testNS).Create(ctx, sec, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	if _, err := h.cs.CoreV1().Pods(testNS).Create(ctx, pod, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	other := managerOn(t, h.cs, "s_otherother1")
	other.keeper = newLeaseKeeper(fakeAPI{h.cs}, testNS, other.short, other.systemID, testLogger())
	if err := other.keeper.renew(ctx); err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	h.ex.leases.now = func() time.Time { return now }
	if del, err := h.ex.Cleanup(ctx, nil); err != nil || len(del) != 0 {
		t.Fatalf("cleanup deleted %v (%v) of a live manager", del, err)
	}
	if list, err := h.ex.Adopt(ctx); err != nil || len(list) != 0 {
		t.Fatalf("adopt offered %d pods (%v) of a live manager", len(list), err)
	}
	// The other manager renews: still alive after a duration.
	now = now.Add(LeaseDuration + time.Second)
	if err := other.keeper.renew(ctx); err != nil {
		t.Fatal(err)
	}
	if list, _ := h.ex.Adopt(ctx); len(list) != 0 {
		t.Fatalf("adopt offered a renewing manager's pod")
	}
	// It stops renewing: after a duration its pod is offered.
	now = now.Add(LeaseDuration + time.Second)
	list, err := h.ex.Adopt(ctx)
	if err != nil || len(list) != 1 || list[0].Owner != "s_otherother1" {
		t.Fatalf("adopt after the lease expired: %+v, %v", list, err)
	}
	if _, err := h.ex.ResumeJob(ctx, list[0], &executor.Job{Payload: list[0].Payload}); err == nil {
		t.Fatal("resumed a pod that was not claimed")
	}
	if err := h.ex.Claim(ctx, &list[0]); err != nil {
		t.Fatal(err)
	}
	got, _ := h.cs.CoreV1().Pods(testNS).Get(ctx, pod.Name, metav1.GetOptions{})
	if podOwner(got) != h.ex.systemID {
		t.Fatalf("owner after claim %q", podOwner(got))
	}
}

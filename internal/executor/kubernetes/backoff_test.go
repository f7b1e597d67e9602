package kubernetes

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	coordinationv1 "k8s.io/api/coordination/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/kubernetes/fake"
	k8stesting "k8s.io/client-go/testing"

	"github.com/podrunner/podrunner/internal/job"
)

// TestBackoffSteps: the waits double from first and stay at the cap.
func TestBackoffSteps(t *testing.T) {
	ms := time.Millisecond
	tests := []struct {
		first, max time.Duration
		want       []time.Duration
	}{
		{200 * ms, 8 * time.Second, []time.Duration{200 * ms, 400 * ms, 800 * ms, 1600 * ms, 3200 * ms, 6400 * ms, 8 * time.Second, 8 * time.Second}},
		{time.Second, 15 * time.Second, []time.Duration{time.Second, 2 * time.Second, 4 * time.Second, 8 * time.Second, 15 * time.Second, 15 * time.Second}},
		{50 * ms, 2 * time.Second, []time.Duration{50 * ms, 100 * ms, 200 * ms, 400 * ms, 800 * ms, 1600 * ms, 2 * time.Second, 2 * time.Second}},
		// A first step above the cap is waited once, then the cap.
		{3 * time.Second, time.Second, []time.Duration{3 * time.Second, time.Second, time.Second}},
	}
	for _, tt := range tests {
		b := newBackoff(tt.first, tt.max)
		for i, want := range tt.want {
			if got := b.steps.Step(); got != want {
				t.Errorf("newBackoff(%v, %v) step %d = %v, want %v", tt.first, tt.max, i, got, want)
			}
		}
	}
}

// alwaysConflict makes every update of resource answer 409 and counts them.
func alwaysConflict(cs *fake.Clientset, resource string) *int {
	n := 0
	cs.PrependReactor("update", resource, func(a k8stesting.Action) (bool, runtime.Object, error) {
		n++
		return true, nil, apierrors.NewConflict(schema.GroupResource{Resource: resource}, "x", errors.New("the object has been modified"))
	})
	return &n
}

// Conflicts are resolved by reading again, a bounded number of times:
// 10 for a pod claim or fence, 3 for a lease renewal.
func TestConflictRetriesAreBounded(t *testing.T) {
	ctx := context.Background()
	t.Run("claim", func(t *testing.T) {
		cs := fake.NewClientset(ownedPod("p", "s_deaddeaddead", 0))
		updates := alwaysConflict(cs, "pods")
		_, err := managerOn(t, cs, "s_aaaaaaaaaaaa").claim(ctx, "p", "s_deaddeaddead", 0)
		if err == nil || !strings.Contains(err.Error(), "claim pod p: it kept changing") || *updates != 10 {
			t.Fatalf("claim: %v after %d updates, want it kept changing after 10", err, *updates)
		}
	})
	t.Run("fence", func(t *testing.T) {
		cs := fake.NewClientset(ownedPod("p", "s_aaaaaaaaaaaa", 1))
		updates := alwaysConflict(cs, "pods")
		err := managerOn(t, cs, "s_aaaaaaaaaaaa").fence(ctx, "p", 1)
		if err == nil || !strings.Contains(err.Error(), "mark pod p final: it kept changing") || *updates != 10 {
			t.Fatalf("fence: %v after %d updates, want it kept changing after 10", err, *updates)
		}
	})
	t.Run("lease", func(t *testing.T) {
		k := newLeaseKeeper(nil, testNS, job.ShortToken(testToken), "s_aaaaaaaaaaaa", testLogger())
		cs := fake.NewClientset(&coordinationv1.Lease{ObjectMeta: metav1.ObjectMeta{Name: k.name, Namespace: testNS}})
		k.cs = fakeAPI{cs}
		updates := alwaysConflict(cs, "leases")
		err := k.renew(ctx)
		if err == nil || !strings.Contains(err.Error(), "keeps changing under this manager") || *updates != 3 {
			t.Fatalf("renew: %v after %d updates, want it keeps changing after 3", err, *updates)
		}
	})
}

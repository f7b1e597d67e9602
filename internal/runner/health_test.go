package runner

import (
	"testing"
	"time"
)

func TestHealth(t *testing.T) {
	now := time.Unix(1000, 0)
	h := newHealth(3, time.Minute)
	h.now = func() time.Time { return now }

	steps := []struct {
		healthy          bool
		wantUnhealthy    bool
		wantWaitPositive bool
	}{
		{false, false, false},
		{false, false, false},
		{false, true, true}, // third failure: pause
	}
	for i, s := range steps {
		if got := h.record(s.healthy); got != s.wantUnhealthy {
			t.Fatalf("step %d: record = %v; want %v", i, got, s.wantUnhealthy)
		}
		if got := h.wait() > 0; got != s.wantWaitPositive {
			t.Fatalf("step %d: wait>0 = %v; want %v", i, got, s.wantWaitPositive)
		}
	}
	now = now.Add(time.Minute)
	if w := h.wait(); w != 0 {
		t.Fatalf("after the interval, wait = %v; want 0 (one forced try)", w)
	}
	if h.record(false) {
		t.Fatal("one failure after the forced try must not pause again at once")
	}
	h.record(true)
	h.record(false)
	h.record(false)
	if h.wait() != 0 {
		t.Fatal("a healthy answer must reset the failure count")
	}
}

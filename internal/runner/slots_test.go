package runner

import (
	"context"
	"testing"
	"time"
)

func TestSlotsLowestFreeAndReuse(t *testing.T) {
	s := newSlots(3)
	ctx := context.Background()
	for want := 0; want < 3; want++ {
		got, err := s.acquire(ctx)
		if err != nil || got != want {
			t.Fatalf("acquire = %d, %v; want %d", got, err, want)
		}
	}
	s.release(1)
	if got, _ := s.acquire(ctx); got != 1 {
		t.Fatalf("after releasing 1, acquire = %d; want 1", got)
	}
}

func TestSlotsBlockUntilReleaseOrCancel(t *testing.T) {
	s := newSlots(1)
	if _, err := s.acquire(context.Background()); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
	defer cancel()
	if _, err := s.acquire(ctx); err == nil {
		t.Fatal("acquire on a full pool returned without error")
	}
	got := make(chan int)
	go func() {
		n, _ := s.acquire(context.Background())
		got <- n
	}()
	s.release(0)
	if n := <-got; n != 0 {
		t.Fatalf("acquire after release = %d; want 0", n)
	}
}

func TestSlotsLimitChange(t *testing.T) {
	s := newSlots(1)
	ctx := context.Background()
	s.acquire(ctx)
	got := make(chan int)
	go func() {
		n, _ := s.acquire(ctx)
		got <- n
	}()
	s.setLimit(2)
	if n := <-got; n != 1 {
		t.Fatalf("acquire after raising the limit = %d; want 1", n)
	}
	s.setLimit(1)
	s.release(0)
	if s.inUse() != 1 {
		t.Fatalf("inUse = %d; want 1", s.inUse())
	}
}

// A take-over borrows the capacity a job request holds, never a job's.
func TestSlotsBorrowOnlyFromRequests(t *testing.T) {
	ctx := context.Background()
	for _, tc := range []struct {
		name      string
		limit     int
		jobs      int // slots acquired for jobs
		polls     int // slots acquired for requests
		want      int // slot asked for
		ok        bool
		wantSlot  int
		usedAfter int
	}{
		{name: "free slot, the wanted one", limit: 2, jobs: 0, polls: 0, want: 1, ok: true, wantSlot: 1, usedAfter: 1},
		{name: "only a long poll holds the one slot", limit: 1, jobs: 0, polls: 1, want: 0, ok: true, wantSlot: 1, usedAfter: 2},
		{name: "a job holds the one slot", limit: 1, jobs: 1, polls: 0, want: 0, ok: false, usedAfter: 1},
		{name: "jobs fill all but the polled slot", limit: 3, jobs: 2, polls: 1, want: 0, ok: true, wantSlot: 3, usedAfter: 4},
		{name: "jobs fill every slot, a poll waits", limit: 2, jobs: 2, polls: 0, want: -1, ok: false, usedAfter: 2},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := newSlots(tc.limit)
			for range tc.jobs {
				if _, err := s.acquire(ctx); err != nil {
					t.Fatal(err)
				}
			}
			for range tc.polls {
				i, err := s.acquire(ctx)
				if err != nil {
					t.Fatal(err)
				}
				s.polling(i, true)
			}
			got, ok := s.borrow(tc.want)
			if ok != tc.ok || (ok && got != tc.wantSlot) || s.inUse() != tc.usedAfter {
				t.Fatalf("borrow(%d) = %d, %v with %d in use; want %d, %v with %d", tc.want, got, ok, s.inUse(), tc.wantSlot, tc.ok, tc.usedAfter)
			}
			if ok {
				// A second take-over cannot borrow what the first took.
				if _, again := s.borrow(-1); again && tc.jobs+1 >= tc.limit {
					t.Fatalf("a second borrow succeeded with %d jobs and limit %d", tc.jobs+1, tc.limit)
				}
			}
		})
	}
}

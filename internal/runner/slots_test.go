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

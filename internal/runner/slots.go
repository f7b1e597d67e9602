package runner

import (
	"context"
	"sync"
)

// slots hands out the lowest free slot number below the current limit. The
// number becomes the job's CI_CONCURRENT_ID and the pod name's
// concurrent-<n>, so it is stable for the job's lifetime and reused once
// free, as GitLab Runner does. The limit (config `concurrent`) can change on
// reload without disturbing jobs that hold a slot.
type slots struct {
	mu      sync.Mutex
	limit   int
	used    map[int]bool
	polls   map[int]bool  // the used slots held by job requests, not jobs
	changed chan struct{} // closed and replaced whenever a waiter may proceed
}

func newSlots(limit int) *slots {
	return &slots{limit: limit, used: map[int]bool{}, polls: map[int]bool{}, changed: make(chan struct{})}
}

func (s *slots) broadcastLocked() {
	close(s.changed)
	s.changed = make(chan struct{})
}

// acquire blocks until a slot is free or ctx is done.
func (s *slots) acquire(ctx context.Context) (int, error) {
	for {
		s.mu.Lock()
		if len(s.used) < s.limit {
			for i := 0; ; i++ {
				if !s.used[i] {
					s.used[i] = true
					s.mu.Unlock()
					return i, nil
				}
			}
		}
		ch := s.changed
		s.mu.Unlock()
		select {
		case <-ch:
		case <-ctx.Done():
			return 0, ctx.Err()
		}
	}
}

func (s *slots) release(i int) {
	s.mu.Lock()
	delete(s.used, i)
	delete(s.polls, i)
	s.broadcastLocked()
	s.mu.Unlock()
}

func (s *slots) setLimit(n int) {
	s.mu.Lock()
	s.limit = n
	s.broadcastLocked()
	s.mu.Unlock()
}

// inUse reports how many slots are taken.
func (s *slots) inUse() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.used)
}

// take reserves slot i if it is free and below the limit (an adopted job
// keeps the slot its pod is named after).
func (s *slots) take(i int) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if i < 0 || i >= s.limit || s.used[i] || len(s.used) >= s.limit {
		return false
	}
	s.used[i] = true
	return true
}

// polling marks slot i as held by a job request rather than a job.
func (s *slots) polling(i int, on bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if on {
		s.polls[i] = true
	} else {
		delete(s.polls, i)
	}
}

// borrow reserves slot i, or the lowest free number, also when the free
// capacity is held by a job request (a long poll): allowed while the slots
// held by jobs stay below the limit. If the request then brings a job, it
// runs as well: the limit is exceeded by one until a job ends. Only a
// take-over borrows (see Manager.adoptSlots).
func (s *slots) borrow(i int) (int, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.used)-len(s.polls) >= s.limit {
		return 0, false
	}
	if i < 0 || s.used[i] {
		for i = 0; s.used[i]; i++ {
		}
	}
	s.used[i] = true
	return i, true
}

package runner

import (
	"sync"
	"time"
)

// health implements GitLab Runner's rule for a runner whose job requests are
// rejected: after `limit` consecutive unhealthy answers (403, unusable
// client) the runner is not asked for jobs for `interval`; then one try is
// allowed and the count starts over. A healthy answer resets the count.
type health struct {
	mu       sync.Mutex
	limit    int
	interval time.Duration
	failures int
	until    time.Time
	now      func() time.Time
}

func newHealth(limit int, interval time.Duration) *health {
	if limit <= 0 {
		limit = 3
	}
	if interval <= 0 {
		interval = time.Hour
	}
	return &health{limit: limit, interval: interval, now: time.Now}
}

// wait returns how long to wait before the next request may be sent; 0 when
// the runner may be asked now.
func (h *health) wait() time.Duration {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.failures < h.limit {
		return 0
	}
	d := h.until.Sub(h.now())
	if d <= 0 {
		// One forced try, with a fresh count.
		h.failures = 0
		return 0
	}
	return d
}

// record notes the health of one answer and reports whether the runner just
// became unhealthy.
func (h *health) record(healthy bool) (becameUnhealthy bool) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if healthy {
		h.failures = 0
		return false
	}
	h.failures++
	if h.failures == h.limit {
		h.until = h.now().Add(h.interval)
		return true
	}
	return false
}

package coordinator

import (
	"fmt"
	"math/rand/v2"
	"sync"
	"time"
)

// EndpointAll in Faults.ErrorRate and Faults.Latency applies to every
// endpoint without an entry of its own.
const EndpointAll = "*"

// Faults configure deterministic fault injection.
type Faults struct {
	// Seed makes the sequence of faults reproducible.
	Seed uint64
	// ErrorRate maps an endpoint (Endpoint* or EndpointAll) to the
	// fraction (0..1) of its requests answered with a 5xx before the
	// request reaches any state: a faulted request changes nothing.
	ErrorRate map[string]float64
	// ErrorCodes are the statuses used, picked in turn at random; 500,
	// 502 and 503 when empty.
	ErrorCodes []int
	// Latency delays every request of an endpoint (or EndpointAll).
	Latency map[string]time.Duration
}

type faultState struct {
	mu    sync.Mutex
	f     Faults
	rng   *rand.Rand
	f416  int
	f412  int
	f202  int
	count map[string]int
	// payloadFaults rewrite the bodies of the next job payloads handed out.
	payloadFaults []func([]byte) []byte
}

func (fs *faultState) init(seed uint64) {
	fs.rng = rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15))
	fs.count = map[string]int{}
}

// SetFaults replaces the fault configuration and reseeds the generator.
func (s *Server) SetFaults(f Faults) {
	s.faults.mu.Lock()
	defer s.faults.mu.Unlock()
	s.faults.f = f
	s.faults.rng = rand.New(rand.NewPCG(f.Seed, f.Seed^0x9e3779b97f4a7c15))
}

// FaultCount is how many requests of an endpoint were faulted.
func (s *Server) FaultCount(endpoint string) int {
	s.faults.mu.Lock()
	defer s.faults.mu.Unlock()
	return s.faults.count[endpoint]
}

// ForceTrace416 makes the next n trace patches answer 416 with the
// correct Range, as if a chunk had been lost in between.
func (s *Server) ForceTrace416(n int) {
	s.faults.mu.Lock()
	s.faults.f416 += n
	s.faults.mu.Unlock()
}

// ForceUpdate412 makes the next n final job updates (success/failed)
// answer 412, as GitLab does when the trace checksum does not match.
func (s *Server) ForceUpdate412(n int) {
	s.faults.mu.Lock()
	s.faults.f412 += n
	s.faults.mu.Unlock()
}

// ForceAccepted makes the next n final job updates answer 202 with a
// backoff, as GitLab does while it still assembles trace chunks.
func (s *Server) ForceAccepted(n int) {
	s.faults.mu.Lock()
	s.faults.f202 += n
	s.faults.mu.Unlock()
}

func (fs *faultState) take(counter *int) bool {
	fs.mu.Lock()
	defer fs.mu.Unlock()
	if *counter > 0 {
		*counter--
		return true
	}
	return false
}

// decide returns the 5xx to answer (0 for none) and the latency to add.
func (fs *faultState) decide(endpoint string) (int, time.Duration) {
	fs.mu.Lock()
	defer fs.mu.Unlock()
	lat, ok := fs.f.Latency[endpoint]
	if !ok {
		lat = fs.f.Latency[EndpointAll]
	}
	rate, ok := fs.f.ErrorRate[endpoint]
	if !ok {
		rate = fs.f.ErrorRate[EndpointAll]
	}
	if rate <= 0 || fs.rng.Float64() >= rate {
		return 0, lat
	}
	codes := fs.f.ErrorCodes
	if len(codes) == 0 {
		codes = []int{500, 502, 503}
	}
	fs.count[endpoint]++
	return codes[fs.rng.IntN(len(codes))], lat
}

// CancelJobAfter cancels the job d after it started running; if it is not
// running yet, the timer starts when it does.
func (s *Server) CancelJobAfter(id int64, d time.Duration, graceful bool) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	j := s.jobs[id]
	if j == nil {
		return fmt.Errorf("job %d not found", id)
	}
	if j.startedAt.IsZero() {
		j.cancelAfter, j.cancelAfterSet = d, true
		j.cancelGraceful = graceful
		return nil
	}
	s.afterFuncLocked(time.Until(j.startedAt.Add(d)), func() { _ = s.Cancel(id, graceful) })
	return nil
}

// CancelJobAfterBytes cancels the job once its trace holds at least n
// bytes (checked when a trace patch arrives).
func (s *Server) CancelJobAfterBytes(id int64, n int64, graceful bool) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	j := s.jobs[id]
	if j == nil {
		return fmt.Errorf("job %d not found", id)
	}
	j.cancelAfterBytes, j.cancelGraceful = n, graceful
	return nil
}

// MangleNextPayload rewrites the body of the next job handed to a runner
// with f, to test how runners cope with a payload they cannot use (GitLab
// itself never sends one, but a proxy or a version mismatch can).
func (s *Server) MangleNextPayload(f func(body []byte) []byte) {
	s.faults.mu.Lock()
	s.faults.payloadFaults = append(s.faults.payloadFaults, f)
	s.faults.mu.Unlock()
}

func (fs *faultState) mangle(body []byte) []byte {
	fs.mu.Lock()
	defer fs.mu.Unlock()
	if len(fs.payloadFaults) == 0 {
		return body
	}
	f := fs.payloadFaults[0]
	fs.payloadFaults = fs.payloadFaults[1:]
	return f(body)
}

package runner

import (
	"encoding/json"
	"io"
	"sync"

	"github.com/podrunner/podrunner/internal/executor"
)

// Executors keeps the executors built from config.toml across reloads: an
// executor whose runner entry did not change is reused (a Kubernetes
// executor holds informers and connections), a changed one is replaced.
// Replaced executors may still run jobs, so they are closed only by Close,
// when the runner stops.
type Executors struct {
	mu      sync.Mutex
	current map[string]cachedExecutor
	retired []executor.Executor
}

// retirer is an executor that starts work of its own (the Kubernetes
// executor's warm pods): Retire stops that when a reload replaced it,
// while its running jobs go on.
type retirer interface{ Retire() }

type cachedExecutor struct {
	fingerprint string
	ex          executor.Executor
}

// NewExecutors returns an empty cache.
func NewExecutors() *Executors {
	return &Executors{current: map[string]cachedExecutor{}}
}

// get returns the executor for key, reusing the cached one when settings
// (any JSON-encodable value) are unchanged.
func (c *Executors) get(key string, settings any, create func() (executor.Executor, error)) (executor.Executor, error) {
	fp, err := json.Marshal(settings)
	if err != nil {
		return nil, err
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if cur, ok := c.current[key]; ok && cur.fingerprint == string(fp) {
		return cur.ex, nil
	}
	ex, err := create()
	if err != nil {
		return nil, err
	}
	if cur, ok := c.current[key]; ok {
		c.retired = append(c.retired, cur.ex)
		if r, ok := cur.ex.(retirer); ok {
			r.Retire()
		}
	}
	c.current[key] = cachedExecutor{fingerprint: string(fp), ex: ex}
	return ex, nil
}

// Close closes every executor that has a Close method (after the manager
// has stopped and no job runs any more).
func (c *Executors) Close() {
	c.mu.Lock()
	defer c.mu.Unlock()
	all := c.retired
	for _, cur := range c.current {
		all = append(all, cur.ex)
	}
	for _, ex := range all {
		if cl, ok := ex.(io.Closer); ok {
			cl.Close()
		}
	}
	c.current = map[string]cachedExecutor{}
	c.retired = nil
}

package kubernetes

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"time"

	"github.com/podrunner/podrunner/internal/agent"
)

// agentAPI is what the executor needs from the in-pod agent (see
// docs/kubernetes-executor.md, "The agent"); *agent.Client implements it.
type agentAPI interface {
	// Log returns log bytes from offset (long-polling while there are
	// none), the log's total size so far and the job state.
	Log(ctx context.Context, offset int64) (data []byte, size int64, state string, err error)
	// PutSpec hands the job's spec to the agent (again: harmless).
	PutSpec(ctx context.Context, spec []byte) error
	Status(ctx context.Context) (*agent.Status, error)
	Cancel(ctx context.Context) error
	Abort(ctx context.Context) error
	Ack(ctx context.Context) error
}

// logPump copies the agent's log into the job trace, from offset on. The
// offset only moves by what was written, so reconnects neither lose nor
// repeat bytes.
type logPump struct {
	api    agentAPI
	trace  io.Writer
	log    *slog.Logger
	offset int64
	// minBackoff is the first wait after a failed request (default 50 ms).
	minBackoff time.Duration
	// onProgress, when set, is called after each successful request
	// (tests and metrics).
	onProgress func(offset int64)
}

// errTraceWrite wraps a failure to write to the job trace: retrying the
// agent does not help.
type errTraceWrite struct{ err error }

func (e errTraceWrite) Error() string { return "write job trace: " + e.err.Error() }
func (e errTraceWrite) Unwrap() error { return e.err }

// run pulls until the agent reports done and every byte it has is in the
// trace (nil), or ctx ends (ctx's error). Agent errors (pod network
// hiccups, agent not listening yet) are retried with a capped backoff;
// the caller's pod watch decides when the pod is gone for good.
func (p *logPump) run(ctx context.Context) error {
	first := p.minBackoff
	if first <= 0 {
		first = 50 * time.Millisecond
	}
	bo := newBackoff(first, 2*time.Second)
	failures := 0
	for {
		data, size, state, err := p.api.Log(ctx, p.offset)
		if err != nil {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			if refused := (*agent.SpecRefusedError)(nil); errors.As(err, &refused) {
				return err // retrying sends the same spec
			}
			failures++
			// The first failures are expected while the agent starts
			// listening; later ones are worth a line in the runner log.
			if failures == 5 || failures%50 == 0 {
				p.log.Warn("agent log request failing, retrying", "offset", p.offset, "failures", failures, "err", err)
			}
			if werr := bo.wait(ctx); werr != nil {
				return werr
			}
			continue
		}
		failures = 0
		bo = newBackoff(first, 2*time.Second)
		if len(data) > 0 {
			n, werr := p.trace.Write(data)
			p.offset += int64(n)
			if werr != nil {
				return errTraceWrite{werr}
			}
		}
		if p.onProgress != nil {
			p.onProgress(p.offset)
		}
		if size < p.offset {
			return fmt.Errorf("agent log shrank to %d bytes below offset %d", size, p.offset)
		}
		if state == agent.StateDone && p.offset >= size {
			return nil
		}
	}
}

func newAgentClient(baseURL, token string, hc *http.Client) agentAPI {
	return agent.NewClient(baseURL, token, hc)
}

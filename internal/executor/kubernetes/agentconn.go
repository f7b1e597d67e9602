package kubernetes

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"sync"
	"sync/atomic"

	corev1 "k8s.io/api/core/v1"

	"github.com/podrunner/podrunner/internal/agent"
)

// errNotConnected is the answer of a pinnedAgent that has not reached the
// agent yet.
var errNotConnected = errors.New("agent not connected yet")

// pinnedAgent reaches a job's agent the way docs/kubernetes-executor.md
// ("How the spec travels") describes: it reads the agent's certificate
// fingerprint from the build container's log (one pods/log request),
// connects with that certificate pinned and hands over the spec, once;
// then every call goes to that connection. Log connects (and so is
// retried by the log pump); the other calls fail with errNotConnected
// until Log has connected.
type pinnedAgent struct {
	fingerprint func(ctx context.Context) ([]byte, error)
	connect     func(ctx context.Context, fingerprint []byte) (agentAPI, error)

	mu  sync.Mutex // one connect at a time
	fp  []byte
	api atomic.Pointer[agentAPI]
}

func (p *pinnedAgent) get(ctx context.Context) (agentAPI, error) {
	if a := p.api.Load(); a != nil {
		return *a, nil
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if a := p.api.Load(); a != nil {
		return *a, nil
	}
	if p.fp == nil {
		fp, err := p.fingerprint(ctx)
		if err != nil {
			return nil, err
		}
		p.fp = fp
	}
	a, err := p.connect(ctx, p.fp)
	if err != nil {
		return nil, err
	}
	p.api.Store(&a)
	return a, nil
}

func (p *pinnedAgent) connected() (agentAPI, error) {
	if a := p.api.Load(); a != nil {
		return *a, nil
	}
	return nil, errNotConnected
}

func (p *pinnedAgent) Log(ctx context.Context, offset int64) ([]byte, int64, string, error) {
	a, err := p.get(ctx)
	if err != nil {
		return nil, 0, "", err
	}
	return a.Log(ctx, offset)
}

func (p *pinnedAgent) Status(ctx context.Context) (*agent.Status, error) {
	a, err := p.get(ctx)
	if err != nil {
		return nil, err
	}
	return a.Status(ctx)
}

func (p *pinnedAgent) PutSpec(ctx context.Context, spec []byte) error {
	a, err := p.get(ctx)
	if err != nil {
		return err
	}
	return a.PutSpec(ctx, spec)
}

func (p *pinnedAgent) Cancel(ctx context.Context) error {
	a, err := p.connected()
	if err != nil {
		return err
	}
	return a.Cancel(ctx)
}

func (p *pinnedAgent) Abort(ctx context.Context) error {
	a, err := p.connected()
	if err != nil {
		return err
	}
	return a.Abort(ctx)
}

func (p *pinnedAgent) Ack(ctx context.Context) error {
	a, err := p.connected()
	if err != nil {
		return err
	}
	return a.Ack(ctx)
}

// readFingerprint follows the build container's log until the agent's
// fingerprint line (it is the first line the agent prints; the stream is
// closed as soon as it is read).
func (e *Executor) readFingerprint(ctx context.Context, pod string) ([]byte, error) {
	rc, err := e.cs.PodLogs(ctx, e.ns, pod, &corev1.PodLogOptions{Container: ContainerBuild, Follow: true})
	if err != nil {
		return nil, fmt.Errorf("read the agent's fingerprint from the log of pod %s: %w", pod, err)
	}
	defer rc.Close()
	fp, err := agent.ReadFingerprint(rc)
	if err != nil {
		return nil, fmt.Errorf("pod %s: %w", pod, err)
	}
	return fp, nil
}

// pinnedClient is hc with the agent's certificate pinned.
func pinnedClient(hc *http.Client, fingerprint []byte) *http.Client {
	var t *http.Transport
	if base, ok := hc.Transport.(*http.Transport); ok {
		t = base.Clone()
	} else {
		t = http.DefaultTransport.(*http.Transport).Clone()
	}
	t.TLSClientConfig = agent.PinnedTLS(fingerprint)
	return &http.Client{Transport: t, Timeout: hc.Timeout}
}

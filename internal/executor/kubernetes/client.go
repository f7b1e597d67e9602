package kubernetes

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math"
	"net"
	"strings"
	"syscall"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	utilnet "k8s.io/apimachinery/pkg/util/net"
	utilwait "k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"

	"github.com/podrunner/podrunner/internal/config"
)

// Client-side rate limits: a runner with many jobs must not flood the API
// server; informers keep the steady-state load to one watch per resource.
const (
	defaultQPS   = 20
	defaultBurst = 40
)

// restConfig picks the cluster connection like GitLab Runner: an explicit
// host (with bearer token and/or client certificates) wins, then the
// in-cluster service account, then kubeconfig (the file given, else
// KUBECONFIG or ~/.kube/config, with the configured context).
func restConfig(c *config.Kubernetes, kubeconfig string) (*rest.Config, error) {
	var cfg *rest.Config
	switch {
	case c.Host != "":
		cfg = &rest.Config{
			Host:        c.Host,
			BearerToken: c.BearerToken,
			TLSClientConfig: rest.TLSClientConfig{
				CertFile: c.CertFile,
				KeyFile:  c.KeyFile,
				CAFile:   c.CAFile,
			},
		}
	default:
		in, err := rest.InClusterConfig()
		if err == nil && c.Context == "" && kubeconfig == "" {
			cfg = in
			break
		}
		rules := clientcmd.NewDefaultClientConfigLoadingRules()
		rules.ExplicitPath = kubeconfig
		overrides := &clientcmd.ConfigOverrides{CurrentContext: c.Context}
		kc, kerr := clientcmd.NewNonInteractiveDeferredLoadingClientConfig(rules, overrides).ClientConfig()
		if kerr != nil {
			if err != nil && !errors.Is(err, rest.ErrNotInCluster) {
				return nil, fmt.Errorf("kubernetes connection: in-cluster config: %v; kubeconfig: %w", err, kerr)
			}
			return nil, fmt.Errorf("kubernetes connection: not running in a cluster and no usable kubeconfig "+
				"(set [runners.kubernetes] host, or KUBECONFIG, or context): %w", kerr)
		}
		cfg = kc
		if c.BearerToken != "" {
			cfg.BearerToken, cfg.BearerTokenFile = c.BearerToken, ""
		}
	}
	return cfg, nil
}

// newClient applies the rate limits and builds the client.
func newClient(cfg *rest.Config) (kubeAPI, error) {
	cfg = rest.CopyConfig(cfg)
	if cfg.QPS == 0 {
		cfg.QPS = defaultQPS
	}
	if cfg.Burst == 0 {
		cfg.Burst = defaultBurst
	}
	if cfg.Timeout == 0 {
		// Bounds single requests (not watches, which client-go runs
		// without this timeout) so a hung connection is retried.
		cfg.Timeout = 30 * time.Second
	}
	if cfg.UserAgent == "" {
		cfg.UserAgent = "podrunner"
	}
	api, err := newAPI(cfg)
	if err != nil {
		return nil, fmt.Errorf("kubernetes client for %s: %w", cfg.Host, err)
	}
	return api, nil
}

// isTransient reports API errors worth retrying: the request may succeed
// a moment later without anyone changing anything.
func isTransient(err error) bool {
	if err == nil {
		return false
	}
	if errors.Is(err, context.Canceled) {
		return false
	}
	switch {
	case apierrors.IsServerTimeout(err), apierrors.IsTimeout(err), apierrors.IsTooManyRequests(err),
		apierrors.IsInternalError(err), apierrors.IsServiceUnavailable(err), apierrors.IsUnexpectedServerError(err):
		return true
	}
	var st apierrors.APIStatus
	if errors.As(err, &st) && st.Status().Code >= 500 {
		return true
	}
	if utilnet.IsConnectionRefused(err) || utilnet.IsConnectionReset(err) || utilnet.IsProbableEOF(err) ||
		errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, syscall.ECONNREFUSED) {
		return true
	}
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		return true
	}
	msg := err.Error()
	for _, s := range []string{"etcdserver: leader changed", "etcdserver: request timed out",
		"context deadline exceeded", "http2: client connection lost", "connection refused", "TLS handshake timeout"} {
		if strings.Contains(msg, s) {
			return true
		}
	}
	return false
}

// backoff is a doubling wait sequence, capped: apimachinery's
// wait.Backoff, waited for under a context.
type backoff struct{ steps utilwait.Backoff }

// newBackoff starts at first and doubles up to max. Steps only runs out
// when the cap is reached; wait.Backoff then keeps returning the cap.
func newBackoff(first, max time.Duration) *backoff {
	return &backoff{utilwait.Backoff{Duration: first, Factor: 2, Cap: max, Steps: math.MaxInt32}}
}

// wait sleeps for the next step or until ctx ends.
func (b *backoff) wait(ctx context.Context) error {
	t := time.NewTimer(b.steps.Step())
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}

// apiRetryAttempts bounds retries of one API call on transient errors
// (about 30 s in total with the backoff below).
const apiRetryAttempts = 8

// retryTransient runs fn until it succeeds, fails for good, ctx ends or
// the attempts are spent. what names the call for errors.
func retryTransient(ctx context.Context, what string, fn func(ctx context.Context) error) error {
	bo := newBackoff(200*time.Millisecond, 8*time.Second)
	var err error
	for attempt := 1; ; attempt++ {
		err = fn(ctx)
		if err == nil || !isTransient(err) || attempt >= apiRetryAttempts {
			break
		}
		if werr := bo.wait(ctx); werr != nil {
			return fmt.Errorf("%s: %w (gave up: %v)", what, err, werr)
		}
	}
	if err != nil {
		return fmt.Errorf("%s: %w", what, err)
	}
	return nil
}

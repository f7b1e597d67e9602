//go:build unix

package server

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/big"
	"net"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/podrunner/podrunner/internal/agent"
)

// The agent of a job pod does not read its spec from a mounted Secret: it
// starts before the job is handed to it, with only the SHA-256 of the
// runner's token in its command line, and receives the spec over TLS
// (docs/kubernetes-executor.md, "How the spec travels"):
//
//   - It makes a fresh key and self-signed certificate and prints the
//     certificate's SHA-256 as its first stdout line (FingerprintPrefix).
//     Only the container itself writes its log, so a runner that reads the
//     line through the API server (pods/log) pins the agent's certificate:
//     nobody between the runner and the pod IP can stand in for the agent.
//   - It accepts POST /v1/spec from the holder of the token whose hash it
//     was given; the pod spec (readable by anyone who may get pods) holds
//     only the hash.

// MaxSpecSize caps POST /v1/spec's body.
const MaxSpecSize = 256 << 20

// received is a spec that arrived, and whether it came on hold.
type received struct {
	spec *agent.Spec
	hold bool
}

// AwaitOptions say where the agent waits for its spec.
type AwaitOptions struct {
	// Listen is the API's address; "" means ":8765".
	Listen string
	// TokenSHA256 is the hex SHA-256 of the token the runner sends.
	TokenSHA256 string
	// Out gets the fingerprint line (the container's stdout).
	Out io.Writer
	// Listener, when set, is used instead of listening on Listen (tests).
	Listener net.Listener
}

// Await serves the agent API over TLS until a spec arrives, then runs its
// job as Run does, on the same listener, and returns Run's result.
func Await(ctx context.Context, ao AwaitOptions, opts Options) error {
	want, err := hex.DecodeString(ao.TokenSHA256)
	if err != nil || len(want) != sha256.Size {
		return fmt.Errorf("%w: --token-sha256 %q is not a hex SHA-256", ErrAgent, ao.TokenSHA256)
	}
	log := opts.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	cert, fp, err := selfSigned()
	if err != nil {
		return fmt.Errorf("%w: %w", ErrAgent, err)
	}
	ln := ao.Listener
	if ln == nil {
		addr := ao.Listen
		if addr == "" {
			addr = fmt.Sprintf(":%d", agent.DefaultPort)
		}
		if ln, err = net.Listen("tcp", addr); err != nil {
			return fmt.Errorf("%w: listen on %s for the agent API: %w", ErrAgent, addr, err)
		}
	}
	tln := tls.NewListener(ln, &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS13})

	sw := &switchHandler{}
	specs := make(chan received, 1)
	mounted, ended := make(chan struct{}), make(chan struct{})
	defer close(ended)
	sw.set(&gate{want: want, specs: specs, mounted: mounted, ended: ended, log: log})
	srv := &http.Server{
		Handler:           sw,
		ReadHeaderTimeout: 10 * time.Second,
		IdleTimeout:       2 * time.Minute,
		ErrorLog:          slog.NewLogLogger(log.Handler(), slog.LevelWarn),
	}
	served := make(chan error, 1)
	go func() { served <- srv.Serve(tln) }()
	defer func() {
		sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if err := srv.Shutdown(sctx); err != nil {
			srv.Close()
		}
		<-served
	}()
	// Listening first: a runner that read the line can connect at once.
	out := ao.Out
	if out == nil {
		out = io.Discard
	}
	fmt.Fprintf(out, "%s%x\n", agent.FingerprintPrefix, fp)
	log.Info("agent API listening, waiting for the job spec", "addr", ln.Addr().String())

	var got received
	select {
	case got = <-specs:
	case <-ctx.Done():
		return ctx.Err()
	case err := <-served:
		served <- err
		return fmt.Errorf("%w: agent API stopped: %w", ErrAgent, err)
	}
	log.Info("job spec received", "hold", got.hold)
	opts.held = got.hold
	opts.mount = func(h http.Handler) func() {
		sw.set(h)
		close(mounted)
		return func() {
			sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			if err := srv.Shutdown(sctx); err != nil {
				srv.Close()
			}
		}
	}
	return Run(ctx, got.spec, opts)
}

// switchHandler serves the handler set last.
type switchHandler struct{ h atomic.Pointer[http.Handler] }

func (s *switchHandler) set(h http.Handler) { s.h.Store(&h) }

func (s *switchHandler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	(*s.h.Load()).ServeHTTP(w, r)
}

// gate is the API before the spec: POST /v1/spec, nothing else.
type gate struct {
	want  []byte
	specs chan<- received
	// mounted is closed when the job's API replaced the gate, ended when
	// Await returns.
	mounted, ended <-chan struct{}
	log            *slog.Logger
	once           sync.Once
}

func (g *gate) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	tok, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
	sum := sha256.Sum256([]byte(tok))
	if !ok || subtle.ConstantTimeCompare(sum[:], g.want) != 1 {
		w.Header().Set("WWW-Authenticate", `Bearer realm="podrunner-agent"`)
		http.Error(w, "missing or wrong bearer token", http.StatusUnauthorized)
		return
	}
	if r.Method != http.MethodPost || r.URL.Path != "/v1/spec" {
		w.Header().Set("Retry-After", "1")
		http.Error(w, "the agent is waiting for its job spec (POST /v1/spec)", http.StatusServiceUnavailable)
		return
	}
	data, err := io.ReadAll(http.MaxBytesReader(w, r.Body, MaxSpecSize))
	if err != nil {
		http.Error(w, fmt.Sprintf("read spec: %v", err), http.StatusRequestEntityTooLarge)
		return
	}
	spec, err := agent.ParseSpec(data)
	if err == nil && spec.Token != tok {
		err = errors.New("the spec's token is not the one the request was authenticated with")
	}
	if err != nil {
		g.log.Error("job spec refused", "err", err)
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	g.once.Do(func() { g.specs <- received{spec: spec, hold: r.URL.Query().Get(agent.HoldParam) != ""} })
	// Answer once the job's API serves: the runner's next request (the
	// log) must not meet the gate's 503.
	select {
	case <-g.mounted:
	case <-g.ended:
	case <-r.Context().Done():
	}
	w.WriteHeader(http.StatusNoContent)
}

// selfSigned makes a P-256 key and a self-signed certificate for it, and
// returns the certificate's SHA-256.
func selfSigned() (tls.Certificate, []byte, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return tls.Certificate{}, nil, fmt.Errorf("generate TLS key: %w", err)
	}
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 64))
	if err != nil {
		return tls.Certificate{}, nil, fmt.Errorf("TLS serial: %w", err)
	}
	now := time.Now()
	tmpl := &x509.Certificate{
		SerialNumber: serial,
		Subject:      pkix.Name{CommonName: "podrunner-agent"},
		NotBefore:    now.Add(-time.Hour),
		// The runner pins the certificate rather than checking dates; a
		// long validity keeps clients that do check from failing a
		// long job.
		NotAfter:    now.Add(10 * 365 * 24 * time.Hour),
		KeyUsage:    x509.KeyUsageDigitalSignature,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return tls.Certificate{}, nil, fmt.Errorf("create TLS certificate: %w", err)
	}
	sum := sha256.Sum256(der)
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}, sum[:], nil
}

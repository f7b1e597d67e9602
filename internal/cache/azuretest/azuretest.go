// Package azuretest runs a real Azure Blob Storage emulator (Azurite's blob
// service, installed by hack/azurite/install) for tests: on a free port of
// the given address, with a temporary data directory, stopped at cleanup.
package azuretest

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/storage/azblob/container"
)

// Azurite's well-known development account.
const (
	AccountName = "devstoreaccount1"
	AccountKey  = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="
)

var (
	installOnce sync.Once
	installPath string
	installErr  error
)

// Binary installs Azurite through hack/azurite/install once per process
// (cached on disk across runs) and returns the path of azurite-blob.
func Binary() (string, error) {
	installOnce.Do(func() {
		root, err := repoRoot()
		if err != nil {
			installErr = err
			return
		}
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Minute)
		defer cancel()
		cmd := exec.CommandContext(ctx, filepath.Join(root, "hack", "azurite", "install"))
		cmd.Stderr = os.Stderr
		out, err := cmd.Output()
		if err != nil {
			installErr = fmt.Errorf("hack/azurite/install: %w", err)
			return
		}
		installPath = strings.TrimSpace(string(out))
	})
	return installPath, installErr
}

func repoRoot() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "hack", "azurite", "install")); err == nil {
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", errors.New("hack/azurite/install not found above the working directory")
		}
		dir = parent
	}
}

// Server is a running Azurite blob service.
type Server struct {
	// Endpoint is http://host:port: [runners.cache.azure] StorageDomain
	// for the emulator (the account is the path's first segment).
	Endpoint string
	cmd      *exec.Cmd
	done     chan struct{}
	log      *syncBuilder
}

// Start starts Azurite listening on host (an IP address) and stops it
// when t ends.
func Start(t testing.TB, host string) *Server {
	t.Helper()
	bin, err := Binary()
	if err != nil {
		t.Fatalf("azurite: %v", err)
	}
	var s *Server
	// A free port may be taken between probing and binding: retry.
	for attempt := 0; attempt < 5; attempt++ {
		s, err = start(bin, host, t.TempDir())
		if err == nil {
			break
		}
	}
	if err != nil {
		t.Fatalf("azurite: %v", err)
	}
	t.Cleanup(func() {
		s.Stop()
		if t.Failed() {
			t.Logf("azurite log:\n%s", s.Log())
		}
	})
	return s
}

type syncBuilder struct {
	mu sync.Mutex
	b  strings.Builder
}

func (w *syncBuilder) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.b.Len() < 1<<20 {
		w.b.Write(p)
	}
	return len(p), nil
}

func start(bin, host, dir string) (*Server, error) {
	l, err := net.Listen("tcp", net.JoinHostPort(host, "0"))
	if err != nil {
		return nil, fmt.Errorf("find a free port on %s: %w", host, err)
	}
	_, port, _ := net.SplitHostPort(l.Addr().String())
	l.Close()
	s := &Server{Endpoint: "http://" + net.JoinHostPort(host, port), done: make(chan struct{}), log: &syncBuilder{}}
	s.cmd = exec.Command(bin, "--blobHost", host, "--blobPort", port, "--location", dir,
		"--skipApiVersionCheck", "--disableTelemetry", "--loose")
	s.cmd.Stdout, s.cmd.Stderr = s.log, s.log
	// Dies with the test binary, even when that one crashes.
	s.cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := s.cmd.Start(); err != nil {
		return nil, fmt.Errorf("start %s: %w", bin, err)
	}
	go func() { s.cmd.Wait(); close(s.done) }()
	deadline := time.Now().Add(60 * time.Second)
	for {
		select {
		case <-s.done:
			return nil, fmt.Errorf("azurite exited at start: %s", s.Log())
		default:
		}
		resp, err := http.Get(s.Endpoint + "/" + AccountName + "?comp=list")
		if err == nil {
			resp.Body.Close()
			return s, nil
		}
		if time.Now().After(deadline) {
			s.Stop()
			return nil, fmt.Errorf("azurite on %s not ready after 60s: %v\n%s", s.Endpoint, err, s.Log())
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// Log is what the server printed.
func (s *Server) Log() string {
	s.log.mu.Lock()
	defer s.log.mu.Unlock()
	return s.log.b.String()
}

// Stop kills the server and waits for it.
func (s *Server) Stop() {
	s.cmd.Process.Kill()
	<-s.done
}

// Container returns a client of a container of the development account.
func (s *Server) Container(t testing.TB, name string) *container.Client {
	t.Helper()
	cred, err := container.NewSharedKeyCredential(AccountName, AccountKey)
	if err != nil {
		t.Fatal(err)
	}
	c, err := container.NewClientWithSharedKeyCredential(s.Endpoint+"/"+AccountName+"/"+name, cred, nil)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// CreateContainer creates a container.
func (s *Server) CreateContainer(t testing.TB, name string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if _, err := s.Container(t, name).Create(ctx, nil); err != nil {
		t.Fatalf("create container %s: %v", name, err)
	}
}

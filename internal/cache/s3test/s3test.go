// Package s3test runs a real S3-compatible server (versitygw with its
// posix backend, installed by hack/s3/install) for tests: on a free port of
// the given address, with a temporary data directory, stopped at cleanup.
package s3test

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/minio/minio-go/v7"
	"github.com/minio/minio-go/v7/pkg/credentials"
)

// Credentials of every test server (root account).
const (
	AccessKey = "AKIAPODRUNNERS3TEST"
	SecretKey = "s3test-secret-2f9c81d7"
)

var (
	installOnce sync.Once
	installPath string
	installErr  error
)

// Binary installs versitygw through hack/s3/install once per process
// (cached on disk across runs) and returns its path.
func Binary() (string, error) {
	installOnce.Do(func() {
		root, err := repoRoot()
		if err != nil {
			installErr = err
			return
		}
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Minute)
		defer cancel()
		cmd := exec.CommandContext(ctx, filepath.Join(root, "hack", "s3", "install"))
		cmd.Stderr = os.Stderr
		out, err := cmd.Output()
		if err != nil {
			installErr = fmt.Errorf("hack/s3/install: %w", err)
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
		if _, err := os.Stat(filepath.Join(dir, "hack", "s3", "install")); err == nil {
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", errors.New("hack/s3/install not found above the working directory")
		}
		dir = parent
	}
}

// Server is a running versitygw.
type Server struct {
	// Address is host:port (S3 ServerAddress; plain http).
	Address string
	// Dir is the posix backend's root: one directory per bucket.
	Dir  string
	cmd  *exec.Cmd
	done chan struct{}
	log  *syncBuilder
}

// Start starts a server listening on host (an IP address: "127.0.0.1",
// or the node IP for pods to reach it) and stops it when t ends. It fails
// the test when the server cannot be installed or started.
func Start(t testing.TB, host string) *Server {
	t.Helper()
	bin, err := Binary()
	if err != nil {
		t.Fatalf("S3 server: %v", err)
	}
	dir := t.TempDir()
	data := filepath.Join(dir, "data")
	if err := os.Mkdir(data, 0o755); err != nil {
		t.Fatal(err)
	}
	var s *Server
	// A free port may be taken between probing and binding: retry.
	for attempt := 0; attempt < 5; attempt++ {
		s, err = start(bin, host, data)
		if err == nil {
			break
		}
	}
	if err != nil {
		t.Fatalf("S3 server: %v", err)
	}
	t.Cleanup(func() {
		s.Stop()
		if t.Failed() {
			t.Logf("versitygw log:\n%s", s.Log())
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

func start(bin, host, data string) (*Server, error) {
	l, err := net.Listen("tcp", net.JoinHostPort(host, "0"))
	if err != nil {
		return nil, fmt.Errorf("find a free port on %s: %w", host, err)
	}
	addr := l.Addr().String()
	l.Close()
	s := &Server{Address: addr, Dir: data, done: make(chan struct{}), log: &syncBuilder{}}
	s.cmd = exec.Command(bin, "--port", addr, "--quiet", "posix", data)
	s.cmd.Env = append(os.Environ(), "ROOT_ACCESS_KEY="+AccessKey, "ROOT_SECRET_KEY="+SecretKey)
	s.cmd.Stdout, s.cmd.Stderr = s.log, s.log
	// Dies with the test binary, even when that one crashes.
	s.cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := s.cmd.Start(); err != nil {
		return nil, fmt.Errorf("start %s: %w", bin, err)
	}
	go func() { s.cmd.Wait(); close(s.done) }()
	deadline := time.Now().Add(30 * time.Second)
	for {
		select {
		case <-s.done:
			return nil, fmt.Errorf("versitygw exited at start: %s", s.Log())
		default:
		}
		resp, err := http.Get("http://" + addr + "/")
		if err == nil {
			resp.Body.Close()
			return s, nil
		}
		if time.Now().After(deadline) {
			s.Stop()
			return nil, fmt.Errorf("versitygw on %s not ready after 30s: %v\n%s", addr, err, s.Log())
		}
		time.Sleep(50 * time.Millisecond)
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

// Client returns a minio client of the server (root credentials).
func (s *Server) Client(t testing.TB) *minio.Client {
	t.Helper()
	c, err := minio.New(s.Address, &minio.Options{Creds: credentials.NewStaticV4(AccessKey, SecretKey, ""), Region: "us-east-1"})
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// CreateBucket creates a bucket.
func (s *Server) CreateBucket(t testing.TB, name string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := s.Client(t).MakeBucket(ctx, name, minio.MakeBucketOptions{Region: "us-east-1"}); err != nil {
		t.Fatalf("create bucket %s: %v", name, err)
	}
}

// Objects lists the object names of a bucket (all of them, recursively).
func (s *Server) Objects(t testing.TB, bucket string) []string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var names []string
	for o := range s.Client(t).ListObjects(ctx, bucket, minio.ListObjectsOptions{Recursive: true}) {
		if o.Err != nil {
			t.Fatalf("list %s: %v", bucket, o.Err)
		}
		names = append(names, o.Key+"="+strconv.FormatInt(o.Size, 10))
	}
	return names
}

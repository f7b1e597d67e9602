package cache

import (
	"context"
	"crypto/sha256"
	"errors"
	"io"
	"math/rand/v2"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/podrunner/podrunner/internal/cache/s3test"
	"github.com/podrunner/podrunner/internal/job"
)

func newTestS3(t *testing.T, srv *s3test.Server, bucket string, mod func(*S3Config)) *S3 {
	t.Helper()
	c := S3Config{CacheS3: job.CacheS3{ServerAddress: srv.Address, BucketName: bucket, Insecure: true,
		AccessKey: s3test.AccessKey, SecretKey: s3test.SecretKey, BucketLocation: "us-east-1"}}
	if mod != nil {
		mod(&c)
	}
	s, err := NewS3(c)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func TestNewS3Settings(t *testing.T) {
	ok := job.CacheS3{BucketName: "b", AccessKey: "a", SecretKey: "s"}
	for _, tc := range []struct {
		name string
		mod  func(*S3Config)
		want string // error substring; "" ok
	}{
		{"defaults", func(*S3Config) {}, ""},
		{"scheme stripped", func(c *S3Config) { c.ServerAddress = "http://127.0.0.1:9000/" }, ""},
		{"path", func(c *S3Config) { c.ServerAddress = "host/path" }, "host[:port]"},
		{"iam", func(c *S3Config) { c.AuthenticationType = "iam" }, ""},
		{"unknown auth", func(c *S3Config) { c.AuthenticationType = "oauth" }, "unknown"},
		{"no secret", func(c *S3Config) { c.SecretKey = "" }, "SecretKey"},
		{"small parts", func(c *S3Config) { c.PartSize = 1 << 20 }, "5 MiB"},
	} {
		c := S3Config{CacheS3: ok}
		tc.mod(&c)
		s, err := NewS3(c)
		switch {
		case tc.want == "" && err != nil:
			t.Errorf("%s: %v", tc.name, err)
		case tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)):
			t.Errorf("%s: got %v, want an error about %q", tc.name, err, tc.want)
		case tc.want == "" && tc.name == "scheme stripped" && s.endpoint != "http://127.0.0.1:9000":
			t.Errorf("%s: endpoint %q", tc.name, s.endpoint)
		}
	}
}

func TestS3Store(t *testing.T) {
	srv := s3test.Start(t, "127.0.0.1")
	srv.CreateBucket(t, "cache")
	ctx := context.Background()
	s := newTestS3(t, srv, "cache", nil)

	t.Run("archive round trip", func(t *testing.T) {
		testArchiveRoundTrip(t, s, "runner/abc/project/1/key")
	})
	t.Run("missing key", func(t *testing.T) {
		if _, err := s.Get(ctx, "project/1/none"); !errors.Is(err, ErrNotFound) {
			t.Errorf("got %v, want ErrNotFound", err)
		}
	})
	t.Run("missing bucket", func(t *testing.T) {
		nb := newTestS3(t, srv, "no-such-bucket", nil)
		_, err := nb.Get(ctx, "k")
		if err == nil || errors.Is(err, ErrNotFound) || !strings.Contains(err.Error(), `bucket "no-such-bucket" does not exist`) {
			t.Errorf("get: %v", err)
		}
		err = nb.Put(ctx, "k", strings.NewReader("x"))
		if err == nil || !strings.Contains(err.Error(), `bucket "no-such-bucket" does not exist`) {
			t.Errorf("put: %v", err)
		}
	})
	t.Run("wrong secret", func(t *testing.T) {
		bad := newTestS3(t, srv, "cache", func(c *S3Config) { c.SecretKey = "wrong" })
		err := bad.Put(ctx, "k", strings.NewReader("x"))
		if err == nil || !strings.Contains(err.Error(), "SecretKey") {
			t.Errorf("put: %v", err)
		}
	})
	t.Run("broken stream stores nothing", func(t *testing.T) {
		small := newTestS3(t, srv, "cache", func(c *S3Config) { c.PartSize = 5 << 20 })
		r := io.MultiReader(io.LimitReader(newRandReader(1), 12<<20), errReader{errors.New("archive broke")})
		if err := small.Put(ctx, "broken", r); err == nil || !strings.Contains(err.Error(), "archive broke") {
			t.Fatalf("put: %v", err)
		}
		if _, err := s.Get(ctx, "broken"); !errors.Is(err, ErrNotFound) {
			t.Errorf("a failed upload must leave no object: %v", err)
		}
	})
}

// TestS3StreamedUploadBoundedMemory uploads and downloads 200 MiB that
// never exist in memory as a whole, and checks the heap stays far below.
func TestS3StreamedUploadBoundedMemory(t *testing.T) {
	if testing.Short() {
		t.Skip("moves 400 MiB through a local S3 server")
	}
	srv := s3test.Start(t, "127.0.0.1")
	srv.CreateBucket(t, "big")
	s := newTestS3(t, srv, "big", nil)
	ctx := context.Background()
	const size = 200 << 20

	peak := watchHeap(t)
	h := sha256.New()
	if err := s.Put(ctx, "big/object", io.TeeReader(io.LimitReader(newRandReader(7), size), h)); err != nil {
		t.Fatal(err)
	}
	sum := h.Sum(nil)
	rc, err := s.Get(ctx, "big/object")
	if err != nil {
		t.Fatal(err)
	}
	h2 := sha256.New()
	n, err := io.Copy(h2, rc)
	rc.Close()
	if err != nil {
		t.Fatal(err)
	}
	if n != size || string(h2.Sum(nil)) != string(sum) {
		t.Fatalf("downloaded %d bytes, checksum match %v", n, string(h2.Sum(nil)) == string(sum))
	}
	if p := peak(); p > 96<<20 {
		t.Errorf("heap peaked at %d MiB moving %d MiB: the transfer is not streamed", p>>20, size>>20)
	} else {
		t.Logf("heap peak %d MiB for %d MiB up and down", p>>20, size>>20)
	}
}

// watchHeap samples the heap in use until the returned function is called,
// which returns the peak.
func watchHeap(t *testing.T) func() uint64 {
	runtime.GC()
	var (
		mu   sync.Mutex
		peak uint64
		wg   sync.WaitGroup
	)
	stop := make(chan struct{})
	wg.Add(1)
	go func() {
		defer wg.Done()
		tick := time.NewTicker(5 * time.Millisecond)
		defer tick.Stop()
		var ms runtime.MemStats
		for {
			runtime.ReadMemStats(&ms)
			mu.Lock()
			peak = max(peak, ms.HeapInuse)
			mu.Unlock()
			select {
			case <-stop:
				return
			case <-tick.C:
			}
		}
	}()
	var once sync.Once
	done := func() uint64 {
		once.Do(func() { close(stop); wg.Wait() })
		mu.Lock()
		defer mu.Unlock()
		return peak
	}
	t.Cleanup(func() { done() })
	return done
}

// randReader is an endless incompressible stream.
type randReader struct{ r *rand.ChaCha8 }

func newRandReader(seed byte) *randReader {
	var s [32]byte
	s[0] = seed
	return &randReader{rand.NewChaCha8(s)}
}

func (r *randReader) Read(p []byte) (int, error) { return r.r.Read(p) }

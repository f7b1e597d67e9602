package cache

import (
	"context"
	"errors"
	"io"
	"strings"
	"testing"

	"github.com/fsouza/fake-gcs-server/fakestorage"
	"google.golang.org/api/option"
)

// startGCS runs fake-gcs-server's library (a real GCS JSON API server over
// HTTP on loopback) with the given buckets.
func startGCS(t *testing.T, buckets ...string) *fakestorage.Server {
	t.Helper()
	srv, err := fakestorage.NewServerWithOptions(fakestorage.Options{Scheme: "http", Host: "127.0.0.1", Port: 0})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(srv.Stop)
	for _, b := range buckets {
		srv.CreateBucketWithOpts(fakestorage.CreateBucketOpts{Name: b})
	}
	return srv
}

func newTestGCS(t *testing.T, srv *fakestorage.Server, bucket string) *GCS {
	t.Helper()
	s, err := NewGCS(context.Background(), GCSConfig{BucketName: bucket, Options: []option.ClientOption{
		option.WithEndpoint(srv.URL() + "/storage/v1/"), option.WithoutAuthentication(),
	}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

func TestNewGCSSettings(t *testing.T) {
	for _, tc := range []struct {
		name string
		c    GCSConfig
		want string
	}{
		{"no bucket", GCSConfig{Credentials: []byte("{}")}, "BucketName"},
		{"half key", GCSConfig{BucketName: "b", AccessID: "sa@p.iam.gserviceaccount.com"}, "AccessID and PrivateKey"},
		{"credentials not JSON", GCSConfig{BucketName: "b", Credentials: []byte("not json")}, "CredentialsFile"},
		{"credentials of no known type", GCSConfig{BucketName: "b", Credentials: []byte(`{"type":"api_key"}`)}, `type "api_key"`},
	} {
		_, err := NewGCS(context.Background(), tc.c)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: got %v, want an error about %q", tc.name, err, tc.want)
		}
	}
}

func TestGCSStore(t *testing.T) {
	srv := startGCS(t, "cache")
	ctx := context.Background()
	s := newTestGCS(t, srv, "cache")

	t.Run("archive round trip", func(t *testing.T) {
		testArchiveRoundTrip(t, s, "runner/abc/project/1/key")
	})
	t.Run("object name", func(t *testing.T) {
		if err := s.Put(ctx, "runner/abc/project/1/named", strings.NewReader("zip")); err != nil {
			t.Fatal(err)
		}
		if _, err := srv.GetObject("cache", "runner/abc/project/1/named"); err != nil {
			t.Errorf("object runner/abc/project/1/named: %v", err)
		}
		if got := s.Describe("k"); got != "gs://cache/k" {
			t.Errorf("Describe = %q", got)
		}
	})
	t.Run("missing key", func(t *testing.T) {
		if _, err := s.Get(ctx, "project/1/none"); !errors.Is(err, ErrNotFound) {
			t.Errorf("got %v, want ErrNotFound", err)
		}
	})
	t.Run("missing bucket", func(t *testing.T) {
		nb := newTestGCS(t, srv, "no-such-bucket")
		_, err := nb.Get(ctx, "k")
		if err == nil || errors.Is(err, ErrNotFound) || !strings.Contains(err.Error(), `bucket "no-such-bucket" does not exist`) {
			t.Errorf("get: %v", err)
		}
		err = nb.Put(ctx, "k", strings.NewReader("x"))
		if err == nil || !strings.Contains(err.Error(), `BucketName`) {
			t.Errorf("put: %v", err)
		}
	})
	t.Run("broken stream stores nothing", func(t *testing.T) {
		r := io.MultiReader(io.LimitReader(newRandReader(1), 12<<20), errReader{errors.New("archive broke")})
		if err := s.Put(ctx, "broken", r); err == nil || !strings.Contains(err.Error(), "archive broke") {
			t.Fatalf("put: %v", err)
		}
		if _, err := s.Get(ctx, "broken"); !errors.Is(err, ErrNotFound) {
			t.Errorf("a failed upload must leave no object: %v", err)
		}
	})
}

// TestGCSEmulatorHost: the helper in a job reaches an emulator through the
// client library's own STORAGE_EMULATOR_HOST, without options.
func TestGCSEmulatorHost(t *testing.T) {
	srv := startGCS(t, "cache")
	t.Setenv("STORAGE_EMULATOR_HOST", strings.TrimPrefix(srv.URL(), "http://"))
	s, err := NewGCS(context.Background(), GCSConfig{BucketName: "cache"})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	testArchiveRoundTrip(t, s, "project/1/key")
	if _, err := srv.GetObject("cache", "project/1/key"); err != nil {
		t.Errorf("object project/1/key: %v", err)
	}
}

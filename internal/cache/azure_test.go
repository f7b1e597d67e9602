package cache

import (
	"context"
	"crypto/sha256"
	"errors"
	"io"
	"strings"
	"testing"

	"github.com/podrunner/podrunner/internal/cache/azuretest"
	"github.com/podrunner/podrunner/internal/job"
)

func newTestAzure(t *testing.T, srv *azuretest.Server, containerName string, mod func(*AzureConfig)) *Azure {
	t.Helper()
	c := AzureConfig{CacheAzure: job.CacheAzure{AccountName: azuretest.AccountName, AccountKey: azuretest.AccountKey,
		ContainerName: containerName, StorageDomain: srv.Endpoint}}
	if mod != nil {
		mod(&c)
	}
	s, err := NewAzure(c)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func TestAzureContainerURL(t *testing.T) {
	for _, tc := range []struct {
		domain, want, err string
	}{
		{"", "https://acct.blob.core.windows.net/cache", ""},
		{"blob.core.chinacloudapi.cn", "https://acct.blob.core.chinacloudapi.cn/cache", ""},
		{"http://127.0.0.1:10000", "http://127.0.0.1:10000/acct/cache", ""},
		{"http://127.0.0.1:10000/", "http://127.0.0.1:10000/acct/cache", ""},
		{"blob.core.windows.net/x", "", "must be a domain"},
		{"http://", "", "not a URL"},
	} {
		got, err := azureContainerURL(job.CacheAzure{AccountName: "acct", ContainerName: "cache", StorageDomain: tc.domain})
		switch {
		case tc.err == "" && (err != nil || got != tc.want):
			t.Errorf("%q: got %q, %v; want %q", tc.domain, got, err, tc.want)
		case tc.err != "" && (err == nil || !strings.Contains(err.Error(), tc.err)):
			t.Errorf("%q: got %v, want an error about %q", tc.domain, err, tc.err)
		}
	}
}

func TestNewAzureSettings(t *testing.T) {
	for _, tc := range []struct {
		name string
		c    job.CacheAzure
		want string
	}{
		{"no container", job.CacheAzure{AccountName: "a", AccountKey: "a2V5"}, "ContainerName"},
		{"no account", job.CacheAzure{ContainerName: "c", AccountKey: "a2V5"}, "AccountName"},
		{"key not base64", job.CacheAzure{AccountName: "a", ContainerName: "c", AccountKey: "not base64!"}, "AccountKey"},
	} {
		_, err := NewAzure(AzureConfig{CacheAzure: tc.c})
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: got %v, want an error about %q", tc.name, err, tc.want)
		}
	}
}

func TestAzureStore(t *testing.T) {
	srv := azuretest.Start(t, "127.0.0.1")
	srv.CreateContainer(t, "cache")
	ctx := context.Background()
	s := newTestAzure(t, srv, "cache", nil)

	t.Run("archive round trip", func(t *testing.T) {
		testArchiveRoundTrip(t, s, "runner/abc/project/1/key")
	})
	t.Run("object name", func(t *testing.T) {
		if err := s.Put(ctx, "runner/abc/project/1/named", strings.NewReader("zip")); err != nil {
			t.Fatal(err)
		}
		// The blob is where GitLab Runner's adapter puts it.
		if _, err := srv.Container(t, "cache").NewBlobClient("runner/abc/project/1/named").GetProperties(ctx, nil); err != nil {
			t.Errorf("blob runner/abc/project/1/named: %v", err)
		}
		if got, want := s.Describe("k"), srv.Endpoint+"/"+azuretest.AccountName+"/cache/k"; got != want {
			t.Errorf("Describe = %q, want %q", got, want)
		}
	})
	t.Run("missing key", func(t *testing.T) {
		if _, err := s.Get(ctx, "project/1/none"); !errors.Is(err, ErrNotFound) {
			t.Errorf("got %v, want ErrNotFound", err)
		}
	})
	t.Run("missing container", func(t *testing.T) {
		nc := newTestAzure(t, srv, "no-such-container", nil)
		_, err := nc.Get(ctx, "k")
		if err == nil || errors.Is(err, ErrNotFound) || !strings.Contains(err.Error(), "container does not exist") {
			t.Errorf("get: %v", err)
		}
		err = nc.Put(ctx, "k", strings.NewReader("x"))
		if err == nil || !strings.Contains(err.Error(), "ContainerName") {
			t.Errorf("put: %v", err)
		}
	})
	t.Run("wrong key", func(t *testing.T) {
		bad := newTestAzure(t, srv, "cache", func(c *AzureConfig) { c.AccountKey = "d3Jvbmcga2V5" })
		err := bad.Put(ctx, "k", strings.NewReader("x"))
		if err == nil || !strings.Contains(err.Error(), "AccountKey") || strings.Contains(err.Error(), "d3Jvbmcga2V5") {
			t.Errorf("put: %v", err)
		}
		_, err = bad.Get(ctx, "runner/abc/project/1/named")
		if err == nil || errors.Is(err, ErrNotFound) || !strings.Contains(err.Error(), "AccountKey") {
			t.Errorf("get: %v", err)
		}
	})
	t.Run("broken stream stores nothing", func(t *testing.T) {
		r := io.MultiReader(io.LimitReader(newRandReader(1), 10<<20), errReader{errors.New("archive broke")})
		if err := s.Put(ctx, "broken", r); err == nil || !strings.Contains(err.Error(), "archive broke") {
			t.Fatalf("put: %v", err)
		}
		if _, err := s.Get(ctx, "broken"); !errors.Is(err, ErrNotFound) {
			t.Errorf("a failed upload must leave no blob: %v", err)
		}
	})
	t.Run("broken stream keeps the previous blob", func(t *testing.T) {
		if err := s.Put(ctx, "kept", strings.NewReader("first")); err != nil {
			t.Fatal(err)
		}
		r := io.MultiReader(io.LimitReader(newRandReader(2), 10<<20), errReader{errors.New("archive broke")})
		if err := s.Put(ctx, "kept", r); err == nil {
			t.Fatal("put of a broken stream succeeded")
		}
		rc, err := s.Get(ctx, "kept")
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(rc)
		rc.Close()
		if string(b) != "first" {
			t.Errorf("blob is %d bytes, want the previous one", len(b))
		}
	})
}

// TestAzureStreamedBoundedMemory moves 200 MiB up and down through
// Azurite (another process) and checks the heap stays far below.
func TestAzureStreamedBoundedMemory(t *testing.T) {
	if testing.Short() {
		t.Skip("moves 400 MiB through Azurite")
	}
	srv := azuretest.Start(t, "127.0.0.1")
	srv.CreateContainer(t, "big")
	s := newTestAzure(t, srv, "big", nil)
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

package presign

import (
	"context"
	"crypto/sha256"
	"errors"
	"io"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"cloud.google.com/go/storage"
	"github.com/fsouza/fake-gcs-server/fakestorage"

	"github.com/podrunner/podrunner/internal/cache"
	"github.com/podrunner/podrunner/internal/cache/azuretest"
	"github.com/podrunner/podrunner/internal/cache/cachetest"
	"github.com/podrunner/podrunner/internal/cache/s3test"
	"github.com/podrunner/podrunner/internal/config"
	"github.com/podrunner/podrunner/internal/job"
)

// signed is a cache.Store that goes through pre-signed URLs exactly as
// the job's helper does: each Get and Put signs a URL and hands it to
// cache.HTTP (plain net/http).
type signed struct {
	t      testing.TB
	signer job.CacheURLSigner
	// urls are the URLs handed out, to check no message repeats one.
	mu   sync.Mutex
	urls []string
}

func (s *signed) Describe(name string) string { return name }

func (s *signed) Get(ctx context.Context, name string) (io.ReadCloser, error) {
	u, err := s.signer.GetURL(ctx, name, time.Hour)
	if err != nil {
		return nil, err
	}
	s.keep(u)
	return cache.NewHTTP(time.Minute, nil).Get(ctx, u)
}

func (s *signed) Put(ctx context.Context, name string, r io.Reader) error {
	u, h, err := s.signer.PutURL(ctx, name, time.Hour)
	if err != nil {
		return err
	}
	s.keep(u)
	return cache.NewHTTP(time.Minute, h).Put(ctx, u, r)
}

func (s *signed) keep(u string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.urls = append(s.urls, u)
}

// noSignature fails when err repeats the query (the signature) of a URL
// handed out.
func (s *signed) noSignature(err error) {
	s.t.Helper()
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, raw := range s.urls {
		u, _ := url.Parse(raw)
		if err != nil && u.RawQuery != "" && strings.Contains(err.Error(), u.RawQuery[len(u.RawQuery)/2:]) {
			s.t.Errorf("an error shows the signed URL: %v", err)
		}
	}
}

func TestFromConfig(t *testing.T) {
	if FromConfig(nil) != nil || FromConfig(&config.Cache{}) != nil {
		t.Error("no [runners.cache] Type must mean no remote store")
	}
	s := FromConfig(&config.Cache{Type: "s3", Path: "p", Shared: true, MaxUploadedArchiveSize: 5, S3: &config.CacheS3{
		ServerAddress: "h:1", BucketName: "b", BucketLocation: "l", AccessKey: "a", SecretKey: "s"}})
	if s == nil || s.Err != nil || s.Signer == nil || s.Type != "s3" || s.Path != "p" || !s.Shared || s.MaxUploadedArchiveSize != 5 {
		t.Errorf("got %+v", s)
	}
	if g := FromConfig(&config.Cache{Type: "swift"}); g == nil || g.Err == nil || !strings.Contains(g.Err.Error(), "not supported") {
		t.Errorf("an unsupported type must be kept with its error: %+v", g)
	}
}

// TestNewSettings: settings that cannot work are refused with the
// config.toml key to change.
func TestNewSettings(t *testing.T) {
	s3 := func(f func(*config.CacheS3)) *config.Cache {
		c := &config.CacheS3{BucketName: "b", AccessKey: "a", SecretKey: "s"}
		f(c)
		return &config.Cache{Type: "s3", S3: c}
	}
	for _, tc := range []struct {
		name string
		c    *config.Cache
		want string // substring of the error; "" no error
	}{
		{"ok", s3(func(*config.CacheS3) {}), ""},
		{"access-key", s3(func(c *config.CacheS3) { c.AuthenticationType = "access-key" }), ""},
		{"scheme in address", s3(func(c *config.CacheS3) { c.ServerAddress = "http://127.0.0.1:9000/" }), ""},
		{"path in address", s3(func(c *config.CacheS3) { c.ServerAddress = "host/path" }), "host[:port]"},
		{"no bucket", s3(func(c *config.CacheS3) { c.BucketName = "" }), "BucketName"},
		{"iam", s3(func(c *config.CacheS3) { c.AuthenticationType = "iam"; c.AccessKey, c.SecretKey = "", "" }), ""},
		{"iam ignores keys", s3(func(c *config.CacheS3) { c.AuthenticationType = "IAM" }), ""},
		// GitLab Runner: without keys the default is iam.
		{"implicit iam", s3(func(c *config.CacheS3) { c.AccessKey, c.SecretKey = "", "" }), ""},
		{"access-key without keys", s3(func(c *config.CacheS3) { c.AuthenticationType = "access-key"; c.AccessKey = "" }), "AccessKey and SecretKey"},
		{"no secret", s3(func(c *config.CacheS3) { c.SecretKey = "" }), "SecretKey"},
		{"unknown auth", s3(func(c *config.CacheS3) { c.AuthenticationType = "oauth" }), "unknown"},
		{"s3 none", &config.Cache{Type: "s3"}, "[runners.cache.s3] BucketName"},
		{"unknown type", &config.Cache{Type: "swift"}, "not supported"},
		{"azure", &config.Cache{Type: "azure", Azure: &config.CacheAzure{AccountName: "a", AccountKey: "a2V5", ContainerName: "c"}}, ""},
		{"azure no container", &config.Cache{Type: "azure", Azure: &config.CacheAzure{AccountName: "a", AccountKey: "a2V5"}}, "[runners.cache.azure] AccountName and ContainerName"},
		{"azure none", &config.Cache{Type: "azure"}, "[runners.cache.azure]"},
		{"azure key not base64", &config.Cache{Type: "azure", Azure: &config.CacheAzure{AccountName: "a", AccountKey: "not base64!", ContainerName: "c"}}, "AccountKey"},
		{"azure domain with path", &config.Cache{Type: "azure", Azure: &config.CacheAzure{AccountName: "a", AccountKey: "a2V5", ContainerName: "c", StorageDomain: "blob.core.windows.net/x"}}, "must be a domain"},
		{"azure emulator not a URL", &config.Cache{Type: "azure", Azure: &config.CacheAzure{AccountName: "a", AccountKey: "a2V5", ContainerName: "c", StorageDomain: "http://"}}, "not a URL"},
		{"gcs key not PEM", &config.Cache{Type: "gcs", GCS: &config.CacheGCS{BucketName: "b", AccessID: "x@y", PrivateKey: "pem"}}, "the private key is not PEM"},
		{"gcs no bucket", &config.Cache{Type: "gcs", GCS: &config.CacheGCS{}}, "[runners.cache.gcs] BucketName"},
		{"gcs half key", &config.Cache{Type: "gcs", GCS: &config.CacheGCS{BucketName: "b", AccessID: "x@y"}}, "AccessID and PrivateKey"},
		{"gcs missing file", &config.Cache{Type: "gcs", GCS: &config.CacheGCS{BucketName: "b", CredentialsFile: "/nonexistent/key.json"}}, "[runners.cache.gcs] CredentialsFile"},
	} {
		_, err := New(t.Context(), tc.c)
		switch {
		case tc.want == "" && err != nil:
			t.Errorf("%s: %v", tc.name, err)
		case tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)):
			t.Errorf("%s: got %v, want an error about %q", tc.name, err, tc.want)
		}
	}
}

func TestAzureServiceURL(t *testing.T) {
	for _, tc := range []struct{ domain, want string }{
		{"", "https://acct.blob.core.windows.net"},
		{"blob.core.chinacloudapi.cn", "https://acct.blob.core.chinacloudapi.cn"},
		{"http://127.0.0.1:10000", "http://127.0.0.1:10000/acct"},
		{"http://127.0.0.1:10000/", "http://127.0.0.1:10000/acct"},
	} {
		got, err := azureServiceURL(config.CacheAzure{AccountName: "acct", StorageDomain: tc.domain})
		if err != nil || got != tc.want {
			t.Errorf("%q: got %q, %v; want %q", tc.domain, got, err, tc.want)
		}
	}
}

func newS3(t *testing.T, srv *s3test.Server, bucket string, mod func(*config.CacheS3)) *signed {
	t.Helper()
	c := config.CacheS3{ServerAddress: srv.Address, BucketName: bucket, Insecure: true,
		AccessKey: s3test.AccessKey, SecretKey: s3test.SecretKey, BucketLocation: "us-east-1"}
	if mod != nil {
		mod(&c)
	}
	s, err := NewS3(S3Config{CacheS3: c})
	if err != nil {
		t.Fatal(err)
	}
	return &signed{t: t, signer: s}
}

func TestS3PreSigned(t *testing.T) {
	srv := s3test.Start(t, "127.0.0.1")
	srv.CreateBucket(t, "cache")
	ctx := t.Context()
	s := newS3(t, srv, "cache", nil)
	cachetest.RoundTrip(t, s, "runner/abc/project/1/key")

	t.Run("missing bucket", func(t *testing.T) {
		nb := newS3(t, srv, "no-such-bucket", nil)
		err := nb.Put(ctx, "k", strings.NewReader("x"))
		if err == nil || !strings.Contains(err.Error(), "NoSuchBucket") || !strings.Contains(err.Error(), "[runners.cache.s3]") {
			t.Errorf("put: %v", err)
		}
		nb.noSignature(err)
	})
	t.Run("wrong secret", func(t *testing.T) {
		bad := newS3(t, srv, "cache", func(c *config.CacheS3) { c.SecretKey = "wrong" })
		err := bad.Put(ctx, "k", strings.NewReader("x"))
		if err == nil || !strings.Contains(err.Error(), "403") || !strings.Contains(err.Error(), "S3 refused") || !strings.Contains(err.Error(), "[runners.cache.s3]") {
			t.Errorf("put: %v", err)
		}
		bad.noSignature(err)
		_, err = bad.Get(ctx, "runner/abc/project/1/key")
		if err == nil || errors.Is(err, cache.ErrNotFound) || !strings.Contains(err.Error(), "S3 refused") {
			t.Errorf("get: %v", err)
		}
	})
	t.Run("lifetime bounded", func(t *testing.T) {
		u, err := s.signer.GetURL(ctx, "k", 30*24*time.Hour)
		if err != nil {
			t.Fatal(err)
		}
		pu, _ := url.Parse(u)
		if got := pu.Query().Get("X-Amz-Expires"); got != "604800" {
			t.Errorf("X-Amz-Expires %q, want 604800 (7 days, SigV4's maximum)", got)
		}
	})
}

// TestS3IAMWebIdentity: AuthenticationType = "iam" takes the runner's
// credentials from the environment chain, here a web identity token file
// exchanged at STS as on EKS with IRSA; the URLs signed with them work.
func TestS3IAMWebIdentity(t *testing.T) {
	srv := s3test.Start(t, "127.0.0.1")
	srv.CreateBucket(t, "cache")
	sts := s3test.StartSTS(t, "arn:aws:iam::123456789012:role/ci-cache", "irsa-token-1")
	for _, k := range []string{"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_ACCESS_KEY", "AWS_SECRET_KEY", "AWS_PROFILE"} {
		t.Setenv(k, "")
		os.Unsetenv(k)
	}
	t.Setenv("AWS_SHARED_CREDENTIALS_FILE", "/nonexistent")
	for k, v := range sts.Env() {
		t.Setenv(k, v)
	}
	iam := func(c *config.CacheS3) { c.AuthenticationType = "iam"; c.AccessKey, c.SecretKey = "", "" }

	s := newS3(t, srv, "cache", iam)
	cachetest.RoundTrip(t, s, "runner/abc/project/1/iam")
	if sts.Calls() == 0 {
		t.Error("the credentials did not come from STS")
	}
	// A token STS refuses: signing fails and says where the credentials
	// come from.
	if err := os.WriteFile(sts.TokenFile, []byte("stolen"), 0o600); err != nil {
		t.Fatal(err)
	}
	bad := newS3(t, srv, "cache", iam)
	_, _, err := bad.signer.PutURL(t.Context(), "k", time.Hour)
	if err == nil || !strings.Contains(err.Error(), "AWS_WEB_IDENTITY_TOKEN_FILE") {
		t.Errorf("sign with a refused token: %v", err)
	}
}

func newAzure(t *testing.T, srv *azuretest.Server, containerName, key string) *signed {
	t.Helper()
	s, err := NewAzure(AzureConfig{CacheAzure: config.CacheAzure{AccountName: azuretest.AccountName, AccountKey: key,
		ContainerName: containerName, StorageDomain: srv.Endpoint}})
	if err != nil {
		t.Fatal(err)
	}
	return &signed{t: t, signer: s}
}

// TestAzureSAS: service SAS URLs from the account key, checked by Azurite.
func TestAzureSAS(t *testing.T) {
	srv := azuretest.Start(t, "127.0.0.1")
	srv.CreateContainer(t, "cache")
	ctx := t.Context()
	s := newAzure(t, srv, "cache", azuretest.AccountKey)
	cachetest.RoundTrip(t, s, "runner/abc/project/1/key")

	t.Run("missing container", func(t *testing.T) {
		nc := newAzure(t, srv, "no-such-container", azuretest.AccountKey)
		err := nc.Put(ctx, "k", strings.NewReader("x"))
		if err == nil || !strings.Contains(err.Error(), "ContainerNotFound") || !strings.Contains(err.Error(), "[runners.cache.azure]") {
			t.Errorf("put: %v", err)
		}
		nc.noSignature(err)
	})
	t.Run("wrong key", func(t *testing.T) {
		bad := newAzure(t, srv, "cache", "d3Jvbmcta2V5LXdyb25nLWtleQ==")
		err := bad.Put(ctx, "k", strings.NewReader("x"))
		if err == nil || !strings.Contains(err.Error(), "403") || !strings.Contains(err.Error(), "Azure Blob Storage refused") {
			t.Errorf("put: %v", err)
		}
		bad.noSignature(err)
	})
	t.Run("read-only URL cannot write", func(t *testing.T) {
		u, err := s.signer.GetURL(ctx, "ro", time.Hour)
		if err != nil {
			t.Fatal(err)
		}
		err = cache.NewHTTP(time.Minute, http.Header{"X-Ms-Blob-Type": {"BlockBlob"}}).Put(ctx, u, strings.NewReader("x"))
		if err == nil || !strings.Contains(err.Error(), "403") {
			t.Errorf("a PUT through a GET URL: %v", err)
		}
	})
}

// startGCS runs fake-gcs-server's library on loopback; it serves signed
// URLs' PUT and GET /bucket/object on its public host (it does not check
// signatures).
func startGCS(t *testing.T, buckets ...string) *fakestorage.Server {
	t.Helper()
	srv, err := fakestorage.NewServerWithOptions(fakestorage.Options{Scheme: "http", Host: "127.0.0.1", Port: 0, PublicHost: "127.0.0.1"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(srv.Stop)
	for _, b := range buckets {
		srv.CreateBucketWithOpts(fakestorage.CreateBucketOpts{Name: b})
	}
	return srv
}

func newGCS(t *testing.T, srv *fakestorage.Server, c config.CacheGCS) *signed {
	t.Helper()
	s, err := NewGCS(t.Context(), GCSConfig{CacheGCS: c, Endpoint: srv.URL()})
	if err != nil {
		t.Fatal(err)
	}
	return &signed{t: t, signer: s}
}

func TestGCSSignedURLs(t *testing.T) {
	srv := startGCS(t, "cache")
	key := benchKey(t)
	s := newGCS(t, srv, config.CacheGCS{BucketName: "cache", AccessID: "ci@p.iam.gserviceaccount.com", PrivateKey: key})
	cachetest.RoundTrip(t, s, "runner/abc/project/1/key")

	u, err := s.signer.GetURL(t.Context(), "a/b", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	pu, _ := url.Parse(u)
	if q := pu.Query(); q.Get("X-Goog-Algorithm") != "GOOG4-RSA-SHA256" || q.Get("X-Goog-Signature") == "" || !strings.HasPrefix(q.Get("X-Goog-Credential"), "ci@p.iam.gserviceaccount.com/") {
		t.Errorf("not a V4 signed URL of the service account: %s", pu.Query())
	}

	t.Run("credentials file", func(t *testing.T) {
		f := filepath.Join(t.TempDir(), "key.json")
		body := `{"type":"service_account","client_email":"file@p.iam.gserviceaccount.com","private_key":` + quoteJSON(key) + `}`
		if err := os.WriteFile(f, []byte(body), 0o600); err != nil {
			t.Fatal(err)
		}
		fs := newGCS(t, srv, config.CacheGCS{BucketName: "cache", CredentialsFile: f})
		cachetest.RoundTrip(t, fs, "project/1/file")
		if err := os.WriteFile(f, []byte(`{"type":"authorized_user"}`), 0o600); err != nil {
			t.Fatal(err)
		}
		if _, err := NewGCS(t.Context(), GCSConfig{CacheGCS: config.CacheGCS{BucketName: "cache", CredentialsFile: f}}); err == nil || !strings.Contains(err.Error(), "not a service account key") {
			t.Errorf("an authorized_user file: %v", err)
		}
	})
	t.Run("missing bucket", func(t *testing.T) {
		nb := newGCS(t, srv, config.CacheGCS{BucketName: "no-such-bucket", AccessID: "ci@p", PrivateKey: key})
		err := nb.Put(t.Context(), "k", strings.NewReader("x"))
		if err == nil || !strings.Contains(err.Error(), "404") || !strings.Contains(err.Error(), "[runners.cache.gcs]") {
			t.Errorf("put: %v", err)
		}
		nb.noSignature(err)
	})
}

func quoteJSON(s string) string {
	r := strings.NewReplacer(`\`, `\\`, `"`, `\"`, "\n", `\n`)
	return `"` + r.Replace(s) + `"`
}

// TestPreSignedBoundedMemory moves 200 MiB up and down through S3 URLs
// that never exist in memory as a whole: the heap stays far below.
func TestPreSignedBoundedMemory(t *testing.T) {
	if testing.Short() {
		t.Skip("moves 400 MiB through a local S3 server")
	}
	srv := s3test.Start(t, "127.0.0.1")
	srv.CreateBucket(t, "big")
	s := newS3(t, srv, "big", nil)
	ctx := t.Context()
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
	if p := peak(); p > 32<<20 {
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

// The GCS signer makes the URL the client library makes for the same
// moment, key and object, byte for byte.
func TestGCSSignsAsTheClientLibrary(t *testing.T) {
	key := benchKey(t)
	for _, tc := range []struct{ host, object string }{
		{"", "runner/abc/project/1/key"},
		{"127.0.0.1:4443", "project/1/plain"},
		{"", "project/1/a key with spaces+and%signs/ü"},
	} {
		g, err := NewGCS(t.Context(), GCSConfig{CacheGCS: config.CacheGCS{BucketName: "cache", AccessID: "ci@p.iam.gserviceaccount.com", PrivateKey: key},
			Endpoint: map[bool]string{true: "http://" + tc.host}[tc.host != ""]})
		if err != nil {
			t.Fatal(err)
		}
		opts := &storage.SignedURLOptions{GoogleAccessID: "ci@p.iam.gserviceaccount.com", PrivateKey: []byte(key), Method: http.MethodPut,
			Expires: time.Now().Add(2 * time.Hour), Scheme: storage.SigningSchemeV4, Hostname: tc.host, Insecure: tc.host != ""}
		want, err := storage.SignedURL("cache", tc.object, opts)
		if err != nil {
			t.Fatal(err)
		}
		wu, _ := url.Parse(want)
		at, err := time.Parse("20060102T150405Z", wu.Query().Get("X-Goog-Date"))
		if err != nil {
			t.Fatal(err)
		}
		secs, _ := strconv.Atoi(wu.Query().Get("X-Goog-Expires"))
		g.now = func() time.Time { return at }
		got, _, err := g.PutURL(t.Context(), tc.object, time.Duration(secs)*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		if got != want {
			t.Errorf("object %q:\n got %s\nwant %s", tc.object, got, want)
		}
	}
}

package helper

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/podrunner/podrunner/internal/cache/s3test"
	"github.com/podrunner/podrunner/internal/job"
)

func runCLI(t *testing.T, args ...string) (int, string) {
	t.Helper()
	var out bytes.Buffer
	code := execute(args, &out, &out)
	return code, out.String()
}

func writeTree(t *testing.T, root string, files map[string]string) {
	t.Helper()
	for name, body := range files {
		p := filepath.Join(root, name)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

func TestCacheHelpersLocalFile(t *testing.T) {
	src, dest := t.TempDir(), t.TempDir()
	writeTree(t, src, map[string]string{"deps/a": "A", "deps/sub/b": "B", "other": "O"})
	file := filepath.Join(t.TempDir(), "group", "p", "key", job.CacheArchiveName)

	code, out := runCLI(t, "cache-extractor", "--file", file, "--dir", dest)
	// A cold cache is a warning, as in GitLab Runner, never an ERROR.
	if code == 0 || !strings.Contains(out, "WARNING: no cache at "+file) || strings.Contains(out, "ERROR") {
		t.Fatalf("missing cache: exit %d\n%s", code, out)
	}
	code, out = runCLI(t, "cache-archiver", "--file", file, "--dir", src, "--path", "deps")
	if code != 0 || !strings.Contains(out, "Archived 4 files") && !strings.Contains(out, "Archived 3 files") {
		t.Fatalf("archive: exit %d\n%s", code, out)
	}
	code, out = runCLI(t, "cache-extractor", "--file", file, "--dir", dest)
	if code != 0 {
		t.Fatalf("extract: exit %d\n%s", code, out)
	}
	for name, want := range map[string]string{"deps/a": "A", "deps/sub/b": "B"} {
		if b, err := os.ReadFile(filepath.Join(dest, name)); err != nil || string(b) != want {
			t.Errorf("%s: %q, %v", name, b, err)
		}
	}
	if _, err := os.Stat(filepath.Join(dest, "other")); err == nil {
		t.Error("a file outside the paths was cached")
	}
	// Nothing matches: success without touching the stored archive.
	before, _ := os.ReadFile(file)
	code, out = runCLI(t, "cache-archiver", "--file", file, "--dir", src, "--path", "nope/**")
	after, _ := os.ReadFile(file)
	if code != job.CacheArchiverNoFiles || !strings.Contains(out, "nope/**: no matching files") || !bytes.Equal(before, after) {
		t.Errorf("no matching files: exit %d, archive kept %v\n%s", code, bytes.Equal(before, after), out)
	}
	// Over --max-size: failure, archive kept.
	code, out = runCLI(t, "cache-archiver", "--file", file, "--dir", src, "--path", "deps", "--path", "other", "--max-size", "10")
	after, _ = os.ReadFile(file)
	if code == 0 || !strings.Contains(out, "larger than the maximum") || !bytes.Equal(before, after) {
		t.Errorf("max size: exit %d, archive kept %v\n%s", code, bytes.Equal(before, after), out)
	}
}

func TestCacheHelpersUsage(t *testing.T) {
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"cache-extractor"}, "use --file, --s3-object, --azure-object or --gcs-object"},
		{[]string{"cache-extractor", "--file", "x", "--s3-object", "y"}, "give one of"},
		{[]string{"cache-archiver", "--file", "x"}, "give --path or --untracked"},
		{[]string{"cache-extractor", "--s3-object", "o", "--s3-bucket-name", "bkt", "--s3-authentication-type", "access-key"}, "AccessKey"},
		{[]string{"cache-extractor", "--s3-object", "o", "--s3-bucket-name", "bkt", "--s3-authentication-type", "oauth"}, "unknown"},
		{[]string{"cache-extractor", "--s3-object", "o", "--s3-bucket-name", "b", "--s3-path-style", "maybe"}, "true or false"},
	} {
		code, out := runCLI(t, tc.args...)
		if code == 0 || !strings.Contains(out, tc.want) {
			t.Errorf("%v: exit %d, want an error about %q:\n%s", tc.args, code, tc.want, out)
		}
	}
}

func TestCacheHelpersS3(t *testing.T) {
	srv := s3test.Start(t, "127.0.0.1")
	srv.CreateBucket(t, "helper")
	t.Setenv(job.EnvCacheS3AccessKey, s3test.AccessKey)
	t.Setenv(job.EnvCacheS3SecretKey, s3test.SecretKey)
	target := []string{"--s3-object", "project/1/k", "--s3-server-address", srv.Address, "--s3-bucket-name", "helper",
		"--s3-bucket-location", "us-east-1", "--s3-insecure", "--s3-path-style=true"}
	src, dest := t.TempDir(), t.TempDir()
	writeTree(t, src, map[string]string{"deps/a": "A"})
	code, out := runCLI(t, append([]string{"cache-archiver", "--dir", src, "--path", "deps"}, target...)...)
	if code != 0 || !strings.Contains(out, "Uploading cache to s3://helper/project/1/k") {
		t.Fatalf("archive: exit %d\n%s", code, out)
	}
	if os.Getenv(job.EnvCacheS3SecretKey) != "" {
		t.Error("the helper must drop the credentials from its environment")
	}
	if strings.Contains(out, s3test.SecretKey) || strings.Contains(out, s3test.AccessKey) {
		t.Errorf("credentials printed:\n%s", out)
	}
	// The credentials were consumed: set them again for the extractor.
	t.Setenv(job.EnvCacheS3AccessKey, s3test.AccessKey)
	t.Setenv(job.EnvCacheS3SecretKey, s3test.SecretKey)
	code, out = runCLI(t, append([]string{"cache-extractor", "--dir", dest}, target...)...)
	if b, err := os.ReadFile(filepath.Join(dest, "deps", "a")); code != 0 || err != nil || string(b) != "A" {
		t.Fatalf("extract: exit %d, %q %v\n%s", code, b, err, out)
	}
}

// TestCacheArchiverCompressionLevel: CACHE_COMPRESSION_LEVEL (GitLab
// Runner's variable) sets the zip compression of the cache.
func TestCacheArchiverCompressionLevel(t *testing.T) {
	src := t.TempDir()
	writeTree(t, src, map[string]string{"deps/a": strings.Repeat("compressible ", 10000)})
	sizes := map[string]int64{}
	for _, level := range []string{"fastest", "slowest"} {
		t.Setenv("CACHE_COMPRESSION_LEVEL", level)
		file := filepath.Join(t.TempDir(), job.CacheArchiveName)
		if code, out := runCLI(t, "cache-archiver", "--file", file, "--dir", src, "--path", "deps"); code != 0 {
			t.Fatalf("%s: exit %d\n%s", level, code, out)
		}
		fi, err := os.Stat(file)
		if err != nil {
			t.Fatal(err)
		}
		sizes[level] = fi.Size()
	}
	if sizes["slowest"] >= sizes["fastest"] {
		t.Errorf("slowest %d bytes, fastest %d: the level was not applied", sizes["slowest"], sizes["fastest"])
	}
	t.Setenv("CACHE_COMPRESSION_LEVEL", "turbo")
	code, out := runCLI(t, "cache-archiver", "--file", filepath.Join(t.TempDir(), "c.zip"), "--dir", src, "--path", "deps")
	if code == 0 || !strings.Contains(out, `compression level "turbo"`) {
		t.Errorf("bad level: exit %d\n%s", code, out)
	}
}

package helper

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/podrunner/podrunner/internal/cache/presign"
	"github.com/podrunner/podrunner/internal/cache/s3test"
	"github.com/podrunner/podrunner/internal/config"
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
	for _, flag := range []string{"--max-size", "--max-uploaded-archive-size"} {
		code, out = runCLI(t, "cache-archiver", "--file", file, "--dir", src, "--path", "deps", "--path", "other", flag, "10")
		after, _ = os.ReadFile(file)
		if code == 0 || !strings.Contains(out, "larger than the maximum") || !bytes.Equal(before, after) {
			t.Errorf("%s: exit %d, archive kept %v\n%s", flag, code, bytes.Equal(before, after), out)
		}
	}
}

func TestCacheHelpersUsage(t *testing.T) {
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"cache-extractor"}, "use --file or --url"},
		{[]string{"cache-extractor", "--file", "x", "--url", "http://h/y"}, "give one of"},
		{[]string{"cache-archiver", "--file", "x"}, "give --path or --untracked"},
		{[]string{"cache-extractor", "--url", "ftp://h/x?sig=secret"}, "not an http(s) URL"},
		{[]string{"cache-archiver", "--url", "http://h/x", "--path", "a", "--header", "no-colon"}, `use "Name: value"`},
		{[]string{"cache-extractor", "--s3-object", "o"}, "unknown flag"},
	} {
		code, out := runCLI(t, tc.args...)
		if code == 0 || !strings.Contains(out, tc.want) || strings.Contains(out, "secret") {
			t.Errorf("%v: exit %d, want an error about %q (and no URL query):\n%s", tc.args, code, tc.want, out)
		}
	}
}

// TestCacheHelpersURL: the helpers move a cache through URLs the runner
// pre-signed (here for the local S3 server), print the URL without its
// signature, and say "no cache" for a missing object and what to check
// for a refused one.
func TestCacheHelpersURL(t *testing.T) {
	srv := s3test.Start(t, "127.0.0.1")
	srv.CreateBucket(t, "helper")
	sign := func(secret string) *presign.S3 {
		s, err := presign.NewS3(presign.S3Config{CacheS3: config.CacheS3{ServerAddress: srv.Address, BucketName: "helper",
			BucketLocation: "us-east-1", Insecure: true, AccessKey: s3test.AccessKey, SecretKey: secret}})
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
	s := sign(s3test.SecretKey)
	put, h, err := s.PutURL(t.Context(), "project/1/k", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	get, err := s.GetURL(t.Context(), "project/1/k", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	plain := "http://" + srv.Address + "/helper/project/1/k"
	src, dest := t.TempDir(), t.TempDir()
	writeTree(t, src, map[string]string{"deps/a": "A"})

	code, out := runCLI(t, "cache-extractor", "--dir", dest, "--url", get)
	if code == 0 || !strings.Contains(out, "WARNING: no cache at "+plain) || strings.Contains(out, "ERROR") {
		t.Fatalf("missing cache: exit %d\n%s", code, out)
	}
	args := []string{"cache-archiver", "--dir", src, "--path", "deps", "--url", put, "--header", "Content-Type: application/zip"}
	for k, vs := range h {
		for _, v := range vs {
			args = append(args, "--header", k+": "+v)
		}
	}
	code, out = runCLI(t, args...)
	if code != 0 || !strings.Contains(out, "Uploading cache to "+plain+"\n") {
		t.Fatalf("archive: exit %d\n%s", code, out)
	}
	code, out = runCLI(t, "cache-extractor", "--dir", dest, "--url", get)
	if b, err := os.ReadFile(filepath.Join(dest, "deps", "a")); code != 0 || err != nil || string(b) != "A" {
		t.Fatalf("extract: exit %d, %q %v\n%s", code, b, err, out)
	}
	if strings.Contains(out, "X-Amz-Signature") {
		t.Errorf("signature printed:\n%s", out)
	}

	// Signed with a wrong secret: the store refuses; the message names it
	// and what to check, without the URL's signature.
	bad, err := sign("wrong").GetURL(t.Context(), "project/1/k", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	code, out = runCLI(t, "cache-extractor", "--dir", dest, "--url", bad)
	if code == 0 || !strings.Contains(out, "S3 refused") || !strings.Contains(out, "[runners.cache.s3]") || strings.Contains(out, "X-Amz-Signature") {
		t.Errorf("refused URL: exit %d\n%s", code, out)
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

package acceptance

import (
	"archive/zip"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/podrunner/podrunner/internal/cache/s3test"
	"github.com/podrunner/podrunner/internal/coordinator"
)

// cachePipeline: build restores and pushes deps/; check (policy: pull)
// restores it and changes it, which must never reach the store.
const cachePipeline = `
stages: [build, test]

build:
  stage: build
  script:
    - mkdir -p deps
    - if [ -f deps/stamp ]; then echo "restored=$(cat deps/stamp)"; else echo "restored=none"; fi
    - echo "pipeline-$CI_PIPELINE_ID" > deps/stamp
  cache:
    key: deps-$CI_COMMIT_REF_SLUG
    paths: [deps/]

check:
  stage: test
  script:
    - echo "check-saw=$(cat deps/stamp)"
    - echo "changed-by-pull-job" > deps/stamp
  cache:
    key: deps-$CI_COMMIT_REF_SLUG
    paths: [deps/]
    policy: pull
`

// runCachePipelines runs the pipeline twice and checks what each job saw.
func runCachePipelines(t *testing.T, e *env) (first, second coordinator.PipelineView) {
	t.Helper()
	first = e.pipeline(3 * time.Minute)
	if first.Status != "success" {
		for _, j := range first.Jobs {
			t.Logf("job %s: %s\n%s", j.Name, j.Status, e.coord.Trace(j.ID))
		}
		t.Fatalf("first pipeline: %s", first.Status)
	}
	b1, c1 := jobByName(t, first, "build"), jobByName(t, first, "check")
	contains(t, e.coord.Trace(b1.ID), "restored=none", "Creating cache deps-main", "Created cache")
	contains(t, e.coord.Trace(c1.ID), "Checking cache for deps-main", "Successfully extracted cache",
		fmt.Sprintf("check-saw=pipeline-%d", first.ID), "Not uploading cache deps-main", "due to policy")
	if strings.Contains(string(e.coord.Trace(c1.ID)), "Creating cache") {
		t.Errorf("the pull job created a cache:\n%s", e.coord.Trace(c1.ID))
	}

	second = e.pipeline(3 * time.Minute)
	if second.Status != "success" {
		t.Fatalf("second pipeline: %s", second.Status)
	}
	// What build pushed in the first pipeline, not what the pull job changed.
	contains(t, e.coord.Trace(jobByName(t, second, "build").ID), fmt.Sprintf("restored=pipeline-%d", first.ID))
	contains(t, e.coord.Trace(jobByName(t, second, "check").ID), fmt.Sprintf("check-saw=pipeline-%d", second.ID))
	return first, second
}

func TestCacheRoundTripLocalDir(t *testing.T) {
	t.Parallel()
	e := newEnv(t, cachePipeline, coordinator.Options{})
	cacheDir := filepath.Join(e.dir, "cache")
	e.runConfig(e.config(1, fmt.Sprintf("  cache_dir = %q\n", cacheDir)))
	runCachePipelines(t, e)
	var files []string
	filepath.WalkDir(cacheDir, func(p string, d os.DirEntry, err error) error {
		if err == nil && !d.IsDir() {
			rel, _ := filepath.Rel(cacheDir, p)
			files = append(files, rel)
		}
		return nil
	})
	if len(files) != 1 || !strings.HasPrefix(files[0], projectPath+"/deps-main") || !strings.HasSuffix(files[0], "/cache.zip") {
		t.Errorf("cache dir holds %q, want one %s/deps-main…/cache.zip", files, projectPath)
		return
	}
	// GitLab Runner's format: a zip of paths relative to the project.
	zr, err := zip.OpenReader(filepath.Join(cacheDir, files[0]))
	if err != nil {
		t.Fatalf("cache is not a zip: %v", err)
	}
	defer zr.Close()
	var names []string
	for _, f := range zr.File {
		names = append(names, f.Name)
	}
	if strings.Join(names, " ") != "deps/ deps/stamp" {
		t.Errorf("cache.zip entries %q, want [deps/ deps/stamp]", names)
	}
}

func TestCacheRoundTripS3(t *testing.T) {
	t.Parallel()
	srv := s3test.Start(t, "127.0.0.1")
	testCacheRoundTripS3(t, srv, nil, fmt.Sprintf(`      AuthenticationType = "access-key"
      AccessKey = %q
      SecretKey = %q
`, s3test.AccessKey, s3test.SecretKey))
}

// TestCacheRoundTripS3IAM: AuthenticationType = "iam" with no key in
// config.toml; the runner takes its credentials from its environment, a
// web identity token file exchanged at STS (IRSA's shape), and pre-signs
// the helper's URLs with them.
func TestCacheRoundTripS3IAM(t *testing.T) {
	t.Parallel()
	srv := s3test.Start(t, "127.0.0.1")
	sts := s3test.StartSTS(t, "arn:aws:iam::123456789012:role/ci-cache", "irsa-token-acceptance")
	env := []string{"AWS_ACCESS_KEY_ID=", "AWS_SECRET_ACCESS_KEY=", "AWS_SHARED_CREDENTIALS_FILE=/nonexistent"}
	for k, v := range sts.Env() {
		env = append(env, k+"="+v)
	}
	testCacheRoundTripS3(t, srv, env, "      AuthenticationType = \"iam\"\n")
	if sts.Calls() == 0 {
		t.Error("no credentials were taken from STS")
	}
}

func testCacheRoundTripS3(t *testing.T, srv *s3test.Server, extraEnv []string, auth string) {
	srv.CreateBucket(t, "runner-cache")
	e := newEnv(t, cachePipeline, coordinator.Options{})
	e.extraEnv = extraEnv
	e.runConfig(e.config(1, fmt.Sprintf(`  cache_dir = %q
  [runners.cache]
    Type = "s3"
    Path = "ci"
    [runners.cache.s3]
      ServerAddress = %q
      BucketName = "runner-cache"
      BucketLocation = "us-east-1"
      Insecure = true
%s`, filepath.Join(e.dir, "cache"), srv.Address, auth)))
	first, second := runCachePipelines(t, e)
	objs := srv.Objects(t, "runner-cache")
	if len(objs) != 1 || !strings.HasPrefix(objs[0], "ci/runner/") || !strings.Contains(objs[0], "/project/") ||
		!strings.Contains(objs[0], "/deps-main") {
		t.Errorf("bucket holds %q, want one ci/runner/<token>/project/<id>/deps-main… object", objs)
	}
	if _, err := os.Stat(filepath.Join(e.dir, "cache")); err == nil {
		t.Error("with an S3 store nothing must be written to cache_dir")
	}
	for _, v := range []coordinator.PipelineView{first, second} {
		for _, j := range v.Jobs {
			if tr := string(e.coord.Trace(j.ID)); strings.Contains(tr, s3test.SecretKey) || strings.Contains(tr, s3test.AccessKey) || strings.Contains(tr, "X-Amz-Signature") {
				t.Errorf("job %s's trace holds an S3 credential or signature", j.Name)
			}
		}
	}
	e.setCI(t, fallbackPipeline)
	fb := e.pipeline(3 * time.Minute)
	contains(t, e.coord.Trace(jobByName(t, fb, "build").ID), fmt.Sprintf("restored=pipeline-%d", second.ID))
}

// TestCacheS3Refused: a wrong secret or a missing bucket never fails the
// job; the trace says once which store refused and what to check.
func TestCacheS3Refused(t *testing.T) {
	t.Parallel()
	srv := s3test.Start(t, "127.0.0.1")
	srv.CreateBucket(t, "runner-cache")
	for _, tc := range []struct {
		name, bucket, secret string
		want                 []string
	}{
		{"wrong secret", "runner-cache", "wrong-secret", []string{"S3 refused the runner's pre-signed URL", "[runners.cache.s3]"}},
		{"missing bucket", "no-such-bucket", s3test.SecretKey, []string{"NoSuchBucket", "create it or fix [runners.cache.s3]"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnv(t, cachePipeline, coordinator.Options{})
			e.runConfig(e.config(1, fmt.Sprintf(`  [runners.cache]
    Type = "s3"
    [runners.cache.s3]
      ServerAddress = %q
      BucketName = %q
      BucketLocation = "us-east-1"
      Insecure = true
      AccessKey = %q
      SecretKey = %q
`, srv.Address, tc.bucket, s3test.AccessKey, tc.secret)))
			p := e.pipeline(3 * time.Minute)
			b := jobByName(t, p, "build")
			if b.Status != "success" {
				t.Fatalf("build: %s (a cache failure must not fail the job)\n%s", b.Status, e.coord.Trace(b.ID))
			}
			tr := e.coord.Trace(b.ID)
			contains(t, tr, append([]string{"WARNING: Failed to create cache"}, tc.want...)...)
			// Once by the restore, once by the upload.
			if n := strings.Count(string(tr), tc.want[0]); n != 2 {
				t.Errorf("%q said %d times, want once per cache stage:\n%s", tc.want[0], n, tr)
			}
			if strings.Contains(string(tr), "X-Amz-Signature") || strings.Contains(string(tr), tc.secret) {
				t.Errorf("trace shows a signature or the secret:\n%s", tr)
			}
		})
	}
}

// cacheVarsPipeline: variables in cache:paths are expanded as in
// artifacts:paths (issue #13): `$CACHEDIR/**.txt` is deps/**.txt, where
// `**` not alone in a segment is `*` (doublestar, as in GitLab Runner), so
// deps/a.txt is cached and neither deps/sub/b.txt nor deps/c.bin.
const cacheVarsPipeline = `
variables:
  CACHEDIR: deps

build:
  script:
    - echo "restored=$(cat deps/a.txt 2>/dev/null || echo none)"
    - echo "others=$(find . -name b.txt -o -name c.bin | wc -l)"
    - mkdir -p deps/sub
    - echo "a-$CI_PIPELINE_ID" > deps/a.txt
    - echo "b-$CI_PIPELINE_ID" > deps/sub/b.txt
    - echo "not cached" > deps/c.bin
  cache:
    key: vars
    paths: [$CACHEDIR/**.txt]
`

func TestCachePathsWithVariables(t *testing.T) {
	t.Parallel()
	e := newEnv(t, cacheVarsPipeline, coordinator.Options{})
	cacheDir := filepath.Join(e.dir, "cache")
	e.runConfig(e.config(1, fmt.Sprintf("  cache_dir = %q\n", cacheDir)))
	first := e.pipeline(3 * time.Minute)
	if first.Status != "success" {
		t.Fatalf("first pipeline: %s\n%s", first.Status, e.coord.Trace(jobByName(t, first, "build").ID))
	}
	tr := e.coord.Trace(jobByName(t, first, "build").ID)
	contains(t, tr, "restored=none", "Created cache")
	if strings.Contains(string(tr), "no matching files") {
		t.Errorf("$CACHEDIR was not expanded:\n%s", tr)
	}
	second := e.pipeline(3 * time.Minute)
	if second.Status != "success" {
		t.Fatalf("second pipeline: %s", second.Status)
	}
	tr = e.coord.Trace(jobByName(t, second, "build").ID)
	// others=0: nothing outside $CACHEDIR/**.txt was cached.
	contains(t, tr, fmt.Sprintf("restored=a-%d", first.ID), "others=0")
}

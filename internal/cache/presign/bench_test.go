package presign

import (
	crand "crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/fsouza/fake-gcs-server/fakestorage"

	"github.com/podrunner/podrunner/internal/cache/azuretest"
	"github.com/podrunner/podrunner/internal/cache/s3test"
	"github.com/podrunner/podrunner/internal/config"
	"github.com/podrunner/podrunner/internal/job"
)

// BenchmarkCacheRoundTrip moves a cache up and down through the helper
// commands (the podrunner binary, as a job script runs them) against a
// local S3 server, Azurite, fake-gcs-server and the local directory
// store, and reports MB/s and the helper's peak RSS (its own VmHWM) for a
// small and a 1 GiB archive: the RSS must not grow with the archive. The
// helper reaches S3, Azure and GCS through URLs the signers of this
// package pre-sign, as in a job. PODRUNNER_BENCH_STORES=azure,gcs picks
// stores. Opt in with PODRUNNER_BENCH=1:
//
//	PODRUNNER_BENCH=1 go test -run '^$' -bench CacheRoundTrip -benchtime 1x ./internal/cache/presign/
func BenchmarkCacheRoundTrip(b *testing.B) {
	if os.Getenv("PODRUNNER_BENCH") != "1" {
		b.Skip("set PODRUNNER_BENCH=1 to move 1 GiB through the cache helpers")
	}
	dir := b.TempDir()
	// The helper job pods run, built as its image has it.
	bin := filepath.Join(dir, "podrunner-helper")
	build := exec.Command("go", "build", "-trimpath", "-ldflags", "-s -w", "-o", bin, "../../../cmd/podrunner-helper")
	build.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := build.CombinedOutput(); err != nil {
		b.Fatalf("build podrunner-helper: %v\n%s", err, out)
	}
	srv := s3test.Start(b, "127.0.0.1")
	srv.CreateBucket(b, "bench")
	az := azuretest.Start(b, "127.0.0.1")
	az.CreateContainer(b, "bench")
	// On disk: the emulator must not hold the archives in this process.
	gcs, err := fakestorage.NewServerWithOptions(fakestorage.Options{Scheme: "http", Host: "127.0.0.1", PublicHost: "127.0.0.1", StorageRoot: filepath.Join(dir, "gcs")})
	if err != nil {
		b.Fatal(err)
	}
	defer gcs.Stop()
	gcs.CreateBucketWithOpts(fakestorage.CreateBucketOpts{Name: "bench"})
	gcsKey := benchKey(b)
	stores := []string{"s3", "azure", "gcs", "dir"}
	if s := os.Getenv("PODRUNNER_BENCH_STORES"); s != "" {
		stores = strings.Split(s, ",")
	}
	// The binary's own footprint (runtime, touched pages of an 80 MB
	// binary), for reading the figures below.
	_, baseRSS, _ := runHelper(b, bin, dir, nil, "cache-extractor", "--help")

	type row struct {
		store, size    string
		upMBs, downMBs float64
		upRSS, downRSS int64 // KiB
	}
	var rows []row
	for _, size := range []int64{64 << 20, 1 << 30} {
		src := filepath.Join(dir, fmt.Sprintf("src-%d", size))
		writeRandomTree(b, src, size)
		for _, store := range stores {
			var (
				signer job.CacheURLSigner
				err    error
			)
			switch store {
			case "s3":
				signer, err = NewS3(S3Config{CacheS3: config.CacheS3{ServerAddress: srv.Address, BucketName: "bench", BucketLocation: "us-east-1",
					Insecure: true, AccessKey: s3test.AccessKey, SecretKey: s3test.SecretKey}})
			case "azure":
				signer, err = NewAzure(AzureConfig{CacheAzure: config.CacheAzure{AccountName: azuretest.AccountName, AccountKey: azuretest.AccountKey,
					ContainerName: "bench", StorageDomain: az.Endpoint}})
			case "gcs":
				signer, err = NewGCS(b.Context(), GCSConfig{CacheGCS: config.CacheGCS{BucketName: "bench", AccessID: "bench@p", PrivateKey: gcsKey}, Endpoint: gcs.URL()})
			}
			if err != nil {
				b.Fatal(err)
			}
			up := []string{"--file", filepath.Join(dir, "cache", fmt.Sprint(size), job.CacheArchiveName)}
			down := up
			if signer != nil {
				object := fmt.Sprintf("bench/%d", size)
				put, h, err := signer.PutURL(b.Context(), object, time.Hour)
				if err != nil {
					b.Fatal(err)
				}
				up = []string{"--url", put}
				for k, vs := range h {
					for _, v := range vs {
						up = append(up, "--header", k+": "+v)
					}
				}
				get, err := signer.GetURL(b.Context(), object, time.Hour)
				if err != nil {
					b.Fatal(err)
				}
				down = []string{"--url", get}
			}
			var env []string
			for i := 0; i < b.N; i++ {
				upT, upRSS, n := runHelper(b, bin, src, env, append(append([]string{"cache-archiver"}, up...), "--path", "data")...)
				dest := filepath.Join(dir, "dest")
				os.RemoveAll(dest)
				if err := os.Mkdir(dest, 0o755); err != nil {
					b.Fatal(err)
				}
				downT, downRSS, _ := runHelper(b, bin, dest, env, append([]string{"cache-extractor"}, down...)...)
				if got := dirSize(b, filepath.Join(dest, "data")); got != size {
					b.Fatalf("%s: extracted %d bytes, want %d", store, got, size)
				}
				os.RemoveAll(dest)
				rows = append(rows, row{store, fmt.Sprintf("%d MiB", size>>20),
					float64(n) / 1e6 / upT.Seconds(), float64(n) / 1e6 / downT.Seconds(), upRSS, downRSS})
			}
		}
		os.RemoveAll(src)
	}
	b.StopTimer()
	fmt.Printf("\nhelper baseline (podrunner cache-extractor --help): peak RSS %d MiB\n", baseRSS>>10)
	fmt.Printf("\n%-6s %-9s %10s %10s %14s %14s\n", "store", "archive", "up MB/s", "down MB/s", "up peak RSS", "down peak RSS")
	for _, r := range rows {
		fmt.Printf("%-6s %-9s %10.1f %10.1f %11d MiB %11d MiB\n", r.store, r.size, r.upMBs, r.downMBs, r.upRSS>>10, r.downRSS>>10)
		if r.size == "1024 MiB" && r.store != "dir" {
			b.ReportMetric(r.upMBs, r.store+"-up-MB/s")
			b.ReportMetric(r.downMBs, r.store+"-down-MB/s")
			b.ReportMetric(float64(max(r.upRSS, r.downRSS)>>10), r.store+"-peak-RSS-MiB")
		}
	}
}

// runHelper runs the helper in dir and returns its wall time, peak RSS
// (KiB) and the archive size it reported moving (the source size). The
// peak is the helper's own VmHWM, sampled from /proc while it runs: the
// rusage of a child counts the RSS of its parent at fork, which is this
// (big) benchmark process.
func runHelper(b *testing.B, bin, dir string, env []string, args ...string) (time.Duration, int64, int64) {
	b.Helper()
	cmd := exec.Command(bin, args...)
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), env...)
	var out strings.Builder
	cmd.Stdout, cmd.Stderr = &out, &out
	start := time.Now()
	if err := cmd.Start(); err != nil {
		b.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	var peak int64
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	var err error
wait:
	for {
		peak = max(peak, vmHWM(cmd.Process.Pid))
		select {
		case err = <-done:
			break wait
		case <-tick.C:
		}
	}
	d := time.Since(start)
	if err != nil {
		b.Fatalf("%v: %v\n%s", args, err, out.String())
	}
	var size int64
	if args[0] == "cache-archiver" {
		size = dirSize(b, filepath.Join(dir, "data"))
	}
	return d, peak, size
}

// vmHWM is the peak resident set of process pid in KiB (0 once it is gone).
func vmHWM(pid int) int64 {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "VmHWM:"); ok {
			var kib int64
			fmt.Sscanf(strings.TrimSpace(v), "%d", &kib)
			return kib
		}
	}
	return 0
}

// writeRandomTree writes size bytes of incompressible data in 64 MiB files
// (the worst case: the archive is as big as the data).
func writeRandomTree(b *testing.B, root string, size int64) {
	b.Helper()
	data := filepath.Join(root, "data")
	if err := os.MkdirAll(data, 0o755); err != nil {
		b.Fatal(err)
	}
	r := newRandReader(3)
	for i := 0; size > 0; i++ {
		n := min(size, 64<<20)
		f, err := os.Create(filepath.Join(data, fmt.Sprintf("blob-%03d", i)))
		if err != nil {
			b.Fatal(err)
		}
		if _, err := io.CopyN(f, r, n); err != nil {
			b.Fatal(err)
		}
		if err := f.Close(); err != nil {
			b.Fatal(err)
		}
		size -= n
	}
}

func dirSize(b *testing.B, root string) int64 {
	b.Helper()
	var n int64
	err := filepath.WalkDir(root, func(p string, d os.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.Type().IsRegular() {
			fi, err := d.Info()
			if err != nil {
				return err
			}
			n += fi.Size()
		}
		return nil
	})
	if err != nil {
		b.Fatal(err)
	}
	return n
}

// randReader is an endless incompressible stream.
type randReader struct{ r *rand.ChaCha8 }

func newRandReader(seed byte) *randReader {
	var s [32]byte
	s[0] = seed
	return &randReader{rand.NewChaCha8(s)}
}

func (r *randReader) Read(p []byte) (int, error) { return r.r.Read(p) }

// benchKey is a service account's private key for GCS signing.
func benchKey(tb testing.TB) string {
	k, err := rsa.GenerateKey(crand.Reader, 2048)
	if err != nil {
		tb.Fatal(err)
	}
	return string(pem.EncodeToMemory(&pem.Block{Type: "RSA PRIVATE KEY", Bytes: x509.MarshalPKCS1PrivateKey(k)}))
}

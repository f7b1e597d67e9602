package helper

import (
	"archive/zip"
	"bytes"
	"compress/gzip"
	"io"
	"mime"
	"mime/multipart"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
)

// fakeArtifacts is a GitLab that stores one upload per job and serves it.
type fakeArtifacts struct {
	mu      sync.Mutex
	uploads map[string][]byte // job id → file part
	names   map[string]string // job id → part file name
	queries map[string]string
	status  int // answer to uploads; 201 when 0
	tries   int
	serve   map[string][]byte // job id → archive to download
	tokens  map[string]string // job id → token expected
	srv     *httptest.Server
	chunked bool
}

func newFakeArtifacts(t *testing.T) *fakeArtifacts {
	f := &fakeArtifacts{uploads: map[string][]byte{}, names: map[string]string{}, queries: map[string]string{},
		serve: map[string][]byte{}, tokens: map[string]string{}}
	f.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		id := strings.TrimSuffix(strings.TrimPrefix(r.URL.Path, "/api/v4/jobs/"), "/artifacts")
		f.mu.Lock()
		defer f.mu.Unlock()
		if want := f.tokens[id]; want != "" && r.Header.Get("Job-Token") != want {
			http.Error(w, `{"message":"403 Forbidden"}`, http.StatusForbidden)
			return
		}
		switch r.Method {
		case http.MethodPost:
			f.tries++
			f.chunked = len(r.TransferEncoding) > 0
			_, params, _ := mime.ParseMediaType(r.Header.Get("Content-Type"))
			mr := multipart.NewReader(r.Body, params["boundary"])
			part, err := mr.NextPart()
			if err != nil {
				http.Error(w, err.Error(), 400)
				return
			}
			b, _ := io.ReadAll(part)
			if f.status != 0 && f.status != 201 {
				http.Error(w, `{"message":"nope"}`, f.status)
				return
			}
			f.uploads[id], f.names[id], f.queries[id] = b, part.FileName(), r.URL.RawQuery
			w.WriteHeader(http.StatusCreated)
			_, _ = w.Write([]byte("{}"))
		case http.MethodGet:
			b, ok := f.serve[id]
			if !ok {
				http.Error(w, `{"message":"404 Not Found"}`, http.StatusNotFound)
				return
			}
			_, _ = w.Write(b)
		}
	}))
	t.Cleanup(f.srv.Close)
	return f
}

func runHelper(t *testing.T, dir string, env map[string]string, args ...string) (string, int) {
	t.Helper()
	for k, v := range env {
		t.Setenv(k, v)
	}
	wd, _ := os.Getwd()
	if err := os.Chdir(dir); err != nil {
		t.Fatal(err)
	}
	defer os.Chdir(wd) //nolint:errcheck
	var out, errb bytes.Buffer
	code := execute(args, &out, &errb)
	return out.String() + errb.String(), code
}

func helperTree(t *testing.T) string {
	dir := t.TempDir()
	for name, body := range map[string]string{"dist/app": "binary", "dist/app.tmp": "tmp", "build.env": "VERSION=1.2\nbad-key=x\n"} {
		if err := os.MkdirAll(filepath.Dir(filepath.Join(dir, name)), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, name), []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.Symlink("app", filepath.Join(dir, "dist/current")); err != nil {
		t.Fatal(err)
	}
	return dir
}

func TestArtifactsUploaderZip(t *testing.T) {
	f := newFakeArtifacts(t)
	f.tokens["5"] = "tok5"
	dir := helperTree(t)
	out, code := runHelper(t, dir, map[string]string{"CI_JOB_TOKEN": "tok5"}, "artifacts-uploader", "--url", f.srv.URL, "--id", "5",
		"--path", "dist", "--exclude", "dist/*.tmp", "--name", "bin", "--expire-in", "1 day")
	if code != 0 {
		t.Fatalf("exit %d: %s", code, out)
	}
	if strings.Contains(out, "tok5") {
		t.Errorf("token in output: %s", out)
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.names["5"] != "bin.zip" || f.queries["5"] != "artifact_format=zip&artifact_type=archive&expire_in=1+day" || !f.chunked {
		t.Errorf("name %q query %q chunked %v", f.names["5"], f.queries["5"], f.chunked)
	}
	zr, err := zip.NewReader(bytes.NewReader(f.uploads["5"]), int64(len(f.uploads["5"])))
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, zf := range zr.File {
		names = append(names, zf.Name)
	}
	if got := strings.Join(names, ","); got != "dist/,dist/app,dist/current" {
		t.Errorf("archive holds %s", got)
	}
}

func TestArtifactsUploaderDotenvGzip(t *testing.T) {
	f := newFakeArtifacts(t)
	dir := helperTree(t)
	out, code := runHelper(t, dir, map[string]string{"CI_JOB_TOKEN": "t"}, "artifacts-uploader", "--url", f.srv.URL, "--id", "6",
		"--path", "build.env", "--artifact-format", "gzip", "--artifact-type", "dotenv", "--name", "dotenv")
	if code != 0 {
		t.Fatalf("exit %d: %s", code, out)
	}
	if !strings.Contains(out, `line 2: key "bad-key"`) {
		t.Errorf("no warning about the bad line:\n%s", out)
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	zr, err := gzip.NewReader(bytes.NewReader(f.uploads["6"]))
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(zr)
	if f.names["6"] != "dotenv.gz" || zr.Name != "build.env" || string(b) != "VERSION=1.2\nbad-key=x\n" {
		t.Errorf("upload %q: member %q content %q", f.names["6"], zr.Name, b)
	}
}

func TestArtifactsUploaderAnswers(t *testing.T) {
	dir := helperTree(t)
	t.Run("no matching files is not a failure", func(t *testing.T) {
		f := newFakeArtifacts(t)
		out, code := runHelper(t, dir, map[string]string{"CI_JOB_TOKEN": "t"}, "artifacts-uploader", "--url", f.srv.URL, "--id", "7", "--path", "nothing/")
		if code != 0 || !strings.Contains(out, "no matching files") || !strings.Contains(out, "No files to upload") || f.tries != 0 {
			t.Errorf("exit %d tries %d: %s", code, f.tries, out)
		}
	})
	t.Run("413", func(t *testing.T) {
		f := newFakeArtifacts(t)
		f.status = 413
		out, code := runHelper(t, dir, map[string]string{"CI_JOB_TOKEN": "t"}, "artifacts-uploader", "--url", f.srv.URL, "--id", "7", "--path", "dist")
		if code == 0 || !strings.Contains(out, "artifacts too large: raise the project's maximum artifacts size or upload less") || f.tries != 1 {
			t.Errorf("exit %d tries %d: %s", code, f.tries, out)
		}
	})
	t.Run("403", func(t *testing.T) {
		f := newFakeArtifacts(t)
		f.tokens["7"] = "right"
		out, code := runHelper(t, dir, map[string]string{"CI_JOB_TOKEN": "wrong"}, "artifacts-uploader", "--url", f.srv.URL, "--id", "7", "--path", "dist")
		if code == 0 || !strings.Contains(out, "403") {
			t.Errorf("exit %d: %s", code, out)
		}
	})
}

func makeTestZip(t *testing.T, entries map[string]string) []byte {
	var buf bytes.Buffer
	zw := zip.NewWriter(&buf)
	for name, body := range entries {
		w, err := zw.Create(name)
		if err != nil {
			t.Fatal(err)
		}
		_, _ = w.Write([]byte(body))
	}
	if err := zw.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

func TestArtifactsDownloader(t *testing.T) {
	f := newFakeArtifacts(t)
	f.serve["10"] = makeTestZip(t, map[string]string{"dist/app": "binary"})
	f.tokens["10"] = "dep10"
	f.serve["11"] = makeTestZip(t, map[string]string{"../outside": "evil"})
	parent := t.TempDir()
	dir := filepath.Join(parent, "project")
	if err := os.Mkdir(dir, 0o755); err != nil {
		t.Fatal(err)
	}

	out, code := runHelper(t, dir, map[string]string{"CI_JOB_TOKEN": "dep10"}, "artifacts-downloader", "--url", f.srv.URL, "--id", "10", "--name", "build")
	if b, err := os.ReadFile(filepath.Join(dir, "dist/app")); code != 0 || err != nil || string(b) != "binary" {
		t.Fatalf("exit %d, %v %q: %s", code, err, b, out)
	}

	out, code = runHelper(t, dir, map[string]string{"CI_JOB_TOKEN": "x"}, "artifacts-downloader", "--url", f.srv.URL, "--id", "11", "--name", "evil")
	if code == 0 || !strings.Contains(out, `artifacts of evil (job 11) refused: archive entry "../outside"`) {
		t.Errorf("exit %d: %s", code, out)
	}
	if _, err := os.Stat(filepath.Join(parent, "outside")); err == nil {
		t.Error("wrote outside the project directory")
	}

	out, code = runHelper(t, dir, map[string]string{"CI_JOB_TOKEN": "wrong"}, "artifacts-downloader", "--url", f.srv.URL, "--id", "10")
	if code == 0 || !strings.Contains(out, "access denied") {
		t.Errorf("wrong token: exit %d: %s", code, out)
	}
	out, code = runHelper(t, dir, map[string]string{"CI_JOB_TOKEN": "x"}, "artifacts-downloader", "--url", f.srv.URL, "--id", "12")
	if code == 0 || !strings.Contains(out, "not found (expired or erased") {
		t.Errorf("missing: exit %d: %s", code, out)
	}
	if ents, _ := os.ReadDir(os.TempDir()); len(ents) > 0 {
		for _, e := range ents {
			if strings.HasPrefix(e.Name(), "podrunner-artifacts-") {
				t.Errorf("temporary file left: %s", e.Name())
			}
		}
	}
}

package jobrecord

import (
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestTrackSaveLoadDone(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "records")
	s, err := Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	if fi, _ := os.Stat(dir); fi.Mode().Perm() != 0o700 {
		t.Fatalf("directory mode %v; want 0700", fi.Mode().Perm())
	}
	tr := s.Track(Record{Runner: "r", SystemID: "s_x", PID: 1, JobID: 7, JobToken: "tok"}, slog.New(slog.DiscardHandler))
	tr.Sent(42)
	tr.Process(100, 5)
	tr.Files("/tmp/podrunner-job-7-1", "relative", "")
	tr.Result(Result{State: "failed", FailureReason: "script_failure", ExitCode: 3})
	fi, err := os.Stat(filepath.Join(dir, "job-7.json"))
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o600 {
		t.Fatalf("record mode %v; want 0600", fi.Mode().Perm())
	}
	recs, bad, err := s.Load()
	if err != nil || len(bad) != 0 || len(recs) != 1 {
		t.Fatalf("Load: %v, %v, %v", recs, bad, err)
	}
	r := recs[0]
	if r.TraceSent != 42 || r.PGID != 100 || r.PGIDStart != 5 || len(r.Paths) != 1 || r.Result == nil || r.Result.ExitCode != 3 {
		t.Fatalf("record %+v", *r)
	}
	tr.Done()
	tr.Sent(50) // after Done: no record again
	if recs, _, _ := s.Load(); len(recs) != 0 {
		t.Fatalf("records after Done: %d", len(recs))
	}
}

func TestLoadRefusesBadRecords(t *testing.T) {
	for _, tc := range []struct{ name, file, content, want string }{
		{"not json", "job-1.json", "{", "not a job record"},
		{"no token", "job-1.json", `{"job_id":1}`, "no job id or token"},
		{"other job's name", "job-2.json", `{"job_id":1,"job_token":"t"}`, "for job 1"},
		{"relative path", "job-1.json", `{"job_id":1,"job_token":"t","paths":["x/y"]}`, `path "x/y"`},
		{"root path", "job-1.json", `{"job_id":1,"job_token":"t","paths":["/"]}`, `path "/"`},
		{"unclean trace file", "job-1.json", `{"job_id":1,"job_token":"t","trace_file":"/tmp/../etc/x"}`, "trace file"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s, err := Open(t.TempDir())
			if err != nil {
				t.Fatal(err)
			}
			path := filepath.Join(s.Dir(), tc.file)
			if err := os.WriteFile(path, []byte(tc.content), 0o600); err != nil {
				t.Fatal(err)
			}
			recs, bad, err := s.Load()
			if err != nil || len(recs) != 0 || len(bad) != 1 || !strings.Contains(bad[0].Err.Error(), tc.want) {
				t.Fatalf("Load: %v, %+v, %v; want one bad record with %q", recs, bad, err, tc.want)
			}
			to, err := s.MoveAside(bad[0].Path)
			if err != nil {
				t.Fatal(err)
			}
			if _, err := os.Stat(to); err != nil {
				t.Fatal(err)
			}
			if recs, bad, _ := s.Load(); len(recs)+len(bad) != 0 {
				t.Fatal("a moved-aside record is read again")
			}
		})
	}
}

// Package jobrecord keeps, per running job, what a later runner process
// needs to finish the job's story after this one died (kill -9, OOM, power
// loss of the process): the job's id and token, the log offset GitLab has
// acknowledged, the process group to kill, the files to remove, and the
// result once known. A record is written atomically on every change and
// removed once GitLab accepted the job's final state.
package jobrecord

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"

	"github.com/podrunner/podrunner/internal/gitlab"
)

// Record is one running job. It holds the job token: the file is 0600 in a
// 0700 directory and is never logged.
type Record struct {
	// Runner is RunnerID of the runner that ran the job; SystemID the
	// runner's system_id. A record is only finished by the same runner.
	Runner   string `json:"runner"`
	SystemID string `json:"system_id"`
	// PID and PIDStart name the runner process that wrote the record (a
	// pid alone may be reused).
	PID      int    `json:"pid"`
	PIDStart uint64 `json:"pid_start"`

	JobID    int64  `json:"job_id"`
	JobToken string `json:"job_token"`
	// DebugTrace: the log is sent with debug_trace=true.
	DebugTrace bool `json:"debug_trace,omitempty"`
	// TraceFile is the job log's buffer file; TraceSent the offset GitLab
	// acknowledged.
	TraceFile string `json:"trace_file,omitempty"`
	TraceSent int64  `json:"trace_sent"`
	// PGID and PGIDStart name the process group of the running stage
	// (its leader's start time guards against reuse).
	PGID      int    `json:"pgid,omitempty"`
	PGIDStart uint64 `json:"pgid_start,omitempty"`
	// Paths are the job's scripts and temporary files (they hold
	// CI_JOB_TOKEN and every variable).
	Paths []string `json:"paths,omitempty"`
	// SystemFailure is how "runner_system_failure" is reported to this
	// GitLab (its supported failure reasons).
	SystemFailure gitlab.FailureReason `json:"system_failure"`
	// Result is the final state once the job ended; nil while it runs.
	Result *Result `json:"result,omitempty"`
}

// Result is a job's final state as it is submitted.
type Result struct {
	State         string               `json:"state"`
	FailureReason gitlab.FailureReason `json:"failure_reason,omitempty"`
	ExitCode      int                  `json:"exit_code,omitempty"`
}

// RunnerID is the stable, non-secret name of a runner (from its URL and
// token) that records carry.
func RunnerID(key string) string {
	sum := sha256.Sum256([]byte(key))
	return hex.EncodeToString(sum[:8])
}

// Store is the directory of records.
type Store struct{ dir string }

const suffix = ".json"

// Open creates (0700) or opens the directory.
func Open(dir string) (*Store, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("create job record directory: %w", err)
	}
	// A directory made by someone else keeps its mode; the records hold
	// job tokens.
	if err := os.Chmod(dir, 0o700); err != nil {
		return nil, fmt.Errorf("job record directory %s: %w", dir, err)
	}
	return &Store{dir: dir}, nil
}

// Dir is the store's directory.
func (s *Store) Dir() string { return s.dir }

func (s *Store) path(jobID int64) string {
	return filepath.Join(s.dir, "job-"+strconv.FormatInt(jobID, 10)+suffix)
}

// Save writes r atomically (temp file, fsync, rename): a crash leaves the
// old or the new record, never half of one.
func (s *Store) Save(r *Record) error {
	b, err := json.Marshal(r)
	if err != nil {
		return fmt.Errorf("encode record of job %d: %w", r.JobID, err)
	}
	f, err := os.CreateTemp(s.dir, ".tmp-job-*")
	if err != nil {
		return fmt.Errorf("save record of job %d: %w", r.JobID, err)
	}
	_, err = f.Write(b)
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(f.Name(), s.path(r.JobID))
	}
	if err != nil {
		os.Remove(f.Name())
		return fmt.Errorf("save record of job %d: %w", r.JobID, err)
	}
	return nil
}

// Remove deletes the record of a job; a missing one is not an error.
func (s *Store) Remove(jobID int64) error {
	if err := os.Remove(s.path(jobID)); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("remove record of job %d: %w", jobID, err)
	}
	return nil
}

// Bad is a record file that cannot be read.
type Bad struct {
	Path string
	Err  error
}

// Load reads every record, in job id order; unreadable ones are returned
// as bad, for MoveAside. Leftover temp files of an interrupted Save are
// removed.
func (s *Store) Load() ([]*Record, []Bad, error) {
	entries, err := os.ReadDir(s.dir)
	if err != nil {
		return nil, nil, fmt.Errorf("read job record directory: %w", err)
	}
	var recs []*Record
	var bad []Bad
	for _, e := range entries {
		name := e.Name()
		path := filepath.Join(s.dir, name)
		if strings.HasPrefix(name, ".tmp-job-") {
			os.Remove(path)
			continue
		}
		if !strings.HasPrefix(name, "job-") || !strings.HasSuffix(name, suffix) {
			continue
		}
		r, err := read(path)
		if err != nil {
			bad = append(bad, Bad{Path: path, Err: err})
			continue
		}
		recs = append(recs, r)
	}
	sort.Slice(recs, func(i, j int) bool { return recs[i].JobID < recs[j].JobID })
	return recs, bad, nil
}

func read(path string) (*Record, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var r Record
	if err := json.Unmarshal(b, &r); err != nil {
		return nil, fmt.Errorf("not a job record: %w", err)
	}
	want := "job-" + strconv.FormatInt(r.JobID, 10) + suffix
	switch {
	case r.JobID <= 0 || r.JobToken == "":
		return nil, errors.New("not a job record: no job id or token")
	case filepath.Base(path) != want:
		return nil, fmt.Errorf("not a job record: it is for job %d", r.JobID)
	}
	if r.TraceFile != "" && !Removable(r.TraceFile) {
		return nil, fmt.Errorf("not a job record: trace file %q is not a job's file", r.TraceFile)
	}
	for _, p := range r.Paths {
		if !Removable(p) {
			return nil, fmt.Errorf("not a job record: path %q is not a job's file", p)
		}
	}
	return &r, nil
}

// Removable guards the removal of a record's paths: absolute, clean and
// named like the job files the runner makes.
func Removable(p string) bool {
	return filepath.IsAbs(p) && filepath.Clean(p) == p && strings.Count(p, "/") >= 2
}

// MoveAside renames a bad record to <name>.corrupt so that it is kept for
// a look but not read again.
func (s *Store) MoveAside(path string) (string, error) {
	to := path + ".corrupt"
	if err := os.Rename(path, to); err != nil {
		return "", fmt.Errorf("move bad job record aside: %w", err)
	}
	return to, nil
}

// Tracker keeps one job's record up to date. Its methods are safe for
// concurrent use (the log sender and the executor call it); a nil Tracker
// does nothing. Save failures are logged: the job goes on without a
// record rather than failing.
type Tracker struct {
	store *Store
	log   *slog.Logger
	mu    sync.Mutex
	rec   Record
	done  bool
}

// Track writes r's first version and returns its tracker.
func (s *Store) Track(r Record, log *slog.Logger) *Tracker {
	t := &Tracker{store: s, log: log, rec: r}
	t.save()
	return t
}

func (t *Tracker) update(f func(r *Record)) {
	if t == nil {
		return
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.done {
		return
	}
	f(&t.rec)
	t.save()
}

func (t *Tracker) save() {
	if err := t.store.Save(&t.rec); err != nil {
		t.log.Warn("Cannot save the job's record; after a crash of the runner the job would not be finished", "error", err)
	}
}

// Sent records the log offset GitLab acknowledged.
func (t *Tracker) Sent(off int64) {
	t.update(func(r *Record) { r.TraceSent = off })
}

// TraceFile records the log's buffer file.
func (t *Tracker) TraceFile(path string) {
	t.update(func(r *Record) { r.TraceFile = path })
}

// Process records the process group of the running stage.
func (t *Tracker) Process(pgid int, start uint64) {
	t.update(func(r *Record) { r.PGID, r.PGIDStart = pgid, start })
}

// Files records files of the job to remove after a crash.
func (t *Tracker) Files(paths ...string) {
	t.update(func(r *Record) {
		for _, p := range paths {
			if Removable(p) {
				r.Paths = append(r.Paths, p)
			}
		}
	})
}

// Result records the final state once known.
func (t *Tracker) Result(res Result) {
	t.update(func(r *Record) { r.Result = &res })
}

// Done removes the record: GitLab has the final state.
func (t *Tracker) Done() {
	if t == nil {
		return
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	t.done = true
	if err := t.store.Remove(t.rec.JobID); err != nil {
		t.log.Warn("Cannot remove the job's record", "error", err)
	}
}

package agent

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path"

	"github.com/podrunner/podrunner/internal/job"
	"github.com/podrunner/podrunner/internal/version"
)

// SpecError is a spec that cannot be used; File and Field say where.
type SpecError struct {
	File  string // may be empty when the spec did not come from a file
	Field string // JSON path of the field, e.g. "sources.strategy"; empty for syntax errors
	Msg   string
}

func (e *SpecError) Error() string {
	where := "agent spec"
	if e.File != "" {
		where += " " + e.File
	}
	if e.Field != "" {
		return fmt.Sprintf("%s: field %q: %s", where, e.Field, e.Msg)
	}
	return where + ": " + e.Msg
}

// LoadSpec reads and validates the spec in file.
func LoadSpec(file string) (*Spec, error) {
	data, err := os.ReadFile(file)
	if err != nil {
		return nil, &SpecError{File: file, Msg: fmt.Sprintf("cannot read it (is the job's Secret mounted?): %v", err)}
	}
	s, err := ParseSpec(data)
	if err != nil {
		var se *SpecError
		if errors.As(err, &se) {
			se.File = file
		}
		return nil, err
	}
	return s, nil
}

// ParseSpec decodes and validates a spec. Unknown fields are ignored so that
// a newer runner can talk to an older agent. A spec of another build is
// refused before anything else: its shape may differ.
func ParseSpec(data []byte) (*Spec, error) {
	var v struct {
		Version string `json:"version"`
	}
	if json.Unmarshal(data, &v) == nil && v.Version != "" {
		if own := version.Get().Build(); v.Version != own {
			return nil, &SpecError{Field: "version", Msg: fmt.Sprintf("this helper image runs podrunner-helper %s, the runner manager is podrunner %s: "+
				"set helper_image to the helper image of the manager's version (or leave it unset)", own, v.Version)}
		}
	}
	var s Spec
	if err := json.Unmarshal(data, &s); err != nil {
		var syn *json.SyntaxError
		var typ *json.UnmarshalTypeError
		switch {
		case errors.As(err, &syn):
			line, col := position(data, syn.Offset)
			return nil, &SpecError{Msg: fmt.Sprintf("invalid JSON at line %d, column %d: %v", line, col, syn)}
		case errors.As(err, &typ):
			return nil, &SpecError{Field: typ.Field, Msg: fmt.Sprintf("is a JSON %s, want %v", typ.Value, typ.Type)}
		}
		return nil, &SpecError{Msg: "invalid JSON: " + err.Error()}
	}
	if err := s.Validate(); err != nil {
		return nil, err
	}
	return &s, nil
}

// position turns a SyntaxError offset (bytes read, the bad one included)
// into a 1-based line and column of the bad byte.
func position(data []byte, off int64) (line, col int) {
	i := int(min(max(off-1, 0), int64(len(data))))
	before := data[:i]
	return bytes.Count(before, []byte{'\n'}) + 1, i - bytes.LastIndexByte(before, '\n')
}

// Validate checks what the agent relies on.
func (s *Spec) Validate() error {
	bad := func(field, msg string) error { return &SpecError{Field: field, Msg: msg} }
	if s.Token == "" {
		return bad("token", "missing: the agent API needs a bearer token")
	}
	if s.Plan == nil {
		return bad("plan", "missing")
	}
	if len(s.Plan.Stages) == 0 {
		return bad("plan.stages", "empty: nothing to run")
	}
	for i, st := range s.Plan.Stages {
		if st.Name == "" {
			return bad(fmt.Sprintf("plan.stages[%d].name", i), "missing")
		}
	}
	if !path.IsAbs(s.Plan.ProjectDir) {
		return bad("plan.project_dir", fmt.Sprintf("%q is not an absolute path", s.Plan.ProjectDir))
	}
	if src := s.Sources; src != nil {
		switch src.Strategy {
		case job.GitClone, job.GitFetch, job.GitNone, job.GitEmpty:
		default:
			return bad("sources.strategy", fmt.Sprintf("%q is not one of clone, fetch, none, empty", src.Strategy))
		}
		switch src.Submodules {
		case "", job.SubmoduleNone, job.SubmoduleNormal, job.SubmoduleRecursive:
		default:
			return bad("sources.submodules", fmt.Sprintf("%q is not one of none, normal, recursive", src.Submodules))
		}
		if src.Depth < 0 {
			return bad("sources.depth", "must not be negative")
		}
		dir := src.Dir
		if dir == "" {
			dir = s.Plan.ProjectDir
		}
		if !path.IsAbs(dir) || path.Clean(dir) == "/" {
			return bad("sources.dir", fmt.Sprintf("%q is not an absolute directory below /", dir))
		}
		if src.Strategy == job.GitClone || src.Strategy == job.GitFetch {
			if src.RepoURL == "" {
				return bad("sources.repo_url", "missing")
			}
			if src.Checkout && src.Sha == "" && src.Ref == "" {
				return bad("sources.sha", "neither sha nor ref: nothing to check out")
			}
		}
	}
	for p := range s.Files {
		if !path.IsAbs(p) {
			return bad("files", fmt.Sprintf("path %q is not absolute", p))
		}
	}
	return nil
}

package agent

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestParseSpecErrors(t *testing.T) {
	const plan = `"plan":{"stages":[{"name":"step_script","script":"true"}],"project_dir":"/builds/p"}`
	for _, tc := range []struct {
		name, json, field, msg string
	}{
		{"syntax", "{\n  \"token\": \"x\",\n  oops\n}", "", "line 3, column 3"},
		{"type", `{"token": 5}`, "token", "is a JSON number"},
		{"nested type", `{"token":"x",` + plan + `,"sources":{"depth":"20"}}`, "sources.depth", "is a JSON string"},
		{"no token", `{` + plan + `}`, "token", "missing"},
		{"no plan", `{"token":"x"}`, "plan", "missing"},
		{"no stages", `{"token":"x","plan":{"project_dir":"/b"}}`, "plan.stages", "empty"},
		{"relative dir", `{"token":"x","plan":{"stages":[{"name":"a"}],"project_dir":"b"}}`, "plan.project_dir", "not an absolute path"},
		{"strategy", `{"token":"x",` + plan + `,"sources":{"strategy":"copy"}}`, "sources.strategy", `"copy" is not one of`},
		{"submodules", `{"token":"x",` + plan + `,"sources":{"strategy":"none","submodules":"all"}}`, "sources.submodules", "not one of"},
		{"no url", `{"token":"x",` + plan + `,"sources":{"strategy":"clone","sha":"ab"}}`, "sources.repo_url", "missing"},
		{"nothing to check out", `{"token":"x",` + plan + `,"sources":{"strategy":"fetch","repo_url":"http://h/p.git","checkout":true}}`, "sources.sha", "nothing to check out"},
		{"negative depth", `{"token":"x",` + plan + `,"sources":{"strategy":"none","depth":-1}}`, "sources.depth", "negative"},
		{"relative file", `{"token":"x",` + plan + `,"files":{"tmp/f":"x"}}`, "files", `"tmp/f" is not absolute`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := ParseSpec([]byte(tc.json))
			var se *SpecError
			if !errors.As(err, &se) {
				t.Fatalf("error %v is not a *SpecError", err)
			}
			if se.Field != tc.field || !strings.Contains(se.Msg, tc.msg) {
				t.Errorf("got field %q msg %q, want field %q msg containing %q", se.Field, se.Msg, tc.field, tc.msg)
			}
		})
	}
	s, err := ParseSpec([]byte(`{"token":"x",` + plan + `,"future_field":1}`))
	if err != nil || s.Token != "x" || s.Plan.Stages[0].Script != "true" {
		t.Errorf("valid spec: %+v %v", s, err)
	}
}

func TestLoadSpecNamesTheFile(t *testing.T) {
	f := filepath.Join(t.TempDir(), "job.json")
	if _, err := LoadSpec(f); err == nil || !strings.Contains(err.Error(), f) || !strings.Contains(err.Error(), "Secret mounted") {
		t.Errorf("missing file: %v", err)
	}
	if err := os.WriteFile(f, []byte(`{"token":""}`), 0o600); err != nil {
		t.Fatal(err)
	}
	_, err := LoadSpec(f)
	if want := "agent spec " + f + `: field "token": missing`; err == nil || !strings.HasPrefix(err.Error(), want) {
		t.Errorf("got %v, want %q…", err, want)
	}
}

package job

import (
	"errors"
	"strings"
	"testing"
)

const goodPayload = `{
  "id": 4711, "token": "glcbt-64_abc", "allow_git_fetch": true,
  "job_info": {"name": "hello", "project_id": 42, "project_full_path": "group/demo", "time_in_queue_seconds": 0.8},
  "git_info": {"repo_url": "https://gitlab-ci-token:glcbt-64_abc@gitlab.example.com/group/demo.git", "ref": "main",
               "sha": "3f2a9c1e5b7d4a6f8e0c2b4d6f8a0c2e4b6d8f0a", "refspecs": ["+refs/heads/main:refs/remotes/origin/main"], "depth": 20,
               "protected": null},
  "runner_info": {"timeout": 3600},
  "variables": [{"key": "A", "value": "1", "public": true}, {"key": "S", "value": "s3cr3t", "masked": true}],
  "steps": [{"name": "script", "script": ["echo hi"], "timeout": 3600, "when": "", "allow_failure": false},
            {"name": "after_script", "script": ["echo after"], "timeout": 3600, "when": "always", "allow_failure": true}],
  "image": {"name": "alpine"}, "services": null,
  "features": {"trace_sections": true, "token_mask_prefixes": ["glpat-"], "failure_reasons": ["script_failure"]},
  "some_future_field": {"x": [1, 2]}
}`

func TestDecodeGood(t *testing.T) {
	p, err := Decode([]byte(goodPayload))
	if err != nil {
		t.Fatal(err)
	}
	if p.ID != 4711 || p.Token != "glcbt-64_abc" || len(p.Steps) != 2 || p.Steps[0].When != WhenOnSuccess {
		t.Fatalf("decoded %+v", p)
	}
	if p.GitInfo.Depth != 20 || p.JobInfo.TimeInQueue != 0.8 || p.Variables[1].Key != "S" || !p.Variables[1].Masked {
		t.Fatalf("decoded %+v", p)
	}
}

func TestDecodeErrors(t *testing.T) {
	tests := []struct {
		name     string
		edit     func(string) string
		raw      string // used instead of edit when set
		wantErr  string
		wantPart bool // a partial payload with id/token
		wantPath string
	}{
		{name: "not json", raw: `{"id": 1,`, wantErr: "not valid JSON"},
		{name: "array", raw: `[1]`, wantErr: "expected an object, got array"},
		{name: "trailing", raw: `{} {}`, wantErr: "unexpected data"},
		{name: "script number", edit: repl(`"script": ["echo hi"]`, `"script": [1]`),
			wantErr: "job payload: steps[0].script: expected array of strings, got number at index 0", wantPart: true, wantPath: "steps[0].script"},
		{name: "script string", edit: repl(`"script": ["echo hi"]`, `"script": "echo hi"`),
			wantErr: "steps[0].script: expected array of strings, got string", wantPart: true},
		{name: "id string", edit: repl(`"id": 4711`, `"id": "4711"`), wantErr: "id: expected integer, got string"},
		{name: "id float", edit: repl(`"id": 4711`, `"id": 47.5`), wantErr: "id: expected integer, got 47.5"},
		{name: "id zero", edit: repl(`"id": 4711`, `"id": 0`), wantErr: "id: must be a positive job id"},
		{name: "no token", edit: repl(`"token": "glcbt-64_abc",`, ``), wantErr: "token: missing job token"},
		{name: "no steps", edit: func(s string) string {
			i := strings.Index(s, `"steps"`)
			j := strings.Index(s, `"image"`)
			return s[:i] + s[j:]
		}, wantErr: "steps: the job has no steps", wantPart: true},
		{name: "bad when", edit: repl(`"when": "always"`, `"when": "sometimes"`), wantErr: `steps[1].when: unknown value "sometimes"`, wantPart: true},
		{name: "bad step", edit: repl(`"name": "after_script"`, `"name": "before"`), wantErr: `steps[1].name: unknown step name "before"`, wantPart: true},
		{name: "run step", edit: repl(`"name": "after_script"`, `"name": "run"`), wantErr: `native steps`, wantPart: true},
		{name: "dup step", edit: repl(`"name": "after_script"`, `"name": "script"`), wantErr: `appears twice`, wantPart: true},
		{name: "huge timeout", edit: repl(`"timeout": 3600}`, `"timeout": 99999999}`), wantErr: "runner_info.timeout: 99999999 s", wantPart: true},
		{name: "negative step timeout", edit: repl(`"timeout": 3600, "when": ""`, `"timeout": -1, "when": ""`), wantErr: "steps[0].timeout", wantPart: true},
		{name: "overflow", edit: repl(`"depth": 20`, `"depth": 1e400`), wantErr: "git_info.depth: expected integer", wantPart: true},
		{name: "variables object", edit: repl(`"variables": [{"key": "A", "value": "1", "public": true},`, `"variables": {"key": "A"}, "v2": [`), wantErr: "variables: expected array of objects, got object", wantPart: true},
		{name: "truncated", edit: func(s string) string { return s[:strings.Index(s, `"steps"`)+12] }, wantErr: "not valid JSON", wantPart: true},
		{name: "truncated before token", raw: `{"id": 5, "tok`, wantErr: "not valid JSON"},
		{name: "variable value type", edit: repl(`"value": "1"`, `"value": 1`), wantErr: "variables[0].value: expected string, got number", wantPart: true},
		{name: "public string", edit: repl(`"public": true}`, `"public": "yes"}`), wantErr: "variables[0].public: expected boolean, got string", wantPart: true},
		{name: "empty key", edit: repl(`"key": "A"`, `"key": ""`), wantErr: "variables[0].key: empty variable name", wantPart: true},
		{name: "NUL in script", edit: repl(`"echo hi"`, `"echo \u0000"`), wantErr: "steps[0].script[0]: contains a NUL byte", wantPart: true},
		{name: "NUL in value", edit: repl(`"s3cr3t"`, `"s3\u0000"`), wantErr: "variables[1].value", wantPart: true},
		{name: "git_info string", edit: repl(`"runner_info": {"timeout": 3600}`, `"runner_info": "x"`), wantErr: "runner_info: expected object, got string", wantPart: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			in := tt.raw
			if in == "" {
				in = tt.edit(goodPayload)
			}
			p, err := Decode([]byte(in))
			if err == nil {
				t.Fatalf("no error for %s", in)
			}
			var de *DecodeError
			if !errors.As(err, &de) {
				t.Fatalf("error %T %v is not a *DecodeError", err, err)
			}
			if !strings.Contains(err.Error(), tt.wantErr) {
				t.Errorf("error %q, want it to contain %q", err, tt.wantErr)
			}
			if tt.wantPath != "" && de.Path != tt.wantPath {
				t.Errorf("path %q, want %q", de.Path, tt.wantPath)
			}
			if tt.wantPart {
				if p == nil || p.ID != 4711 || p.Token != "glcbt-64_abc" {
					t.Errorf("want partial payload with id and token, got %+v", p)
				}
			} else if p != nil {
				t.Errorf("want no payload, got %+v", p)
			}
		})
	}
}

func repl(old, new string) func(string) string {
	return func(s string) string {
		if !strings.Contains(s, old) {
			panic("test edit does not apply: " + old)
		}
		return strings.Replace(s, old, new, 1)
	}
}

func FuzzDecode(f *testing.F) {
	f.Add([]byte(goodPayload))
	f.Add([]byte(`{"id":1,"token":"t","steps":[{"name":"script","script":["x"]}]}`))
	f.Add([]byte(`{"id":1,"token":"t","steps":[{"name":"script","script":[null, 1, {}]}]}`))
	f.Add([]byte(`{"id":-1,"token":7}`))
	f.Add([]byte(`null`))
	f.Add([]byte(`{"ID":1,"id":"x"}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		p, err := Decode(data)
		if err == nil {
			if p == nil || p.ID <= 0 || p.Token == "" || len(p.Steps) == 0 {
				t.Fatalf("accepted invalid payload %+v", p)
			}
			return
		}
		if p != nil && (p.ID <= 0 || p.Token == "") {
			t.Fatalf("partial payload without id/token: %+v", p)
		}
		if !strings.HasPrefix(err.Error(), "job payload: ") {
			t.Fatalf("error without context: %v", err)
		}
	})
}

package ciyaml

import (
	"slices"
	"strings"
	"testing"
)

// TestValidGitLabConfigurationsAccepted: configurations GitLab accepts
// (each case names the rule) parse, with the needs they mean.
func TestValidGitLabConfigurationsAccepted(t *testing.T) {
	tests := []struct {
		name, yaml string
		job        string
		needs      []string
		rules      int
	}{
		{"needs as a single hash (Entry::Needs accepts a Hash)",
			"build:\n  stage: build\n  script: x\ntest:\n  script: y\n  needs: {job: build, artifacts: false}\n", "test", []string{"build"}, -1},
		{"!reference nested in needs is flattened",
			".shared:\n  needs: [build]\nbuild:\n  stage: build\n  script: x\nlint:\n  stage: build\n  script: x\ntest:\n  script: y\n  needs:\n    - !reference [.shared, needs]\n    - lint\n",
			"test", []string{"build", "lint"}, -1},
		{"!reference two levels deep in rules is flattened",
			".a:\n  rules:\n    - if: $X\n.b:\n  rules:\n    - !reference [.a, rules]\n    - if: $Y\ntest:\n  script: y\n  rules:\n    - !reference [.b, rules]\n    - when: always\n",
			"test", nil, 3},
		{"needs: [] with dependencies (the job gets no artifacts)",
			"build:\n  stage: build\n  script: x\ntest:\n  script: y\n  needs: []\n  dependencies: []\n", "test", []string{}, -1},
		{"needs: [] with dependencies naming an earlier job (Entry::Job checks them only against present needs)",
			"build:\n  stage: build\n  script: x\ntest:\n  script: y\n  needs: []\n  dependencies: [build]\n", "test", []string{}, -1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg, err := Parse("ci.yml", []byte(tt.yaml))
			if err != nil {
				t.Fatal(err)
			}
			j := cfg.Job(tt.job)
			if j == nil {
				t.Fatalf("no job %s", tt.job)
			}
			if tt.needs != nil {
				var got []string
				for _, n := range j.Needs {
					got = append(got, n.Job)
				}
				if got == nil {
					got = []string{}
				}
				if !slices.Equal(got, tt.needs) {
					t.Errorf("needs %v, want %v", got, tt.needs)
				}
			}
			if tt.rules >= 0 && len(j.Rules) != tt.rules {
				t.Errorf("%d rules, want %d", len(j.Rules), tt.rules)
			}
		})
	}
}

const matrixJob = "build:\n  stage: build\n  script: x\n  parallel:\n    matrix:\n      - OS: [linux, mac]\n        ARCH: [amd64]\n"

// TestMatrixNeeds follows GitLab's Normalizer: needs:parallel:matrix names
// one node per combination ("build: [amd64, linux]"); it must name an
// instance with all its matrix variables, an error names the node, and an
// optional need naming nothing is dropped.
func TestMatrixNeeds(t *testing.T) {
	tests := []struct {
		name, need string
		want       []string // needs, or nil with wantErr
		wantErr    string
	}{
		{"full selector", "    - job: build\n      parallel:\n        matrix:\n          - OS: linux\n            ARCH: amd64\n",
			[]string{"build: [linux, amd64]"}, ""},
		{"no such node", "    - job: build\n      parallel:\n        matrix:\n          - OS: nope\n            ARCH: amd64\n",
			nil, "jobs:test job: undefined need: build: [amd64, nope]"},
		{"partial selector names no job", "    - job: build\n      parallel:\n        matrix:\n          - OS: linux\n",
			nil, "jobs:test job: undefined need: build: [linux]"},
		{"optional need naming nothing is dropped", "    - job: build\n      optional: true\n      parallel:\n        matrix:\n          - OS: nope\n            ARCH: amd64\n",
			[]string{}, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg, err := Parse("ci.yml", []byte(matrixJob+"test:\n  script: y\n  needs:\n"+tt.need))
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("error %v, want %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			got := []string{}
			for _, n := range cfg.Job("test").Needs {
				got = append(got, n.Job)
			}
			if !slices.Equal(got, tt.want) {
				t.Errorf("needs %q, want %q", got, tt.want)
			}
		})
	}
}

package ciyaml

import (
	"slices"
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

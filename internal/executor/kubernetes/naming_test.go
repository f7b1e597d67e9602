package kubernetes

import (
	"bytes"
	"regexp"
	"strings"
	"testing"

	"k8s.io/apimachinery/pkg/util/validation"

	"github.com/podrunner/podrunner/internal/job"
)

var podNameRe = regexp.MustCompile(`^runner-[a-z0-9]+-project-\d+-concurrent-\d+-[a-z0-9]{8}$`)

func TestPodName(t *testing.T) {
	seen := map[string]bool{}
	for i := range 20 {
		n := PodName("abcdefghi", 12, i%3)
		if !podNameRe.MatchString(n) || len(validation.IsDNS1123Label(n)) > 0 {
			t.Fatalf("PodName = %q", n)
		}
		seen[n] = true
	}
	if len(seen) < 19 {
		t.Errorf("random suffixes repeat: %d distinct of 20", len(seen))
	}
}

func TestPodNameShapes(t *testing.T) {
	cases := []struct {
		token   string
		project int64
		slot    int
		want    string
	}{
		{"abcdefghi", 12, 0, "runner-abcdefghi-project-12-concurrent-0-aaaaaaaa"},
		{"AbC_dE.fg", 1, 2, "runner-abc-de-fg-project-1-concurrent-2-aaaaaaaa"},
		// The prefix is cut to 54 characters (trailing '-' trimmed): 63 in all.
		{"abcdefghi", 1234567890123456789, 123456, "runner-abcdefghi-project-1234567890123456789-concurren-aaaaaaaa"},
		{"abcdefghi", 123456789012345678, 1, "runner-abcdefghi-project-123456789012345678-concurrent-aaaaaaaa"},
	}
	for _, c := range cases {
		got, err := podName(zeroReader{}, c.token, c.project, c.slot)
		if err != nil {
			t.Fatal(err)
		}
		if got != c.want {
			t.Errorf("podName(%q, %d, %d) = %q, want %q", c.token, c.project, c.slot, got, c.want)
		}
		if len(got) > 63 || len(validation.IsDNS1123Label(got)) > 0 {
			t.Errorf("%q is not a DNS label", got)
		}
	}
}

func TestRandomStringAlphabet(t *testing.T) {
	// Bytes ≥ 252 are skipped (uniformity): 0xff… then 0x01 → 'b'.
	r := bytes.NewReader(append(bytes.Repeat([]byte{0xff}, 15), bytes.Repeat([]byte{1, 37}, 20)...))
	s, err := randomString(r, 8)
	if err != nil {
		t.Fatal(err)
	}
	if s != "bbbbbbbb" {
		t.Errorf("randomString = %q", s)
	}
	if _, err := randomString(bytes.NewReader(nil), 8); err == nil {
		t.Error("a failing reader gave no error")
	}
}

func TestMakeRFC1123(t *testing.T) {
	cases := map[string]string{
		"Runner-ABC":            "runner-abc",
		"a.b_c":                 "a-b-c",
		"--x--":                 "x",
		"ü-ok!":                 "ok",
		strings.Repeat("a", 70): strings.Repeat("a", 63),
		"":                      "",
	}
	for in, want := range cases {
		if got := makeRFC1123(in); got != want {
			t.Errorf("makeRFC1123(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestLabelValue(t *testing.T) {
	cases := map[string]string{
		"feature/x":                    "feature_x",
		"Demo Project":                 "Demo_Project",
		"-leading.and.trailing-":       "leading.and.trailing",
		"https://host/a/-/jobs/1":      "https___host_a_-_jobs_1",
		"":                             "",
		"ünïcode":                      "n_code",
		strings.Repeat("a", 62) + "/b": strings.Repeat("a", 62),
		"$$$":                          "",
	}
	for in, want := range cases {
		got := LabelValue(in)
		if got != want {
			t.Errorf("LabelValue(%q) = %q, want %q", in, got, want)
		}
		if len(validation.IsValidLabelValue(got)) > 0 {
			t.Errorf("LabelValue(%q) = %q is not a valid label value", in, got)
		}
	}
}

func FuzzLabelValue(f *testing.F) {
	for _, s := range []string{"feature/x", "ü", "-a-", strings.Repeat("x.", 40)} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		if v := LabelValue(s); len(validation.IsValidLabelValue(v)) > 0 {
			t.Fatalf("LabelValue(%q) = %q is invalid", s, v)
		}
	})
}

func TestLabelsAreValid(t *testing.T) {
	p := podTestPayload()
	p.JobInfo.Name = "a very long job name that goes well beyond sixty-three characters of label"
	p.GitInfo.Ref = "refs/merge-requests/1/head"
	l := Labels(MetaInput{PodName: "n", ShortToken: "abcdefghi", RunnerName: "my runner", SystemID: "s_0123456789ab", Slot: 1, Payload: p,
		Variables: job.Variables{{Key: "CI_PROJECT_NAMESPACE", Value: "secret-ns"}}})
	for k, v := range l {
		if len(validation.IsQualifiedName(k)) > 0 || len(validation.IsValidLabelValue(v)) > 0 {
			t.Errorf("invalid label %s=%q", k, v)
		}
	}
	if l[LabelManaged] != "true" || l[LabelRunner] != "abcdefghi" || l[LabelJobID] != "4242" || l[LabelPipelineID] != "77" || l[LabelProjectID] != "12" {
		t.Errorf("podrunner labels %v", l)
	}
	// A non-public variable never reaches a label.
	if l["project.runner.gitlab.com/namespace"] != "" {
		t.Errorf("non-public CI_PROJECT_NAMESPACE in labels: %q", l["project.runner.gitlab.com/namespace"])
	}
	if l[LabelSystemID] != "s_0123456789ab" || LabelSystemID != "manager.runner.gitlab.com/system-id" {
		t.Errorf("owner label %s=%q", LabelSystemID, l[LabelSystemID])
	}
	if l["job.runner.gitlab.com/pod"] != "runner-abcdefghi-project-12-concurrent-1" {
		t.Errorf("pod label %q", l["job.runner.gitlab.com/pod"])
	}
}
